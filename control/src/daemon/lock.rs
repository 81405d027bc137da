//! One daemon per pin directory: `dnsgate run` holds an exclusive `flock`
//! on the pin directory for its whole life. The kernel drops the lock when
//! the process dies, however it dies, so pins left by a killed daemon are
//! adopted while a live daemon is refused.

use std::{fs::File, os::unix::fs::MetadataExt as _, path::Path};

use nix::fcntl::{Flock, FlockArg};

/// Errors of taking the pin directory lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live daemon holds it.
    #[error(
        "another dnsgate daemon{pid} already runs with --pin-dir {dir}; stop it with `dnsgate stop` \
         (with its --socket) or give this one another --pin-dir and other interfaces",
        pid = pid.map(|pid| format!(" (PID {pid})")).unwrap_or_default(),
        dir = dir.display()
    )]
    Busy {
        dir: std::path::PathBuf,
        pid: Option<u32>,
    },
    /// The directory could not be opened or locked.
    #[error(
        "locking the pin directory {dir} failed: {source}; check that it exists and is a directory"
    )]
    Io {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; released when dropped or when the process exits.
#[derive(Debug)]
pub struct PinLock {
    _lock: Flock<File>,
}

impl PinLock {
    /// Takes the lock on `dir` without waiting.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_owned(),
            source,
        };
        let file = File::open(dir).map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Busy {
                dir: dir.to_owned(),
                pid: holder(dir),
            }),
            Err((_, errno)) => Err(io(std::io::Error::from(errno))),
        }
    }
}

/// Looks up the PID holding a `flock` on `dir` in `/proc/locks`.
fn holder(dir: &Path) -> Option<u32> {
    let metadata = std::fs::metadata(dir).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let device = metadata.dev();
    let wanted = format!(
        "{:02x}:{:02x}:{}",
        nix::sys::stat::major(device),
        nix::sys::stat::minor(device),
        metadata.ino()
    );
    holder_in(&locks, &wanted)
}

/// Finds the PID of a FLOCK entry on `file` (`major:minor:inode`) in the
/// text of `/proc/locks`.
fn holder_in(locks: &str, file: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1d:5678 0 EOF"; blocked
        // waiters carry a "->" field first.
        let fields: Vec<&str> = fields.into_iter().filter(|field| *field != "->").collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&file))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_holder_in_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 00:19:12 0 EOF\n2: FLOCK  ADVISORY  WRITE 4242 00:2a:999 0 EOF\n";
        assert_eq!(holder_in(locks, "00:2a:999"), Some(4242));
        assert_eq!(
            holder_in(locks, "00:19:12"),
            None,
            "POSIX locks are not ours"
        );
        assert_eq!(holder_in(locks, "00:2a:998"), None);
    }

    #[test]
    fn second_lock_on_the_same_directory_is_refused() {
        let dir = std::env::temp_dir().join(format!("dnsgate-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = PinLock::acquire(&dir).unwrap();
        let error = PinLock::acquire(&dir).unwrap_err();
        assert!(
            matches!(error, LockError::Busy { pid: Some(pid), .. } if pid == std::process::id()),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains(&format!("PID {}", std::process::id())),
            "{error}"
        );
        drop(first);
        let again = PinLock::acquire(&dir);
        assert!(again.is_ok(), "the lock is free once dropped");
        drop(again);
        std::fs::remove_dir(&dir).unwrap();
    }
}
