//! Building query frames and checking answer frames.
//!
//! Checksums are computed and verified with `etherparse`, independently of
//! the XDP program's own code.

use std::net::IpAddr;

use etherparse::{Ethernet2Header, IpNumber, Ipv4Header, Ipv6Header, UdpHeader};

/// MAC address of the client in test frames.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// MAC address of the router in test frames.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// One EDNS option: code and data.
pub type EdnsOption = (u16, Vec<u8>);

/// Builds a DNS query with the name's bytes exactly as given (case kept).
pub fn dns_query(id: u16, name: &str, qtype: u16, edns: Option<&[EdnsOption]>) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    message.extend_from_slice(&1u16.to_be_bytes());
    message.extend_from_slice(&[0, 0, 0, 0]);
    message.extend_from_slice(&(edns.is_some() as u16).to_be_bytes());
    for label in name.trim_end_matches('.').split('.').filter(|label| !label.is_empty()) {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&qtype.to_be_bytes());
    message.extend_from_slice(&1u16.to_be_bytes());
    if let Some(options) = edns {
        let data: Vec<u8> = options
            .iter()
            .flat_map(|(code, data)| {
                let mut option = code.to_be_bytes().to_vec();
                option.extend_from_slice(&(data.len() as u16).to_be_bytes());
                option.extend_from_slice(data);
                option
            })
            .collect();
        message.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0]);
        message.extend_from_slice(&(data.len() as u16).to_be_bytes());
        message.extend_from_slice(&data);
    }
    message
}

/// How to wrap a payload into a frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameSpec {
    /// Client address (source).
    pub client: IpAddr,
    /// Router address (destination).
    pub router: IpAddr,
    /// Source port.
    pub source_port: u16,
    /// Destination port.
    pub destination_port: u16,
    /// 802.1Q VLAN ID, if tagged.
    pub vlan: Option<u16>,
}

/// Builds an Ethernet frame carrying `payload` in UDP, with correct IP and
/// UDP checksums.
pub fn udp_frame(spec: &FrameSpec, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    let ethertype = match spec.client {
        IpAddr::V4(_) => 0x0800u16,
        IpAddr::V6(_) => 0x86dd,
    };
    frame.extend_from_slice(&ROUTER_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    if let Some(vlan) = spec.vlan {
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&vlan.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    match (spec.client, spec.router) {
        (IpAddr::V4(client), IpAddr::V4(router)) => {
            let udp = UdpHeader::with_ipv4_checksum(
                spec.source_port,
                spec.destination_port,
                &Ipv4Header::new((8 + payload.len()) as u16, 64, IpNumber::UDP, client.octets(), router.octets())
                    .expect("IPv4 header"),
                payload,
            )
            .expect("UDP header");
            let mut ip =
                Ipv4Header::new((8 + payload.len()) as u16, 64, IpNumber::UDP, client.octets(), router.octets())
                    .expect("IPv4 header");
            ip.header_checksum = ip.calc_header_checksum();
            ip.write(&mut frame).expect("write IPv4");
            udp.write(&mut frame).expect("write UDP");
        }
        (IpAddr::V6(client), IpAddr::V6(router)) => {
            let ip = Ipv6Header {
                traffic_class: 0,
                flow_label: Default::default(),
                payload_length: (8 + payload.len()) as u16,
                next_header: IpNumber::UDP,
                hop_limit: 64,
                source: client.octets(),
                destination: router.octets(),
            };
            let udp = UdpHeader::with_ipv6_checksum(spec.source_port, spec.destination_port, &ip, payload)
                .expect("UDP header");
            ip.write(&mut frame).expect("write IPv6");
            udp.write(&mut frame).expect("write UDP");
        }
        _ => panic!("client and router must be of the same family"),
    }
    frame.extend_from_slice(payload);
    frame
}

/// The parts of an answer frame a test checks.
#[derive(Debug)]
pub struct ParsedAnswer {
    /// Source MAC (should be the router's).
    pub source_mac: [u8; 6],
    /// Destination MAC (should be the client's).
    pub destination_mac: [u8; 6],
    /// VLAN ID, if tagged.
    pub vlan: Option<u16>,
    /// Source address.
    pub source: IpAddr,
    /// Destination address.
    pub destination: IpAddr,
    /// Source port.
    pub source_port: u16,
    /// Destination port.
    pub destination_port: u16,
    /// The DNS message.
    pub dns: Vec<u8>,
}

/// Parses an answer frame and verifies, with etherparse, that the IPv4
/// header checksum and the UDP checksum are correct and that every length
/// field agrees with the frame.
pub fn parse_answer(frame: &[u8]) -> Result<ParsedAnswer, String> {
    let (ethernet, rest) = Ethernet2Header::from_slice(frame).map_err(|e| format!("Ethernet: {e}"))?;
    let (vlan, ethertype, rest) = if ethernet.ether_type.0 == 0x8100 {
        let tci = u16::from_be_bytes([rest[0], rest[1]]);
        let ethertype = u16::from_be_bytes([rest[2], rest[3]]);
        (Some(tci & 0x0fff), ethertype, &rest[4..])
    } else {
        (None, ethernet.ether_type.0, rest)
    };
    let (source, destination, udp_bytes, checksum_ok) = match ethertype {
        0x0800 => {
            let (ip, rest) = Ipv4Header::from_slice(rest).map_err(|e| format!("IPv4: {e}"))?;
            if ip.header_checksum != ip.calc_header_checksum() {
                return Err(format!("bad IPv4 header checksum {:#06x}", ip.header_checksum));
            }
            if ip.total_len as usize != 20 + rest.len() {
                return Err(format!("IPv4 total length {} but {} bytes follow the header", ip.total_len, rest.len()));
            }
            let (udp, payload) = UdpHeader::from_slice(rest).map_err(|e| format!("UDP: {e}"))?;
            let expected = udp.calc_checksum_ipv4(&ip, payload).map_err(|e| format!("UDP checksum: {e}"))?;
            (IpAddr::from(ip.source), IpAddr::from(ip.destination), rest, udp.checksum == expected)
        }
        0x86dd => {
            let (ip, rest) = Ipv6Header::from_slice(rest).map_err(|e| format!("IPv6: {e}"))?;
            if ip.payload_length as usize != rest.len() {
                return Err(format!("IPv6 payload length {} but {} bytes follow", ip.payload_length, rest.len()));
            }
            let (udp, payload) = UdpHeader::from_slice(rest).map_err(|e| format!("UDP: {e}"))?;
            let expected = udp.calc_checksum_ipv6(&ip, payload).map_err(|e| format!("UDP checksum: {e}"))?;
            (IpAddr::from(ip.source), IpAddr::from(ip.destination), rest, udp.checksum == expected)
        }
        other => return Err(format!("unexpected ethertype {other:#06x}")),
    };
    if !checksum_ok {
        return Err("bad UDP checksum".into());
    }
    let (udp, payload) = UdpHeader::from_slice(udp_bytes).map_err(|e| format!("UDP: {e}"))?;
    if udp.length as usize != udp_bytes.len() {
        return Err(format!("UDP length {} but the datagram has {} bytes", udp.length, udp_bytes.len()));
    }
    Ok(ParsedAnswer {
        source_mac: ethernet.source,
        destination_mac: ethernet.destination,
        vlan,
        source,
        destination,
        source_port: udp.source_port,
        destination_port: udp.destination_port,
        dns: payload.to_vec(),
    })
}
