//! One run per state dir: an exclusive, non-blocking lock on
//! `<state-dir>/lock`, held for the run's life and released by the kernel
//! when the process dies (even by SIGKILL). The file holds the owner's pid,
//! for messages and for `--status`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct Lock {
    file: File,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Unlock explicitly: a child process forked meanwhile (the fd is
        // close-on-exec, but only at exec) shares the open file description,
        // and closing our descriptor alone would leave the lock held.
        let _ = self.file.unlock();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another elysiactl run holds the state dir {} (pid {pid}); this run exits without touching it", dir.display())]
    Held { dir: PathBuf, pid: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

pub fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lock")
}

/// Take the state dir's lock, or fail at once if another process has it.
pub fn acquire(state_dir: &Path) -> Result<Lock, LockError> {
    let path = lock_path(state_dir);
    let io_err = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(LockError::Held {
                dir: state_dir.to_owned(),
                pid: pid.trim().to_owned(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_err(e)),
    }
    file.set_len(0).map_err(io_err)?;
    file.rewind().map_err(io_err)?;
    write!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(Lock { file })
}

/// The pid of a live process holding the lock, if any (without taking it).
pub fn holder(state_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(lock_path(state_dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    (alive && pid != std::process::id()).then_some(pid)
}
