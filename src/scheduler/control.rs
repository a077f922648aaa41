//! How CLI commands reach a running scheduler: the daemon lock (one scheduler per state
//! directory) and a wake-up socket (so `trigger`, `pause` and `unpause` take effect at once
//! instead of at the next poll). Everything the daemon acts on is in the state database; the
//! socket only says "look now".

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::sys::FileLock;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error(
        "another windsock scheduler (pid {pid}) is already running on {home}; stop it first, or use another --home"
    )]
    Held { pid: String, home: String },
    #[error("cannot create the scheduler lock {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the daemon's lifetime; the kernel releases it when the process dies, even by SIGKILL.
pub(crate) struct DaemonLock {
    _lock: FileLock,
}

fn lock_path(home: &Path) -> PathBuf {
    home.join("scheduler.lock")
}

pub(crate) fn socket_path(home: &Path) -> PathBuf {
    home.join("scheduler.sock")
}

/// Takes the state directory's scheduler lock, or says who holds it.
pub(crate) fn acquire(home: &Path) -> Result<DaemonLock, LockError> {
    let path = lock_path(home);
    let io = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut lock = match FileLock::try_acquire(&path).map_err(io)? {
        Ok(lock) => lock,
        Err(pid) => {
            return Err(LockError::Held {
                pid,
                home: home.display().to_string(),
            });
        }
    };
    lock.set_note(&std::process::id().to_string()).map_err(io)?;
    Ok(DaemonLock { _lock: lock })
}

/// The pid of the scheduler running on `home`, if one is.
pub(crate) fn running(home: &Path) -> Option<String> {
    FileLock::holder(&lock_path(home))
}

/// Tells a running scheduler to look at the database now. Silently does nothing without one.
pub(crate) fn wake(home: &Path) {
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket_path(home)) {
        let _ = s.write_all(b"w");
    }
}

/// The daemon's end of the wake-up socket. `None` when it cannot be bound (a path too long for
/// a Unix socket, say); the daemon then relies on its poll.
pub(crate) fn listen(home: &Path) -> Option<tokio::net::UnixListener> {
    let path = socket_path(home);
    // Holding the lock makes any existing socket file a leftover of a dead daemon.
    let _ = std::fs::remove_file(&path);
    match tokio::net::UnixListener::bind(&path) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot open the wake-up socket ({e}); commands take effect at the next poll");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let lock = acquire(dir.path()).unwrap();
        assert_eq!(running(dir.path()), Some(std::process::id().to_string()));
        let e = acquire(dir.path()).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("(pid {})", std::process::id())),
            "{e}"
        );
        drop(lock);
        assert_eq!(running(dir.path()), None);
        assert!(acquire(dir.path()).is_ok());
    }
}
