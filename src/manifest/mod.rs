//! The change manifest: bytes → changes.
//!
//! The file is memory-mapped read-only (with sequential read-ahead advice)
//! and split into lines with memchr; [`line::LineParser`] turns each line
//! into a [`line::Change`]. Positions are byte offsets (what resume uses)
//! plus 1-based line numbers (what people read).

pub mod line;
pub mod mgit;
pub mod sigbus;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap};
use sha2::{Digest, Sha256};

use crate::util::{create_private_dir, hex};
use crate::wal::ManifestId;

pub use line::{Change, Changeset, FileChange, LineError, LineParser, Op};

/// How much of each end of the file the fingerprint covers.
pub const FINGERPRINT_EDGE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read manifest {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("manifest {} changed while being read (was {was} bytes, now {now}, or rewritten in place); stopped before applying anything read after the change — state is saved. Restore the file to resume it, or rerun with --abandon-pending to drop its remaining lines; write manifests to a new file and rename it over the old one", path.display())]
    Changed { path: PathBuf, was: u64, now: u64 },
    #[error("cannot spool stdin into {}: {source}", path.display())]
    Spool { path: PathBuf, source: io::Error },
}

impl Error {
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Spool { source, .. } | Error::Open { source, .. } => {
                source.raw_os_error() == Some(libc::ENOSPC)
            }
            _ => false,
        }
    }
}

/// A malformed line with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} (byte {offset}): {error}")]
pub struct Malformed {
    pub line: u64,
    pub offset: u64,
    pub error: LineError,
}

/// An open, mapped manifest.
pub struct Manifest {
    path: PathBuf,
    file: File,
    /// Dropped before `map` (fields drop in order): see [`sigbus`].
    _guard: Option<sigbus::Registration>,
    map: Option<Mmap>,
    /// Modification time when opened: a rewrite of the same size changes it.
    mtime: Option<std::time::SystemTime>,
    pub id: ManifestId,
}

/// One line of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLine<'a> {
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// Byte offset just past its terminator (the next line's offset).
    pub end: u64,
    /// The line without `\n` or `\r\n`.
    pub bytes: &'a [u8],
}

impl Manifest {
    /// Open and map `path`; compute its identity.
    pub fn open(path: &Path, spooled: bool) -> Result<Manifest, Error> {
        let err = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        // Non-blocking open: a FIFO (or a device) given as the manifest must
        // be refused at once, not block this run while it holds the lock.
        // The flag means nothing for the regular file it must be.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(err)?
        };
        let meta = file.metadata().map_err(err)?;
        if !meta.is_file() {
            return Err(err(io::Error::other(format!(
                "not a regular file ({}); give a file, or '-' to read stdin",
                file_kind(&meta)
            ))));
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the mapping is read-only and private to this process.
            // If another process truncates the file while it is mapped, a read
            // past the new end raises SIGBUS; the range is registered with
            // `sigbus`, whose handler answers such a fault with zero pages,
            // and `check_unchanged` (called before and after reading every
            // batch) stops the run before anything read from a changed file
            // is applied. Writers of manifests should write a new file and
            // rename it (`elysiactl changes` does), never rewrite one in place.
            let map = unsafe { Mmap::map(&file) }.map_err(err)?;
            let _ = map.advise(Advice::Sequential);
            Some(map)
        };
        let guard = map.as_ref().map(|m| sigbus::register(m.as_ptr(), m.len()));
        let bytes = map.as_deref().unwrap_or(&[]);
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let id = ManifestId {
            path: stored_path(&abs),
            size: bytes.len() as u64,
            fingerprint: fingerprint(bytes),
            spooled,
        };
        Ok(Manifest {
            path: path.to_owned(),
            file,
            _guard: guard,
            map,
            mtime: meta.modified().ok(),
            id,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn len(&self) -> u64 {
        self.id.size
    }

    pub fn is_empty(&self) -> bool {
        self.id.size == 0
    }

    /// Stop if the file changed since it was mapped: another size (a
    /// truncation or an append) or another modification time (a rewrite in
    /// place).
    pub fn check_unchanged(&self) -> Result<(), Error> {
        let meta = self.file.metadata().map_err(|source| Error::Open {
            path: self.path.clone(),
            source,
        })?;
        let now = meta.len();
        if now != self.id.size || meta.modified().ok() != self.mtime {
            return Err(Error::Changed {
                path: self.path.clone(),
                was: self.id.size,
                now,
            });
        }
        Ok(())
    }

    /// Tell the kernel the bytes before `offset` will not be read again, so
    /// resident memory stays flat on huge manifests.
    pub fn release_before(&self, offset: u64) {
        if let Some(map) = &self.map {
            let page = 4096usize;
            let len = (offset as usize).min(map.len()) / page * page;
            if len > 0 {
                // SAFETY: a read-only file-backed mapping: dropping its pages
                // only means they are read from the file again if touched.
                let _ = unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, len)
                };
            }
        }
    }

    /// The line at `offset..end` (one a [`Lines`] iterator returned before)
    /// as that iterator gave it: without its terminator, and without the
    /// byte-order mark when it is the first line.
    pub fn line_at(&self, offset: u64, end: u64) -> &[u8] {
        let raw = self
            .bytes()
            .get(offset as usize..end as usize)
            .unwrap_or_default();
        let body = raw.strip_suffix(b"\n").unwrap_or(raw);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if offset == 0 {
            body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
        } else {
            body
        }
    }

    /// Lines starting at byte `offset`, numbered from `line`.
    pub fn lines_from(&self, offset: u64, line: u64) -> Lines<'_> {
        Lines {
            bytes: self.bytes(),
            pos: offset.min(self.id.size) as usize,
            line,
        }
    }

    /// Number of lines (a final line without a newline counts).
    pub fn count_lines(&self) -> u64 {
        count_lines(self.bytes())
    }

    /// Byte offset of 1-based line `n`, or `None` past the end.
    pub fn offset_of_line(&self, n: u64) -> Option<u64> {
        if n <= 1 {
            return Some(0);
        }
        let bytes = self.bytes();
        let mut seen = 1u64;
        for nl in memchr::memchr_iter(b'\n', bytes) {
            seen += 1;
            if seen == n {
                let off = nl as u64 + 1;
                return (off < bytes.len() as u64).then_some(off);
            }
        }
        None
    }
}

pub fn count_lines(bytes: &[u8]) -> u64 {
    let n = memchr::memchr_iter(b'\n', bytes).count() as u64;
    if bytes.last().is_some_and(|&b| b != b'\n') {
        n + 1
    } else {
        n
    }
}

/// SHA-256 over the size (u64 LE), the first MiB and the last MiB.
pub fn fingerprint(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((bytes.len() as u64).to_le_bytes());
    let head = &bytes[..bytes.len().min(FINGERPRINT_EDGE)];
    h.update(head);
    let tail = &bytes[bytes.len().saturating_sub(FINGERPRINT_EDGE)..];
    h.update(tail);
    h.finalize().into()
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Prefix of a stored manifest path that is not valid UTF-8: the rest is
/// its bytes in hex. A stored path is otherwise absolute (starts with `/`),
/// so the two cannot be confused.
const NON_UTF8_PREFIX: &str = "non-utf8-hex:";

/// The manifest path as the WAL keeps it: the path itself when it is UTF-8,
/// else its bytes in hex behind [`NON_UTF8_PREFIX`] — never lossy, so a
/// later run can open it again.
pub fn stored_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    match path.to_str() {
        Some(s) => s.to_owned(),
        None => format!("{NON_UTF8_PREFIX}{}", hex(path.as_os_str().as_bytes())),
    }
}

/// The path a [`stored_path`] string names.
pub fn path_of_stored(stored: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let Some(h) = stored.strip_prefix(NON_UTF8_PREFIX) else {
        return PathBuf::from(stored);
    };
    let bytes: Option<Vec<u8>> = h
        .as_bytes()
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect();
    match bytes {
        Some(b) => PathBuf::from(std::ffi::OsString::from_vec(b)),
        None => PathBuf::from(stored),
    }
}

/// Iterator over raw lines.
pub struct Lines<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    /// The offset and line number of the next line.
    pub fn position(&self) -> (u64, u64) {
        (self.pos as u64, self.line)
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = RawLine<'a>;

    fn next(&mut self) -> Option<RawLine<'a>> {
        let rest = self.bytes.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let (body, adv) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        // A UTF-8 byte-order mark (Windows editors, PowerShell) is not data.
        let body = if self.pos == 0 {
            body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
        } else {
            body
        };
        let raw = RawLine {
            line: self.line,
            offset: self.pos as u64,
            end: (self.pos + adv) as u64,
            bytes: body,
        };
        self.pos += adv;
        self.line += 1;
        Some(raw)
    }
}

/// Copy stdin into `<state-dir>/spool/<fingerprint>.jsonl` (written to a
/// temporary name, fsynced, renamed, directory fsynced), so a piped manifest
/// can be resumed like a file. Returns the spooled path.
pub fn spool(mut input: impl Read, state_dir: &Path) -> Result<PathBuf, Error> {
    let dir = state_dir.join("spool");
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Spool {
            path: path.clone(),
            source,
        }
    };
    create_private_dir(&dir).map_err(err(&dir))?;
    let tmp = dir.join(format!("incoming-{}.tmp", std::process::id()));
    let mut out = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err(&tmp))?
    };
    io::copy(&mut input, &mut out).map_err(err(&tmp))?;
    out.flush().map_err(err(&tmp))?;
    out.sync_all().map_err(err(&tmp))?;
    drop(out);
    let bytes = std::fs::read(&tmp).map_err(err(&tmp))?;
    let name = format!("{}.jsonl", hex(&fingerprint(&bytes)));
    drop(bytes);
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).map_err(err(&dest))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(err(&dir))?;
    Ok(dest)
}

/// Remove stale temporary spool files left by killed runs.
pub fn clean_spool_temps(state_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(state_dir.join("spool")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_paths_round_trip_even_when_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        for raw in [
            &b"/tmp/m.jsonl"[..],
            b"/tmp/\xff\xfe/m.jsonl",
            b"/a/non-utf8-hex:41",
        ] {
            let p = Path::new(std::ffi::OsStr::from_bytes(raw));
            let stored = stored_path(p);
            assert_eq!(path_of_stored(&stored), p, "{stored}");
        }
        assert!(
            stored_path(Path::new(std::ffi::OsStr::from_bytes(b"/x/\xff")))
                .starts_with(NON_UTF8_PREFIX)
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Manifest::open(&fifo, false)
            .err()
            .expect("a FIFO is refused");
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn lines_handle_crlf_blank_and_no_final_newline() {
        let data = b"a\r\n\nb\nc";
        let lines: Vec<_> = Lines {
            bytes: data,
            pos: 0,
            line: 1,
        }
        .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            (lines[0].bytes, lines[0].offset, lines[0].end),
            (&b"a"[..], 0, 3)
        );
        assert_eq!((lines[1].bytes, lines[1].line), (&b""[..], 2));
        assert_eq!(
            (lines[3].bytes, lines[3].offset, lines[3].end),
            (&b"c"[..], 6, 7)
        );
        assert_eq!(count_lines(data), 4);
        assert_eq!(count_lines(b"a\nb\n"), 2);
        assert_eq!(count_lines(b""), 0);
    }

    #[test]
    fn a_byte_order_mark_on_the_first_line_is_not_data() {
        let data = b"\xEF\xBB\xBF{}\n\xEF\xBB\xBF{}";
        let lines: Vec<_> = Lines {
            bytes: data,
            pos: 0,
            line: 1,
        }
        .collect();
        assert_eq!(lines[0].bytes, b"{}");
        assert_eq!(
            lines[1].bytes, b"\xEF\xBB\xBF{}",
            "only at the start of the file"
        );
    }

    #[test]
    fn fingerprint_differs_for_same_size_different_content() {
        assert_ne!(fingerprint(b"abc\n"), fingerprint(b"abd\n"));
        assert_eq!(fingerprint(b"abc\n"), fingerprint(b"abc\n"));
    }
}
