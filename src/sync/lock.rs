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
///
/// The pid in the file is only a claim: the process must exist, not be a
/// zombie, and, where the kernel lists its locks (`/proc/locks`), a lock
/// must be held on this very file. So a dead or hung-then-killed holder is
/// not reported as running.
pub fn holder(state_dir: &Path) -> Option<u32> {
    let path = lock_path(state_dir);
    let pid: u32 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
    if pid == std::process::id() || pid == 0 {
        return None;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return None;
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next());
        if matches!(state, Some('Z') | Some('X')) {
            return None;
        }
    }
    match std::fs::read_to_string("/proc/locks") {
        Ok(locks) => {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&path).ok()?;
            is_locked_in(&locks, meta.dev(), meta.ino()).then_some(pid)
        }
        Err(_) => Some(pid),
    }
}

/// Whether `/proc/locks` text lists a lock on the file `(dev, ino)`.
fn is_locked_in(locks: &str, dev: u64, ino: u64) -> bool {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    locks.lines().any(|l| {
        // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (a blocked
        // waiter's line starts "1: -> FLOCK …" and holds nothing).
        if l.contains("->") {
            return false;
        }
        l.split_whitespace().any(|f| {
            let mut parts = f.split(':');
            let (Some(a), Some(b), Some(c), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            u32::from_str_radix(a, 16).ok() == Some(major)
                && u32::from_str_radix(b, 16).ok() == Some(minor)
                && c.parse::<u64>().ok() == Some(ino)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_a_released_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let lock = acquire(dir.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(lock_path(dir.path())).unwrap();
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        if !locks.is_empty() {
            assert!(is_locked_in(&locks, meta.dev(), meta.ino()));
        }
        drop(lock);
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        assert!(!is_locked_in(&locks, meta.dev(), meta.ino()));
        // A pid that claims the lock but holds nothing is not a holder.
        std::fs::write(lock_path(dir.path()), "1").unwrap();
        if !std::fs::read_to_string("/proc/locks")
            .unwrap_or_default()
            .is_empty()
        {
            assert_eq!(holder(dir.path()), None);
        }
    }
}
