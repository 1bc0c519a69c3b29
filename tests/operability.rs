//! What the operator relies on at 3 a.m.: metrics, failed-item retries across
//! runs and dead letters, a bounded state dir, status during a run.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use elysiactl::sync::{self, Input, OnError, Options};
use elysiactl::target::{self, Op, OpOutcome, Target};
use support::*;

/// A target whose writes fail (for good) while `failing` is set.
#[derive(Default)]
struct Switch {
    failing: AtomicBool,
    applied: AtomicUsize,
}

struct Shared(Arc<Switch>);

impl Target for Shared {
    fn describe(&self) -> String {
        "switch".into()
    }
    fn prepare(&self) -> Result<(), target::Error> {
        Ok(())
    }
    fn list_repo(&self, _: &str) -> Result<Vec<String>, target::Error> {
        Ok(Vec::new())
    }
    fn export(&self, _: bool) -> Result<Vec<elysiactl::target::Exported>, target::Error> {
        Ok(Vec::new())
    }
    fn apply(&self, ops: &[Op]) -> Result<Vec<OpOutcome>, target::Error> {
        if self.0.failing.load(Ordering::SeqCst) {
            return Ok(ops
                .iter()
                .map(|_| OpOutcome::Failed {
                    retryable: false,
                    message: "class not present in schema".into(),
                })
                .collect());
        }
        self.0.applied.fetch_add(ops.len(), Ordering::SeqCst);
        Ok(vec![OpOutcome::Ok; ops.len()])
    }
}

fn options(manifest: Option<&Path>, root: &Path, state: &Path) -> Options {
    Options {
        input: manifest.map(|m| Input::File(m.to_owned())),
        state_dir: state.to_owned(),
        batch_size: 100,
        on_error: OnError::Continue,
        max_retries: 0,
        rate_limit_patience: std::time::Duration::ZERO,
        from_line: None,
        roots: vec![root.to_owned()],
        dry_run: false,
        max_file_size: 1 << 20,
        chunk_size: elysiactl::object::ChunkSize::WHOLE_FILE,
        rechunk: false,
        abandon_pending: false,
        backoff: sync::Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        },
        progress: true,
        target_name: "test".into(),
        target: elysiactl::wal::TargetIdentity {
            kind: "test".into(),
            server: String::new(),
            collection: String::new(),
            chunk_size: 0,
        },
        metrics_file: None,
        retry_failed: false,
        log_format: sync::LogFormat::Text,
        progress_bar: false,
    }
}

fn run_with(opts: &Options, t: &Arc<Switch>) -> (u8, String) {
    let t = Arc::clone(t);
    let open =
        move || -> Result<Box<dyn Target>, target::Error> { Ok(Box::new(Shared(Arc::clone(&t)))) };
    let mut log = Vec::new();
    let code = match sync::run(opts, &open, &mut log) {
        Ok(r) => r.exit_code,
        Err(e) => {
            log.extend_from_slice(format!("error: {e}\n").as_bytes());
            e.exit_code()
        }
    };
    (code, text(&log))
}

fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("R")).unwrap();
    std::fs::write(root.join("R/a.txt"), "a\n").unwrap();
    std::fs::write(root.join("R/b.txt"), "b\n").unwrap();
    root
}

/// A temp dir with the [`tree`] `root` in it, the path of a `state` dir, and
/// a manifest `m.jsonl` holding `manifest`: (dir, root, state, m).
fn scene(manifest: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let state = dir.path().join("state");
    let m = dir.path().join("m.jsonl");
    std::fs::write(&m, manifest).unwrap();
    (dir, root, state, m)
}

#[test]
fn failed_items_are_retried_by_later_runs_then_kept_as_dead_letters() {
    let (_dir, root, state, m) =
        scene("{\"op\":\"add\",\"path\":\"R/a.txt\"}\n{\"op\":\"add\",\"path\":\"R/b.txt\"}\n");
    let t = Arc::new(Switch::default());
    t.failing.store(true, Ordering::SeqCst);
    let opts = options(Some(&m), &root, &state);

    let (code, log) = run_with(&opts, &t);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("2 failed (will retry)"), "{log}");
    // Runs 2..=5 retry the two lines and fail again.
    for run in 2..=5 {
        let (code, log) = run_with(&opts, &t);
        assert_eq!(code, 1, "run {run}: {log}");
        assert!(
            log.contains("2 failed line(s) to retry"),
            "run {run}: {log}"
        );
    }
    let list = sync::status::failures(&state).unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|f| f.attempts == 5 && f.dead_letter));
    // Run 6: both are dead letters now, kept and listed but not retried.
    let (code, log) = run_with(&opts, &t);
    assert!(
        log.contains("0 failed line(s) to retry") && log.contains("2 dead letter(s)"),
        "{log}"
    );
    // Nothing was attempted, but two files are still missing from the
    // index: outstanding dead letters keep exit 1 (SPEC: exit 0 and
    // `complete` mean nothing is outstanding).
    assert_eq!(code, 1, "dead letters are outstanding: {log}");
    assert!(
        log.contains("2 failed line(s) outstanding (2 dead letter(s))"),
        "{log}"
    );
    assert_eq!(sync::status::status(&state)["status"], "partially_complete");
    assert_eq!(sync::status::failures(&state).unwrap().len(), 2);
    let st = sync::status::status(&state);
    assert_eq!(st["dead_letters"], 2);

    // The index is fixed; --retry-failed (without --input) applies them.
    t.failing.store(false, Ordering::SeqCst);
    let mut retry = options(None, &root, &state);
    retry.retry_failed = true;
    let (code, log) = run_with(&retry, &t);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("[RETRIED] Line 1-2: 2 success"), "{log}");
    assert!(sync::status::failures(&state).unwrap().is_empty());
    assert_eq!(t.applied.load(Ordering::SeqCst), 2);
    let st = sync::status::status(&state);
    assert_eq!(st["errors"], 0);
}

#[test]
fn state_dir_stays_bounded_across_a_thousand_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let state = dir.path().join("state");
    let t = Arc::new(Switch::default());
    let mut max_seen = 0u64;
    for i in 0..1000 {
        // A new manifest every run, as a nightly job produces.
        let m = dir.path().join("m.jsonl");
        std::fs::write(
            &m,
            format!("{{\"op\":\"add\",\"path\":\"R/a.txt\",\"n\":{i}}}\n{{\"op\":\"delete\",\"path\":\"R/gone{i}.txt\"}}\n"),
        )
        .unwrap();
        let (code, log) = run_with(&options(Some(&m), &root, &state), &t);
        assert_eq!(code, 0, "run {i}: {log}");
        let size: u64 = std::fs::read_dir(state.join("wal"))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        max_seen = max_seen.max(size);
    }
    // Compaction past 256 KiB keeps the log near that size: it never grows
    // with the number of runs.
    assert!(max_seen < 320 << 10, "WAL grew to {max_seen} bytes");
    let st = sync::status::status(&state);
    assert_eq!(st["status"], "complete");
    assert_eq!(st["run_id"], 1000);
    // Each run opens a fresh segment (one 4 KiB page preallocated);
    // compaction folds them once they pass the threshold.
    let segments = st["wal"]["segments"].as_u64().unwrap();
    assert!(
        segments <= elysiactl::sync::COMPACT_THRESHOLD / 4096 + 2,
        "{segments} segments"
    );
}

#[test]
fn metrics_textfile_is_written_atomically_with_the_run_outcome() {
    let (dir, root, state, m) = scene("{\"op\":\"add\",\"path\":\"R/a.txt\"}\n{\"op\":\"update\",\"path\":\"R/b.txt\"}\n{\"op\":\"delete\",\"path\":\"R/c.txt\"}\nbroken\n");
    let prom_dir = dir.path().join("textfile");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom = prom_dir.join("elysiactl.prom");
    let out = sync(
        &m,
        &root,
        &state,
        &["--metrics-file", prom.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let t = std::fs::read_to_string(&prom).unwrap();
    for want in [
        "elysiactl_sync_last_run_timestamp{status=\"partially_complete\"}",
        "elysiactl_sync_files_processed_total{operation=\"add\"} 1",
        "elysiactl_sync_files_processed_total{operation=\"update\"} 1",
        "elysiactl_sync_files_processed_total{operation=\"delete\"} 1",
        "elysiactl_sync_failures_total{reason=\"malformed_line\"} 1",
        "elysiactl_sync_duration_seconds ",
        "elysiactl_sync_state_degraded 0",
    ] {
        assert!(t.contains(want), "missing {want:?}:\n{t}");
    }
    // Only the final file: the temporary one was renamed over it.
    let names: Vec<String> = std::fs::read_dir(&prom_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["elysiactl.prom"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter (another user) must read it");
    let index_files: Vec<_> = std::fs::read_dir(state.join("index"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!index_files.is_empty());
    for f in index_files {
        let mode = f.metadata().unwrap().permissions().mode() & 0o077;
        assert_eq!(mode, 0, "{} is readable by others", f.path().display());
    }
    // A metrics file that cannot be written is a warning, not a failure.
    let out = sync(&m, &root, &state, &["--metrics-file", "/dev/full"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot write metrics file"));
}

#[test]
fn status_is_readable_while_a_sync_runs_without_taking_its_lock() {
    let (_dir, w, state) = temp_workload(300, 3000, 99);
    let mut child = sync_cmd(
        &w.manifest,
        &w.root,
        &state,
        &["--batch-size", "1", "--quiet"],
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut seen_running = false;
    for _ in 0..400 {
        std::thread::sleep(Duration::from_millis(25));
        let st = status(&state);
        if st["status"] == "running" {
            assert_eq!(st["pid"], child.id());
            assert!(st["processed"].as_u64().unwrap() <= st["total"].as_u64().unwrap());
            seen_running = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen_running, "status never showed the running sync");
    let st = status(&state);
    assert_eq!(st["status"], "interrupted");
    assert_eq!(st["degraded"], false, "a kill is not a degraded state");
}

#[test]
fn json_log_format_gives_one_object_per_event() {
    let (_dir, root, state, m) = scene("{\"op\":\"add\",\"path\":\"R/a.txt\"}\nnope\n");
    let out = sync(&m, &root, &state, &["--log-format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let events: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stderr line is JSON"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["processed", "failed", "summary"]);
    assert_eq!(events[1]["line"], 2);
    assert_eq!(
        events[1]["offset"],
        "{\"op\":\"add\",\"path\":\"R/a.txt\"}\n".len()
    );
    assert_eq!(events[2]["counts"]["failed"], 1);
}

#[test]
fn completions_and_help_examples_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("elysiactl"));
    }
    for sub in [
        vec!["index", "sync", "--help"],
        vec!["index", "export", "--help"],
        vec!["index", "failures", "--help"],
        vec!["wal", "inspect", "--help"],
        vec!["search", "--help"],
        vec!["changes", "--help"],
    ] {
        let out = run(&sub);
        assert_eq!(out.status.code(), Some(0), "{sub:?}");
        assert!(
            text(&out.stdout).contains("Example"),
            "{sub:?} has no example"
        );
    }
}
