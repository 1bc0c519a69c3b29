//! Resolving a path beneath a root one component at a time, by directory
//! descriptors: the road for whatever `openat2(RESOLVE_BENEATH)` refuses
//! (an absolute symlink that points back into the root, a `..` that climbs
//! above the root and comes back) and for kernels without `openat2`.
//!
//! Every syscall names a single component relative to a directory
//! descriptor obtained the same way from the root's own descriptor, and
//! never follows a symlink (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`): symlinks
//! are read (`readlinkat`) and their target is resolved here, under the same
//! rules. An absolute target counts only when it names the root (its
//! canonical path, or the path as given) and is turned into its in-root
//! relative form; a `..` above the root is followed lexically along the
//! root's canonical path (no syscall) and must come back into the root
//! before anything else is looked at. So no path string is checked and then
//! opened: a concurrent rename or symlink swap inside the root can change
//! which in-root file is found, never make an outside one be opened.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::Absent;

/// Symlinks followed for one path before it counts as a loop (Linux's
/// `MAXSYMLINKS`).
const MAX_HOPS: u32 = 40;

/// Flags of a directory descriptor used only to look up names in.
#[cfg(target_os = "linux")]
const LOOKUP_DIR: libc::c_int = libc::O_PATH | libc::O_DIRECTORY;
#[cfg(not(target_os = "linux"))]
const LOOKUP_DIR: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY;

/// The root a walk starts from.
pub(super) struct Base<'a> {
    /// The root's descriptor.
    pub fd: &'a File,
    /// The root's canonical path.
    pub canonical: &'a Path,
    /// The root as given (absolute, lexically normalised).
    pub given: &'a Path,
}

/// Where a path ends, all symlinks resolved inside the root.
#[derive(Debug)]
pub(super) enum Found {
    /// The object `name` in directory `dir` (`None`: the root), of file type
    /// `mode & S_IFMT` when looked at. `name` is `.` for a directory
    /// reached by `..` or by a symlink to it.
    At {
        dir: Option<File>,
        name: CString,
        mode: libc::mode_t,
    },
    Absent(Absent),
}

impl Found {
    /// Open the object found as a regular file for reading, with
    /// `O_NOFOLLOW | O_NONBLOCK` relative to its directory: `None` if it
    /// was not a regular file when looked at (a FIFO or a device is never
    /// opened). The caller still checks the opened file with `fstat`.
    pub fn open_file(&self, root: &File) -> io::Result<Option<File>> {
        match self {
            Found::At { dir, name, mode } if *mode == libc::S_IFREG => openat(
                dir.as_ref().unwrap_or(root),
                name,
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY,
            )
            .map(Some),
            _ => Ok(None),
        }
    }

    /// Open the object found as a directory to list.
    pub fn open_dir(&self, root: &File) -> io::Result<Option<File>> {
        match self {
            Found::At { dir, name, mode } if *mode == libc::S_IFDIR => openat(
                dir.as_ref().unwrap_or(root),
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            )
            .map(Some),
            _ => Ok(None),
        }
    }
}

/// Resolve `rel` (a `/`-separated path, relative to the root) beneath the
/// root. `Err` only for errors that may pass (permission denied, I/O).
pub(super) fn resolve(base: &Base<'_>, rel: &[u8]) -> io::Result<Found> {
    let canonical: Vec<&[u8]> = components(base.canonical.as_os_str().as_bytes());
    let given: Vec<&[u8]> = components(base.given.as_os_str().as_bytes());
    // Components still to resolve, the next one last.
    let mut pending: Vec<Vec<u8>> = Vec::new();
    push_rev(&mut pending, rel);
    // Directories entered below the root, the current one last.
    let mut stack: Vec<File> = Vec::new();
    // `Some(k)`: lexically at the first `k` components of the canonical
    // root (an ancestor of it), outside the root.
    let mut above: Option<usize> = None;
    let mut hops = 0u32;
    while let Some(part) = pending.pop() {
        match part.as_slice() {
            b"" | b"." => continue,
            b".." => {
                match above.as_mut() {
                    Some(k) => *k = k.saturating_sub(1),
                    None => {
                        if stack.pop().is_none() && !canonical.is_empty() {
                            above = Some(canonical.len() - 1);
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        if let Some(k) = above {
            // Outside the root: only the way back in may be taken.
            if canonical.get(k) != Some(&part.as_slice()) {
                return Ok(Found::Absent(Absent::OutsideRoot));
            }
            above = (k + 1 < canonical.len()).then_some(k + 1);
            continue;
        }
        let Ok(name) = CString::new(part) else {
            return Ok(Found::Absent(Absent::Missing));
        };
        let cur = stack.last().unwrap_or(base.fd);
        let mode = match lstatat(cur, &name) {
            Ok(st) => st.st_mode & libc::S_IFMT,
            Err(e) => return missing_or_err(e),
        };
        if mode == libc::S_IFLNK {
            hops += 1;
            if hops > MAX_HOPS {
                return Ok(Found::Absent(Absent::NotRegular));
            }
            let target = match readlinkat(cur, &name) {
                Ok(t) if !t.is_empty() => t,
                // Gone or replaced since the look: as if never there.
                Ok(_) => return Ok(Found::Absent(Absent::Missing)),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Ok(Found::Absent(Absent::Missing))
                }
                Err(e) => return missing_or_err(e),
            };
            if target.first() == Some(&b'/') {
                stack.clear();
                let parts = components(&target);
                let inside = strip_prefix(&parts, &canonical)
                    .or_else(|| strip_prefix(&parts, &given).filter(|_| given != canonical));
                match inside {
                    // Into its in-root relative form.
                    Some(rest) => {
                        above = None;
                        for p in rest.iter().rev() {
                            pending.push(p.to_vec());
                        }
                    }
                    // From `/`, along the canonical root or out.
                    None => {
                        above = (!canonical.is_empty()).then_some(0);
                        push_rev(&mut pending, &target);
                    }
                }
            } else {
                push_rev(&mut pending, &target);
            }
            continue;
        }
        if pending.is_empty() {
            return Ok(Found::At {
                dir: stack.pop(),
                name,
                mode,
            });
        }
        if mode != libc::S_IFDIR {
            // A component before the last is not a directory.
            return Ok(Found::Absent(Absent::Missing));
        }
        match openat(cur, &name, LOOKUP_DIR | libc::O_NOFOLLOW) {
            Ok(d) => stack.push(d),
            Err(e) => return missing_or_err(e),
        }
    }
    if above.is_some() {
        return Ok(Found::Absent(Absent::OutsideRoot));
    }
    // The path ended on a directory entered by `.`, `..` or a symlink.
    Ok(Found::At {
        dir: stack.pop(),
        name: c".".to_owned(),
        mode: libc::S_IFDIR,
    })
}

/// The normal components of a `/`-path (no empty ones; `.` and `..` kept).
fn components(p: &[u8]) -> Vec<&[u8]> {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect()
}

/// Push the components of `p` so that its first is popped first.
fn push_rev(pending: &mut Vec<Vec<u8>>, p: &[u8]) {
    for c in p.rsplit(|&b| b == b'/') {
        if !c.is_empty() {
            pending.push(c.to_vec());
        }
    }
}

/// `parts` after `prefix`, when it starts with it and nothing in the prefix
/// is a `.` or `..` (which would make the match lexical only).
fn strip_prefix<'a>(parts: &[&'a [u8]], prefix: &[&[u8]]) -> Option<Vec<&'a [u8]>> {
    let head = parts.get(..prefix.len())?;
    (head == prefix).then(|| parts[prefix.len()..].to_vec())
}

fn missing_or_err(e: io::Error) -> io::Result<Found> {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) | Some(libc::ELOOP) => {
            Ok(Found::Absent(Absent::Missing))
        }
        _ => Err(e),
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(super) fn lstatat(dir: &File, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain data, zero is a valid value for it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, a NUL-terminated name and a stat buffer
    // that outlives the call.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// `openat(dir, name, flags | O_CLOEXEC)`.
pub(super) fn openat(dir: &File, name: &CStr, flags: libc::c_int) -> io::Result<File> {
    // SAFETY: a valid descriptor and a NUL-terminated name; a non-negative
    // return is a new descriptor that nothing else owns.
    let fd: RawFd =
        unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above; the descriptor is owned by the File from here.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `readlinkat(dir, name)`: the symlink's target.
fn readlinkat(dir: &File, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the
    // length passed; the kernel writes at most that many bytes.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::{Absent, DirState, FileState, Roots};

    /// Every verdict of the long road, with and without `openat2` in front
    /// of it: the two roads must agree on all of them.
    #[test]
    fn the_descriptor_walk_gives_the_spec_verdicts_with_or_without_openat2() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        let root = base.join("root");
        let repo = root.join("R");
        std::fs::create_dir_all(repo.join("d/e")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/secret"), "s\n").unwrap();
        std::fs::write(repo.join("ok.txt"), "ok\n").unwrap();
        std::fs::write(repo.join("d/e/deep.txt"), "deep\n").unwrap();
        // Absolute, into the root: by its canonical path and by the path
        // given as --root (a symlink to it).
        symlink(repo.join("ok.txt"), repo.join("abs")).unwrap();
        symlink(&root, base.join("alias")).unwrap();
        symlink(base.join("alias/R/ok.txt"), repo.join("abs_alias")).unwrap();
        symlink(base.join("alias/R/d"), repo.join("abs_dir")).unwrap();
        // `..` above the root and back in; and out.
        symlink("../../../root/R/ok.txt", repo.join("d/updown")).unwrap();
        symlink("../../../outside/secret", repo.join("d/out")).unwrap();
        symlink(base.join("outside"), repo.join("outdir")).unwrap();
        symlink("/", repo.join("slash")).unwrap();
        symlink("/etc/passwd", repo.join("passwd")).unwrap();
        // Chains: within the hop limit, and past it.
        let mut prev = "ok.txt".to_owned();
        for i in 0..60 {
            let name = format!("hop{i}");
            symlink(&prev, repo.join(&name)).unwrap();
            prev = name;
        }
        symlink("ok.txt/../ok.txt", repo.join("through_file")).unwrap();
        symlink("d/e/..", repo.join("up_dir")).unwrap();
        let fifo = std::ffi::CString::new(repo.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        symlink(repo.join("fifo"), repo.join("abs_fifo")).unwrap();

        let cases: &[(&str, Option<&str>)] = &[
            ("abs", Some("ok\n")),
            ("abs_alias", Some("ok\n")),
            ("abs_dir/e/deep.txt", Some("deep\n")),
            ("d/updown", Some("ok\n")),
            ("hop30", Some("ok\n")),
        ];
        let absent: &[(&str, Absent)] = &[
            ("d/out", Absent::OutsideRoot),
            ("outdir/secret", Absent::OutsideRoot),
            ("slash/etc/passwd", Absent::OutsideRoot),
            ("passwd", Absent::OutsideRoot),
            ("hop59", Absent::NotRegular),
            ("through_file", Absent::Missing),
            ("up_dir", Absent::NotRegular),
            ("abs_fifo", Absent::NotRegular),
            ("abs_dir/nope", Absent::Missing),
        ];
        for with_openat2 in [true, false] {
            // The root given through a symlink to it: absolute symlinks
            // may name it either way.
            let mut r = Roots::new(&[base.join("alias")], 1000).unwrap();
            if !with_openat2 {
                r.roots[0].dir = None;
            }
            let at = |p: &str| r.read(&r.resolve(Some("R"), p).unwrap()).unwrap();
            for (p, want) in cases {
                match at(p) {
                    FileState::Eligible(d) => {
                        assert_eq!(Some(d.chunks[0].content.as_str()), *want, "{p}");
                        assert_eq!(d.path, *p);
                    }
                    other => panic!("{p} (openat2 {with_openat2}): {other:?}"),
                }
            }
            for (p, want) in absent {
                assert_eq!(
                    at(p),
                    FileState::Absent(*want),
                    "{p} (openat2 {with_openat2})"
                );
            }
            let dir = |p: &str| r.open_dir(&r.resolve(Some("R"), p).unwrap()).unwrap();
            assert!(matches!(dir("abs_dir"), DirState::Dir(_)));
            assert!(matches!(dir("up_dir"), DirState::Dir(_)));
            assert!(matches!(
                dir("outdir"),
                DirState::Absent(Absent::OutsideRoot)
            ));
            assert!(matches!(
                dir("ok.txt"),
                DirState::NotADirectory("a regular file")
            ));
            assert!(matches!(dir("gone"), DirState::Absent(Absent::Missing)));
            let loc = r.resolve(Some("R"), "x").unwrap();
            assert!(r.has_repo(&loc).unwrap());
            let loc = r.resolve(Some("r"), "x").unwrap();
            assert!(!r.has_repo(&loc).unwrap());
        }
    }
}
