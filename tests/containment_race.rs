//! Containment under a racing tree, through the real binary: while a racer
//! thread swaps a directory inside the root with a symlink to a directory
//! outside it (`renameat2(RENAME_EXCHANGE)` in a loop), a sync of thousands
//! of lines through an absolute in-root symlink never opens a file outside
//! the root (an inotify watch on the outside directory and each of its files
//! sees nothing) and never indexes outside content.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::open_watch::OpenWatch;
use support::*;

const FILES: usize = 200;
const LINES: usize = 6_000;

fn exchange(a: &Path, b: &Path) -> bool {
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    rc == 0
}

#[test]
fn symlink_swap_race_never_opens_or_indexes_a_file_outside_the_root() {
    let t = sandbox();
    let (dir, root, outside) = (t.dir.clone(), t.root.clone(), t.outside.clone());
    let repo = root.join("R");
    let inside = repo.join("D");
    std::fs::create_dir_all(&inside).unwrap();
    let mut outside_sha = Vec::new();
    for i in 0..FILES {
        std::fs::write(inside.join(format!("f{i}.txt")), format!("inside {i}\n")).unwrap();
        let secret = format!("OUTSIDESECRET {i}\n");
        outside_sha.push(sha256_hex(secret.as_bytes()));
        std::fs::write(outside.join(format!("f{i}.txt")), secret).unwrap();
    }
    // A FIFO outside where the inside has a regular file of the same name.
    std::fs::write(inside.join("pipe.txt"), "inside pipe\n").unwrap();
    let fifo = CString::new(outside.join("pipe.txt").as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // `A` is an absolute symlink to `D`, inside the root: lines through it
    // cannot take the kernel's RESOLVE_BENEATH road as they are. `S` is the
    // racer's other half, a symlink to the outside directory.
    let swap = repo.join("S");
    std::os::unix::fs::symlink(&inside, repo.join("A")).unwrap();
    std::os::unix::fs::symlink(&outside, &swap).unwrap();

    let mut manifest = String::new();
    for n in 0..LINES {
        let name = if n % 50 == 0 {
            "pipe.txt".to_owned()
        } else {
            format!("f{}.txt", (n - n / 50 - 1) % FILES)
        };
        manifest.push_str(&format!(
            "{{\"op\":\"add\",\"repo\":\"R\",\"path\":\"A/{name}\"}}\n"
        ));
    }
    let m = dir.join("m.jsonl");
    std::fs::write(&m, manifest).unwrap();

    // Control, no racer: every line counts (the symlink stays inside).
    let watch = OpenWatch::tree(&outside);
    let calm = dir.join("state-calm");
    let out = sync(&m, &root, &calm, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(exported_paths(&calm).len(), FILES + 1);
    assert!(watch.events().is_empty());

    // The race.
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let racer = {
        let (stop, swaps, inside, swap) = (stop.clone(), swaps.clone(), inside.clone(), swap);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                assert!(exchange(&inside, &swap), "renameat2(RENAME_EXCHANGE)");
                swaps.fetch_add(1, Ordering::Relaxed);
            }
            // Leave D a directory again.
            if swaps.load(Ordering::Relaxed) % 2 == 1 {
                assert!(exchange(&inside, &swap));
            }
        })
    };
    while swaps.load(Ordering::Relaxed) < 100 {
        std::thread::yield_now();
    }
    let watch = OpenWatch::tree(&outside);
    let state = dir.join("state");
    let before = swaps.load(Ordering::Relaxed);
    let log = dir.join("sync.log");
    let mut child = sync_cmd(&m, &root, &state, &["--batch-size", "64"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Bounded: a run that hangs is killed and fails the test.
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    let during = swaps.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    let opened = watch.events();
    let err = std::fs::read_to_string(&log).unwrap();

    assert!(during > 0, "the racer never ran during the sync");
    assert!(
        opened.is_empty(),
        "{} opens or reads outside the root during {during} swaps: {:?}…\n{}",
        opened.len(),
        &opened[..opened.len().min(10)],
        err.lines().last().unwrap_or("")
    );
    assert!(
        matches!(status.code(), Some(0) | Some(1)),
        "exit {status:?}: {err}"
    );
    assert!(!err.contains("panicked at"), "{err}");
    assert!(err.contains(&format!("{LINES} lines")), "{err}");
    for (id, (rp, sha)) in export(&state) {
        assert!(
            !outside_sha.contains(&sha),
            "{rp} ({id}) holds outside content"
        );
        assert!(rp.starts_with("R/A/"), "{rp}");
    }
    let found = run_state(&["search", "OUTSIDESECRET", "--json"], &state);
    assert!(found.status.success(), "{}", text(&found.stderr));
    assert_eq!(
        text(&found.stdout).trim(),
        "",
        "outside content is searchable"
    );

    // The watch sees what it should (so the checks above can fail).
    let watch = OpenWatch::tree(&outside);
    let _ = std::fs::read(outside.join("f7.txt")).unwrap();
    assert!(!watch.events().is_empty());
}
