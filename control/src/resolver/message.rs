//! Building responses to a client's query, and the query sent upstream.
//!
//! Responses copy the client's ID, question (letter case included, for
//! clients that randomise it), RD and CD bits (RFC 1035 §4.1.1, RFC 4035
//! §3.2.2). They carry an OPT record only when the query had one
//! (RFC 6891 §7), and then it contains none of the client's options, because
//! ECS, cookies, padding and keepalive are hop-by-hop and never echoed.

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// UDP payload size advertised to clients and upstreams (the DNS Flag Day
/// 2020 value, which avoids IP fragmentation on common paths).
pub const EDNS_UDP_SIZE: u16 = 1232;

/// EDNS option code of Extended DNS Errors (RFC 8914 §2).
pub const OPTION_EDE: u16 = 15;

/// Extended DNS Error info codes (RFC 8914 §4) that the resolver sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ExtendedError {
    /// 3, Stale Answer (RFC 8914 §4.4): served from the cache past its TTL.
    StaleAnswer = 3,
    /// 15, Blocked (RFC 8914 §4.16): blocked by the network's policy.
    Blocked = 15,
    /// 22, No Reachable Authority (RFC 8914 §4.23): no upstream answered.
    NoReachableAuthority = 22,
    /// 23, Network Error (RFC 8914 §4.24): an upstream could not be reached.
    NetworkError = 23,
}

/// A client's query that passed the checks of [`parse_client_query`].
#[derive(Debug, Clone)]
pub struct ClientQuery {
    /// The whole message as parsed.
    pub message: Message,
    /// The single question.
    pub question: Query,
}

impl ClientQuery {
    /// Returns whether the query carried an OPT record.
    pub fn has_edns(&self) -> bool {
        self.message.extensions().is_some()
    }

    /// Returns the DO bit of the query's OPT record (RFC 3225 §3).
    pub fn dnssec_ok(&self) -> bool {
        self.message
            .extensions()
            .as_ref()
            .is_some_and(|edns| edns.flags().dnssec_ok)
    }

    /// Returns the question name.
    pub fn name(&self) -> &Name {
        self.question.name()
    }

    /// Returns the question type.
    pub fn qtype(&self) -> RecordType {
        self.question.query_type()
    }
}

/// The handling of a message that is not a query the resolver can serve.
#[derive(Debug)]
pub enum Rejection {
    /// Send nothing: the message is a response or too short to answer.
    Drop,
    /// Send this response (FORMERR, NOTIMP, REFUSED or BADVERS).
    Respond(Vec<u8>),
}

/// Parses and checks a client's query. Malformed messages get FORMERR
/// (RFC 1035 §4.1.1), opcodes other than QUERY get NOTIMP, EDNS versions
/// other than 0 get BADVERS (RFC 6891 §6.1.3), zone transfers and classes
/// other than IN get REFUSED.
pub fn parse_client_query(bytes: &[u8]) -> Result<ClientQuery, Rejection> {
    if bytes.len() < 12 {
        return Err(Rejection::Drop);
    }
    if bytes[2] & 0x80 != 0 {
        // QR set: answering a response could start a loop between two
        // resolvers.
        return Err(Rejection::Drop);
    }
    let message = match Message::from_vec(bytes) {
        Ok(message) => message,
        Err(_) => {
            return Err(Rejection::Respond(header_only_error(
                bytes,
                ResponseCode::FormErr,
            )));
        }
    };
    if message.op_code() != OpCode::Query {
        return Err(Rejection::Respond(header_only_error(
            bytes,
            ResponseCode::NotImp,
        )));
    }
    if message.queries().len() != 1 {
        return Err(Rejection::Respond(header_only_error(
            bytes,
            ResponseCode::FormErr,
        )));
    }
    let question = message.queries()[0].clone();
    let query = ClientQuery { message, question };
    if let Some(edns) = query.message.extensions()
        && edns.version() != 0
    {
        let mut response = response_to(&query, ResponseCode::BADVERS);
        response.take_queries();
        return Err(Rejection::Respond(encode(&response)));
    }
    let refused = match query.qtype() {
        RecordType::AXFR | RecordType::IXFR => true,
        RecordType::OPT => {
            return Err(Rejection::Respond(encode(&response_to(
                &query,
                ResponseCode::FormErr,
            ))));
        }
        _ => query.question.query_class() != DNSClass::IN,
    };
    if refused {
        return Err(Rejection::Respond(encode(&response_to(
            &query,
            ResponseCode::Refused,
        ))));
    }
    Ok(query)
}

/// Builds a 12-byte response carrying only the query's header fields that
/// can be trusted before parsing: the ID, OPCODE and RD.
pub fn header_only_error(bytes: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let opcode_and_rd = bytes[2] & 0x79;
    let low_rcode = u16::from(rcode) as u8 & 0x0f;
    let mut out = vec![0u8; 12];
    out[0..2].copy_from_slice(&id.to_be_bytes());
    out[2] = 0x80 | opcode_and_rd;
    out[3] = 0x80 | low_rcode;
    out
}

/// Starts a response to `query`: the header as described in the module
/// docs, the question, and an OPT record when the query had one.
pub fn response_to(query: &ClientQuery, rcode: ResponseCode) -> Message {
    let request = &query.message;
    let mut header = Header::response_from_request(request.header());
    header.set_recursion_available(true);
    header.set_authentic_data(false);
    header.set_authoritative(false);
    header.set_truncated(false);
    header.set_response_code(rcode);
    let mut response = Message::new();
    response.set_header(header);
    response.set_message_type(MessageType::Response);
    response.set_checking_disabled(request.checking_disabled());
    response.add_query(query.question.clone());
    if let Some(client_edns) = request.extensions() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_UDP_SIZE);
        edns.set_version(0);
        edns.set_dnssec_ok(client_edns.flags().dnssec_ok);
        response.set_edns(edns);
    }
    response
}

/// Adds an Extended DNS Error option (RFC 8914 §2) when the response has an
/// OPT record; without one the client cannot receive it.
pub fn add_extended_error(response: &mut Message, code: ExtendedError, text: &str) {
    if let Some(edns) = response.extensions_mut() {
        let mut data = (code as u16).to_be_bytes().to_vec();
        data.extend_from_slice(text.as_bytes());
        edns.options_mut()
            .insert(EdnsOption::Unknown(OPTION_EDE, data));
    }
}

/// The EDE info codes a response carries.
pub fn extended_errors(response: &Message) -> Vec<u16> {
    let Some(edns) = response.extensions() else {
        return Vec::new();
    };
    edns.options()
        .as_ref()
        .iter()
        .filter_map(|(code, option)| match option {
            EdnsOption::Unknown(OPTION_EDE, data)
                if *code == EdnsCode::from(OPTION_EDE) && data.len() >= 2 =>
            {
                Some(u16::from_be_bytes([data[0], data[1]]))
            }
            _ => None,
        })
        .collect()
}

/// SERVFAIL with an Extended DNS Error.
pub fn servfail(query: &ClientQuery, code: ExtendedError, text: &str) -> Message {
    let mut response = response_to(query, ResponseCode::ServFail);
    add_extended_error(&mut response, code, text);
    response
}

/// Encodes a response; a message that cannot be encoded (which only a bug
/// can produce) becomes a header-only SERVFAIL so the client still hears
/// back.
pub fn encode(response: &Message) -> Vec<u8> {
    match response.to_vec() {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, id = response.id(), "failed to encode response, sending SERVFAIL");
            let mut header = vec![0u8; 12];
            header[0..2].copy_from_slice(&response.id().to_be_bytes());
            header[2] = 0x80;
            header[3] = 0x80 | 2;
            header
        }
    }
}

/// Builds the query sent upstream for a client's query: a fresh ID (set by
/// the transport), the question, and the client's RD, AD (RFC 6840 §5.7)
/// and CD bits. It always carries an OPT record so UDP answers may exceed
/// 512 bytes, with the client's DO bit and none of its options. So EDNS
/// Client Subnet (RFC 7871) is stripped, and the LAN's addresses never
/// leave the router.
pub fn upstream_query(query: &ClientQuery) -> Message {
    let request = &query.message;
    let mut message = Message::new();
    message.set_id(0);
    message.set_message_type(MessageType::Query);
    message.set_op_code(OpCode::Query);
    message.set_recursion_desired(request.recursion_desired());
    message.set_authentic_data(request.authentic_data());
    message.set_checking_disabled(request.checking_disabled());
    message.add_query(query.question.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_SIZE);
    edns.set_version(0);
    edns.set_dnssec_ok(query.dnssec_ok());
    message.set_edns(edns);
    message
}

/// An SOA record for locally built negative answers, owned by `zone`, whose
/// TTL and MINIMUM are `ttl` so stubs cache the answer that long
/// (RFC 2308 §3).
pub fn synthesized_soa(zone: &Name, ttl: u32) -> Record {
    let soa = SOA::new(zone.clone(), zone.clone(), 1, 1800, 900, 604_800, ttl);
    Record::from_rdata(zone.clone(), ttl, RData::SOA(soa))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::opt::ClientSubnet;

    fn query_message(name: &str, qtype: RecordType, edns: Option<Edns>) -> Message {
        let mut message = Message::new();
        message
            .set_id(0x4242)
            .set_recursion_desired(true)
            .set_checking_disabled(true);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(edns) = edns {
            message.set_edns(edns);
        }
        message
    }

    fn parse(message: &Message) -> ClientQuery {
        parse_client_query(&message.to_vec().unwrap()).unwrap()
    }

    fn respond(rejection: Rejection) -> Message {
        match rejection {
            Rejection::Respond(bytes) => Message::from_vec(&bytes).unwrap(),
            Rejection::Drop => panic!("expected a response"),
        }
    }

    #[test]
    fn short_messages_and_responses_are_dropped() {
        assert!(matches!(parse_client_query(&[0; 11]), Err(Rejection::Drop)));
        let mut bytes = query_message("example.com.", RecordType::A, None)
            .to_vec()
            .unwrap();
        bytes[2] |= 0x80;
        assert!(matches!(parse_client_query(&bytes), Err(Rejection::Drop)));
    }

    #[test]
    fn garbage_gets_formerr_with_the_id() {
        let bytes = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, 0xff];
        let response = respond(parse_client_query(&bytes).unwrap_err());
        assert_eq!(response.id(), 0xabcd);
        assert_eq!(response.response_code(), ResponseCode::FormErr);
        assert_eq!(response.message_type(), MessageType::Response);
        assert!(response.recursion_desired());
    }

    #[test]
    fn two_questions_get_formerr() {
        let mut message = query_message("example.com.", RecordType::A, None);
        message.add_query(Query::query(
            Name::from_ascii("example.net.").unwrap(),
            RecordType::A,
        ));
        let response = respond(parse_client_query(&message.to_vec().unwrap()).unwrap_err());
        assert_eq!(response.response_code(), ResponseCode::FormErr);
    }

    #[test]
    fn other_opcodes_get_notimp() {
        let mut message = query_message("example.com.", RecordType::A, None);
        message.set_op_code(OpCode::Notify);
        let response = respond(parse_client_query(&message.to_vec().unwrap()).unwrap_err());
        assert_eq!(response.response_code(), ResponseCode::NotImp);
    }

    #[test]
    fn rfc6891_6_1_3_unknown_version_gets_badvers() {
        let mut edns = Edns::new();
        edns.set_version(1);
        let message = query_message("example.com.", RecordType::A, Some(edns));
        let response = respond(parse_client_query(&message.to_vec().unwrap()).unwrap_err());
        // BADVERS and BADSIG share the value 16; hickory decodes it as BADSIG.
        assert_eq!(u16::from(response.response_code()), 16);
        assert_eq!(response.extensions().as_ref().unwrap().version(), 0);
    }

    #[test]
    fn zone_transfer_is_refused() {
        let message = query_message("example.com.", RecordType::AXFR, None);
        let response = respond(parse_client_query(&message.to_vec().unwrap()).unwrap_err());
        assert_eq!(response.response_code(), ResponseCode::Refused);
    }

    #[test]
    fn response_copies_id_question_rd_cd_and_do() {
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        edns.options_mut()
            .insert(EdnsOption::Unknown(10, vec![1, 2, 3, 4, 5, 6, 7, 8]));
        let query = parse(&query_message(
            "MiXeD.Example.COM.",
            RecordType::AAAA,
            Some(edns),
        ));
        let response =
            Message::from_vec(&encode(&response_to(&query, ResponseCode::NoError))).unwrap();
        assert_eq!(response.id(), 0x4242);
        assert!(response.recursion_desired());
        assert!(response.recursion_available());
        assert!(response.checking_disabled());
        assert_eq!(
            response.queries()[0].name().to_ascii(),
            "MiXeD.Example.COM."
        );
        let edns = response.extensions().as_ref().unwrap();
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), EDNS_UDP_SIZE);
        assert!(
            edns.options().as_ref().is_empty(),
            "client options are not echoed"
        );
    }

    #[test]
    fn no_opt_in_response_without_opt_in_query() {
        let query = parse(&query_message("example.com.", RecordType::A, None));
        let mut response = servfail(&query, ExtendedError::NoReachableAuthority, "");
        assert!(response.extensions().is_none());
        add_extended_error(&mut response, ExtendedError::Blocked, "");
        assert!(extended_errors(&response).is_empty());
    }

    #[test]
    fn rfc8914_servfail_carries_ede() {
        let query = parse(&query_message(
            "example.com.",
            RecordType::A,
            Some(Edns::new()),
        ));
        let bytes = encode(&servfail(
            &query,
            ExtendedError::NoReachableAuthority,
            "no upstream",
        ));
        let response = Message::from_vec(&bytes).unwrap();
        assert_eq!(response.response_code(), ResponseCode::ServFail);
        assert_eq!(extended_errors(&response), vec![22]);
    }

    #[test]
    fn rfc7871_upstream_query_strips_client_subnet() {
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                "192.168.1.0".parse().unwrap(),
                24,
                0,
            )));
        let mut message = query_message("example.com.", RecordType::A, Some(edns));
        message.set_authentic_data(true);
        let upstream = upstream_query(&parse(&message));
        let upstream = Message::from_vec(&upstream.to_vec().unwrap()).unwrap();
        let edns = upstream.extensions().as_ref().unwrap();
        assert!(edns.options().as_ref().is_empty());
        assert!(edns.flags().dnssec_ok);
        assert!(upstream.authentic_data());
        assert!(upstream.checking_disabled());
        assert!(upstream.recursion_desired());
    }
}
