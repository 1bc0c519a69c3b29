//! Writing the manifest to a file atomically: a temporary file in the same
//! directory, fsynced, renamed over the target, and the directory fsynced.
//! A reader (the sync) therefore sees the previous manifest or the complete
//! new one, never half of one, even after a crash or kill.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A manifest being written; [`AtomicFile::commit`] publishes it, dropping it
/// without committing removes the temporary file.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(target: &Path) -> io::Result<Self> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "output has no file name")
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp.{}", std::process::id()));
        let temp = dir.join(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temp,
            file: Some(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    /// Flush, fsync, rename over the target, fsync the directory.
    pub fn commit(mut self) -> io::Result<()> {
        let Some(w) = self.file.take() else {
            return Err(io::Error::other("already committed"));
        };
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temp, &self.target)?;
        if let Some(dir) = self.target.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)?.sync_all()?;
        }
        Ok(())
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

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
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
