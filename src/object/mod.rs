//! The object model: a file's bytes → its chunks → the objects both targets
//! store (docs/objects.md).
//!
//! A file of `size` bytes is stored as chunks `0..n-1`: contiguous byte
//! ranges of its raw bytes covering `[0, size)` in order, each at most the
//! [`ChunkSize`] (0: one chunk per file), cut at line ends wherever a line
//! fits and never inside a valid UTF-8 character. Chunk 0's id is the
//! whole-file id of [`crate::target::object_id`]; chunk k's name ends in
//! `//k`. Everything here is a pure function of the bytes, the path and the
//! chunk size, so the same file gives the same objects on every machine.
//! [`check`] states the contract as code, independently of the chunker.

pub mod chunk;

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use chunk::ChunkSpan;

use crate::target::{object_id, ID_NAMESPACE};

/// The bound on a chunk's length in bytes; 0 keeps one object per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSize(usize);

impl ChunkSize {
    /// 4096 bytes: about 1,000–2,000 tokens of code, far inside an 8,192-token
    /// model, small enough to point a reader at the lines that matched.
    pub const DEFAULT: ChunkSize = ChunkSize(4096);
    /// One object per file (`--chunk-size 0`).
    pub const WHOLE_FILE: ChunkSize = ChunkSize(0);
    /// The smallest bound accepted other than 0. Below 4 (the widest UTF-8
    /// character) a chunk could not both respect the bound and keep every
    /// character whole; below 16 an index of a few bytes per object is surely
    /// a slip (a size meant in KiB), so it is refused rather than obeyed.
    pub const MIN: usize = 16;

    /// `bytes` as a chunk size: 0, or at least [`ChunkSize::MIN`].
    pub fn new(bytes: usize) -> Result<ChunkSize, Error> {
        if bytes != 0 && bytes < Self::MIN {
            return Err(Error::ChunkSizeTooSmall {
                size: bytes,
                min: Self::MIN,
            });
        }
        Ok(ChunkSize(bytes))
    }

    /// The bound in bytes (0: whole files).
    pub fn get(self) -> usize {
        self.0
    }

    pub fn is_whole_file(self) -> bool {
        self.0 == 0
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for ChunkSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ChunkSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let n = s
            .trim()
            .parse::<usize>()
            .map_err(|_| Error::ChunkSizeNotANumber { text: s.to_owned() })?;
        ChunkSize::new(n)
    }
}

/// A chunk size that cannot be used. Not retryable: the run's configuration
/// is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "chunk size {size} is too small: use 0 (one object per file) or at least {min} bytes \
         (the default is 4096)"
    )]
    ChunkSizeTooSmall { size: usize, min: usize },
    #[error("chunk size {text:?} is not a whole number of bytes (for example 4096, or 0 for one object per file)")]
    ChunkSizeNotANumber { text: String },
}

/// The chunks of a file, in order, with their lines. `path` picks the seams
/// the chunker prefers (by extension); it does not change the guarantees.
pub fn chunk_spans(bytes: &[u8], size: ChunkSize, path: &str) -> Vec<ChunkSpan> {
    let ranges = chunk::ranges(bytes, size.get(), chunk::Lang::of(path));
    chunk::spans_of(bytes, &ranges)
}

/// The id of chunk `k` of `repo`/`path`: UUIDv5(URL, `elysiactl://<repo>/<path>`)
/// for chunk 0 (the whole-file id of before chunking), and of
/// `elysiactl://<repo>/<path>//<k>` for k ≥ 1.
pub fn chunk_id(repo: &str, path: &str, k: u32) -> Uuid {
    if k == 0 {
        return object_id(repo, path);
    }
    let name = format!("elysiactl://{repo}/{path}//{k}");
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// One stored object: a chunk of a file with the properties of SPEC's
/// Objects section. Serializes to exactly those properties, camelCase (the
/// id is the object's, not a property).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkObject {
    #[serde(skip)]
    pub id: Uuid,
    pub repo: String,
    pub path: String,
    /// This chunk's number, 0-based, in file order.
    pub chunk: u32,
    /// How many chunks the file has.
    pub chunk_count: u32,
    pub byte_start: u64,
    /// Exclusive.
    pub byte_end: u64,
    /// 1-based, inclusive (see [`ChunkSpan`]).
    pub start_line: u64,
    pub end_line: u64,
    /// The chunk's bytes as UTF-8, invalid sequences replaced by U+FFFD.
    pub content: String,
    /// Hex SHA-256 of the whole file's raw bytes (the same on every chunk).
    pub content_sha256: String,
    /// The whole file's size in bytes.
    pub size: u64,
}

/// The objects of one file. Chunk numbers saturate at `u32::MAX`, which only a
/// file of more than 64 GiB could reach.
pub fn objects(repo: &str, path: &str, bytes: &[u8], size: ChunkSize) -> Vec<ChunkObject> {
    let content_sha256 = crate::util::hex(&Sha256::digest(bytes));
    build_text(repo, path, bytes, size, &content_sha256)
}

/// [`build`] with each chunk's text as `from_utf8_lossy` decodes it. The
/// file is checked for UTF-8 once (std's word-at-a-time validation): when
/// it is valid, a chunk's text is a copy of its slice; anything else
/// decodes the slice.
fn build_text(
    repo: &str,
    path: &str,
    bytes: &[u8],
    size: ChunkSize,
    content_sha256: &str,
) -> Vec<ChunkObject> {
    let whole = std::str::from_utf8(bytes).ok();
    build(
        repo,
        path,
        bytes,
        size,
        content_sha256,
        |a, b| match whole.and_then(|s| s.get(a..b)) {
            Some(t) => t.to_owned(),
            None => String::from_utf8_lossy(&bytes[a..b]).into_owned(),
        },
    )
}

/// The objects of a file with its hash already known; `content(a, b)` gives
/// the text of bytes `[a, b)`.
fn build(
    repo: &str,
    path: &str,
    bytes: &[u8],
    size: ChunkSize,
    content_sha256: &str,
    mut content: impl FnMut(usize, usize) -> String,
) -> Vec<ChunkObject> {
    let ranges = chunk::ranges(bytes, size.get(), chunk::Lang::of(path));
    let spans = chunk::spans_of(bytes, &ranges);
    let chunk_count = u32::try_from(spans.len()).unwrap_or(u32::MAX);
    ranges
        .iter()
        .zip(&spans)
        .enumerate()
        .map(|(k, (&(a, b), span))| {
            let k = u32::try_from(k).unwrap_or(u32::MAX);
            ChunkObject {
                id: chunk_id(repo, path, k),
                repo: repo.to_owned(),
                path: path.to_owned(),
                chunk: k,
                chunk_count,
                byte_start: span.byte_start,
                byte_end: span.byte_end,
                start_line: span.start_line,
                end_line: span.end_line,
                content: content(a, b),
                content_sha256: content_sha256.to_owned(),
                size: bytes.len() as u64,
            }
        })
        .collect()
}

/// One eligible file as both targets store it: its chunks, in order, and
/// what they share. `id` (chunk 0's id, the file's id before chunking) is the
/// file's key: the sync loop orders and reduces ops by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub id: Uuid,
    pub repo: String,
    /// Repo-relative, `/`-separated, no `.` or `..` parts.
    pub path: String,
    /// Hex SHA-256 of the raw file bytes.
    pub content_sha256: String,
    /// Size of the raw file in bytes.
    pub size: u64,
    /// At least one; chunk `k` at index `k`.
    pub chunks: Vec<ChunkObject>,
}

impl Document {
    /// The document of a file's bytes cut at `size`. A file that is one
    /// chunk of valid UTF-8 (nearly every small source file) becomes its
    /// content without a copy.
    pub fn new(repo: &str, path: &str, bytes: Vec<u8>, size: ChunkSize) -> Document {
        let content_sha256 = crate::util::hex(&Sha256::digest(&bytes));
        let single = size.is_whole_file() || bytes.len() <= size.get();
        let chunks = if single {
            let span = chunk::spans_of(&bytes, &[(0, bytes.len())])[0];
            let file_size = bytes.len() as u64;
            let content = match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            };
            vec![ChunkObject {
                id: chunk_id(repo, path, 0),
                repo: repo.to_owned(),
                path: path.to_owned(),
                chunk: 0,
                chunk_count: 1,
                byte_start: 0,
                byte_end: file_size,
                start_line: span.start_line,
                end_line: span.end_line,
                content,
                content_sha256: content_sha256.clone(),
                size: file_size,
            }]
        } else {
            build_text(repo, path, &bytes, size, &content_sha256)
        };
        Document {
            id: chunk_id(repo, path, 0),
            repo: repo.to_owned(),
            path: path.to_owned(),
            size: chunks.first().map_or(0, |c| c.size),
            content_sha256,
            chunks,
        }
    }

    /// How many chunks the file has (at least 1).
    pub fn chunk_count(&self) -> u32 {
        u32::try_from(self.chunks.len()).unwrap_or(u32::MAX)
    }

    /// Total bytes of text the chunks carry (for sizing request bodies).
    pub fn content_len(&self) -> usize {
        self.chunks.iter().map(|c| c.content.len()).sum()
    }
}

/// A way a file's objects break the contract. `chunk` is the object's
/// position in the slice given to [`check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    #[error("a file has no objects (an empty file is one chunk [0, 0))")]
    NoObjects,
    #[error(
        "object {chunk}: chunk number {found}, chunkCount {count} (expected {chunk} of {expected})"
    )]
    Numbering {
        chunk: usize,
        found: u32,
        count: u32,
        expected: usize,
    },
    #[error("object {chunk}: repo/path differ from chunk 0's, or its id is not the chunk id of its repo, path and number")]
    Identity { chunk: usize },
    #[error("object {chunk}: size {found} or contentSha256 is not the file's (size {expected})")]
    File {
        chunk: usize,
        found: u64,
        expected: u64,
    },
    #[error("object {chunk}: bytes [{start}, {end}) are not a range in file order that leaves no gap (file size {size})")]
    Range {
        chunk: usize,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("object {chunk}: {len} bytes, over the chunk size {bound}")]
    TooLong {
        chunk: usize,
        len: u64,
        bound: usize,
    },
    #[error("object {chunk}: chunk size 0 keeps one object per file, found {count}")]
    NotWholeFile { chunk: usize, count: usize },
    #[error("object {chunk}: byte {at} is inside a valid UTF-8 character")]
    CutsCharacter { chunk: usize, at: u64 },
    #[error("object {chunk}: content is not the lossy UTF-8 of bytes [{start}, {end})")]
    Content { chunk: usize, start: u64, end: u64 },
    #[error("object {chunk}: lines {found_start}-{found_end}, expected {start}-{end}")]
    Lines {
        chunk: usize,
        found_start: u64,
        found_end: u64,
        start: u64,
        end: u64,
    },
}

/// Check every SPEC invariant of one file's objects (given in chunk order)
/// against the file's bytes and the chunk size they were made with: numbering,
/// ids, the whole file's size and hash, coverage without gaps in file order,
/// the bound, no cut inside a valid UTF-8 character, content = lossy UTF-8 of
/// the range, lines. Any valid chunking passes, not only this chunker's.
pub fn check(bytes: &[u8], size: ChunkSize, objs: &[ChunkObject]) -> Result<(), Violation> {
    let first = objs.first().ok_or(Violation::NoObjects)?;
    let file_size = bytes.len() as u64;
    let sha = crate::util::hex(&Sha256::digest(bytes));
    if size.is_whole_file() && objs.len() != 1 {
        return Err(Violation::NotWholeFile {
            chunk: 1,
            count: objs.len(),
        });
    }
    // Lines: a running count of '\n' before each start (starts increase).
    let (mut pos, mut lines_before) = (0usize, 0u64);
    let mut prev: Option<(u64, u64)> = None;
    for (k, o) in objs.iter().enumerate() {
        if usize::try_from(o.chunk) != Ok(k) || usize::try_from(o.chunk_count) != Ok(objs.len()) {
            return Err(Violation::Numbering {
                chunk: k,
                found: o.chunk,
                count: o.chunk_count,
                expected: objs.len(),
            });
        }
        if o.repo != first.repo
            || o.path != first.path
            || o.id != chunk_id(&o.repo, &o.path, o.chunk)
        {
            return Err(Violation::Identity { chunk: k });
        }
        if o.size != file_size || o.content_sha256 != sha {
            return Err(Violation::File {
                chunk: k,
                found: o.size,
                expected: file_size,
            });
        }
        let (start, end) = (o.byte_start, o.byte_end);
        let range_err = Violation::Range {
            chunk: k,
            start,
            end,
            size: file_size,
        };
        let in_order = match prev {
            None => start == 0,
            Some((ps, pe)) => start > ps && end > pe && start <= pe,
        };
        let last_ok = k + 1 < objs.len() || end == file_size;
        let non_empty = start < end || file_size == 0;
        if !in_order || !last_ok || !non_empty || end > file_size || start > end {
            return Err(range_err);
        }
        prev = Some((start, end));
        let len = end - start;
        if size.get() != 0 && len > size.get() as u64 {
            return Err(Violation::TooLong {
                chunk: k,
                len,
                bound: size.get(),
            });
        }
        // Bounded by file_size, which is a slice length: these fit usize.
        let (a, b) = (start as usize, end as usize);
        if o.content != String::from_utf8_lossy(&bytes[a..b]) {
            return Err(Violation::Content {
                chunk: k,
                start,
                end,
            });
        }
        lines_before += bytes[pos..a].iter().filter(|&&c| c == b'\n').count() as u64;
        pos = a;
        let start_line = lines_before + 1;
        let end_line = match b.checked_sub(1) {
            Some(last) if last >= a => {
                start_line + bytes[a..last].iter().filter(|&&c| c == b'\n').count() as u64
            }
            _ => start_line,
        };
        if (o.start_line, o.end_line) != (start_line, end_line) {
            return Err(Violation::Lines {
                chunk: k,
                found_start: o.start_line,
                found_end: o.end_line,
                start: start_line,
                end: end_line,
            });
        }
    }
    check_char_cuts(bytes, objs)
}

/// No start or end of an object lies strictly inside a valid UTF-8 character
/// (decoded the way `from_utf8_lossy` does; invalid bytes may be cut anywhere).
fn check_char_cuts(bytes: &[u8], objs: &[ChunkObject]) -> Result<(), Violation> {
    let mut cuts: Vec<(u64, usize)> = objs
        .iter()
        .enumerate()
        .flat_map(|(k, o)| [(o.byte_start, k), (o.byte_end, k)])
        .collect();
    cuts.sort_unstable();
    let mut next = cuts.iter().peekable();
    let mut offset = 0u64;
    for part in bytes.utf8_chunks() {
        for c in part.valid().chars() {
            let (lo, hi) = (offset, offset + c.len_utf8() as u64);
            while let Some(&&(at, k)) = next.peek() {
                if at <= lo {
                    next.next();
                } else if at < hi {
                    return Err(Violation::CutsCharacter { chunk: k, at });
                } else {
                    break;
                }
            }
            offset = hi;
        }
        offset += part.invalid().len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
