//! DNS over HTTPS (RFC 8484) over HTTP/2: `GET` with the query in the `dns`
//! parameter as base64url (section 4.1), `POST` with an
//! `application/dns-message` body, and a `cache-control: max-age` taken from
//! the smallest TTL of the response (section 5.1).
//!
//! Requests outside the DoH path get 404, other methods 405, `POST` bodies
//! of another media type 415, oversized queries 413, and anything that is
//! not a DNS query 400. When the resolver drops a query, the stream is reset
//! with CANCEL, the HTTP/2 counterpart of sending nothing.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Transport;
use super::context::{Context, Peer, finish_response};
use super::stats::Counter;
use super::wire;

/// Media type of DNS messages in DoH (RFC 8484 section 6).
pub const DNS_MESSAGE: &str = "application/dns-message";

/// Largest HTTP/2 header block accepted from a client, in bytes.
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// base64url as RFC 8484 section 4.1 uses it: no padding is sent, and
/// decoding accepts it with or without.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A request that gets an HTTP error instead of a DNS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

impl Rejection {
    const fn new(status: StatusCode, reason: &'static str) -> Self {
        Self { status, reason }
    }
}

/// Serves one TLS connection as an HTTP/2 server until it closes, goes idle
/// or the listeners shut down.
pub(super) async fn serve<S>(io: S, peer: Peer, context: Context)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &context.config.limits;
    let idle_timeout = limits.encrypted_idle_timeout();
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .handshake::<_, Bytes>(io);
    let mut connection = match tokio::time::timeout(limits.handshake_timeout(), handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%error, "HTTP/2 handshake failed");
            context
                .counters(Transport::Https)
                .add(Counter::HandshakeFailures);
            return;
        }
        Err(_) => {
            tracing::debug!("HTTP/2 handshake timed out");
            context
                .counters(Transport::Https)
                .add(Counter::HandshakeFailures);
            return;
        }
    };

    let mut shutdown = context.shutdown.clone();
    let mut streams = JoinSet::new();
    let mut idle_deadline = Instant::now() + idle_timeout;
    // Set once GOAWAY is sent; the connection then gets one more idle period
    // to finish open streams before it is dropped.
    let mut closing = false;

    loop {
        tokio::select! {
            () = shutdown.requested(), if !closing => {
                connection.graceful_shutdown();
                closing = true;
                idle_deadline = Instant::now() + idle_timeout;
            }
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    idle_deadline = Instant::now() + idle_timeout;
                    streams.spawn(serve_request(request, respond, peer, context.clone()));
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "HTTP/2 connection failed");
                    break;
                }
                None => break,
            },
            Some(_) = streams.join_next() => idle_deadline = Instant::now() + idle_timeout,
            () = tokio::time::sleep_until(idle_deadline), if streams.is_empty() || closing => {
                if closing {
                    break;
                }
                tracing::debug!(timeout = ?idle_timeout, "closing idle HTTP/2 connection");
                connection.graceful_shutdown();
                closing = true;
                idle_deadline = Instant::now() + idle_timeout;
            }
        }
    }
    streams.abort_all();
}

async fn serve_request(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: Peer,
    context: Context,
) {
    let counters = context.counters(Transport::Https);
    let query = match read_query(request, &context).await {
        Ok(query) => query,
        Err(rejection) => {
            tracing::debug!(status = %rejection.status, reason = rejection.reason, "DoH request rejected");
            counters.add(Counter::Malformed);
            send_rejection(&mut respond, &rejection);
            return;
        }
    };

    let Some(response) = context.resolve(peer, query.clone()).await else {
        respond.send_reset(h2::Reason::CANCEL);
        return;
    };
    let response = finish_response(&context.config, Transport::Https, &query, response);
    let max_age = wire::min_ttl(&response).ok().flatten().unwrap_or(0);

    let head = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, DNS_MESSAGE)
        .header(header::CONTENT_LENGTH, response.len())
        .header(header::CACHE_CONTROL, format!("max-age={max_age}"))
        .body(());
    let sent = match head {
        Ok(head) => respond
            .send_response(head, false)
            .and_then(|mut body| body.send_data(Bytes::from(response), true)),
        Err(error) => {
            tracing::warn!(%error, "DoH response head not built");
            return;
        }
    };
    match sent {
        Ok(()) => counters.add(Counter::Responses),
        Err(error) => tracing::debug!(%error, "DoH response not sent"),
    }
}

/// Extracts the DNS query from a GET or POST request (RFC 8484 section 4.1).
async fn read_query(request: Request<RecvStream>, context: &Context) -> Result<Vec<u8>, Rejection> {
    let config = &context.config;
    if request.uri().path() != config.doh_path {
        return Err(Rejection::new(StatusCode::NOT_FOUND, "not the DoH path"));
    }
    let max = config.limits.max_query_size;
    let query = match *request.method() {
        Method::GET => query_from_uri(request.uri().query(), max)?,
        Method::POST => {
            check_content_type(request.headers().get(header::CONTENT_TYPE))?;
            let body = request.into_body();
            match tokio::time::timeout(config.limits.query_timeout(), read_body(body, max)).await {
                Ok(body) => body?,
                Err(_) => {
                    return Err(Rejection::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request body not received in time",
                    ));
                }
            }
        }
        _ => {
            return Err(Rejection::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and POST are served",
            ));
        }
    };
    wire::check_query_header(&query)
        .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "not a DNS query"))?;
    Ok(query)
}

/// Decodes the `dns` parameter of a GET request.
pub(crate) fn query_from_uri(query: Option<&str>, max: usize) -> Result<Vec<u8>, Rejection> {
    let encoded = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("dns="))
        .ok_or(Rejection::new(
            StatusCode::BAD_REQUEST,
            "missing dns parameter",
        ))?;
    // Four base64 characters carry three bytes.
    if encoded.len() / 4 * 3 > max {
        return Err(Rejection::new(
            StatusCode::URI_TOO_LONG,
            "dns parameter exceeds the query size limit",
        ));
    }
    BASE64URL
        .decode(encoded)
        .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "dns parameter is not base64url"))
}

/// Accepts `application/dns-message`, with or without parameters, in any
/// letter case (media types are case-insensitive, RFC 9110 section 8.3.1).
pub(crate) fn check_content_type(value: Option<&http::HeaderValue>) -> Result<(), Rejection> {
    let unsupported = Rejection::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "content type is not application/dns-message",
    );
    let value = value
        .and_then(|value| value.to_str().ok())
        .ok_or(unsupported.clone())?;
    let media_type = value.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case(DNS_MESSAGE) {
        Ok(())
    } else {
        Err(unsupported)
    }
}

async fn read_body(mut body: RecvStream, max: usize) -> Result<Vec<u8>, Rejection> {
    let mut query = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk
            .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "request body broken off"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if query.len() + chunk.len() > max {
            return Err(Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body exceeds the query size limit",
            ));
        }
        query.extend_from_slice(&chunk);
    }
    Ok(query)
}

fn send_rejection(respond: &mut SendResponse<Bytes>, rejection: &Rejection) {
    let mut head = Response::builder()
        .status(rejection.status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, rejection.reason.len() + 1);
    if rejection.status == StatusCode::METHOD_NOT_ALLOWED {
        head = head.header(header::ALLOW, "GET, POST");
    }
    let Ok(head) = head.body(()) else { return };
    let body = Bytes::from(format!("{}\n", rejection.reason));
    if let Err(error) = respond
        .send_response(head, false)
        .and_then(|mut stream| stream.send_data(body, true))
    {
        tracing::debug!(%error, "DoH error response not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_parameter_rfc8484_section_4_1_decodes_base64url() {
        let query = [0xAB, 0xCD, 0x01, 0x00, 0xFF, 0xFE];
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(query);
        let uri_query = format!("ct=x&dns={encoded}");
        assert_eq!(query_from_uri(Some(&uri_query), 100), Ok(query.to_vec()));

        let padded = base64::engine::general_purpose::URL_SAFE.encode([1, 2, 3, 4]);
        assert_eq!(
            query_from_uri(Some(&format!("dns={padded}")), 100),
            Ok(vec![1, 2, 3, 4])
        );
    }

    #[test]
    fn get_parameter_errors_map_to_status() {
        let status = |query: Option<&str>| query_from_uri(query, 16).unwrap_err().status;
        assert_eq!(status(None), StatusCode::BAD_REQUEST);
        assert_eq!(status(Some("name=x")), StatusCode::BAD_REQUEST);
        assert_eq!(status(Some("dns=***")), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(Some(&format!("dns={}", "A".repeat(40)))),
            StatusCode::URI_TOO_LONG
        );
    }

    #[test]
    fn content_type_rfc8484_section_6() {
        let value = |text: &'static str| http::HeaderValue::from_static(text);
        assert!(check_content_type(Some(&value("application/dns-message"))).is_ok());
        assert!(check_content_type(Some(&value("Application/DNS-Message; charset=x"))).is_ok());
        let rejected = check_content_type(Some(&value("application/json"))).unwrap_err();
        assert_eq!(rejected.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(check_content_type(None).is_err());
    }
}
