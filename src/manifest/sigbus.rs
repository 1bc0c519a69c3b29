//! A manifest truncated by another process while it is mapped must not kill
//! the run with SIGBUS.
//!
//! Each mapping registers its address range here. A SIGBUS whose faulting
//! address lies in a registered range is answered by mapping anonymous zero
//! pages over the rest of that range (one `mmap(MAP_FIXED)`, async-signal
//! safe in practice: a plain system call) and returning, so the read that
//! faulted sees zeros instead. The sync loop checks the file's size and
//! mtime before each batch and again before submitting it, so a batch that
//! read zeros is never applied: the run stops with exit 2 and its state
//! saved. A SIGBUS anywhere else gets the previous disposition (the default:
//! terminate with a core).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

const SLOTS: usize = 32;

/// Registered ranges: (start address, length); start 0 means free.
static RANGES: [(AtomicUsize, AtomicUsize); SLOTS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// Faults answered with zero pages, for tests and messages.
static ANSWERED: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
static mut PREVIOUS: Option<libc::sigaction> = None;

/// Guard for one registered mapping; unregisters on drop. It must be dropped
/// before the mapping is unmapped (`Manifest` declares it first).
pub struct Registration(Option<usize>);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            RANGES[i].1.store(0, Ordering::SeqCst);
            RANGES[i].0.store(0, Ordering::SeqCst);
        }
    }
}

/// Protect `[ptr, ptr + len)`. Without a free slot the range stays
/// unprotected (the size check before each batch still narrows the window).
pub fn register(ptr: *const u8, len: usize) -> Registration {
    install();
    for (i, (start, l)) in RANGES.iter().enumerate() {
        if start
            .compare_exchange(0, ptr as usize, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            l.store(len, Ordering::SeqCst);
            return Registration(Some(i));
        }
    }
    Registration(None)
}

/// How many truncation faults were answered with zero pages so far.
pub fn answered() -> usize {
    ANSWERED.load(Ordering::SeqCst)
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::SeqCst);
        }
        // SAFETY: a zeroed sigaction is a valid starting value; the handler
        // has the SA_SIGINFO signature; PREVIOUS is written once, here,
        // before the handler can run (it is installed by this very call).
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigbus as Handler as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &act, &mut old) == 0 {
                PREVIOUS = Some(old);
            }
        }
    });
}

type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for (start, len) in &RANGES {
        let s = start.load(Ordering::Relaxed);
        let l = len.load(Ordering::Relaxed);
        if s == 0 || addr < s || addr >= s + l {
            continue;
        }
        let from = addr & !(page - 1);
        let to = (s + l).div_ceil(page) * page;
        // SAFETY: replaces pages of our own read-only mapping (registered
        // above and still alive: it is unregistered before being unmapped)
        // with anonymous zero pages.
        let p = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                to - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            ANSWERED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        break;
    }
    // Not a manifest mapping: restore what was there and let the fault
    // happen again under it.
    // SAFETY: sigaction is async-signal-safe; PREVIOUS was set before the
    // handler was installed and is never written again.
    unsafe {
        let prev = (*std::ptr::addr_of!(PREVIOUS)).unwrap_or_else(|| {
            let mut d: libc::sigaction = std::mem::zeroed();
            d.sa_sigaction = libc::SIG_DFL;
            d
        });
        libc::sigaction(libc::SIGBUS, &prev, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reading_a_truncated_mapping_sees_zeros_not_sigbus() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![b'a'; 3 * 4096 + 100]).unwrap();
        f.flush().unwrap();
        // SAFETY: test-only mapping of a file we then truncate on purpose.
        let map = unsafe { memmap2::Mmap::map(f.as_file()) }.unwrap();
        let reg = register(map.as_ptr(), map.len());
        f.as_file().set_len(10).unwrap();
        let before = answered();
        let tail = std::hint::black_box(&map[2 * 4096..2 * 4096 + 8]).to_vec();
        assert_eq!(tail, vec![0u8; 8]);
        assert_eq!(&map[..10], b"aaaaaaaaaa");
        assert!(answered() > before);
        drop(reg);
        drop(map);
    }
}
