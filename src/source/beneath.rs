//! `openat2(2)` with `RESOLVE_BENEATH`: opening a path relative to a
//! directory such that no step of the resolution (`..`, a symlink, an
//! absolute symlink, a magic link) leaves that directory.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `struct open_how` of linux/openat2.h (the libc crate's is
/// non-exhaustive, so it cannot be built outside libc).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

/// The root's descriptor, for lookups only (`O_PATH`).
pub fn open_root(dir: &Path) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    let flags = libc::O_DIRECTORY | libc::O_CLOEXEC;
    File::options().read(true).custom_flags(flags).open(dir)
}

/// Whether `openat2` works here: not before Linux 5.6, nor when a seccomp
/// filter refuses it. Where it does not, every file goes the long way.
pub fn works(root: &File) -> bool {
    open(root, c".", libc::O_PATH).is_ok()
}

/// Whether `rel` under `dir` is a regular file, by `fstatat` (following
/// symlinks, never triggering an automount). Only a look: it opens
/// nothing, and confinement is the later `openat2`'s job.
pub fn is_regular(dir: &File, rel: &CStr) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `stat` is plain data, zero is a valid value for it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, a NUL-terminated path and a stat buffer
    // that outlives the call.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            rel.as_ptr(),
            &mut st,
            libc::AT_NO_AUTOMOUNT,
        )
    };
    rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
}

#[cfg(target_os = "linux")]
pub fn open(dir: &File, rel: &CStr, flags: i32) -> io::Result<File> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `rel` is NUL-terminated and `how` a live open_how of the
    // size passed; the kernel reads both and writes neither. A
    // non-negative return is a new descriptor that nothing else owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above; the descriptor is owned by the File from here.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

#[cfg(not(target_os = "linux"))]
pub fn open(_dir: &File, _rel: &CStr, _flags: i32) -> io::Result<File> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}
