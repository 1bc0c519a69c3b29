//! inotify as a witness: every open or read of a watched file or directory
//! is an event, so a test can prove that nothing outside `--root` was
//! touched (and, with a positive control, that the watch itself works).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Watches paths for `IN_OPEN | IN_ACCESS`.
pub struct OpenWatch {
    fd: i32,
}

impl OpenWatch {
    /// Watch each of `paths` (directories report opens of their entries
    /// too, by name; a watched file or the directory itself reports with
    /// an empty name).
    pub fn new(paths: &[&Path]) -> OpenWatch {
        // SAFETY: a plain syscall; the descriptor is owned by the struct.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        let w = OpenWatch { fd };
        for p in paths {
            w.add(p);
        }
        w
    }

    /// Watch `dir` and every entry in it, so an open through another name
    /// (a hard link, a path through a swapped directory) is seen as well.
    pub fn tree(dir: &Path) -> OpenWatch {
        let w = OpenWatch::new(&[dir]);
        for e in std::fs::read_dir(dir).unwrap() {
            w.add(&e.unwrap().path());
        }
        // Listing `dir` above was an open: drop those events.
        let _ = w.events();
        w
    }

    fn add(&self, p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid inotify descriptor and a NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(
                self.fd,
                c.as_ptr(),
                libc::IN_OPEN | libc::IN_ACCESS | libc::IN_DONT_FOLLOW,
            )
        };
        assert!(wd >= 0, "inotify_add_watch {}", p.display());
    }

    /// Names opened or read since the watch began (or the last call).
    pub fn events(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a buffer of the length passed.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            let mut at = 0usize;
            while at + 16 <= n as usize {
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                let name = &buf[at + 16..at + 16 + len];
                let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
                out.push(String::from_utf8_lossy(name).into_owned());
                at += 16 + len;
            }
        }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        // SAFETY: the descriptor is this struct's and closed once.
        unsafe { libc::close(self.fd) };
    }
}
