//! Fetching list sources given as URLs.
//!
//! The loader requests from a [`ListFetcher`] a local file with a URL's
//! content. [`HttpFetcher`] downloads over HTTP/1.1: `http://`, and
//! `https://` through rustls with the `ring` provider and the Mozilla root
//! store. It keeps the last good copy in a cache directory and refreshes it
//! with a conditional request (`If-None-Match`, `If-Modified-Since`, RFC
//! 9110 §13.1), so an unchanged list costs one small response (304). When
//! the server cannot be reached, the cached copy is used, so a list server
//! that goes away never empties the rule set.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A list fetched into a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The file holding the list.
    pub path: PathBuf,
    /// When the content last changed, in seconds since the Unix epoch, if
    /// known.
    pub last_update: Option<u64>,
}

/// Error returned when a URL cannot be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No fetcher is configured for URL sources.
    #[error("URL sources need a fetcher; give a local file path or configure list downloads")]
    NotConfigured,
    /// The URL cannot be fetched by this client.
    #[error("invalid list URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// The problem with the URL.
        reason: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("failed to download {url}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server returned a status other than 200, 304 or a redirect.
    #[error("{url} returned HTTP status {status}; check the URL")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The response is not valid HTTP/1.1.
    #[error("malformed HTTP response from {url}: {reason}")]
    Malformed {
        /// The URL.
        url: String,
        /// The problem with the response.
        reason: String,
    },
    /// The list is larger than the configured limit.
    #[error(
        "{url} is larger than {limit} bytes; raise the download limit if the list is meant to be this big"
    )]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// More redirects than allowed.
    #[error("{url} redirects more than {limit} times")]
    TooManyRedirects {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The cache directory cannot be written.
    #[error("failed to write the list cache at {path}: {source}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Turns a URL into a local file.
pub trait ListFetcher {
    /// Fetches `url`, or returns a cached copy.
    fn fetch(&self, url: &str) -> Result<Fetched, FetchError>;
}

/// A fetcher that fetches nothing, for local-only configurations.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFetcher;

impl ListFetcher for NoFetcher {
    fn fetch(&self, _url: &str) -> Result<Fetched, FetchError> {
        Err(FetchError::NotConfigured)
    }
}

/// Redirects followed per download.
pub const MAX_REDIRECTS: usize = 5;

/// Bytes of response headers accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Cache metadata of a URL, stored beside its content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CacheMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    /// When the content last changed (a 200 response), seconds since the
    /// Unix epoch.
    changed_at: u64,
}

/// Downloads lists over HTTP and HTTPS into a cache directory.
#[derive(Clone)]
pub struct HttpFetcher {
    cache_dir: PathBuf,
    timeout: Duration,
    max_bytes: u64,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("cache_dir", &self.cache_dir)
            .field("timeout", &self.timeout)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpFetcher {
    /// Creates a fetcher caching into `cache_dir`, with a 30 s timeout per
    /// network operation, a 64 MiB size limit and the Mozilla root store for HTTPS.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(ring_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            cache_dir: cache_dir.into(),
            timeout: Duration::from_secs(30),
            max_bytes: 64 << 20,
            tls: Arc::new(tls),
        }
    }

    /// Sets the timeout of each connect, read and write.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest list accepted, in bytes.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Uses `config` for HTTPS (another root store, for example).
    pub fn with_tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = config;
        self
    }

    fn cache_paths(&self, url: &str) -> (PathBuf, PathBuf) {
        let id = format!("{:016x}", dnsgate_common::name::label_hash(url.as_bytes()));
        (
            self.cache_dir.join(format!("{id}.list")),
            self.cache_dir.join(format!("{id}.json")),
        )
    }

    fn refresh(
        &self,
        url: &str,
        content: &Path,
        meta_path: &Path,
        cached: Option<&CacheMeta>,
    ) -> Result<Fetched, FetchError> {
        let validators = cached.map(|meta| (meta.etag.as_deref(), meta.last_modified.as_deref()));
        match self.download(url, validators.unwrap_or((None, None)))? {
            Download::NotModified => {
                let changed_at = cached.map(|meta| meta.changed_at);
                tracing::debug!(url, "list not modified since the cached copy");
                Ok(Fetched {
                    path: content.to_owned(),
                    last_update: changed_at,
                })
            }
            Download::Body {
                body,
                etag,
                last_modified,
            } => {
                let changed_at = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |age| age.as_secs());
                let meta = CacheMeta {
                    url: url.to_owned(),
                    etag,
                    last_modified,
                    changed_at,
                };
                write_atomically(content, &body)?;
                let meta_json = serde_json::to_vec(&meta).expect("cache metadata serialises");
                write_atomically(meta_path, &meta_json)?;
                tracing::info!(url, bytes = body.len(), "list downloaded");
                Ok(Fetched {
                    path: content.to_owned(),
                    last_update: Some(changed_at),
                })
            }
        }
    }

    fn download(
        &self,
        url: &str,
        validators: (Option<&str>, Option<&str>),
    ) -> Result<Download, FetchError> {
        let mut current = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let target = Target::parse(&current)?;
            let response = self.exchange(&target, validators)?;
            match response.status {
                200 => {
                    let etag = response.header("etag").map(str::to_owned);
                    let last_modified = response.header("last-modified").map(str::to_owned);
                    return Ok(Download::Body {
                        body: response.body,
                        etag,
                        last_modified,
                    });
                }
                304 => return Ok(Download::NotModified),
                301 | 302 | 303 | 307 | 308 => {
                    let Some(location) = response.header("location") else {
                        return Err(FetchError::Malformed {
                            url: current,
                            reason: "redirect without Location".into(),
                        });
                    };
                    current = target.resolve(location);
                }
                status => {
                    return Err(FetchError::Status {
                        url: current,
                        status,
                    });
                }
            }
        }
        Err(FetchError::TooManyRedirects {
            url: url.to_owned(),
            limit: MAX_REDIRECTS,
        })
    }

    fn exchange(
        &self,
        target: &Target,
        validators: (Option<&str>, Option<&str>),
    ) -> Result<Response, FetchError> {
        let io_error = |source| FetchError::Io {
            url: target.url.clone(),
            source,
        };
        let address = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(io_error)?
            .next()
            .ok_or_else(|| {
                io_error(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the host has no address",
                ))
            })?;
        let stream = TcpStream::connect_timeout(&address, self.timeout).map_err(io_error)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(io_error)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(io_error)?;

        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dnsgate/{}\r\nAccept: */*\r\nConnection: close\r\n",
            target.path,
            target.host_header(),
            env!("CARGO_PKG_VERSION")
        );
        if let Some(etag) = validators.0 {
            request.push_str(&format!("If-None-Match: {etag}\r\n"));
        }
        if let Some(date) = validators.1 {
            request.push_str(&format!("If-Modified-Since: {date}\r\n"));
        }
        request.push_str("\r\n");

        let raw = if target.tls {
            let name =
                rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|_| {
                    FetchError::InvalidUrl {
                        url: target.url.clone(),
                        reason: "the host is not a valid TLS server name".into(),
                    }
                })?;
            let connection = rustls::ClientConnection::new(self.tls.clone(), name)
                .map_err(|error| io_error(std::io::Error::other(error)))?;
            let mut tls = rustls::StreamOwned::new(connection, stream);
            self.send_and_read(&mut tls, &request, target)?
        } else {
            let mut stream = stream;
            self.send_and_read(&mut stream, &request, target)?
        };
        Response::parse(&target.url, raw, self.max_bytes)
    }

    fn send_and_read(
        &self,
        stream: &mut impl ReadWrite,
        request: &str,
        target: &Target,
    ) -> Result<Vec<u8>, FetchError> {
        let io_error = |source| FetchError::Io {
            url: target.url.clone(),
            source,
        };
        stream.write_all(request.as_bytes()).map_err(io_error)?;
        stream.flush().map_err(io_error)?;
        let limit = self.max_bytes + MAX_HEADER_BYTES as u64;
        let mut raw = Vec::new();
        let read = stream.take(limit + 1).read_to_end(&mut raw);
        match read {
            Ok(_) => {}
            // Servers that close TLS without close_notify still sent the
            // whole body when it is framed; the parser checks the framing.
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(error) => return Err(io_error(error)),
        }
        if raw.len() as u64 > limit {
            return Err(FetchError::TooLarge {
                url: target.url.clone(),
                limit: self.max_bytes,
            });
        }
        Ok(raw)
    }
}

#[expect(
    deprecated,
    reason = "dnsgate uses the ring provider on every platform; rustls deprecates it only for lacking post-quantum key exchange"
)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl ListFetcher for HttpFetcher {
    fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        std::fs::create_dir_all(&self.cache_dir).map_err(|source| FetchError::Cache {
            path: self.cache_dir.clone(),
            source,
        })?;
        let (content, meta_path) = self.cache_paths(url);
        let cached: Option<CacheMeta> = std::fs::read(&meta_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(|meta: &CacheMeta| meta.url == url && content.is_file());
        match self.refresh(url, &content, &meta_path, cached.as_ref()) {
            Ok(fetched) => Ok(fetched),
            Err(error) => match cached {
                Some(meta) => {
                    tracing::warn!(url, %error, "list download failed; using the cached copy");
                    Ok(Fetched {
                        path: content,
                        last_update: Some(meta.changed_at),
                    })
                }
                None => Err(error),
            },
        }
    }
}

enum Download {
    NotModified,
    Body {
        body: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// The parts of a URL a request needs.
struct Target {
    url: String,
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, FetchError> {
        let invalid = |reason: &str| FetchError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("only http:// and https:// are supported")),
        };
        let host = uri.host().ok_or_else(|| invalid("the URL has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |path| path.as_str().to_owned());
        Ok(Self {
            url: url.to_owned(),
            tls,
            host,
            port,
            path,
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }

    /// Resolves a `Location` header against this target.
    fn resolve(&self, location: &str) -> String {
        if location.contains("://") {
            return location.to_owned();
        }
        let scheme = if self.tls { "https" } else { "http" };
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let base = self.path.rsplit_once('/').map_or("", |(base, _)| base);
            format!("{base}/{location}")
        };
        format!("{scheme}://{}{path}", self.host_header())
    }
}

/// A parsed HTTP/1.1 response.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn parse(url: &str, raw: Vec<u8>, max_bytes: u64) -> Result<Self, FetchError> {
        let malformed = |reason: &str| FetchError::Malformed {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let end = raw
            .windows(4)
            .take(MAX_HEADER_BYTES)
            .position(|window| window == b"\r\n\r\n")
            .ok_or_else(|| malformed("the header does not end"))?;
        let head =
            std::str::from_utf8(&raw[..end]).map_err(|_| malformed("the header is not text"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.split(' ');
        if !parts
            .next()
            .is_some_and(|version| version.starts_with("HTTP/1."))
        {
            return Err(malformed("not an HTTP/1.x status line"));
        }
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| malformed("no status code"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect();
        let mut response = Self {
            status,
            headers,
            body: Vec::new(),
        };
        let body = &raw[end + 4..];
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|value| value.eq_ignore_ascii_case("chunked"));
        response.body = if chunked {
            decode_chunked(body).ok_or_else(|| malformed("invalid chunked body"))?
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| malformed("invalid Content-Length"))?;
            if body.len() < length {
                return Err(malformed("the body is shorter than Content-Length"));
            }
            body[..length].to_vec()
        } else {
            body.to_vec()
        };
        if response.body.len() as u64 > max_bytes {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
                limit: max_bytes,
            });
        }
        Ok(response)
    }
}

/// Decodes a chunked body (RFC 9112 §7.1); `None` when it is cut short or
/// malformed.
fn decode_chunked(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line_end = body.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 || &body[size..size + 2] != b"\r\n" {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees a half-written list.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let cache_error = |source| FetchError::Cache {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).map_err(cache_error)?;
    std::fs::rename(&temporary, path).map_err(cache_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_decoding() {
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert_eq!(decode_chunked(b"5\r\nabc"), None);
    }

    #[test]
    fn targets_and_redirects() {
        let target = Target::parse("http://127.0.0.1:8080/lists/a.txt?x=1").unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.path.as_str()),
            ("127.0.0.1", 8080, "/lists/a.txt?x=1")
        );
        assert_eq!(target.resolve("/b.txt"), "http://127.0.0.1:8080/b.txt");
        assert_eq!(target.resolve("c.txt"), "http://127.0.0.1:8080/lists/c.txt");
        assert!(Target::parse("ftp://example.com/list").is_err());
    }

    #[test]
    fn response_with_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nETag: \"v1\"\r\n\r\nabcdef".to_vec();
        let response = Response::parse("u", raw, 100).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"abc");
        assert_eq!(response.header("etag"), Some("\"v1\""));
        let raw = b"HTTP/1.1 200 OK\r\n\r\n0123456789".to_vec();
        assert!(matches!(
            Response::parse("u", raw, 5),
            Err(FetchError::TooLarge { .. })
        ));
    }
}
