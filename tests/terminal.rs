//! `index sync` on a real terminal: the README's first command run under a
//! pseudo-terminal draws the progress bar and ends (it once deadlocked: the
//! run held the stderr lock while the bar's thread waited for it).

mod support;

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A pty pair: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors it opened into the pointers;
    // name, termios and winsize are optional and passed as null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned here.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Run `cmd` with stdin, stdout and stderr on a fresh pty; return its exit
/// status (None if it had not ended after `limit`, then it is killed) and
/// everything it wrote to the terminal.
fn run_on_pty(mut cmd: Command, limit: Duration) -> (Option<i32>, String) {
    let (master, slave) = openpty();
    let out = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty slave"));
    cmd.stdin(out(&slave))
        .stdout(out(&slave))
        .stderr(out(&slave));
    let mut child: Child = cmd.spawn().expect("spawn on pty");
    // The Command keeps its copies of the slave open: drop them, so the
    // master reads EIO once the child has ended.
    drop(cmd);
    drop(slave);
    let reader = std::thread::spawn(move || {
        let mut f = File::from(master);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // EIO once the last slave descriptor is closed: the child ended.
        while let Ok(n) = f.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    (status, text)
}

fn sync_on_pty(manifest: &Path, root: &Path, state: &Path) -> (Option<i32>, String) {
    let mut c = cmd(&sync_args(manifest, root, state, &[]));
    c.env("TERM", "xterm");
    // A run of a few seconds at most; the limit only catches a hang.
    run_on_pty(c, Duration::from_secs(120))
}

#[test]
fn sync_on_a_terminal_draws_the_bar_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let manifest = dir.path().join("m.jsonl");
    let mut lines = String::new();
    for i in 0..3000 {
        let p = format!("src/f{i}.txt");
        let f = root.join("repo").join(&p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, format!("file {i}\n")).unwrap();
        lines.push_str(&format!(
            "{{\"op\":\"add\",\"repo\":\"repo\",\"path\":\"{p}\"}}\n"
        ));
    }
    std::fs::write(&manifest, lines).unwrap();

    let (status, out) = sync_on_pty(&manifest, &root, &state);
    assert_eq!(
        status,
        Some(0),
        "the run must end, exit 0; terminal showed:\n{out}"
    );
    assert!(out.contains("[SUMMARY] complete"), "{out}");
    // The bar: lines done of the total, a rate and an ETA.
    assert!(out.contains("/3000 lines"), "no progress bar drawn:\n{out}");
    assert!(out.contains("ETA"), "{out}");

    // Nothing to do (the same manifest again is re-checked, a fresh state
    // dir with only a retry pass is not): still ends.
    let (status, out) = run_on_pty(
        {
            let retry = ["index", "sync", "--retry-failed", "--root", arg(&root)];
            let mut c = cmd(&[&retry[..], &["--state-dir", arg(&state)]].concat());
            c.env("TERM", "xterm");
            c
        },
        Duration::from_secs(120),
    );
    assert_eq!(status, Some(0), "{out}");
}

#[test]
fn readme_first_command_ends_on_a_terminal() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo-state");
    let (status, out) = sync_on_pty(
        &repo.join("examples/sample-changes.jsonl"),
        &repo.join("examples/sample-root"),
        &state,
    );
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("[SUMMARY] complete"), "{out}");
}
