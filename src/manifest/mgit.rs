//! Reading mgit's real output, so teams running mgit can switch to
//! elysiactl without losing changes.
//!
//! mgit (`mgit diff` / `mgit status --format=jsonl`) writes one
//! `{"repo","op","path"}` object per line of `git status --porcelain`, with
//! the porcelain quirks left in, and a `{"repo","new_changeset":{"commit",
//! "branch"}}` per repository:
//! - `op` is `add`, `modify` or `delete` (renames were reported as `modify`,
//!   copies and untracked files as `add`);
//! - a rename or copy path is `"old -> new"`, either side possibly C-quoted;
//! - a path with a space, a quote, a control or a non-ASCII byte is C-quoted
//!   (`"\"a b\""`, `"\"caf\\303\\251\""`);
//! - an untracked directory is its path with a trailing `/`.
//!
//! [`normalize`] turns one such object into SPEC.md form. It is pure: the
//! directory expansion that an untracked `dir/` needs is [`expand_untracked_dir`],
//! run by the caller against the disk. docs/changes.md has the full mapping.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;

use serde_json::{Map, Value};

/// One mgit line, in SPEC form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized {
    /// A SPEC manifest line (the object with `op`, `path` and `from` fixed).
    /// Lines with no mgit quirk come back unchanged.
    Line(Value),
    /// An untracked directory (`dir/`): every file under `<repo>/<dir>` on
    /// disk is an `add` (see [`expand_untracked_dir`]). `dir` has no
    /// trailing `/`.
    UntrackedDir { repo: Option<String>, dir: String },
    /// mgit's per-repository `new_changeset`. Record it for information, but
    /// never use its commit as a base for `elysiactl changes`: mgit only ever
    /// listed uncommitted work-tree changes, so the index may lack any change
    /// committed before that commit.
    Changeset {
        repo: String,
        commit: Option<String>,
        branch: Option<String>,
    },
}

/// Why an mgit line cannot be normalised: the line is then a failed item,
/// like any malformed manifest line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing or non-string field {0:?}")]
    Field(&'static str),
    #[error("bad C-quoted path {path:?}: {reason}")]
    Quoting { path: String, reason: &'static str },
    #[error("unquoted path is not valid UTF-8: {escaped}")]
    NotUtf8 { escaped: String },
    #[error("a directory path ({path:?}) is only meaningful for an untracked add")]
    DirectoryOp { path: String },
}

/// Normalise one parsed mgit JSON object.
pub fn normalize(value: &Value) -> Result<Normalized, Error> {
    let obj = value.as_object().ok_or(Error::NotAnObject)?;
    if let Some(cs) = obj.get("new_changeset") {
        let repo = str_field(obj, "repo")?.to_owned();
        let get = |k: &str| cs.get(k).and_then(Value::as_str).map(str::to_owned);
        return Ok(Normalized::Changeset {
            repo,
            commit: get("commit"),
            branch: get("branch"),
        });
    }
    let op = str_field(obj, "op")?;
    let raw_path = str_field(obj, "path")?;
    let repo = obj.get("repo").and_then(Value::as_str).map(str::to_owned);

    let (from, path) = split_rename(raw_path)?;
    let op = match (op, from.is_some()) {
        ("modify" | "update" | "rename", true) => "rename",
        ("modify", false) => "update",
        (other, _) => other,
    };
    if let Some(dir) = path.strip_suffix('/') {
        return if op == "add" && !dir.is_empty() {
            Ok(Normalized::UntrackedDir {
                repo,
                dir: dir.to_owned(),
            })
        } else {
            Err(Error::DirectoryOp { path })
        };
    }

    let mut out: Map<String, Value> = obj.clone();
    out.insert("op".into(), Value::String(op.to_owned()));
    out.insert("path".into(), Value::String(path));
    // For a copy (`add` with an arrow) only the new path is a change.
    if let ("rename", Some(f)) = (op, from) {
        out.insert("from".into(), Value::String(f));
    }
    Ok(Normalized::Line(Value::Object(out)))
}

/// Normalise one raw manifest line.
pub fn normalize_bytes(line: &[u8]) -> Result<Normalized, Error> {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        // A number out of f64's range (`"size":1e999`) in a field nobody
        // reads: the line means the same with its numbers zeroed.
        Err(_) => super::line::zero_numbers(line)
            .and_then(|z| serde_json::from_slice(&z).ok())
            .ok_or(Error::NotAnObject)?,
    };
    normalize(&value)
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, Error> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or(Error::Field(key))
}

const ARROW: &str = " -> ";

/// Split porcelain's `old -> new` and unquote both sides. A path that is
/// neither quoted nor contains the arrow comes back as is.
fn split_rename(raw: &str) -> Result<(Option<String>, String), Error> {
    if raw.starts_with('"') {
        let end = quoted_len(raw).ok_or_else(|| Error::Quoting {
            path: raw.to_owned(),
            reason: "no closing quote",
        })?;
        let first = unquote_c_style(&raw[..end])?;
        let rest = &raw[end..];
        if rest.is_empty() {
            return Ok((None, first));
        }
        return match rest.strip_prefix(ARROW) {
            Some(dst) => Ok((Some(first), unquote_if_quoted(dst)?)),
            None => Err(Error::Quoting {
                path: raw.to_owned(),
                reason: "text after the closing quote",
            }),
        };
    }
    match raw.split_once(ARROW) {
        Some((src, dst)) if !src.is_empty() && !dst.is_empty() => {
            Ok((Some(src.to_owned()), unquote_if_quoted(dst)?))
        }
        _ => Ok((None, raw.to_owned())),
    }
}

fn unquote_if_quoted(s: &str) -> Result<String, Error> {
    if s.starts_with('"') {
        if quoted_len(s) != Some(s.len()) {
            return Err(Error::Quoting {
                path: s.to_owned(),
                reason: "text after the closing quote",
            });
        }
        unquote_c_style(s)
    } else {
        Ok(s.to_owned())
    }
}

/// Length of the leading `"…"` (closing quote included), skipping escaped
/// characters.
fn quoted_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Undo git's C-style path quoting (`quote_c_style` in git's quote.c): the
/// surrounding quotes, `\a \b \t \n \v \f \r \" \\`, and `\ooo` octal bytes,
/// which together make UTF-8 (or not: then the path cannot be indexed).
pub fn unquote_c_style(quoted: &str) -> Result<String, Error> {
    let bad = |reason| Error::Quoting {
        path: quoted.to_owned(),
        reason,
    };
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| bad("not enclosed in double quotes"))?;
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' {
            return Err(bad("unescaped quote inside"));
        }
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let esc = *bytes.get(i + 1).ok_or_else(|| bad("trailing backslash"))?;
        i += 2;
        let decoded = match esc {
            b'a' => 0x07,
            b'b' => 0x08,
            b't' => b'\t',
            b'n' => b'\n',
            b'v' => 0x0b,
            b'f' => 0x0c,
            b'r' => b'\r',
            b'"' => b'"',
            b'\\' => b'\\',
            b'0'..=b'3' => {
                let d2 = bytes.get(i).copied().filter(|c| (b'0'..=b'7').contains(c));
                let d3 = bytes
                    .get(i + 1)
                    .copied()
                    .filter(|c| (b'0'..=b'7').contains(c));
                match (d2, d3) {
                    (Some(d2), Some(d3)) => {
                        i += 2;
                        ((esc - b'0') << 6) | ((d2 - b'0') << 3) | (d3 - b'0')
                    }
                    _ => return Err(bad("octal escape needs three digits")),
                }
            }
            _ => return Err(bad("unknown escape")),
        };
        out.push(decoded);
    }
    String::from_utf8(out).map_err(|e| Error::NotUtf8 {
        escaped: e.as_bytes().escape_ascii().to_string(),
    })
}

/// Every file (regular or symlink) under `<repo_dir>/<dir>` on disk, as
/// repository-relative `/`-separated paths, sorted (see
/// [`untracked_files`]). No symlink is followed, in `dir` either. A
/// directory that does not exist yields nothing.
pub fn expand_untracked_dir(repo_dir: &Path, dir: &str) -> io::Result<Vec<String>> {
    let mut at = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(repo_dir)?;
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        let name = CString::new(part).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        at = match open_dir_at(at.as_raw_fd(), &name) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
    }
    untracked_files(at, dir)
}

/// Every file (regular or symlink) under the directory `dir`, whose path in
/// the repository is `prefix`, as repository-relative `/`-separated paths,
/// sorted. The walk goes by directory descriptors and never follows a
/// symlink: a symlinked directory is listed as a file (reading it later
/// decides, under the path rules), never entered, so the walk cannot leave
/// `dir`. Directories that are themselves repositories (a `.git` inside)
/// are not entered; names that are not UTF-8 are left out (they cannot be
/// indexed).
pub fn untracked_files(dir: File, prefix: &str) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let top = Rc::new(Dir::new(dir)?);
    // Directories to list: (parent, name in it, repository path); each is
    // opened only when its turn comes, so open descriptors stay about as
    // many as the tree is deep.
    let mut todo: Vec<(Rc<Dir>, Option<CString>, String)> =
        vec![(top, None, prefix.trim_end_matches('/').to_owned())];
    while let Some((parent, name, rel)) = todo.pop() {
        let dir = match name {
            None => parent,
            Some(name) => {
                let d = match open_dir_at(parent.fd(), &name) {
                    Ok(d) => d,
                    // Gone or replaced by a non-directory since listed.
                    Err(e) if is_gone(&e) => continue,
                    Err(e) => return Err(e),
                };
                if lstat_at(d.as_raw_fd(), c".git").is_ok() {
                    continue;
                }
                Rc::new(Dir::new(d)?)
            }
        };
        for (name, kind) in dir.entries()? {
            let Ok(text) = std::str::from_utf8(name.as_bytes()) else {
                continue;
            };
            let child = format!("{rel}/{text}");
            let kind = match kind {
                libc::DT_UNKNOWN => match lstat_at(dir.fd(), &name) {
                    Ok(st) => dt_of(st.st_mode),
                    Err(e) if is_gone(&e) => continue,
                    Err(e) => return Err(e),
                },
                k => k,
            };
            match kind {
                libc::DT_DIR if text != ".git" => todo.push((dir.clone(), Some(name), child)),
                libc::DT_REG | libc::DT_LNK => out.push(child),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}

fn dt_of(mode: libc::mode_t) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFLNK => libc::DT_LNK,
        _ => libc::DT_UNKNOWN,
    }
}

/// `openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)`: a directory
/// entry that is a directory itself, never through a symlink.
fn open_dir_at(fd: RawFd, name: &CStr) -> io::Result<File> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid descriptor and a NUL-terminated name; a non-negative
    // return is a new descriptor that nothing else owns.
    let d = unsafe { libc::openat(fd, name.as_ptr(), flags) };
    if d < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above; the File owns the descriptor from here.
    Ok(unsafe { File::from_raw_fd(d) })
}

/// `fstatat(fd, name, AT_SYMLINK_NOFOLLOW)`.
fn lstat_at(fd: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain data, zero is a valid value for it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, a NUL-terminated name and a stat buffer
    // that outlives the call.
    let rc = unsafe { libc::fstatat(fd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// An open directory stream (`fdopendir`), closed on drop.
struct Dir(std::ptr::NonNull<libc::DIR>);

impl Dir {
    fn new(dir: File) -> io::Result<Dir> {
        let fd = dir.into_raw_fd();
        // SAFETY: `fd` is an open directory descriptor we own; on success
        // the stream owns it (closedir closes it), on failure we close it.
        let p = unsafe { libc::fdopendir(fd) };
        match std::ptr::NonNull::new(p) {
            Some(p) => Ok(Dir(p)),
            None => {
                let e = io::Error::last_os_error();
                // SAFETY: still ours, see above.
                unsafe { libc::close(fd) };
                Err(e)
            }
        }
    }

    /// The stream's descriptor, for lookups relative to the directory.
    fn fd(&self) -> RawFd {
        // SAFETY: a live stream.
        unsafe { libc::dirfd(self.0.as_ptr()) }
    }

    /// Every entry but `.` and `..`, with its `d_type`.
    fn entries(&self) -> io::Result<Vec<(CString, u8)>> {
        let mut out = Vec::new();
        loop {
            set_errno_zero();
            // SAFETY: a live stream, read by this thread only (the Rc is
            // not Send); the entry is copied out before the next call.
            let ent = unsafe { libc::readdir(self.0.as_ptr()) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(0) | None => Ok(out),
                    _ => Err(e),
                };
            }
            // SAFETY: readdir returned a valid entry whose `d_name` is
            // NUL-terminated.
            let (name, kind) = unsafe {
                let ent = &*ent;
                (CStr::from_ptr(ent.d_name.as_ptr()), ent.d_type)
            };
            if name != c"." && name != c".." {
                out.push((name.to_owned(), kind));
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: the stream is ours and closed once.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

/// readdir(3) signals an error only through errno.
fn set_errno_zero() {
    #[cfg(target_os = "linux")]
    // SAFETY: errno is this thread's.
    unsafe {
        *libc::__errno_location() = 0
    };
}

#[cfg(test)]
#[path = "mgit_tests.rs"]
mod tests;
