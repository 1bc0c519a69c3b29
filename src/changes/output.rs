//! Writing the manifest to a file atomically ([`crate::publish`]): an
//! exclusive temporary file in the same directory (a symlink planted at any
//! temporary name is never written through), fsynced, renamed over the
//! target, and the directory fsynced. A reader (the sync) therefore sees the
//! previous manifest or the complete new one, never half of one, even after
//! a crash or kill; what a killed run left behind is cleaned by the next.
//! The file gets mode 0666 less the umask, as a shell redirect would.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::SystemTime;

use crate::publish::{Mode, Pending};

/// A manifest being written; [`AtomicFile::commit`] publishes it, dropping it
/// without committing removes the temporary file.
pub struct AtomicFile {
    file: Option<BufWriter<Pending>>,
}

impl AtomicFile {
    pub fn create(target: &Path) -> io::Result<Self> {
        let started = SystemTime::now();
        let pending = Pending::create(target, Mode::Umask(0o666))?;
        pending.clean_leftovers(started);
        Ok(AtomicFile {
            file: Some(BufWriter::with_capacity(1 << 16, pending)),
        })
    }

    /// Flush, fsync, rename over the target, fsync the directory.
    pub fn commit(mut self) -> io::Result<()> {
        let Some(w) = self.file.take() else {
            return Err(io::Error::other("already committed"));
        };
        w.into_inner().map_err(|e| e.into_error())?.commit()
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_output_never_replaces_the_previous_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("m.jsonl");
        std::fs::write(&target, "old\n").expect("write");
        {
            let mut f = AtomicFile::create(&target).expect("create");
            f.write_all(b"half").expect("write");
        }
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "old\n");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);

        let mut f = AtomicFile::create(&target).expect("create");
        f.write_all(b"new\n").expect("write");
        f.commit().expect("commit");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "new\n");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
