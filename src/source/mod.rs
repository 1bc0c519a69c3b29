//! What a manifest line means for the files on disk.
//!
//! [`Roots::resolve`] turns a line's `repo` and `path` into a repo-relative
//! location under one `--root` (or says why the line is malformed);
//! [`Roots::read`] decides whether that file is eligible for the index and
//! reads it. Files outside every root are never opened, whatever renames or
//! symlink swaps happen inside the root meanwhile: no path string is checked
//! and then opened; every open is resolved beneath a descriptor of the root.
//!
//! The common case is one `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! from the root's descriptor, where the kernel itself refuses any
//! resolution that would leave the root. Whatever it refuses (an absolute
//! symlink, a `..` above the root, a loop), and every path on a kernel
//! without `openat2`, goes the long way ([`walk`]): one component at a time
//! from directory descriptors, symlinks read and resolved here and never
//! followed by the kernel, so the verdicts are the same as SPEC.md's ("a
//! symlink counts as the file it points to only while its target stays
//! inside the same root"). Neither road opens a FIFO or a device: a look
//! (`fstatat`) comes before the open, the open has `O_NONBLOCK`, and `fstat`
//! on the opened file decides.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::object::ChunkSize;
use crate::target::Document;
use path::RootPrefix;

mod beneath;
mod path;
#[cfg(test)]
mod std_rules;
mod walk;

/// Bytes checked for a NUL to call a file binary.
pub const BINARY_SNIFF_LEN: usize = 8 << 10;
/// Default `--max-file-size`.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 20;

/// Why a line's path is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("path {0:?} is outside every --root")]
    OutsideRoots(String),
    #[error("absolute path {path:?} is not under <root>/{repo}")]
    NotUnderRepo { path: String, repo: String },
    #[error("path {0:?} escapes its root")]
    EscapesRoot(String),
    #[error("path {0:?} escapes its repository")]
    EscapesRepo(String),
    #[error("path {0:?} names a repository, not a file")]
    NoFile(String),
    #[error("invalid repo name {0:?}")]
    BadRepo(String),
    /// mgit's `dir/` form for something that is not a directory.
    #[error("path {path:?} names a directory, but {repo}/{dir} is {what}")]
    NotADirectory {
        path: String,
        repo: String,
        dir: String,
        what: &'static str,
    },
}

/// A file's place: repo name and repo-relative path under root `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub root: usize,
    pub repo: String,
    /// `/`-separated, no `.`, `..` or empty parts.
    pub path: String,
}

/// Why a file is not (or no longer) in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// No such file (or a path component is not a directory).
    Missing,
    /// A directory, FIFO, socket, device, or a symlink loop.
    NotRegular,
    /// A symlink whose target leaves the root.
    OutsideRoot,
    TooLarge,
    Binary,
}

impl Absent {
    /// Missing files are the normal case of a delete; the others are files
    /// that exist but are not indexed.
    pub fn is_skip(self) -> bool {
        !matches!(self, Absent::Missing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Absent::Missing => "missing",
            Absent::NotRegular => "not a regular file",
            Absent::OutsideRoot => "symlink leaves its root",
            Absent::TooLarge => "over --max-file-size",
            Absent::Binary => "binary (NUL byte in the first 8 KiB)",
        }
    }
}

/// The disk's verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Eligible(Document),
    Absent(Absent),
}

#[derive(Debug, Clone)]
struct Root {
    /// Absolute, lexically normalised, as given.
    given: PathBuf,
    /// All symlinks resolved.
    canonical: PathBuf,
    /// `given` and `canonical` as a line's absolute path is matched.
    given_prefix: RootPrefix,
    canonical_prefix: RootPrefix,
    /// `canonical` opened `O_PATH`: every lookup starts here.
    fd: Arc<File>,
    /// `fd` again where [`beneath::open`] works; `None` where the kernel
    /// has no `openat2` (then every file goes the long way).
    dir: Option<Arc<File>>,
}

/// A directory named by a line (mgit's `dir/`), as found on disk.
#[derive(Debug)]
pub enum DirState {
    /// Opened for listing its entries.
    Dir(File),
    /// Something else is there (a regular file, a FIFO …), described.
    NotADirectory(&'static str),
    Absent(Absent),
}

/// The `--root` directories.
#[derive(Debug, Clone)]
pub struct Roots {
    roots: Vec<Root>,
    max_file_size: u64,
    /// How read files are cut into objects.
    chunk_size: ChunkSize,
}

/// Lexically normalise an absolute path: drop `.`, apply `..`.
fn normalize_abs(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

/// Absolute `path` as the file `rel` of repo `first` under root `root`,
/// when the line's `repo` (if any) is `first` and `rel` names a file.
fn under_root(
    root: usize,
    repo: Option<&str>,
    path: &str,
    first: &str,
    rel: &str,
) -> Result<Location, PathError> {
    if let Some(r) = repo {
        if first != r {
            return Err(PathError::NotUnderRepo {
                path: path.to_owned(),
                repo: r.to_owned(),
            });
        }
    }
    if rel.is_empty() {
        return Err(PathError::NoFile(path.to_owned()));
    }
    Ok(Location {
        root,
        repo: first.to_owned(),
        path: rel.to_owned(),
    })
}

fn valid_repo(repo: &str) -> bool {
    !repo.is_empty() && repo != "." && repo != ".." && !repo.contains('/') && !repo.contains('\0')
}

impl Roots {
    /// Validate and canonicalise the roots (each must be a directory).
    pub fn new(dirs: &[PathBuf], max_file_size: u64) -> io::Result<Roots> {
        let mut roots = Vec::new();
        for d in dirs {
            let abs = std::path::absolute(d)?;
            let given = normalize_abs(&abs).unwrap_or(abs);
            let canonical = std::fs::canonicalize(&given)
                .map_err(|e| io::Error::new(e.kind(), format!("--root {}: {e}", d.display())))?;
            if !canonical.is_dir() {
                return Err(io::Error::other(format!(
                    "--root {} is not a directory",
                    d.display()
                )));
            }
            let fd =
                Arc::new(beneath::open_root(&canonical).map_err(|e| {
                    io::Error::new(e.kind(), format!("--root {}: {e}", d.display()))
                })?);
            let dir = beneath::works(&fd).then(|| fd.clone());
            roots.push(Root {
                given_prefix: RootPrefix::of(&given),
                canonical_prefix: RootPrefix::of(&canonical),
                given,
                canonical,
                fd,
                dir,
            });
        }
        Ok(Roots {
            roots,
            max_file_size,
            chunk_size: ChunkSize::DEFAULT,
        })
    }

    /// The roots reading files into documents cut at `size`.
    pub fn with_chunk_size(mut self, size: ChunkSize) -> Roots {
        self.chunk_size = size;
        self
    }

    pub fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    /// Where a line's `repo`/`path` points (see SPEC.md, path rules).
    pub fn resolve(&self, repo: Option<&str>, path: &str) -> Result<Location, PathError> {
        if let Some(r) = repo {
            if !valid_repo(r) {
                return Err(PathError::BadRepo(r.to_owned()));
            }
        }
        let mut buf = String::new();
        let Some(norm) = path::normal(path, &mut buf) else {
            return Err(match repo {
                Some(_) if !path.starts_with('/') => PathError::EscapesRepo(path.to_owned()),
                _ => PathError::EscapesRoot(path.to_owned()),
            });
        };
        if path.starts_with('/') {
            return self.resolve_abs(repo, path, norm);
        }
        let (repo, rel) = match repo {
            Some(r) => (r, norm.strip_prefix('/').unwrap_or(norm)),
            None => path::first_part(norm).ok_or_else(|| PathError::NoFile(path.to_owned()))?,
        };
        if rel.is_empty() {
            return Err(PathError::NoFile(path.to_owned()));
        }
        // With one root there is nothing to choose (and no stat per line:
        // it was most of a dry run's time).
        let root = if self.roots.len() <= 1 {
            0
        } else {
            self.roots
                .iter()
                .position(|r| r.given.join(repo).is_dir())
                .unwrap_or(0)
        };
        Ok(Location {
            root,
            repo: repo.to_owned(),
            path: rel.to_owned(),
        })
    }

    /// [`Roots::resolve`] of an absolute `path`, lexically normalised as
    /// `norm`: the first root (as given, else canonical) it lies under.
    fn resolve_abs(
        &self,
        repo: Option<&str>,
        path: &str,
        norm: &str,
    ) -> Result<Location, PathError> {
        for (i, root) in self.roots.iter().enumerate() {
            let Some(below) = root
                .given_prefix
                .strip(norm)
                .or_else(|| root.canonical_prefix.strip(norm))
            else {
                continue;
            };
            let Some((first, rel)) = path::first_part(below) else {
                return Err(PathError::NoFile(path.to_owned()));
            };
            return under_root(i, repo, path, first, rel);
        }
        Err(PathError::OutsideRoots(path.to_owned()))
    }

    /// The `--root`s as given, for messages.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self
            .roots
            .iter()
            .map(|r| r.given.display().to_string())
            .collect();
        names.join(", ")
    }

    fn root_of(&self, loc: &Location) -> &Root {
        &self.roots[loc.root.min(self.roots.len() - 1)]
    }

    /// Resolve `<repo>/<path>` of `loc` the long way: one component at a
    /// time beneath the root's descriptor.
    fn walk(&self, root: &Root, repo: &str, path: &str) -> io::Result<walk::Found> {
        let base = walk::Base {
            fd: &root.fd,
            canonical: &root.canonical,
            given: &root.given,
        };
        let mut rel = Vec::with_capacity(repo.len() + 1 + path.len());
        rel.extend_from_slice(repo.as_bytes());
        if !path.is_empty() {
            rel.push(b'/');
            rel.extend_from_slice(path.as_bytes());
        }
        walk::resolve(&base, &rel)
    }

    /// Whether the location's repo has a directory under its root (a
    /// symlink to one inside the root counts). One `fstatat` for a plain
    /// directory; asked only when a file is missing, so the hot path of
    /// files that exist pays nothing.
    pub fn has_repo(&self, loc: &Location) -> io::Result<bool> {
        let root = self.root_of(loc);
        Ok(matches!(
            self.walk(root, &loc.repo, "")?,
            walk::Found::At { mode, .. } if mode == libc::S_IFDIR
        ))
    }

    /// The directory at a location (mgit's untracked `dir/`), resolved like
    /// a file's path: symlinks count only while they stay inside the root.
    pub fn open_dir(&self, loc: &Location) -> io::Result<DirState> {
        let root = self.root_of(loc);
        let found = self.walk(root, &loc.repo, &loc.path)?;
        let mode = match &found {
            walk::Found::Absent(a) => return Ok(DirState::Absent(*a)),
            walk::Found::At { mode, .. } => *mode,
        };
        match found.open_dir(&root.fd) {
            Ok(Some(d)) => Ok(DirState::Dir(d)),
            Ok(None) => Ok(DirState::NotADirectory(describe_mode(mode))),
            Err(e) => match e.raw_os_error() {
                // Replaced since the look.
                Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => {
                    Ok(DirState::Absent(Absent::Missing))
                }
                _ => Err(e),
            },
        }
    }

    /// The file's state on disk. `Err` only for failures that may pass
    /// (permission denied, I/O errors): the line fails and is retried later.
    pub fn read(&self, loc: &Location) -> io::Result<FileState> {
        let root = self.root_of(loc);
        if let Some(dir) = &root.dir {
            if let Some(state) = self.read_beneath(dir, loc)? {
                return Ok(state);
            }
        }
        let found = self.walk(root, &loc.repo, &loc.path)?;
        if let walk::Found::Absent(a) = found {
            return Ok(FileState::Absent(a));
        }
        match found.open_file(&root.fd) {
            Ok(Some(file)) => self.read_open(loc, file),
            Ok(None) => Ok(FileState::Absent(Absent::NotRegular)),
            Err(e) => absent_or_err(e),
        }
    }

    /// [`Roots::read`]'s short road: `None` when the kernel refused to
    /// resolve the path beneath the root and the long road must decide.
    fn read_beneath(&self, dir: &File, loc: &Location) -> io::Result<Option<FileState>> {
        let Ok(rel) = CString::new(format!("{}/{}", loc.repo, loc.path)) else {
            return Ok(None);
        };
        // Look before opening: never open a device or FIFO. The cheap look
        // is a stat by path (no descriptor to make and close); when it does
        // not see a regular file, the descriptor probe below gives the
        // verdict, confined beneath the root like the open itself.
        if beneath::is_regular(dir, &rel) {
            let file = match beneath::open(dir, &rel, libc::O_RDONLY | libc::O_NONBLOCK) {
                Ok(f) => f,
                Err(e) => return beneath_absent_or_fallback(e),
            };
            return self.read_open(loc, file).map(Some);
        }
        let probe = match beneath::open(dir, &rel, libc::O_PATH) {
            Ok(f) => f,
            Err(e) => return beneath_absent_or_fallback(e),
        };
        if !probe.metadata()?.is_file() {
            return Ok(Some(FileState::Absent(Absent::NotRegular)));
        }
        drop(probe);
        let file = match beneath::open(dir, &rel, libc::O_RDONLY | libc::O_NONBLOCK) {
            Ok(f) => f,
            Err(e) => return beneath_absent_or_fallback(e),
        };
        self.read_open(loc, file).map(Some)
    }

    /// Check and read a file opened by either road.
    fn read_open(&self, loc: &Location, file: File) -> io::Result<FileState> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(FileState::Absent(Absent::NotRegular));
        }
        if meta.len() > self.max_file_size {
            return Ok(FileState::Absent(Absent::TooLarge));
        }
        // Read the size fstat gave: one read(2) for a file that did not
        // change since, with no extra read to meet EOF. A file that grows
        // meanwhile is read as it was at the fstat (a prefix), one that
        // shrinks up to its new end.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(meta.len()).read_to_end(&mut bytes)?;
        Ok(self.eligible(loc, bytes))
    }

    /// The state of inline content given in the manifest.
    pub fn inline(&self, loc: &Location, bytes: Vec<u8>) -> FileState {
        self.eligible(loc, bytes)
    }

    fn eligible(&self, loc: &Location, bytes: Vec<u8>) -> FileState {
        if bytes.len() as u64 > self.max_file_size {
            return FileState::Absent(Absent::TooLarge);
        }
        let sniff = &bytes[..bytes.len().min(BINARY_SNIFF_LEN)];
        if memchr::memchr(0, sniff).is_some() {
            return FileState::Absent(Absent::Binary);
        }
        FileState::Eligible(Document::new(&loc.repo, &loc.path, bytes, self.chunk_size))
    }
}

/// Build the indexed form of a file's bytes at the default chunk size.
pub fn document(repo: &str, path: &str, bytes: &[u8]) -> Document {
    Document::new(repo, path, bytes.to_vec(), ChunkSize::DEFAULT)
}

/// An error of the short road: a plain "no such file" is the same verdict
/// either way; a refusal (`EXDEV`: the path leaves the root, `ELOOP`,
/// `EAGAIN`, no `openat2`) sends the file the long way; anything else (EACCES,
/// EIO) is the error the long road would also meet.
fn beneath_absent_or_fallback(e: io::Error) -> io::Result<Option<FileState>> {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) => {
            Ok(Some(FileState::Absent(Absent::Missing)))
        }
        Some(libc::EXDEV) | Some(libc::ELOOP) | Some(libc::EAGAIN) | Some(libc::ENOSYS)
        | Some(libc::EPERM) | Some(libc::EINVAL) => Ok(None),
        _ => Err(e),
    }
}

/// What a file type is, for a message.
fn describe_mode(mode: libc::mode_t) -> &'static str {
    match mode {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        _ => "not a directory",
    }
}

fn absent_or_err(e: io::Error) -> io::Result<FileState> {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) => {
            Ok(FileState::Absent(Absent::Missing))
        }
        Some(libc::ELOOP) => Ok(FileState::Absent(Absent::NotRegular)),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests;
