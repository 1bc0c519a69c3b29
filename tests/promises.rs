//! Promises of the contract that testing from outside once broke, each on
//! the real binary: the stdin spool, a FIFO as input, what `--status` says
//! after input errors, dead holders and unreachable targets, non-UTF-8
//! working directories, JSON logs to the last line.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;

use support::*;

fn tree(dir: &Path, files: usize) -> PathBuf {
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

/// A temp dir with [`tree`] as `root`, and `state` beside it.
struct Site {
    dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
}

impl Site {
    fn new(files: usize) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = tree(dir.path(), files);
        let state = dir.path().join("state");
        Site { dir, root, state }
    }

    /// A manifest `name` holding `body` in the temp dir.
    fn manifest(&self, name: &str, body: &str) -> PathBuf {
        let m = self.dir.path().join(name);
        std::fs::write(&m, body).unwrap();
        m
    }

    fn sync(&self, m: &Path, extra: &[&str]) -> Output {
        sync(m, &self.root, &self.state, extra)
    }

    /// The file a later line can add: `late/a.txt`, in a repo made now.
    fn make_late(&self) {
        std::fs::create_dir_all(self.root.join("late")).unwrap();
        std::fs::write(self.root.join("late/a.txt"), "late\n").unwrap();
    }
}

/// A line adding `late/a.txt`, a file of a repo that has no directory yet.
const LATE: &str = "{\"op\":\"add\",\"repo\":\"late\",\"path\":\"a.txt\"}\n";

/// Asserts that `--status` says `failed`, its message naming `what`.
fn assert_failed_saying(state: &Path, what: &str) {
    let st = status(state);
    assert_eq!(st["status"], "failed", "{st}");
    assert!(st["message"].as_str().unwrap_or("").contains(what), "{st}");
}

#[test]
fn spool_of_an_unfinished_run_survives_any_form_of_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 5);
    let manifest = stops_at_line_3();
    for (first, second) in [("st", "./st/."), ("./st2", "st2"), ("st3/", "ABS/./st3")] {
        let abs = |s: &str| s.replace("ABS", dir.path().to_str().unwrap());
        let run_in = |state: &str, input: &[u8]| {
            let stop = ["--on-error", "stop", "--batch-size", "1"];
            let state = PathBuf::from(abs(state));
            let mut c = sync_cmd(Path::new("-"), &root, &state, &stop);
            feed(c.current_dir(dir.path()), input)
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
    let t = Site::new(1);
    let fifo = t.dir.path().join("fifo.jsonl");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = sync_cmd(&fifo, &t.root, &t.state, &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, Duration::from_secs(20));
    let out = child.wait_with_output().unwrap();
    let status = status.expect("a FIFO as --input blocked the run");
    assert_eq!(status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("FIFO"), "{}", text(&out.stderr));
    assert_ne!(status_of(&t.state), "running");
}

fn status_of(state: &Path) -> String {
    status(state)["status"].as_str().unwrap_or("").to_owned()
}

#[test]
fn status_after_an_input_error_is_failed_not_interrupted() {
    let t = Site::new(3);
    let manifest = t.manifest("m.jsonl", &adds(0..3));
    expect_code(&t.sync(&manifest, &["--from-line", "99"]), 2);
    assert_failed_saying(&t.state, "--from-line 99");
}

#[test]
fn status_of_a_killed_run_is_interrupted_even_while_its_pid_lives_on() {
    let t = Site::new(400);
    let manifest = t.manifest("m.jsonl", &adds(0..400).repeat(20));
    let mut child = sync_cmd(&manifest, &t.root, &t.state, &["--batch-size", "5"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(read_until_processed(&mut lines, 3, &mut log), "{log}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status_of(&t.state), "interrupted");
    // The lock file names a live process that holds no lock (a reused pid,
    // or a holder killed while a child it forked lives on).
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(t.state.join("lock"), sleeper.id().to_string()).unwrap();
    let st = status(&t.state);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(st["status"], "interrupted", "{st}");
    assert!(st["pid"].is_null(), "{st}");
}

#[test]
fn a_run_that_cannot_reach_its_index_shows_failed_in_status() {
    let t = Site::new(1);
    let manifest = t.manifest("m.jsonl", &adds(0..1));
    // Nothing listens on port 1.
    let weaviate = [
        "--target",
        "weaviate",
        "--weaviate-url",
        "http://127.0.0.1:1",
    ];
    let args = [&weaviate[..], &["--timeout", "1"]].concat();
    expect_code(&t.sync(&manifest, &args), 3);
    assert_failed_saying(&t.state, "127.0.0.1:1");
}

#[test]
fn relative_input_in_a_non_utf8_working_directory_resumes() {
    let t = Site::new(5);
    let cwd = t
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"work-\xff\xfe"));
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("m.jsonl"), stops_at_line_3()).unwrap();
    // Run from the non-UTF-8 directory.
    let stop = ["--on-error", "stop", "--batch-size", "1"];
    let out = sync_cmd(Path::new("m.jsonl"), &t.root, &t.state, &stop)
        .current_dir(&cwd)
        .output()
        .unwrap();
    expect_code(&out, 1);
    // A later run with another manifest must find the unfinished one again.
    let other = t.manifest("other.jsonl", &adds(0..1));
    let err = text(&t.sync(&other, &[]).stderr);
    assert!(!err.contains("no longer readable"), "{err}");
    assert!(err.contains("[RESUME]"), "{err}");
}

#[test]
fn every_stderr_line_is_json_under_log_format_json_the_fatal_one_included() {
    let t = Site::new(3);
    let manifest = t.manifest("m.jsonl", &format!("{}garbage\n", adds(0..3)));
    for extra in [
        &["--log-format", "json"][..],
        &["--log-format", "json", "--from-line", "99"][..],
        &["--log-format", "json", "--dry-run"][..],
    ] {
        let err = text(&t.sync(&manifest, extra).stderr);
        assert_json_lines(&err, &format!("{extra:?}"));
    }
}

#[test]
fn a_failed_first_line_after_a_byte_order_mark_is_retried_as_json() {
    let t = Site::new(1);
    // Line 1 names a repo that has no directory yet: a failed item.
    let manifest = t.manifest("bom.jsonl", &format!("\u{feff}{LATE}{}", adds(0..1)));
    let err = expect_code(&t.sync(&manifest, &[]), 1);
    assert!(err.contains("late"), "{err}");
    t.make_late();
    // The retry reads line 1 again: without its BOM, so it parses.
    let err = expect_code(&t.sync(&manifest, &[]), 0);
    assert!(!err.contains("invalid JSON"), "{err}");
    assert!(exported_paths(&t.state).contains(&"late/a.txt".to_string()));
}

#[test]
fn dead_letters_keep_exit_1_and_partially_complete_until_a_later_line_applies_their_file() {
    let t = Site::new(2);
    let bad = t.manifest("bad.jsonl", &format!("{LATE}{}", adds(0..1)));
    for night in 1..=5 {
        let out = t.sync(&bad, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "night {night}: {err}");
    }
    assert_eq!(status(&t.state)["dead_letters"], 1);
    // A healthy night with another manifest: the dead letter is still
    // outstanding (the file is still not in the index).
    let good = t.manifest("good.jsonl", &adds(1..2));
    let metrics = t.dir.path().join("m.prom");
    expect_code(&t.sync(&good, &["--metrics-file", arg(&metrics)]), 1);
    let st = status(&t.state);
    assert_eq!(st["status"], "partially_complete", "{st}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("elysiactl_sync_outstanding_failures{kind=\"dead_letter\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("status=\"partially_complete\""), "{prom}");
    // The repo appears and a later manifest applies the file: no longer
    // outstanding, and the run is complete.
    t.make_late();
    let later = t.manifest("later.jsonl", LATE);
    expect_code(&t.sync(&later, &[]), 0);
    let st = status(&t.state);
    assert_eq!(st["status"], "complete", "{st}");
    assert_eq!(st["errors"], 0, "{st}");
}

#[test]
fn a_finished_manifest_given_again_is_applied_again() {
    let t = Site::new(2);
    let manifest = t.manifest("find.jsonl", &adds(0..2));
    expect_code(&t.sync(&manifest, &[]), 0);
    // The same bytes tomorrow (a find-style producer), the files changed.
    std::fs::write(t.root.join("repo/f0.txt"), "changed\n").unwrap();
    std::fs::remove_file(t.root.join("repo/f1.txt")).unwrap();
    let err = expect_code(&t.sync(&manifest, &[]), 0);
    assert!(err.contains("[RESTART]"), "{err}");
    let index = export(&t.state);
    let shas: Vec<&(String, String)> = index.values().collect();
    assert_eq!(
        shas,
        vec![&("repo/f0.txt".to_string(), sha256_hex(b"changed\n"))],
        "f0 has its new content, f1 is gone"
    );
}

#[test]
fn a_state_dir_refuses_a_run_against_another_index() {
    let t = Site::new(1);
    let manifest = t.manifest("m.jsonl", &adds(0..1));
    expect_code(&t.sync(&manifest, &[]), 0);
    // ELYSIACTL_WEAVIATE_URL exported by mistake: weaviate by default now.
    // Refused before anything is contacted or recorded (nothing listens).
    let out = sync_cmd(&manifest, &t.root, &t.state, &[])
        .env("ELYSIACTL_WEAVIATE_URL", "http://127.0.0.1:1")
        .output()
        .unwrap();
    let err = expect_code(&out, 2);
    assert_contains_all(
        &err,
        &[
            "the local index",
            "weaviate at http://127.0.0.1:1",
            "--state-dir",
        ],
    );
    assert_eq!(status(&t.state)["status"], "complete");
    // The right index still works.
    expect_code(&t.sync(&manifest, &[]), 0);
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
        args.extend([arg(&state), "--output", arg(&out_file)]);
        for r in &roots {
            args.extend(["--root", arg(r)]);
        }
        let err = text(&run(&args).stderr);
        assert_json_lines(&err, &format!("{roots:?}"));
    }
}
