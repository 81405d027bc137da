//! The client side of the admin socket, blocking, for the CLI.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::{AdminError, Request, Response, MAX_LINE_BYTES};
use crate::querylog::QueryEntry;

/// Maximum wait for the daemon's response to one request. Reloads compile
/// every list, which takes seconds for millions of rules on a router CPU.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

fn connect(socket: &Path) -> Result<UnixStream, AdminError> {
    UnixStream::connect(socket).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            AdminError::NotRunning { path: socket.to_owned() }
        }
        std::io::ErrorKind::PermissionDenied => AdminError::PermissionDenied { path: socket.to_owned() },
        _ => AdminError::Io { path: socket.to_owned(), source },
    })
}

fn send(stream: &mut UnixStream, socket: &Path, request: &Request) -> Result<(), AdminError> {
    let mut line = serde_json::to_vec(request).expect("requests always serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(|source| AdminError::Io { path: socket.to_owned(), source })
}

fn read_line(reader: &mut BufReader<UnixStream>, socket: &Path) -> Result<Option<String>, AdminError> {
    let mut line = String::new();
    let count = std::io::Read::take(reader, MAX_LINE_BYTES as u64)
        .read_line(&mut line)
        .map_err(|source| AdminError::Io { path: socket.to_owned(), source })?;
    Ok((count > 0).then_some(line))
}

fn parse_response(line: Option<String>, socket: &Path) -> Result<serde_json::Value, AdminError> {
    let protocol = |reason: String| AdminError::Protocol { path: socket.to_owned(), reason };
    let line = line.ok_or_else(|| protocol("the connection closed before a response".into()))?;
    let response: Response = serde_json::from_str(&line).map_err(|error| protocol(error.to_string()))?;
    match (response.ok, response.error) {
        (_, Some(message)) => Err(AdminError::Daemon(message)),
        (Some(value), None) => Ok(value),
        (None, None) => Err(protocol("neither ok nor error is set".into())),
    }
}

/// Sends `request` to the daemon on `socket` and returns its result.
pub fn call(socket: &Path, request: &Request) -> Result<serde_json::Value, AdminError> {
    let mut stream = connect(socket)?;
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(|source| AdminError::Io { path: socket.to_owned(), source })?;
    send(&mut stream, socket, request)?;
    let mut reader = BufReader::new(stream);
    parse_response(read_line(&mut reader, socket)?, socket)
}

/// Sends a `log` request with `follow` set, passes the recent entries and
/// then every new one to `each`, and returns when the daemon closes the
/// connection or `each` returns false.
pub fn follow_log(
    socket: &Path,
    limit: usize,
    mut each: impl FnMut(&QueryEntry) -> bool,
) -> Result<(), AdminError> {
    let mut stream = connect(socket)?;
    send(&mut stream, socket, &Request::Log { limit, follow: true })?;
    let mut reader = BufReader::new(stream);
    let recent = parse_response(read_line(&mut reader, socket)?, socket)?;
    let recent: Vec<QueryEntry> = serde_json::from_value(recent)
        .map_err(|error| AdminError::Protocol { path: socket.to_owned(), reason: error.to_string() })?;
    for entry in &recent {
        if !each(entry) {
            return Ok(());
        }
    }
    while let Some(line) = read_line(&mut reader, socket)? {
        let entry: QueryEntry = serde_json::from_str(&line)
            .map_err(|error| AdminError::Protocol { path: socket.to_owned(), reason: error.to_string() })?;
        if !each(&entry) {
            break;
        }
    }
    Ok(())
}
