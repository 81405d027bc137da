//! The daemon side of the admin socket.

use std::{
    future::Future,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast,
};
use tracing::{debug, info, warn};

use super::{Request, Response, MAX_LINE_BYTES};

/// Time a client has to send its request line after connecting.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
use crate::querylog::QueryEntry;

/// The daemon's handler of admin requests.
pub trait Handler: Send + Sync + 'static {
    /// Carries out `request`.
    fn handle(&self, request: Request) -> Pin<Box<dyn Future<Output = Response> + Send + '_>>;

    /// Subscribes to new query-log entries, for `log --follow`.
    fn follow_log(&self) -> broadcast::Receiver<QueryEntry>;
}

/// The bound admin socket. Dropping it removes the socket file.
#[derive(Debug)]
pub struct AdminServer {
    listener: UnixListener,
    path: PathBuf,
}

/// Errors binding the admin socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another daemon listens on the socket.
    #[error("another dnsgate daemon already listens on {path}; stop it first or pass a different --socket")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Creating the directory or socket failed.
    #[error("creating the admin socket {path} failed: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl AdminServer {
    /// Binds `path` with mode 0600, replacing a stale socket left by a daemon
    /// that did not exit cleanly, but never one a live daemon listens on.
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        let io = |source| BindError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse { path: path.to_owned() });
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        // The socket is created with the process umask. It is bound inside a
        // private directory and moved into place only after its mode is
        // 0600, so no other user can connect even for a moment.
        let private = path.with_file_name(format!(".dnsgate-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(io)?;
        let staged = private.join("socket");
        let bound = UnixListener::bind(&staged)
            .and_then(|listener| {
                std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
                std::fs::rename(&staged, path)?;
                Ok(listener)
            });
        let _ = std::fs::remove_dir_all(&private);
        let listener = bound.map_err(io)?;
        info!(path = %path.display(), "admin socket listening");
        Ok(Self { listener, path: path.to_owned() })
    }

    /// Returns the socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections and serves them with `handler` until the task is
    /// dropped.
    pub async fn serve(&self, handler: Arc<dyn Handler>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        if let Err(error) = serve_connection(stream, handler).await {
                            debug!(%error, "admin connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "accepting an admin connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn write_line(stream: &mut (impl tokio::io::AsyncWrite + Unpin), value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn serve_connection(stream: UnixStream, handler: Arc<dyn Handler>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_LINE_BYTES as u64));
    let mut line = String::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request received in time"))??;
    if read == 0 {
        return Ok(());
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(error) => {
            return write_line(&mut write, &Response::error(format!("invalid request: {error}"))).await;
        }
    };
    debug!(?request, "admin request");
    let follow = matches!(request, Request::Log { follow: true, .. });
    // Subscribe before reading the recent entries, so none falls between.
    let mut entries = follow.then(|| handler.follow_log());
    let response = handler.handle(request).await;
    write_line(&mut write, &response).await?;
    let Some(entries) = entries.as_mut() else {
        return Ok(());
    };
    loop {
        match entries.recv().await {
            Ok(entry) => write_line(&mut write, &entry).await?,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                debug!(missed, "a log follower fell behind");
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}
