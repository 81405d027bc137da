//! DNR payloads (RFC 9463). DHCPv4 option 162 (§5.1) and DHCPv6 option 144
//! (§4.1) are compared byte for byte with instances assembled here field by
//! field from the option layouts. Their SvcParams are decoded with
//! hickory-proto, and the dnsmasq and odhcpd lines are checked.

use std::net::{Ipv4Addr, Ipv6Addr};

use dnsgate::ddr::{EncryptedProtocol, Endpoint};
use dnsgate::dnr::{self, DnrError};
use hickory_proto::rr::rdata::svcb::{SvcParamKey, SvcParamValue};
use hickory_proto::rr::{RData, Record};
use hickory_proto::serialize::binary::BinDecodable as _;

const ADN: &[u8] = b"\x08resolver\x07example\x00";
const DOT_PARAMS: &[u8] = &[
    0, 1, 0, 4, 3, b'd', b'o', b't', // alpn = "dot"
    0, 3, 0, 2, 0x03, 0x55, // port = 853
];
const DOH_PARAMS: &[u8] = &[
    0, 1, 0, 3, 2, b'h', b'2', // alpn = "h2"
    0, 3, 0, 2, 0x01, 0xbb, // port = 443
    0, 7, 0, 16, b'/', b'd', b'n', b's', b'-', b'q', b'u', b'e', b'r', b'y', b'{', b'?', b'd', b'n', b's', b'}',
];

fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint { protocol: EncryptedProtocol::Tls, port: 853, dohpath: None },
        Endpoint { protocol: EncryptedProtocol::Https, port: 443, dohpath: Some("/dns-query{?dns}".into()) },
    ]
}

/// Assembles one DHCPv4 DNR instance from its fields (RFC 9463 §5.1).
fn v4_instance(priority: u16, addresses: &[[u8; 4]], params: &[u8]) -> Vec<u8> {
    let mut body = priority.to_be_bytes().to_vec();
    body.push(ADN.len() as u8);
    body.extend_from_slice(ADN);
    body.push((addresses.len() * 4) as u8);
    for address in addresses {
        body.extend_from_slice(address);
    }
    body.extend_from_slice(params);
    let mut instance = (body.len() as u16).to_be_bytes().to_vec();
    instance.extend(body);
    instance
}

/// Assembles the data of one DHCPv6 DNR option (RFC 9463 §4.1).
fn v6_option(priority: u16, addresses: &[Ipv6Addr], params: &[u8]) -> Vec<u8> {
    let mut data = priority.to_be_bytes().to_vec();
    data.extend_from_slice(&(ADN.len() as u16).to_be_bytes());
    data.extend_from_slice(ADN);
    data.extend_from_slice(&((addresses.len() * 16) as u16).to_be_bytes());
    for address in addresses {
        data.extend_from_slice(&address.octets());
    }
    data.extend_from_slice(params);
    data
}

/// Decodes SvcParams by wrapping them in an SVCB record for hickory-proto.
fn decode_params(priority: u16, params: &[u8]) -> Vec<(SvcParamKey, SvcParamValue)> {
    let mut rdata = priority.to_be_bytes().to_vec();
    rdata.push(0); // TargetName "." (RFC 9460 §2.5)
    rdata.extend_from_slice(params);
    let mut record = vec![0, 0, 64, 0, 1, 0, 0, 0, 60];
    record.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    record.extend(rdata);
    let record = Record::from_bytes(&record).expect("hickory-proto rejects the SvcParams");
    let RData::SVCB(svcb) = record.data() else { panic!("not SVCB") };
    svcb.svc_params().to_vec()
}

#[test]
fn rfc9463_5_1_dhcpv4_option_bytes() {
    let v4 = [Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(10, 0, 0, 1)];
    let payloads = dnr::build_payloads("resolver.example.", &endpoints(), &v4, &[]).unwrap();
    let addresses = [[192, 168, 1, 1], [10, 0, 0, 1]];
    let mut expected = v4_instance(1, &addresses, DOT_PARAMS);
    expected.extend(v4_instance(2, &addresses, DOH_PARAMS));
    assert_eq!(payloads.v4.as_deref(), Some(expected.as_slice()));
    assert!(payloads.v6.is_empty());

    // The first instance read back field by field.
    let payload = payloads.v4.unwrap();
    let instance_len = usize::from(u16::from_be_bytes([payload[0], payload[1]]));
    assert_eq!(instance_len, 2 + 1 + ADN.len() + 1 + 8 + DOT_PARAMS.len());
    assert_eq!(&payload[2..4], &[0, 1], "Service Priority");
    assert_eq!(usize::from(payload[4]), ADN.len(), "ADN Length");
    let after_adn = 5 + ADN.len();
    assert_eq!(payload[after_adn], 8, "Addr Length");
    assert_eq!(&payload[after_adn + 1..after_adn + 5], &[192, 168, 1, 1]);
    assert_eq!(2 + instance_len + 2 + 2 + 1 + ADN.len() + 1 + 8 + DOH_PARAMS.len(), payload.len());
}

#[test]
fn rfc9463_4_1_dhcpv6_option_bytes() {
    let v6: Vec<Ipv6Addr> = vec!["fd00::1".parse().unwrap()];
    let payloads = dnr::build_payloads("resolver.example", &endpoints(), &[], &v6).unwrap();
    assert_eq!(payloads.v4, None);
    assert_eq!(payloads.v6, [v6_option(1, &v6, DOT_PARAMS), v6_option(2, &v6, DOH_PARAMS)]);
}

#[test]
fn rfc9460_svc_params_decode_with_hickory() {
    let params = decode_params(1, &dnr::service_params_wire(&endpoints()[0]));
    assert_eq!(params.len(), 2);
    assert!(matches!(&params[0], (SvcParamKey::Alpn, SvcParamValue::Alpn(alpn)) if alpn.0 == ["dot"]));
    assert!(matches!(params[1], (SvcParamKey::Port, SvcParamValue::Port(853))));

    let params = decode_params(2, &dnr::service_params_wire(&endpoints()[1]));
    assert_eq!(params.len(), 3);
    assert!(matches!(&params[0], (SvcParamKey::Alpn, SvcParamValue::Alpn(alpn)) if alpn.0 == ["h2"]));
    assert!(matches!(params[1], (SvcParamKey::Port, SvcParamValue::Port(443))));
    match &params[2] {
        (SvcParamKey::Unknown(7), SvcParamValue::Unknown(bytes)) => assert_eq!(bytes.0, b"/dns-query{?dns}"),
        other => panic!("dohpath decoded as {other:?}"),
    }
}

#[test]
fn dnsmasq_and_odhcpd_lines() {
    let v4 = [Ipv4Addr::new(192, 168, 1, 1)];
    let payloads = dnr::build_payloads("resolver.example", &endpoints()[..1], &v4, &[]).unwrap();
    let line = dnr::dnsmasq_v4_line(payloads.v4.as_ref().unwrap()).unwrap();
    assert!(line.starts_with("dhcp-option=162,00:"), "{line}");
    let hex_bytes: Vec<u8> = line["dhcp-option=162,".len()..]
        .split(':')
        .map(|pair| u8::from_str_radix(pair, 16).unwrap())
        .collect();
    assert_eq!(&hex_bytes, payloads.v4.as_ref().unwrap());

    assert_eq!(dnr::dnsmasq_v6_line(&[0, 1, 0xfe]), "dhcp-option=option6:144,00:01:fe");
    let line = dnr::odhcpd_line("lan", 2, "resolver.example.", &["192.168.1.1".into(), "fd00::1".into()], &endpoints()[1]);
    assert_eq!(
        line,
        "uci add_list dhcp.lan.dnr='2 resolver.example 192.168.1.1,fd00::1 alpn=h2 port=443 dohpath=/dns-query{?dns}'"
    );
}

#[test]
fn too_many_addresses_rejected() {
    let v4: Vec<Ipv4Addr> = (0..64).map(|index| Ipv4Addr::new(10, 0, 0, index)).collect();
    let error = dnr::build_payloads("resolver.example", &endpoints(), &v4, &[]).unwrap_err();
    assert!(matches!(error, DnrError::TooLong { .. }), "{error}");
}

#[test]
fn dnr_command_prints_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dnsgate.toml");
    std::fs::write(&config, "[tls]\nresolver_name = \"resolver.example\"\n[server]\ndoh_port = 0\ndoq_port = 0\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dnsgate"))
        .arg("--config")
        .arg(&config)
        .args(["dnr", "--address", "192.168.1.1", "--address", "fd00::1", "--address", "fe80::1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));

    let v4 = v4_instance(1, &[[192, 168, 1, 1]], DOT_PARAMS);
    let v6 = v6_option(1, &["fd00::1".parse().unwrap()], DOT_PARAMS);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&dnr::hex(&v4, "").as_str()), "{stdout}");
    assert!(lines.contains(&dnr::hex(&v6, "").as_str()), "the link-local address must be left out:\n{stdout}");
    assert!(lines.contains(&format!("dhcp-option=162,{}", dnr::hex(&v4, ":")).as_str()), "{stdout}");
    assert!(lines.contains(&format!("dhcp-option=option6:144,{}", dnr::hex(&v6, ":")).as_str()), "{stdout}");
    assert!(
        lines.contains(&"uci add_list dhcp.lan.dnr='1 resolver.example 192.168.1.1,fd00::1 alpn=dot port=853'"),
        "{stdout}"
    );
}
