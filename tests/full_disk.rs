//! A real full disk: the state dir on a 64 KiB tmpfs that the test mounts
//! (as root; where mounting is refused the test says why and passes), and
//! output to /dev/full.
//!
//! What must hold: the WAL is never corrupted (`wal inspect --verify`
//! passes after every run), the run says so loudly and exits 3, and once
//! there is space again the next run resumes and ends with the exact index.
//!
//! Which failure comes first depends on what shares the disk: with the
//! local target the embedded index lives in the state dir too, and its
//! commit meets ENOSPC (fatal, exit 3, WAL state saved); with a remote
//! target only the WAL is there, and the run goes on in memory.

mod support;

#[allow(unused_imports)]
#[path = "weaviate_support/mod.rs"]
mod wsupport;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount refused: {}", text(&out.stderr).trim()));
        }
        Ok(Tmpfs(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

macro_rules! mount_or_skip {
    ($dir:expr, $size:expr) => {
        match Tmpfs::mount($dir, $size) {
            Ok(m) => m,
            Err(why) => {
                eprintln!("SKIPPED (needs a 64 KiB tmpfs): {why}");
                return;
            }
        }
    };
}

#[test]
fn full_state_disk_never_corrupts_the_wal_and_a_run_with_space_resumes_exactly() {
    let (_dir, w, state) = temp_workload(300, 1200, 0xd15c);
    let fs = mount_or_skip!(&state, "64k");
    let args = ["--batch-size", "10", "--max-file-size", "2048"];

    // Runs until the disk is full; each must fail loudly with exit 3 and
    // leave a WAL that verifies.
    let mut saw_full = false;
    for _ in 0..3 {
        let out = sync(&w.manifest, &w.root, &state, &args);
        let err = text(&out.stderr);
        if out.status.code() == Some(0) {
            continue;
        }
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("No space left on device"), "{err}");
        assert!(
            err.contains("[FATAL]") || err.contains("STATE NOT SAVED"),
            "not loud enough:\n{err}"
        );
        assert!(!err.contains("panicked at"), "{err}");
        verify_wal(&state, "WAL corrupt after a full disk");
        saw_full = true;
    }
    assert!(saw_full, "64 KiB never filled up");

    // Space again: the next run resumes and the index is exact.
    fs.resize("64m");
    let out = sync(&w.manifest, &w.root, &state, &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("[RESUME]"), "{err}");
    verify_wal(&state, "WAL corrupt after a full disk");
    assert_eq!(export(&state), expected(&w.root, &w.refs, 2048));
}

#[test]
fn full_wal_disk_mid_run_goes_on_in_memory_says_so_exits_3_and_resumes_exactly() {
    use wsupport::standin::{Config, Standin};
    let (_dir, w, state) = temp_workload(200, 900, 0xf011);
    let fs = mount_or_skip!(&state, "64k");
    let standin = Standin::start(Config {
        record: false,
        ..Config::default()
    })
    .unwrap();
    let url = standin.url();
    let sync_weaviate = |extra: &[&str]| {
        let mut args = vec![
            "--target",
            "weaviate",
            "--weaviate-url",
            url.as_str(),
            "--max-file-size",
            "2048",
        ];
        args.extend_from_slice(extra);
        sync_cmd(&w.manifest, &w.root, &state, &args)
            .env_remove("WEAVIATE_API_KEY")
            .stdout(Stdio::null())
            .output()
            .unwrap()
    };
    // One record per line: the WAL outgrows 64 KiB halfway through.
    let out = sync_weaviate(&["--batch-size", "1", "--quiet"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("STATE NOT SAVED"), "no loud warning:\n{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("exiting 3"), "{err}");
    // It went on: every line was applied although the WAL stopped.
    assert!(
        err.contains("[SUMMARY] complete:"),
        "the run did not go on:\n{err}"
    );
    let want = expected(&w.root, &w.refs, 2048);
    assert_eq!(dump(&standin), want, "the run did not go on to the end");
    verify_wal(&state, "WAL corrupt after a full disk");
    let doc = status(&state);
    let saved = doc["next_resume_position"].as_u64().unwrap_or(0);
    let size = std::fs::metadata(&w.manifest).unwrap().len();
    assert!(
        saved > 0 && saved < size,
        "durable progress {saved} of {size}: {doc}"
    );

    fs.resize("64m");
    let out = sync_weaviate(&["--batch-size", "50"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("(byte {saved})")),
        "did not resume at the durable point {saved}:\n{err}"
    );
    verify_wal(&state, "WAL corrupt after a full disk");
    assert_eq!(dump(&standin), want);
}

fn dump(s: &wsupport::standin::Standin) -> std::collections::BTreeMap<String, (String, String)> {
    s.dump()
        .into_iter()
        .map(|d| {
            let rp = format!(
                "{}/{}",
                d.repo.unwrap_or_default(),
                d.path.unwrap_or_default()
            );
            (d.id.to_string(), (rp, d.content_sha256.unwrap_or_default()))
        })
        .collect()
}

/// Output to a full device is an error with an exit code, never a panic.
#[test]
fn output_to_dev_full_is_an_error_not_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("SKIPPED: no /dev/full");
        return;
    };
    let (_dir, w, state) = temp_workload(30, 60, 0xf1);
    let out = sync(&w.manifest, &w.root, &state, &["--max-file-size", "2048"]);
    assert_eq!(out.status.code(), Some(0));
    let sd = state.to_str().unwrap();
    for args in [
        vec!["index", "export", "--state-dir", sd],
        vec!["wal", "inspect", "--state-dir", sd],
        vec!["wal", "inspect", "--json", "--state-dir", sd],
    ] {
        let out = cmd(&args)
            .stdout(full.try_clone().unwrap())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert!(!err.contains("panicked at"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
    }
    // A sync whose log goes to /dev/full still exits by its outcome.
    let out = sync_cmd(&w.manifest, &w.root, &state, &["--max-file-size", "2048"])
        .stderr(full.try_clone().unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}
