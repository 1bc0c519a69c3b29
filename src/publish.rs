//! Publishing a file atomically in a directory other users may write (the
//! manifest of `changes --output`, the metrics textfile): a temporary file
//! created exclusively next to the target, written, fsynced, renamed over the
//! target, and the directory fsynced. A reader sees the old file or the whole
//! new one.
//!
//! Invariants:
//! - the temporary file is created with `O_CREAT | O_EXCL` under a name with
//!   a random part (`.<name>.<pid>.<random>.tmp`), so a symlink or file
//!   planted at any name, predictable or not, is never opened, let alone
//!   written through: creation picks another name;
//! - what a killed run leaves behind is removed by a later one
//!   ([`Pending::clean_leftovers`]), but only files that are certainly ours and dead:
//!   one of our temporary names for that target, a regular file (never a
//!   symlink), owned by our user, last written before the current run
//!   started, by a process that is no longer running.

use std::ffi::OsStr;
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tempfile::NamedTempFile;

/// Random characters in a temporary name.
const RANDOM_LEN: usize = 8;

/// The mode a published file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Created with this mode less the process umask (as a shell redirect).
    Umask(u32),
    /// Exactly this mode, whatever the umask.
    Exact(u32),
}

/// A file being written; [`Pending::commit`] publishes it, dropping it
/// removes the temporary file.
#[derive(Debug)]
pub struct Pending {
    temp: NamedTempFile,
    target: PathBuf,
}

/// The directory a target lives in (`.` for a bare name) and its file name.
fn split(target: &Path) -> io::Result<(PathBuf, &OsStr)> {
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

impl Pending {
    /// A new exclusive temporary file next to `target`.
    pub fn create(target: &Path, mode: Mode) -> io::Result<Self> {
        Self::create_with(target, mode, RANDOM_LEN)
    }

    fn create_with(target: &Path, mode: Mode, random_len: usize) -> io::Result<Self> {
        let (dir, name) = split(target)?;
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(format!(".{}.", std::process::id()));
        let create_mode = match mode {
            Mode::Umask(m) => m,
            // Created private, then opened up: never wider than asked.
            Mode::Exact(_) => 0o600,
        };
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .rand_bytes(random_len)
            .permissions(Permissions::from_mode(create_mode))
            .tempfile_in(&dir)?;
        if let Mode::Exact(m) = mode {
            temp.as_file().set_permissions(Permissions::from_mode(m))?;
        }
        Ok(Pending {
            temp,
            target: target.to_path_buf(),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// The temporary file's path (for tests and messages).
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// Remove our dead temporary files for the same target left by runs that
    /// started before `run_started` (see the module doc for what counts as
    /// ours and dead); "our user" is the owner of this file. Returns how many
    /// were removed; failing to list or remove is not an error of the run.
    pub fn clean_leftovers(&self, run_started: SystemTime) -> usize {
        let Ok(uid) = self.temp.as_file().metadata().map(|m| m.uid()) else {
            return 0;
        };
        clean(&self.target, uid, run_started)
    }

    /// Fsync, rename over the target, fsync the directory.
    pub fn commit(self) -> io::Result<()> {
        self.temp.as_file().sync_all()?;
        let (dir, _) = split(&self.target)?;
        self.temp.persist(&self.target).map_err(|e| e.error)?;
        File::open(dir)?.sync_all()
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

/// The pid in `file`'s name when it is one of our temporary names for the
/// target named `target`: `.<target>.<pid>.<random>.tmp`, and the names
/// earlier versions used, `.<target>.<pid>.tmp` and `.<target>.tmp.<pid>`.
pub fn leftover_pid(file: &str, target: &str) -> Option<u32> {
    let rest = file
        .strip_prefix('.')?
        .strip_prefix(target)?
        .strip_prefix('.')?;
    let digits = |s: &str| {
        (!s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    if let Some(pid) = rest.strip_prefix("tmp.") {
        return digits(pid);
    }
    let inner = rest.strip_suffix(".tmp")?;
    match inner.split_once('.') {
        None => digits(inner),
        Some((pid, random))
            if random.len() == RANDOM_LEN && random.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            digits(pid)
        }
        Some(_) => None,
    }
}

/// Whether process `pid` may still be writing its file: it is us, or
/// `/proc` says it exists (without `/proc`, only the age rule protects).
fn may_be_running(pid: u32) -> bool {
    pid == std::process::id()
        || (Path::new("/proc/self").exists() && Path::new("/proc").join(pid.to_string()).exists())
}

fn clean(target: &Path, uid: u32, run_started: SystemTime) -> usize {
    let Ok((dir, name)) = split(target) else {
        return 0;
    };
    let Some(name) = name.to_str() else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file) = file_name.to_str() else {
            continue;
        };
        let Some(pid) = leftover_pid(file, name) else {
            continue;
        };
        let path = entry.path();
        // lstat: a symlink is never ours to remove, whatever it points at.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let old = meta.modified().is_ok_and(|m| m < run_started);
        if meta.file_type().is_file()
            && meta.uid() == uid
            && old
            && !may_be_running(pid)
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn our_temp_names_old_and_new_are_recognised_and_nothing_else() {
        let t = "m.jsonl";
        assert_eq!(leftover_pid(".m.jsonl.123.AbC45xyZ.tmp", t), Some(123));
        assert_eq!(leftover_pid(".m.jsonl.123.tmp", t), Some(123));
        assert_eq!(leftover_pid(".m.jsonl.tmp.123", t), Some(123));
        for other in [
            "m.jsonl",
            ".m.jsonl.tmp",
            ".m.jsonl.x.tmp",
            ".m.jsonl.123.short.tmp",
            ".m.jsonl.123.AbC45xyZ.tmp.bak",
            ".other.123.tmp",
            ".m.jsonl.tmp.12a",
            ".m.jsonlx.123.tmp",
        ] {
            assert_eq!(leftover_pid(other, t), None, "{other}");
        }
    }

    #[test]
    fn a_symlink_at_the_only_candidate_name_is_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = d.path().join("out");
        // With no random part the name is fully predictable: plant it.
        let name = format!(".out.{}..tmp", std::process::id());
        std::os::unix::fs::symlink(&victim, d.path().join(&name)).unwrap();
        let e = Pending::create_with(&target, Mode::Umask(0o666), 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn commit_publishes_with_the_mode_asked_and_drop_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("m.prom");
        let mut p = Pending::create(&target, Mode::Exact(0o644)).unwrap();
        p.write_all(b"x 1\n").unwrap();
        p.commit().unwrap();
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let p = Pending::create(&target, Mode::Exact(0o644)).unwrap();
        let temp = p.temp_path().to_path_buf();
        assert!(temp.exists());
        drop(p);
        assert!(!temp.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn only_dead_old_regular_leftovers_of_ours_are_cleaned() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("m.jsonl");
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let plant = |name: &str| {
            let p = d.path().join(name);
            let f = File::create(&p).unwrap();
            f.set_modified(hour_ago).unwrap();
            p
        };
        // pid_max is at most 2^22: these writers cannot be running.
        let dead = [
            plant(".m.jsonl.99999999.AbC45xyZ.tmp"),
            plant(".m.jsonl.99999999.tmp"),
            plant(".m.jsonl.tmp.99999999"),
        ];
        let live = plant(&format!(".m.jsonl.{}.tmp", std::process::id()));
        let unrelated = plant(".n.jsonl.99999999.tmp");
        // Another user's (only root can make one): not ours to remove.
        let foreign = plant(".m.jsonl.99999996.tmp");
        let chowned = std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).is_ok();
        if !chowned {
            std::fs::remove_file(&foreign).unwrap();
        }
        let victim = plant("victim");
        let link = d.path().join(".m.jsonl.tmp.99999998");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        // Written after the run started: not a leftover of an earlier run.
        let fresh = d.path().join(".m.jsonl.99999997.tmp");
        File::create(&fresh).unwrap();

        let started = SystemTime::now() - Duration::from_secs(60);
        let ours = Pending::create(&target, Mode::Umask(0o666)).unwrap();
        assert_eq!(ours.clean_leftovers(started), 3);
        assert!(ours.temp_path().exists());
        for p in &dead {
            assert!(!p.exists(), "{}", p.display());
        }
        for p in [&live, &unrelated, &victim, &fresh] {
            assert!(p.exists(), "{}", p.display());
        }
        assert!(link.symlink_metadata().is_ok(), "the symlink is not ours");
        assert_eq!(foreign.exists(), chowned);
    }
}
