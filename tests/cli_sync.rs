//! `index sync`, `--status`, `wal inspect`, driven through the real binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::*;

fn small_tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for (repo, path, body) in [
        ("A", "src/main.py", "print('main')\n"),
        ("A", "src/util.py", "def util(): pass\n"),
        ("A", "README.md", "# A\nzebra crossing\n"),
        ("B", "lib.rs", "pub fn b() {}\n"),
        ("B", "bin.dat", "x\0y"),
    ] {
        let f = root.join(repo).join(path);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, body).unwrap();
    }
    root
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// A temp dir holding [`small_tree`] as `root`, and `state` beside it.
struct Small {
    dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
}

impl Small {
    fn new() -> Small {
        let dir = tempfile::tempdir().unwrap();
        let root = small_tree(dir.path());
        let state = dir.path().join("state");
        Small { dir, root, state }
    }

    /// A file `name` holding `body` in the temp dir.
    fn write(&self, name: &str, body: &str) -> PathBuf {
        write(self.dir.path(), name, body)
    }

    /// `index sync` of `m` over the tree into `state`.
    fn sync(&self, m: &Path, extra: &[&str]) -> Output {
        sync(m, &self.root, &self.state, extra)
    }
}

/// A [`Small`] with the manifest `m.jsonl` holding `body`.
fn small_with(body: &str) -> (Small, PathBuf) {
    let t = Small::new();
    let m = t.write("m.jsonl", body);
    (t, m)
}

#[test]
fn sample_manifest_from_examples_syncs_and_search_finds_a_known_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = sync_sample(&state, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = run_state(&["search", "ledger"], &state);
    assert!(
        text(&s.stdout).contains("ServiceB/lib/ledger.rs"),
        "{}",
        text(&s.stdout)
    );
    let objs = export(&state);
    assert!(objs.values().any(|(p, _)| p == "ServiceA/src/main.py"));
}

#[test]
fn malformed_lines_are_reported_with_line_and_offset_while_the_rest_applies() {
    let t = Small::new();
    let bad: Vec<&[u8]> = vec![
        br#"{"op":"add","repo":"A","path":"#,      // truncated JSON
        br#"not json at all"#,                     // garbage
        br#"["op","add"]"#,                        // not an object
        br#"{"repo":"A","path":"src/main.py"}"#,   // missing op
        br#"{"op":"add","repo":"A"}"#,             // missing path
        br#"{"op":"copy","repo":"A","path":"x"}"#, // unknown op
        br#"{"op":"add","repo":"A","path":""}"#,   // empty path
        br#"{"op":"add","repo":"A","path":42}"#,   // wrong type
        br#"{"op":"rename","repo":"A","path":"src/x.py"}"#, // rename without from
        br#"{"op":"add","repo":"A","path":"../../etc/passwd"}"#, // escapes repo
        br#"{"op":"add","path":"/etc/passwd"}"#,   // outside every root
        b"{\"op\":\"add\",\"repo\":\"A\",\"path\":\"a\xff\"}", // invalid UTF-8
        br#"{"op":"add","repo":"A","path":"a","content_base64":"%%"}"#, // bad base64
        br#"{"op":"add","repo":"..","path":"x"}"#, // bad repo name
    ];
    let good = [
        r#"{"op":"add","repo":"A","path":"src/main.py"}"#,
        r#"{"op":"update","repo":"A","path":"src/util.py"}"#,
        r#"{"op":"add","path":"B/lib.rs"}"#,
    ];
    let mut body = Vec::new();
    let mut bad_pos = Vec::new(); // (line, offset)
    let mut line = 1u64;
    for (i, b) in bad.iter().enumerate() {
        if let Some(g) = good.get(i) {
            body.extend_from_slice(g.as_bytes());
            body.push(b'\n');
            line += 1;
        }
        bad_pos.push((line, body.len()));
        body.extend_from_slice(b);
        body.extend_from_slice(if i % 2 == 0 { b"\n" } else { b"\r\n" });
        line += 1;
    }
    let m = t.dir.path().join("m.jsonl");
    std::fs::write(&m, &body).unwrap();
    let err = expect_code(&t.sync(&m, &[]), 1); // finished with failed items
    assert!(!err.contains("panicked"));
    for (line, off) in &bad_pos {
        let want = format!("[FAILED] line {line} (byte {off})");
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    // Each failure names its reason.
    for reason in [
        "invalid JSON",
        "not a JSON object",
        "missing field `op`",
        "missing field `path`",
        "unknown op `copy`",
        "field `path` is empty",
        "field `path` must be a string",
        "missing field `from`",
        "escapes its repository",
        "outside every --root",
        "base64",
        "invalid repo name",
    ] {
        assert!(err.contains(reason), "no {reason:?} in\n{err}");
    }
    // The good lines applied.
    let got = exported_paths(&t.state);
    assert_eq!(got, vec!["A/src/main.py", "A/src/util.py", "B/lib.rs"]);
    let st = status(&t.state);
    assert_eq!(st["errors"], bad.len());
    assert_eq!(st["status"], "partially_complete");
    let f = &st["failures"][0];
    assert_eq!(
        (f["line"].as_u64(), f["offset"].as_u64()),
        (Some(bad_pos[0].0), Some(bad_pos[0].1 as u64))
    );
}

fn seg_of(state: &Path) -> PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(state.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

/// Offsets of each record in a segment, via `wal inspect --json`.
fn record_offsets(state: &Path) -> Vec<(u64, u64, String)> {
    let out = run_state(&["wal", "inspect", "--json"], state);
    assert_eq!(out.status.code(), Some(0));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["offset"].as_u64().unwrap(),
                v["len"].as_u64().unwrap(),
                v["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn last_record_cut_at_every_byte_resumes_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let w = workload(dir.path(), 60, 40, 7);
    let base = dir.path().join("base");
    let args = ["--batch-size", "8", "--max-file-size", "2048"];
    expect_code(&w.sync(&base, &args), 0);
    let want = expected(&w.root, &w.refs, 2048);
    let recs = record_offsets(&base);
    let (bd_off, bd_len, _) = recs
        .iter()
        .rev()
        .find(|r| r.2 == "BatchDone")
        .cloned()
        .unwrap();
    let (rf_off, rf_len, kind) = recs.last().cloned().unwrap();
    assert_eq!(kind, "RunFinished");
    let seg_name = seg_of(&base).file_name().unwrap().to_owned();
    // Cut inside the last BatchDone (the batch is redone) and inside the
    // final RunFinished (nothing to redo).
    let cuts: Vec<u64> = (bd_off..bd_off + bd_len)
        .chain(rf_off..rf_off + rf_len)
        .collect();
    for (i, cut) in cuts.iter().enumerate() {
        let state = dir.path().join(format!("s{i}"));
        copy_dir(&base, &state);
        let seg = state.join("wal").join(&seg_name);
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(*cut).unwrap();
        drop(f);
        let v = verify_wal(&state, &format!("cut {cut}: a torn tail is not corruption"));
        if *cut > bd_off && *cut < bd_off + bd_len || *cut > rf_off {
            assert!(v.contains("torn tail"), "cut {cut}: {v}");
        }
        let out = w.sync(&state, &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "cut {cut}: {err}");
        assert!(!err.contains("panicked"));
        // A torn BatchDone: the run resumes at that batch. A torn
        // RunFinished only: the manifest was complete, and a complete
        // manifest given again is applied again from line 1 (SPEC).
        let redone = *cut < rf_off;
        assert_eq!(
            err.contains("[RESUME]"),
            redone,
            "cut {cut}: the last batch is resumed exactly when its record was torn\n{err}"
        );
        assert_eq!(err.contains("[RESTART]"), !redone, "cut {cut}: {err}");
        assert_eq!(export(&state), want, "cut {cut}");
        std::fs::remove_dir_all(&state).unwrap();
    }
}

#[test]
fn flipped_byte_in_an_earlier_record_is_a_clear_error_naming_segment_and_offset() {
    let (_dir, w, state) = temp_workload(30, 30, 11);
    expect_code(&w.sync(&state, &["--batch-size", "5"]), 0);
    let recs = record_offsets(&state);
    let (off, len, _) = recs.iter().find(|r| r.2 == "BatchDone").cloned().unwrap();
    let seg = seg_of(&state);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[(off + len / 2) as usize] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();

    let err = expect_code(&w.sync(&state, &[]), 3);
    let seg_name = seg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains("WAL corrupt"), "{err}");
    assert!(err.contains(&seg_name), "{err}");
    assert!(err.contains(&format!("at byte {off}")), "{err}");
    assert!(!err.contains("panicked"));
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "the error, then where the details are: {err}"
    );
    assert!(lines.iter().any(|l| l.contains("WAL corrupt")), "{err}");
    assert!(lines.iter().any(|l| l.contains("failed-run-")), "{err}");
    let failed_run: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("failed-run-"))
        .collect();
    assert_eq!(failed_run.len(), 1);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(failed_run[0].path()).unwrap()).unwrap();
    assert!(doc["reason"].as_str().unwrap().contains("WAL corrupt"));
    assert!(doc["hints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h.as_str().unwrap().contains("wal inspect")));

    let v = run_state(&["wal", "inspect", "--verify"], &state);
    assert_eq!(v.status.code(), Some(3));
    assert!(text(&v.stdout).contains("CORRUPT"));
    let st = status(&state);
    assert_eq!(st["status"], "state_unreadable");
    // The corrupt log is left as it was for inspection.
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}

#[test]
fn second_run_on_a_locked_state_dir_exits_at_once() {
    let (t, m) = small_with("{\"op\":\"add\",\"path\":\"A/src/main.py\"}\n");
    std::fs::create_dir_all(&t.state).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(t.state.join("lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let started = std::time::Instant::now();
    let err = expect_code(&t.sync(&m, &[]), 3);
    assert!(err.contains("another elysiactl run holds the state dir"));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let wal = t.state.join("wal");
    assert!(!wal.exists(), "the second run touched nothing");
    drop(lock);
    assert_eq!(t.sync(&m, &[]).status.code(), Some(0));
}

#[test]
fn status_of_a_fresh_state_dir_is_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let st = status(&dir.path().join("nothing-here"));
    assert_eq!(st["status"], "never_run");
    assert_eq!(st["processed"], 0);
    assert!(st["last_run"].is_null());
}

#[test]
fn status_reports_progress_resume_position_and_pending_manifests() {
    let first_two = "{\"op\":\"add\",\"path\":\"A/src/main.py\"}\nnot json\n";
    let (t, m) = small_with(&format!(
        "{first_two}{{\"op\":\"add\",\"path\":\"A/README.md\"}}\n{{\"op\":\"add\",\"path\":\"B/lib.rs\"}}\n"
    ));
    let stop = ["--batch-size", "2", "--on-error", "stop"];
    assert!(expect_code(&t.sync(&m, &stop), 1).contains("failed (stopping)"));
    let st = status(&t.state);
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["processed"], 2);
    assert_eq!(st["total"], 4);
    assert_eq!(st["errors"], 1);
    assert_eq!(st["next_resume_position"], first_two.len());
    assert_eq!(st["next_resume_line"], 3);
    assert_eq!(st["pending_manifests"].as_array().unwrap().len(), 1);
    assert!(st["last_successful_run"].is_null());

    // The next run resumes at line 3 and retries the failed line; the bad
    // line still fails.
    let err = expect_code(&t.sync(&m, &["--batch-size", "2"]), 1);
    assert!(
        err.contains("[RESUME]") && err.contains("from line 3"),
        "{err}"
    );
    assert!(err.contains("[RETRIED] Line 2-2"), "{err}");
    let st = status(&t.state);
    assert_eq!(st["status"], "partially_complete");
    assert!(st["next_resume_position"].is_null());
    assert_eq!(export(&t.state).len(), 3);
}

#[test]
fn wal_inspect_dumps_every_record_readably_and_as_json() {
    let (t, m) = small_with(
        "{\"op\":\"add\",\"path\":\"A/src/main.py\"}\n{\"op\":\"bogus\",\"path\":\"x\"}\n{\"repo\":\"A\",\"new_changeset\":{\"commit\":\"abc\",\"parent\":null,\"branch\":\"main\"}}\n",
    );
    t.sync(&m, &[]);
    let human = text(&run_state(&["wal", "inspect"], &t.state).stdout);
    for kind in [
        "RunStarted",
        "ManifestStarted",
        "ItemFailed",
        "ChangesetSeen",
        "BatchDone",
        "RunFinished",
    ] {
        assert!(human.contains(kind), "{kind} missing:\n{human}");
    }
    assert!(human.contains("unknown op `bogus`"));
    let json = run_state(&["wal", "inspect", "--json"], &t.state);
    let recs: Vec<serde_json::Value> = text(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), human.lines().count());
    assert_eq!(recs[0]["type"], "RunStarted");
    let cs = recs.iter().find(|r| r["type"] == "ChangesetSeen").unwrap();
    assert_eq!(cs["record"]["commit"], "abc");
    // A segment file can be named directly.
    let seg = seg_of(&t.state);
    let one = run(&["wal", "inspect", arg(&seg), "--verify"]);
    assert_eq!(one.status.code(), Some(0));
    assert!(text(&one.stdout).contains(&format!("ok: {} records", recs.len())));
    // The changeset became the repo's applied base only after its repo's
    // lines all applied (line 1 is repo A; the bad line has no repo).
    assert_eq!(status(&t.state)["status"], "partially_complete");
}

#[test]
fn stdin_manifest_is_spooled_and_resumable() {
    let t = Small::new();
    let body =
        "{\"op\":\"add\",\"path\":\"A/src/main.py\"}\n{\"op\":\"add\",\"path\":\"B/lib.rs\"}\n";
    let pipe = |extra: &[&str]| sync_stdin(body.as_bytes(), &t.root, &t.state, extra);
    expect_code(&pipe(&["--batch-size", "1", "--on-error", "stop"]), 0);
    assert_eq!(export(&t.state).len(), 2);
    assert_eq!(status(&t.state)["manifest"]["spooled"], true);
    // Completed spool files are cleaned up; the same input again is
    // applied again (every line re-checked against the disk).
    let spooled = || std::fs::read_dir(t.state.join("spool")).unwrap().count();
    assert_eq!(spooled(), 0);
    let again = pipe(&[]);
    assert_eq!(again.status.code(), Some(0));
    assert!(text(&again.stderr).contains("[RESTART]"));
    assert_eq!(export(&t.state).len(), 2);
    assert_eq!(spooled(), 0);
}

#[test]
fn dry_run_writes_neither_index_nor_wal() {
    let (t, m) = small_with(
        "{\"op\":\"add\",\"path\":\"A/src/main.py\"}\n{\"op\":\"delete\",\"path\":\"A/x\"}\nnope\n",
    );
    // An invalid line is reported.
    let err = expect_code(&t.sync(&m, &["--dry-run"]), 1);
    assert_contains_all(
        &err,
        &["[INVALID] line 3 (byte", "1 add, 0 update, 1 delete"],
    );
    assert!(!t.state.join("wal").exists() && !t.state.join("index").exists());
    assert_eq!(status(&t.state)["status"], "never_run");
}

#[test]
fn from_line_applies_again_from_that_line_only() {
    let (t, m) = small_with(
        "{\"op\":\"add\",\"path\":\"A/src/main.py\"}\n{\"op\":\"add\",\"path\":\"B/lib.rs\"}\n",
    );
    assert_eq!(t.sync(&m, &[]).status.code(), Some(0));
    std::fs::write(t.root.join("B/lib.rs"), "pub fn changed() {}\n").unwrap();
    std::fs::write(t.root.join("A/src/main.py"), "changed too\n").unwrap();
    assert!(expect_code(&t.sync(&m, &["--from-line", "2"]), 0).contains("Line 2-2"));
    let objs = export(&t.state);
    let sha = |p: &str| objs.values().find(|(rp, _)| rp == p).unwrap().1.clone();
    assert_eq!(sha("B/lib.rs"), sha256_hex(b"pub fn changed() {}\n"));
    assert_eq!(
        sha("A/src/main.py"),
        sha256_hex(b"print('main')\n"),
        "line 1 not re-applied"
    );
    let past = expect_code(&t.sync(&m, &["--from-line", "9"]), 2);
    assert!(past.contains("--from-line 9"));
}

#[test]
fn a_new_manifest_first_finishes_the_unfinished_one_or_refuses() {
    let t = Small::new();
    let stop = ["--batch-size", "1", "--on-error", "stop"];
    let old = t.write(
        "old.jsonl",
        "bad line\n{\"op\":\"add\",\"path\":\"A/README.md\"}\n",
    );
    let new = t.write("new.jsonl", "{\"op\":\"add\",\"path\":\"B/lib.rs\"}\n");
    // Stopped at the bad first line: old.jsonl has an unapplied line.
    assert_eq!(t.sync(&old, &stop).status.code(), Some(1));
    // A new manifest finishes the old one first. The old manifest's bad
    // line is retried first and still fails.
    let err = expect_code(&t.sync(&new, &[]), 1);
    assert_contains_all(
        &err,
        &["old.jsonl: from line 2", "[FAILED] line 1 (byte 0)"],
    );
    assert_eq!(exported_paths(&t.state), vec!["A/README.md", "B/lib.rs"]);

    // If the unfinished manifest is gone, the sync refuses...
    let state2 = t.dir.path().join("state2");
    let old2 = t.write(
        "old2.jsonl",
        "bad\n{\"op\":\"add\",\"path\":\"A/README.md\"}\n",
    );
    sync(&old2, &t.root, &state2, &stop);
    std::fs::remove_file(&old2).unwrap();
    let err = expect_code(&sync(&new, &t.root, &state2, &[]), 2);
    assert!(
        err.contains("unfinished")
            && err.contains("old2.jsonl")
            && err.contains("--abandon-pending"),
        "{err}"
    );
    assert!(
        export(&state2).is_empty(),
        "nothing applied from the new manifest"
    );
    // ...unless told to drop it, which the WAL records.
    let err = expect_code(&sync(&new, &t.root, &state2, &["--abandon-pending"]), 0);
    assert!(err.contains("[ABANDONED]"));
    let dump = text(&run_state(&["wal", "inspect"], &state2).stdout);
    assert!(dump.contains("ManifestAbandoned"));
}

#[test]
fn disk_wins_over_the_op_and_lines_reconcile() {
    let (t, m) = small_with(concat!(
        "{\"op\":\"add\",\"repo\":\"A\",\"path\":\"vanished.py\"}\n",
        "{\"op\":\"delete\",\"repo\":\"A\",\"path\":\"src/util.py\"}\n",
        "{\"op\":\"add\",\"repo\":\"B\",\"path\":\"bin.dat\"}\n",
        "{\"op\":\"rename\",\"repo\":\"A\",\"from\":\"src/main.py\",\"path\":\"README.md\"}\n",
    ));
    let err = expect_code(&t.sync(&m, &[]), 0);
    assert_contains_all(&err, &["3 reconciled", "1 skipped"]);
    // util.py and main.py still exist on disk, so they are indexed; the
    // binary file and the vanished one are not.
    let paths = exported_paths(&t.state);
    assert_eq!(paths, vec!["A/README.md", "A/src/main.py", "A/src/util.py"]);
}

#[test]
fn prune_removes_objects_whose_files_are_gone_from_the_local_index() {
    let (t, m) = small_with(
        "{\"op\":\"add\",\"path\":\"A/src/main.py\"}\n{\"op\":\"add\",\"path\":\"A/src/util.py\"}\n{\"op\":\"add\",\"path\":\"B/lib.rs\"}\n",
    );
    assert_eq!(t.sync(&m, &[]).status.code(), Some(0));
    for gone in ["A/src/util.py", "B/lib.rs"] {
        std::fs::remove_file(t.root.join(gone)).unwrap();
    }
    let p = t.write("p.jsonl", "{\"op\":\"prune\",\"repo\":\"A\"}\n");
    expect_code(&t.sync(&p, &[]), 0);
    // Only repo A was pruned: B/lib.rs stays until a line or prune names it.
    assert_eq!(exported_paths(&t.state), vec!["A/src/main.py", "B/lib.rs"]);
}

#[test]
fn wal_inspect_of_a_path_that_does_not_exist_exits_2_and_of_an_empty_dir_0() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-state");
    let out = run_state(&["wal", "inspect"], &missing);
    let err = expect_code(&out, 2);
    assert!(err.contains("no such state dir"), "{err}");
    assert!(err.contains("no-such-state"), "{err}");
    assert!(!missing.exists(), "inspect created {}", missing.display());
    // An existing state dir that never ran is an empty log.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run_state(&["wal", "inspect"], &empty);
    expect_code(&out, 0);
    assert!(text(&out.stdout).contains("no WAL segments"));
}

#[test]
fn a_manifest_that_does_not_exist_is_refused_before_the_state_dir_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let manifest = dir.path().join("changes-typo.jsonl");
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = sync(&manifest, dir.path(), &state, extra);
        let err = expect_code(&out, 2);
        assert!(
            err.contains("cannot read manifest") && err.contains("changes-typo.jsonl"),
            "{err}"
        );
        assert!(!state.exists(), "{extra:?}: the state dir was made");
    }
}
