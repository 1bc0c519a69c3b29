//! Promises of the contract that testing from outside once broke, each on
//! the real binary: the stdin spool, a FIFO as input, what `--status` says
//! after input errors, dead holders and unreachable targets, non-UTF-8
//! working directories, JSON logs to the last line.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

fn tree(dir: &Path, files: usize) -> std::path::PathBuf {
    let root = dir.join("root");
    for i in 0..files {
        let f = root.join("repo").join(format!("f{i}.txt"));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, format!("file {i}\n")).unwrap();
    }
    root
}

fn adds(files: std::ops::Range<usize>) -> String {
    files
        .map(|i| format!("{{\"op\":\"add\",\"repo\":\"repo\",\"path\":\"f{i}.txt\"}}\n"))
        .collect()
}

/// A manifest whose line 3 is not JSON: under `--on-error stop
/// --batch-size 1` a run ends there, with the manifest unfinished.
fn stops_at_line_3() -> String {
    format!("{}not json\n{}", adds(0..2), adds(2..5))
}

#[test]
fn spool_of_an_unfinished_run_survives_any_form_of_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 5);
    let manifest = stops_at_line_3();
    for (first, second) in [("st", "./st/."), ("./st2", "st2"), ("st3/", "ABS/./st3")] {
        let abs = |s: &str| s.replace("ABS", dir.path().to_str().unwrap());
        let run_in = |state: &str, input: &[u8]| {
            let mut c = cmd(&[
                "index",
                "sync",
                "--input",
                "-",
                "--root",
                root.to_str().unwrap(),
                "--state-dir",
                &abs(state),
                "--on-error",
                "stop",
                "--batch-size",
                "1",
            ]);
            c.current_dir(dir.path())
                .stdin(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input).unwrap();
            child.wait_with_output().unwrap()
        };
        let out = run_in(first, manifest.as_bytes());
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        // Another manifest on stdin, the state dir named another way: the
        // unfinished one is resumed first (its spool is still there), not
        // reported gone.
        let out = run_in(second, adds(0..1).as_bytes());
        let err = text(&out.stderr);
        assert!(
            !err.contains("no longer readable"),
            "{first} then {second}: the spool was deleted: {err}"
        );
        assert!(err.contains("[RESUME]"), "{first} then {second}: {err}");
    }
}

#[test]
fn a_fifo_as_input_is_refused_at_once_and_leaves_no_running_state() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 1);
    let state = dir.path().join("state");
    let fifo = dir.path().join("fifo.jsonl");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = sync_cmd(&fifo, &root, &state, &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let status = status.expect("a FIFO as --input blocked the run");
    assert_eq!(status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("FIFO"), "{}", text(&out.stderr));
    assert_ne!(status_of(&state), "running");
}

fn status_of(state: &Path) -> String {
    status(state)["status"].as_str().unwrap_or("").to_owned()
}

#[test]
fn status_after_an_input_error_is_failed_not_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 3);
    let state = dir.path().join("state");
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(&manifest, adds(0..3)).unwrap();
    let out = sync(&manifest, &root, &state, &["--from-line", "99"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let st = status(&state);
    assert_eq!(st["status"], "failed", "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap_or("")
            .contains("--from-line 99"),
        "{st}"
    );
}

#[test]
fn status_of_a_killed_run_is_interrupted_even_while_its_pid_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 400);
    let state = dir.path().join("state");
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(&manifest, adds(0..400).repeat(20)).unwrap();
    let mut child = sync_cmd(&manifest, &root, &state, &["--batch-size", "5"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(read_until_processed(&mut lines, 3, &mut log), "{log}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status_of(&state), "interrupted");
    // The lock file names a live process that holds no lock (a reused pid,
    // or a holder killed while a child it forked lives on).
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(state.join("lock"), sleeper.id().to_string()).unwrap();
    let st = status(&state);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(st["status"], "interrupted", "{st}");
    assert!(st["pid"].is_null(), "{st}");
}

#[test]
fn a_run_that_cannot_reach_its_index_shows_failed_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 1);
    let state = dir.path().join("state");
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(&manifest, adds(0..1)).unwrap();
    // Nothing listens on port 1.
    let out = sync(
        &manifest,
        &root,
        &state,
        &[
            "--target",
            "weaviate",
            "--weaviate-url",
            "http://127.0.0.1:1",
            "--timeout",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let st = status(&state);
    assert_eq!(st["status"], "failed", "{st}");
    assert!(
        st["message"].as_str().unwrap_or("").contains("127.0.0.1:1"),
        "{st}"
    );
}

#[test]
fn relative_input_in_a_non_utf8_working_directory_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 5);
    let state = dir.path().join("state");
    let cwd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"work-\xff\xfe"));
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("m.jsonl"), stops_at_line_3()).unwrap();
    // Run from the non-UTF-8 directory.
    let out = cmd(&sync_args(
        Path::new("m.jsonl"),
        &root,
        &state,
        &["--on-error", "stop", "--batch-size", "1"],
    ))
    .current_dir(&cwd)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // A later run with another manifest must find the unfinished one again.
    let other = dir.path().join("other.jsonl");
    std::fs::write(&other, adds(0..1)).unwrap();
    let out = sync(&other, &root, &state, &[]);
    let err = text(&out.stderr);
    assert!(!err.contains("no longer readable"), "{err}");
    assert!(err.contains("[RESUME]"), "{err}");
}

#[test]
fn every_stderr_line_is_json_under_log_format_json_the_fatal_one_included() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 3);
    let state = dir.path().join("state");
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(&manifest, format!("{}garbage\n", adds(0..3))).unwrap();
    for extra in [
        &["--log-format", "json"][..],
        &["--log-format", "json", "--from-line", "99"][..],
        &["--log-format", "json", "--dry-run"][..],
    ] {
        let out = sync(&manifest, &root, &state, extra);
        let err = text(&out.stderr);
        assert!(!err.trim().is_empty(), "{extra:?}: nothing on stderr");
        for line in err.lines() {
            let v: Result<serde_json::Value, _> = serde_json::from_str(line);
            assert!(v.is_ok(), "{extra:?}: not JSON: {line}");
        }
    }
}

fn sync_ok(manifest: &Path, root: &Path, state: &Path, extra: &[&str]) -> (i32, String) {
    let out = sync(manifest, root, state, extra);
    (out.status.code().unwrap_or(-1), text(&out.stderr))
}

#[test]
fn a_failed_first_line_after_a_byte_order_mark_is_retried_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 1);
    let state = dir.path().join("state");
    let manifest = dir.path().join("bom.jsonl");
    // Line 1 names a repo that has no directory yet: a failed item.
    std::fs::write(
        &manifest,
        format!(
            "\u{feff}{{\"op\":\"add\",\"repo\":\"late\",\"path\":\"a.txt\"}}\n{}",
            adds(0..1)
        ),
    )
    .unwrap();
    let (code, err) = sync_ok(&manifest, &root, &state, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("late"), "{err}");
    std::fs::create_dir_all(root.join("late")).unwrap();
    std::fs::write(root.join("late/a.txt"), "late\n").unwrap();
    // The retry reads line 1 again: without its BOM, so it parses.
    let (code, err) = sync_ok(&manifest, &root, &state, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("invalid JSON"), "{err}");
    assert!(exported_paths(&state).contains(&"late/a.txt".to_string()));
}

#[test]
fn dead_letters_keep_exit_1_and_partially_complete_until_a_later_line_applies_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 2);
    let state = dir.path().join("state");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{{\"op\":\"add\",\"repo\":\"late\",\"path\":\"a.txt\"}}\n{}",
            adds(0..1)
        ),
    )
    .unwrap();
    for night in 1..=5 {
        let (code, err) = sync_ok(&bad, &root, &state, &[]);
        assert_eq!(code, 1, "night {night}: {err}");
    }
    assert_eq!(status(&state)["dead_letters"], 1);
    // A healthy night with another manifest: the dead letter is still
    // outstanding (the file is still not in the index).
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, adds(1..2)).unwrap();
    let metrics = dir.path().join("m.prom");
    let (code, err) = sync_ok(
        &good,
        &root,
        &state,
        &["--metrics-file", metrics.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    let st = status(&state);
    assert_eq!(st["status"], "partially_complete", "{st}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("elysiactl_sync_outstanding_failures{kind=\"dead_letter\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("status=\"partially_complete\""), "{prom}");
    // The repo appears and a later manifest applies the file: no longer
    // outstanding, and the run is complete.
    std::fs::create_dir_all(root.join("late")).unwrap();
    std::fs::write(root.join("late/a.txt"), "late\n").unwrap();
    let later = dir.path().join("later.jsonl");
    std::fs::write(
        &later,
        "{\"op\":\"add\",\"repo\":\"late\",\"path\":\"a.txt\"}\n",
    )
    .unwrap();
    let (code, err) = sync_ok(&later, &root, &state, &[]);
    assert_eq!(code, 0, "{err}");
    let st = status(&state);
    assert_eq!(st["status"], "complete", "{st}");
    assert_eq!(st["errors"], 0, "{st}");
}

#[test]
fn a_finished_manifest_given_again_is_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 2);
    let state = dir.path().join("state");
    let manifest = dir.path().join("find.jsonl");
    std::fs::write(&manifest, adds(0..2)).unwrap();
    let (code, err) = sync_ok(&manifest, &root, &state, &[]);
    assert_eq!(code, 0, "{err}");
    // The same bytes tomorrow (a find-style producer), the files changed.
    std::fs::write(root.join("repo/f0.txt"), "changed\n").unwrap();
    std::fs::remove_file(root.join("repo/f1.txt")).unwrap();
    let (code, err) = sync_ok(&manifest, &root, &state, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("[RESTART]"), "{err}");
    let index = export(&state);
    let shas: Vec<&(String, String)> = index.values().collect();
    assert_eq!(
        shas,
        vec![&("repo/f0.txt".to_string(), sha256_hex(b"changed\n"))],
        "f0 has its new content, f1 is gone"
    );
}

#[test]
fn a_state_dir_refuses_a_run_against_another_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 1);
    let state = dir.path().join("state");
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(&manifest, adds(0..1)).unwrap();
    let (code, err) = sync_ok(&manifest, &root, &state, &[]);
    assert_eq!(code, 0, "{err}");
    // ELYSIACTL_WEAVIATE_URL exported by mistake: weaviate by default now.
    // Refused before anything is contacted or recorded (nothing listens).
    let out = cmd(&sync_args(&manifest, &root, &state, &[]))
        .env("ELYSIACTL_WEAVIATE_URL", "http://127.0.0.1:1")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the local index"), "{err}");
    assert!(err.contains("weaviate at http://127.0.0.1:1"), "{err}");
    assert!(err.contains("--state-dir"), "{err}");
    assert_eq!(status(&state)["status"], "complete");
    // The right index still works.
    let (code, err) = sync_ok(&manifest, &root, &state, &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn every_stderr_line_of_changes_is_json_under_log_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repos");
    let repo = root.join("r");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("a.txt"), "a\n").unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "one"]);
    // An empty root beside it (an EMPTY-ROOT line) and, second, a root
    // that is itself a repository (the fatal line).
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let state = dir.path().join("state");
    let out_file = dir.path().join("c.jsonl");
    for roots in [vec![&root, &empty], vec![&repo]] {
        let mut args = vec!["changes", "--log-format", "json", "--state-dir"];
        args.push(state.to_str().unwrap());
        args.extend(["--output", out_file.to_str().unwrap()]);
        for r in &roots {
            args.extend(["--root", r.to_str().unwrap()]);
        }
        let out = run(&args);
        let err = text(&out.stderr);
        assert!(!err.trim().is_empty(), "{roots:?}: nothing on stderr");
        for line in err.lines() {
            let v: Result<serde_json::Value, _> = serde_json::from_str(line);
            assert!(v.is_ok(), "{roots:?}: not JSON: {line}");
        }
    }
}
