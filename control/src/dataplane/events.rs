//! The answers the XDP program sends from the kernel, as user space reads
//! them from the per-CPU perf buffers of [`MAP_EVENTS`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{perf::PerfEventArrayBuffer, MapData, PerfEventArray};
use dnsgate_common::{
    maps::{EventHeader, CONFIG_LOG_EVENTS, EVENT_ANSWER, MAP_EVENTS},
    wire::HEADER_LEN,
};
use hickory_proto::{
    op::Query,
    rr::RecordType,
    serialize::binary::{BinDecodable as _, BinDecoder},
};
use tracing::info;

use super::{loader::map_error, Dataplane, DataplaneError};

/// One CPU's ring of events.
pub type EventBuffer = PerfEventArrayBuffer<MapData>;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_UDP: u8 = 17;

/// An answer the kernel sent, as the query log needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelAnswer {
    /// The client: the answer's destination address.
    pub client: IpAddr,
    /// The question name, lowercase, with the trailing dot.
    pub name: String,
    /// The question type mnemonic (`A`, `AAAA`, `TYPE65534`).
    pub qtype: String,
    /// The answer's RCODE (the low four bits of the header's flags).
    pub rcode: u16,
}

impl Dataplane {
    /// Opens a perf buffer of `pages` pages (a power of two) on every
    /// online CPU and then tells the program to copy its answers into
    /// them, at most `per_second` a second on each CPU (0: all of them).
    /// Call it at most once: the map leaves the loaded object.
    pub fn open_events(&mut self, pages: usize, per_second: u32) -> Result<Vec<EventBuffer>, DataplaneError> {
        let map = self.ebpf.take_map(MAP_EVENTS).ok_or(DataplaneError::MissingMap { name: MAP_EVENTS })?;
        let mut array = PerfEventArray::<MapData>::try_from(map).map_err(|source| map_error(MAP_EVENTS, "opening", source))?;
        let cpus = aya::util::online_cpus().map_err(|(path, source)| DataplaneError::System {
            action: "reading the online CPUs from",
            path: path.into(),
            source,
        })?;
        let mut buffers = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let buffer = array.open(cpu, Some(pages)).map_err(|source| DataplaneError::EventBuffer { cpu, source })?;
            buffers.push(buffer);
        }
        let mut config = self.config;
        config.flags |= CONFIG_LOG_EVENTS;
        config.event_cost_ns = event_cost_ns(per_second);
        self.write_config(config)?;
        info!(cpus = buffers.len(), pages, per_second, "logging the queries answered in the kernel");
        Ok(buffers)
    }
}

/// The program's cost of one logged answer for `per_second` answers a
/// second (see `DataplaneConfig::event_cost_ns`); 0 for no limit.
pub fn event_cost_ns(per_second: u32) -> u32 {
    if per_second == 0 {
        return 0;
    }
    // Above 10^9 a second the cost would round to 0, which means no limit
    // anyway.
    1_000_000_000 / per_second
}

/// Parses one event record: an [`EventHeader`], then the first bytes of
/// the answer frame (Ethernet, an optional 802.1Q tag, IPv4 or IPv6, UDP,
/// DNS), then padding. `None` for a record that is not an answer or that
/// cannot be read. The program only sends answers it built, so that means
/// a version mismatch rather than hostile input.
pub fn parse_event(record: &[u8]) -> Option<KernelAnswer> {
    let header = EventHeader::parse(record)?;
    if header.kind != EVENT_ANSWER {
        return None;
    }
    let frame = record.get(EventHeader::LEN..EventHeader::LEN.checked_add(header.captured_len as usize)?)?;
    parse_answer_frame(frame)
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let pair = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

fn parse_answer_frame(frame: &[u8]) -> Option<KernelAnswer> {
    let mut ethertype = read_u16(frame, 12)?;
    let mut l3 = 14;
    if ethertype == ETH_P_8021Q {
        ethertype = read_u16(frame, 16)?;
        l3 = 18;
    }
    let (client, l4) = match ethertype {
        ETH_P_IP => {
            let ihl = usize::from(*frame.get(l3)? & 0x0f) * 4;
            if *frame.get(l3 + 9)? != IPPROTO_UDP || ihl < 20 {
                return None;
            }
            let destination: [u8; 4] = frame.get(l3 + 16..l3 + 20)?.try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(destination)), l3 + ihl)
        }
        ETH_P_IPV6 => {
            if *frame.get(l3 + 6)? != IPPROTO_UDP {
                return None;
            }
            let destination: [u8; 16] = frame.get(l3 + 24..l3 + 40)?.try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(destination)), l3 + 40)
        }
        _ => return None,
    };

    let udp_len = usize::from(read_u16(frame, l4 + 4)?);
    let dns_start = l4 + 8;
    // The capture may end before the datagram does; the question comes
    // first and always fits.
    let dns_end = (l4 + udp_len).min(frame.len());
    let message = frame.get(dns_start..dns_end)?;

    let flags = read_u16(message, 2)?;
    if read_u16(message, 4)? != 1 {
        return None;
    }
    let mut decoder = BinDecoder::new(message.get(HEADER_LEN..)?);
    let query = Query::read(&mut decoder).ok()?;
    Some(KernelAnswer {
        client,
        name: query.name().to_lowercase().to_ascii(),
        qtype: type_mnemonic(query.query_type()),
        rcode: flags & 0x000f,
    })
}

/// Returns the type's mnemonic, or `TYPEnnn` (RFC 3597) for types hickory
/// does not name, which it would print as `Unknown`.
fn type_mnemonic(qtype: RecordType) -> String {
    match qtype {
        RecordType::Unknown(value) => format!("TYPE{value}"),
        known => known.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a DNS answer for `Ads.Example.` type `qtype` with RCODE `rcode`.
    fn dns_answer(qtype: u16, rcode: u8) -> Vec<u8> {
        let mut message = vec![0x12, 0x34, 0x81, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(b"\x03Ads\x07Example\x00");
        message.extend_from_slice(&qtype.to_be_bytes());
        message.extend_from_slice(&1u16.to_be_bytes());
        message
    }

    fn udp(dns: &[u8]) -> Vec<u8> {
        let mut datagram = vec![0, 53, 0xc0, 0x01];
        datagram.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
        datagram.extend_from_slice(&[0, 0]);
        datagram.extend_from_slice(dns);
        datagram
    }

    fn ethernet(ethertype: u16, vlan: bool) -> Vec<u8> {
        let mut frame = vec![0x02; 12];
        if vlan {
            frame.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            frame.extend_from_slice(&[0, 7]);
        }
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame
    }

    fn ipv4_frame(vlan: bool, dns: &[u8]) -> Vec<u8> {
        let datagram = udp(dns);
        let mut frame = ethernet(ETH_P_IP, vlan);
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&((20 + datagram.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        frame.extend_from_slice(&datagram);
        frame
    }

    fn ipv6_frame(dns: &[u8]) -> Vec<u8> {
        let datagram = udp(dns);
        let mut frame = ethernet(ETH_P_IPV6, false);
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[IPPROTO_UDP, 64]);
        frame.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        frame.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        frame.extend_from_slice(&datagram);
        frame
    }

    fn record(frame: &[u8], captured: usize) -> Vec<u8> {
        let header = [EVENT_ANSWER, frame.len() as u32, captured as u32, 3];
        let mut record: Vec<u8> = header.iter().flat_map(|field| field.to_ne_bytes()).collect();
        record.extend_from_slice(&frame[..captured]);
        // Padding to eight bytes, as the kernel adds it.
        record.resize(record.len().next_multiple_of(8) + 4, 0);
        record
    }

    #[test]
    fn reads_ipv4_answer_behind_a_vlan_tag() {
        let frame = ipv4_frame(true, &dns_answer(1, 3));
        let answer = parse_event(&record(&frame, frame.len())).unwrap();
        assert_eq!(answer.client, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(answer.name, "ads.example.");
        assert_eq!(answer.qtype, "A");
        assert_eq!(answer.rcode, 3);
    }

    #[test]
    fn reads_ipv6_answer() {
        let frame = ipv6_frame(&dns_answer(28, 0));
        let answer = parse_event(&record(&frame, frame.len())).unwrap();
        assert_eq!(answer.client, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(answer.qtype, "AAAA");
    }

    #[test]
    fn question_is_read_from_a_truncated_capture() {
        let mut dns = dns_answer(65534, 0);
        dns.extend_from_slice(&[0xab; 600]);
        let frame = ipv4_frame(false, &dns);
        let answer = parse_event(&record(&frame, 512)).unwrap();
        assert_eq!(answer.name, "ads.example.");
        assert_eq!(answer.qtype, "TYPE65534");
    }

    #[test]
    fn rejects_other_kinds_and_short_records() {
        let frame = ipv4_frame(false, &dns_answer(1, 0));
        let mut other = record(&frame, frame.len());
        other[..4].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(parse_event(&other), None);
        assert_eq!(parse_event(&record(&frame, 30)), None);
        assert_eq!(parse_event(&[0; 8]), None);
        let mut lying = record(&frame, frame.len());
        lying[8..12].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(parse_event(&lying), None);
    }
}
