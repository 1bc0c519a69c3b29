//! Damage to a compacted WAL. Compaction writes a snapshot as the first
//! record of a new segment, makes it durable, and only then deletes the
//! segments it summarises. So a snapshot whose earlier segments are gone
//! cannot be a torn write: any damage in it is corruption (an error naming
//! segment and offset), never a silent reset to an empty state. A snapshot
//! torn by a crash *during* compaction (its earlier segments still there)
//! is dropped, and the state comes from those segments.

mod support;

use std::path::{Path, PathBuf};

use elysiactl::wal::storage::Fs;
use elysiactl::wal::*;
use support::*;

const FP: [u8; 32] = [5; 32];

/// One run's records: a manifest of 40 lines (400 bytes) of which the first
/// `batches` batches of 4 lines are applied, one line of each failing.
fn run_records(run_id: u64, batches: u64) -> Vec<Vec<Record>> {
    let mut appends = vec![vec![
        Record::RunStarted(RunStarted {
            run_id,
            started_ms: 1_000 * run_id,
            pid: 7,
            version: "t".into(),
            target: "local".into(),
            batch_size: 4,
            on_error: "continue".into(),
            max_retries: 3,
        }),
        Record::ManifestStarted(ManifestStarted {
            run_id,
            manifest: ManifestId {
                path: "/m.jsonl".into(),
                size: 400,
                fingerprint: FP,
                spooled: false,
            },
            total_lines: 40,
            from: None,
        }),
    ]];
    for k in 0..batches {
        appends.push(vec![
            Record::ItemFailed(ItemFailed {
                run_id,
                fingerprint: FP,
                line: 4 * k + 2,
                offset: 40 * k + 10,
                end: 40 * k + 20,
                repo: "R".into(),
                path: format!("f{k}"),
                kind: FailureKind::Source,
                reason: "unreadable".into(),
                attempts: 1,
            }),
            Record::BatchDone(BatchDone {
                run_id,
                fingerprint: FP,
                seq: k,
                spans: vec![Span {
                    start: 40 * k,
                    end: 40 * k + 40,
                    first_line: 4 * k + 1,
                    next_line: 4 * k + 5,
                }],
                counts: Counts::default(),
            }),
        ]);
    }
    appends
}

/// A state dir after three runs (three segments), compacted: its log is
/// one segment holding the snapshot. Returns that segment and the state.
fn compacted(state_dir: &Path) -> (PathBuf, State) {
    for run in 1..=3 {
        let (mut w, _) = Wal::open(state_dir).unwrap();
        for a in run_records(run, run + 1) {
            w.append(&a).unwrap();
        }
    }
    let (mut w, rep) = Wal::open(state_dir).unwrap();
    assert!(rep.segments.len() >= 3);
    let state = rep.state;
    let m = state.manifest(&FP).expect("the manifest is known");
    assert!(!m.all_lines_seen() && m.failed.len() == 4, "{m:?}");
    w.compact(&state).unwrap();
    let seg = w.segment().to_owned();
    drop(w);
    assert_eq!(
        list_segments(&wal_dir(state_dir)).unwrap(),
        vec![seg.clone()]
    );
    (seg, state)
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

/// Where the snapshot record is: (offset, length).
fn snapshot_record(state_dir: &Path) -> (usize, usize) {
    let rep = replay_records(state_dir).unwrap();
    let recs = rep.records.unwrap();
    assert!(matches!(
        recs.first().map(|l| &l.record),
        Some(Record::Snapshot(_) | Record::SnapshotV2(_))
    ));
    (recs[0].offset as usize, recs[0].len as usize)
}

/// `damaged` is refused, by every reader, as corruption at `offset` of
/// `seg`; nothing rewrites the file.
fn assert_refused(state_dir: &Path, seg: &Path, offset: usize, damaged: &[u8], what: &str) {
    let name = seg.display().to_string();
    for res in [replay(state_dir), replay_records(state_dir)] {
        match res {
            Ok(rep) => panic!(
                "{what}: read as a log of {} manifest(s), torn tail {:?}",
                rep.state.manifests.len(),
                rep.torn
            ),
            Err(e) => {
                let msg = e.to_string();
                assert!(e.is_corrupt(), "{what}: {msg}");
                assert!(
                    msg.contains(&name) && msg.contains(&format!("byte {offset}")),
                    "{what}: {msg}"
                );
            }
        }
    }
    assert!(
        matches!(Wal::open(state_dir), Err(e) if e.is_corrupt()),
        "{what}: the writer opened it"
    );
    assert_eq!(std::fs::read(seg).unwrap(), damaged, "{what}: file changed");
}

#[test]
fn damage_anywhere_in_a_compaction_snapshot_is_corruption_never_a_reset() {
    let tmp = scratch();
    let state_dir = tmp.path().join("s");
    let (seg, state) = compacted(&state_dir);
    let bytes = std::fs::read(&seg).unwrap();
    let (off, len) = snapshot_record(&state_dir);
    assert_eq!(replay(&state_dir).unwrap().state, state.compacted());
    // Every byte of the snapshot record, its header included, flipped in
    // three ways.
    let mut checked = 0;
    for at in off..off + len {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[at] ^= mask;
            std::fs::write(&seg, &damaged).unwrap();
            assert_refused(
                &state_dir,
                &seg,
                off,
                &damaged,
                &format!("byte {at} ^ {mask:#x}"),
            );
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} flips");
    // Cut short or zeroed from any byte on: not a torn write either.
    for at in (off + 1..off + len).step_by(7) {
        let mut zeroed = bytes.clone();
        zeroed[at..].fill(0);
        // (Zeroing the snapshot's trailing zero bytes changes nothing.)
        if zeroed != bytes {
            std::fs::write(&seg, &zeroed).unwrap();
            assert_refused(&state_dir, &seg, off, &zeroed, &format!("zeroed from {at}"));
        }
        std::fs::write(&seg, &bytes[..at]).unwrap();
        assert_refused(&state_dir, &seg, off, &bytes[..at], &format!("cut at {at}"));
    }
}

#[test]
fn damaged_snapshot_followed_by_a_later_run_is_corruption() {
    let tmp = scratch();
    let state_dir = tmp.path().join("s");
    let (seg, _) = compacted(&state_dir);
    {
        let (mut w, _) = Wal::open(&state_dir).unwrap();
        for a in run_records(4, 1) {
            w.append(&a).unwrap();
        }
    }
    assert_eq!(list_segments(&wal_dir(&state_dir)).unwrap().len(), 2);
    let bytes = std::fs::read(&seg).unwrap();
    let (off, len) = snapshot_record(&state_dir);
    for at in (off..off + len).step_by(3) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x20;
        std::fs::write(&seg, &damaged).unwrap();
        assert_refused(&state_dir, &seg, off, &damaged, &format!("byte {at}"));
    }
}

#[test]
fn torn_last_record_after_a_compaction_is_still_dropped() {
    let tmp = scratch();
    let state_dir = tmp.path().join("s");
    let (_, state) = compacted(&state_dir);
    let newer = {
        let (mut w, _) = Wal::open(&state_dir).unwrap();
        for a in run_records(4, 2) {
            w.append(&a).unwrap();
        }
        w.segment().to_owned()
    };
    let whole = replay_records(&state_dir).unwrap();
    let recs = whole.records.clone().unwrap();
    let last = recs.last().unwrap();
    assert_eq!(last.segment.as_ref(), newer.as_path());
    let bytes = std::fs::read(&newer).unwrap();
    let (off, len) = (last.offset as usize, last.len as usize);
    // Cut short, with no zero fill after it (a cut inside the record's
    // trailing zero bytes would leave it whole under zero fill).
    for cut in off + 1..off + len {
        std::fs::write(&newer, &bytes[..cut]).unwrap();
        let rep = replay_records(&state_dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let t = rep.torn.as_ref().expect("a torn tail");
        assert_eq!(
            (t.segment.as_path(), t.offset),
            (newer.as_path(), off as u64)
        );
        assert_eq!(rep.records.unwrap().len(), recs.len() - 1, "cut at {cut}");
        assert_eq!(replay(&state_dir).unwrap().state.next_run_id, 5);
    }
    // The writer cuts it off and goes on.
    let (mut w, rep) = Wal::open(&state_dir).unwrap();
    assert!(rep.torn.is_some());
    w.append(&run_records(5, 0)[0]).unwrap();
    drop(w);
    let rep = replay(&state_dir).unwrap();
    assert!(rep.torn.is_none());
    assert_eq!(rep.state.next_run_id, 6);
    let m = rep.state.manifest(&FP).unwrap();
    // The snapshot's failures, the one batch 0 of run 4 failed again
    // replacing its own; batch 1's failure went with its torn record.
    let want: Vec<u64> = state
        .manifest(&FP)
        .unwrap()
        .failed
        .keys()
        .copied()
        .collect();
    assert_eq!(m.failed.keys().copied().collect::<Vec<_>>(), want);
    assert_eq!(m.failed[&10].run_id, 4);
    assert_eq!(m.failed[&50].run_id, 3);
}

#[test]
fn crash_during_compaction_recovers_the_state_from_the_older_segments() {
    let tmp = scratch();
    let base = tmp.path().join("base");
    // Three runs, three segments; then what a compaction cut short leaves:
    // its new segment holding a prefix of the snapshot record (zero filled,
    // as preallocated), the older segments not yet deleted.
    for run in 1..=3 {
        let (mut w, _) = Wal::open(&base).unwrap();
        for a in run_records(run, run + 1) {
            w.append(&a).unwrap();
        }
    }
    let before = replay(&base).unwrap();
    let segs = list_segments(&wal_dir(&base)).unwrap();
    let mut snap = elysiactl::wal::format::segment_header().to_vec();
    Record::SnapshotV2(Box::new(before.state.compacted())).encode(&mut snap);
    let next = wal_dir(&base).join(format!("{:020}.wal", segs.len() + 1));
    let s = tmp.path().join("s");
    let hdr = elysiactl::wal::format::SEGMENT_HEADER_LEN;
    for cut in hdr..snap.len() {
        let _ = std::fs::remove_dir_all(&s);
        std::fs::create_dir_all(wal_dir(&s)).unwrap();
        for p in &segs {
            std::fs::copy(p, wal_dir(&s).join(p.file_name().unwrap())).unwrap();
        }
        let mut torn = snap[..cut].to_vec();
        torn.resize(4096, 0);
        let torn_path = wal_dir(&s).join(next.file_name().unwrap());
        std::fs::write(&torn_path, &torn).unwrap();
        let rep = replay(&s).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(rep.state, before.state, "cut at {cut}");
        // A cut inside the snapshot's trailing zero bytes leaves it whole.
        let whole = torn[..snap.len()] == snap[..];
        assert_eq!(rep.torn.is_some(), cut > hdr && !whole, "cut at {cut}");
        if whole {
            continue;
        }
        let (mut w, rep) = Wal::open_in(Fs, &wal_dir(&s)).unwrap();
        assert_eq!(rep.state, before.state);
        w.append(&run_records(4, 0)[0]).unwrap();
        drop(w);
        let after = replay(&s).unwrap();
        assert!(after.torn.is_none());
        assert_eq!(after.state.next_run_id, 5);
        // `wal inspect` of that one segment judges it among its siblings.
        if cut == snap.len() / 2 {
            std::fs::write(&torn_path, &torn).unwrap();
            let out = run(&["wal", "inspect", torn_path.to_str().unwrap(), "--verify"]);
            let msg = text(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{msg}");
            assert!(msg.contains("torn tail"), "{msg}");
        }
    }
}

#[test]
fn the_binary_refuses_a_damaged_snapshot_with_segment_and_offset_and_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let (seg, _) = compacted(&state_dir);
    let (off, len) = snapshot_record(&state_dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[off + len / 2] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    let sd = state_dir.to_str().unwrap();

    let out = run(&["wal", "inspect", "--verify", "--state-dir", sd]);
    let msg = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{msg}");
    assert!(
        msg.contains(&seg.display().to_string()) && msg.contains(&format!("byte {off}")),
        "{msg}"
    );
    let out = run(&["wal", "inspect", seg.to_str().unwrap(), "--verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));

    let st = status(&state_dir);
    assert_eq!(st["status"], "state_unreadable", "{st}");

    let m = tmp.path().join("m.jsonl");
    std::fs::write(&m, "{\"op\":\"delete\",\"repo\":\"R\",\"path\":\"x\"}\n").unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let out = sync(&m, &root, &state_dir, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("WAL corrupt") && l.contains(&format!("byte {off}")))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&seg.display().to_string()), "{err}");
    assert!(!err.contains("panicked at"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "the log was rewritten");
}

/// Readers do not take the writer's lock (`--status`, `wal inspect`): a
/// compaction that deletes the segments a reader just listed must not make
/// it report a missing or corrupt log. A writer thread runs and compacts in
/// a loop while readers replay the log and run `wal inspect --verify`.
#[test]
fn readers_see_a_whole_log_while_a_sync_compacts_under_them() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const RUNS: u64 = 150;
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let (w, _) = Wal::open(&state_dir).unwrap();
    drop(w);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (state_dir, done) = (state_dir.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let (mut w, rep) = Wal::open(&state_dir).unwrap();
            let mut state = rep.state;
            for run in 1..=RUNS {
                for a in run_records(run, 1) {
                    w.append(&a).unwrap();
                    a.iter().for_each(|r| state.apply(r));
                }
                w.compact(&state).unwrap();
            }
            done.store(true, Ordering::SeqCst);
            state
        })
    };
    let sd = state_dir.to_str().unwrap().to_owned();
    let inspector = {
        let (sd, done) = (sd.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                let out = run(&["wal", "inspect", "--verify", "--state-dir", &sd]);
                assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
                n += 1;
            }
            n
        })
    };
    let (mut reads, mut last_run) = (0, 0);
    while !done.load(Ordering::SeqCst) {
        let rep = replay(&state_dir).unwrap_or_else(|e| panic!("after {reads} reads: {e}"));
        let run = rep.state.next_run_id;
        assert!(
            run >= last_run,
            "the log went back from run {last_run} to {run}"
        );
        last_run = run;
        reads += 1;
    }
    let state = writer.join().unwrap();
    let inspections = inspector.join().unwrap();
    assert!(
        reads > 20 && inspections > 2,
        "{reads} reads, {inspections} inspections"
    );
    assert_eq!(replay(&state_dir).unwrap().state, state.compacted());
}

/// Three runs, three segments, no compaction; returns them oldest first.
fn three_runs(state_dir: &Path) -> Vec<PathBuf> {
    for run in 1..=3 {
        let (mut w, _) = Wal::open(state_dir).unwrap();
        for a in run_records(run, run + 1) {
            w.append(&a).unwrap();
        }
    }
    list_segments(&wal_dir(state_dir)).unwrap()
}

#[test]
fn a_log_whose_first_segments_are_gone_without_a_snapshot_is_corruption() {
    let tmp = scratch();
    let state_dir = tmp.path().join("s");
    let segs = three_runs(&state_dir);
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[0]).unwrap();
    let second = std::fs::read(&segs[1]).unwrap();
    // Replaying the rest would silently forget run 1.
    assert_refused(&state_dir, &segs[1], 16, &second, "segment 1 removed");
    let out = run_state(&["wal", "inspect", "--verify"], &state_dir);
    let msg = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{msg}");
    assert!(
        msg.contains(&segs[1].display().to_string()) && msg.contains("byte 16"),
        "{msg}"
    );
}

#[test]
fn segments_left_by_a_compaction_cut_short_while_deleting_are_superseded_not_read() {
    let tmp = scratch();
    let state_dir = tmp.path().join("s");
    let segs = three_runs(&state_dir);
    let before = replay(&state_dir).unwrap().state;
    // Compact, then put back what a crash between two deletions leaves:
    // the older segments but the first.
    let saved: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let (mut w, _) = Wal::open(&state_dir).unwrap();
    w.compact(&before).unwrap();
    let snap = w.segment().to_owned();
    drop(w);
    for (p, b) in segs.iter().zip(&saved).skip(1) {
        std::fs::write(p, b).unwrap();
    }
    // Damage in a superseded segment is never read.
    let mut bad = saved[1].clone();
    bad[40] ^= 0xff;
    std::fs::write(&segs[1], &bad).unwrap();
    for keep in [Keep::State, Keep::Records] {
        let rep = replay_in(&Fs, &wal_dir(&state_dir), keep).unwrap();
        assert_eq!(rep.segments, vec![snap.clone()]);
        assert_eq!(rep.state, before.compacted());
    }
    let out = run(&["wal", "inspect", "--state-dir", state_dir.to_str().unwrap()]);
    let msg = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{msg}");
    assert!(
        msg.contains(&format!("superseded: {}", segs[1].display())),
        "{msg}"
    );
    // A later compaction deletes them.
    let (mut w, rep) = Wal::open(&state_dir).unwrap();
    w.compact(&rep.state).unwrap();
    drop(w);
    assert_eq!(list_segments(&wal_dir(&state_dir)).unwrap().len(), 1);
}
