//! The manifest changes under a running sync: truncated (which, without a
//! guard, turns the next read of the mapping into SIGBUS) or rewritten in
//! place. The run must notice, stop cleanly with exit 2 and its state saved,
//! and a later run over the restored manifest must resume and end with the
//! exact index.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use support::*;

/// Start a sync, let it apply a few batches, change the manifest with
/// `change`, and return (exit status, stderr).
fn change_mid_run(
    w: &Workload,
    state: &Path,
    change: impl FnOnce(&Path),
) -> (std::process::ExitStatus, String) {
    let mut child = sync_cmd(
        &w.manifest,
        &w.root,
        state,
        &["--batch-size", "5", "--max-file-size", "2048"],
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    assert!(
        read_until_processed(&mut lines, 4, &mut log),
        "the run ended before it could be interrupted:\n{log}"
    );
    change(&w.manifest);
    for l in lines {
        log.push_str(&l.unwrap());
        log.push('\n');
    }
    (child.wait().unwrap(), log)
}

fn resume_and_check(w: &Workload, state: &Path) {
    let out = sync(&w.manifest, &w.root, state, &["--max-file-size", "2048"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("[RESUME]"), "the rerun did not resume:\n{err}");
    assert_eq!(export(state), expected(&w.root, &w.refs, 2048));
}

#[test]
fn manifest_truncated_mid_run_stops_with_exit_2_and_the_next_run_resumes_exactly() {
    let (_dir, w, state) = temp_workload(400, 2500, 0x7121);
    let original = std::fs::read(&w.manifest).unwrap();
    let (status, log) = change_mid_run(&w, &state, |m| {
        // Cut to a tenth: every page past that now faults on read.
        let f = std::fs::OpenOptions::new().write(true).open(m).unwrap();
        f.set_len(original.len() as u64 / 10).unwrap();
    });
    assert_eq!(
        status.signal(),
        None,
        "killed by a signal (SIGBUS?):\n{log}"
    );
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("changed while being read"), "{log}");
    assert!(!log.contains("[SUMMARY] complete"), "{log}");
    verify_wal(&state, "WAL damaged by the stopped run");
    let doc = support::status(&state);
    assert!(
        doc["next_resume_position"].as_u64().unwrap_or(0) > 0,
        "progress before the truncation was not saved: {doc}"
    );

    // Put the manifest back as it was: the next run picks up where it stopped.
    std::fs::write(&w.manifest, &original).unwrap();
    resume_and_check(&w, &state);
}

#[test]
fn manifest_rewritten_in_place_mid_run_is_detected_and_the_next_run_resumes_exactly() {
    let (_dir, w, state) = temp_workload(400, 2500, 0x7122);
    let original = std::fs::read(&w.manifest).unwrap();
    let (status, log) = change_mid_run(&w, &state, |m| {
        // Same size, written in place (no truncation): only the
        // modification time tells. Same bytes, so the rerun can resume.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = std::fs::OpenOptions::new().write(true).open(m).unwrap();
        f.write_all_at(&original[original.len() / 2..], (original.len() / 2) as u64)
            .unwrap();
    });
    assert_eq!(status.signal(), None, "{log}");
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("changed while being read"), "{log}");
    verify_wal(&state, "WAL damaged by the stopped run");
    resume_and_check(&w, &state);
}

/// Kill a sync of `w` after a few batches, leaving its manifest unfinished.
fn kill_mid_run(w: &Workload, state: &Path, from_top: bool) {
    let mut extra = vec!["--batch-size", "5", "--max-file-size", "2048"];
    if from_top {
        extra.extend(["--from-line", "1"]);
    }
    let mut child = sync_cmd(&w.manifest, &w.root, state, &extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader, and with it our end of the pipe, is dropped before the kill.
    let reached = read_until_processed(
        &mut BufReader::new(child.stderr.take().unwrap()).lines(),
        3,
        &mut String::new(),
    );
    assert!(reached, "the run ended before it could be killed");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn a_new_manifest_while_an_older_is_unfinished_finishes_the_older_first_or_refuses() {
    let (dir, w, state) = temp_workload(200, 600, 0x01d);
    kill_mid_run(&w, &state, false);

    // A second manifest over the same tree.
    let newer = dir.path().join("newer.jsonl");
    std::fs::write(
        &newer,
        "{\"op\":\"delete\",\"repo\":\"alpha\",\"path\":\"src/m0/f0.rs\"}\n",
    )
    .unwrap();
    let out = sync(&newer, &w.root, &state, &["--max-file-size", "2048"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let older_at = err.find(&format!("[RESUME] {}", w.manifest.display()));
    assert!(
        older_at.is_some(),
        "the older manifest was not finished first:\n{err}"
    );
    let mut refs = w.refs.clone();
    refs.push(("alpha".into(), "src/m0/f0.rs".into()));
    refs.sort();
    refs.dedup();
    assert_eq!(export(&state), expected(&w.root, &refs, 2048));

    // Unfinished again, and now its file is gone: refused (exit 2) until the
    // operator says to drop its remaining lines.
    kill_mid_run(&w, &state, true);
    std::fs::rename(&w.manifest, dir.path().join("moved-away")).unwrap();
    let out = sync(&newer, &w.root, &state, &["--max-file-size", "2048"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("an earlier manifest is unfinished"), "{err}");
    let out = sync(
        &newer,
        &w.root,
        &state,
        &["--max-file-size", "2048", "--abandon-pending"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("[ABANDONED]"), "{err}");
}
