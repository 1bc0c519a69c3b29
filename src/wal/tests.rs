//! Unit tests of the writer and replay on a real directory.

use std::fs;
use std::path::Path;

use super::read::segment_name;
use super::storage::Fs;
use super::*;

pub(super) fn started(run_id: u64) -> Record {
    Record::RunStarted(RunStarted {
        run_id,
        started_ms: 1,
        pid: 2,
        version: "t".into(),
        target: "local".into(),
        batch_size: 1,
        on_error: "continue".into(),
        max_retries: 0,
    })
}

fn kept(rep: &Replay) -> &[Located] {
    rep.records.as_deref().expect("records kept")
}

#[test]
fn reopened_log_appends_after_its_last_record() {
    let d = tempfile::tempdir().unwrap();
    for run in 1..=3 {
        let (mut w, rep) = Wal::open_in_keeping(Fs, &wal_dir(d.path()), Keep::Records).unwrap();
        assert_eq!(kept(&rep).len() as u64, run - 1);
        w.append(&[started(run)]).unwrap();
    }
    let rep = replay_records(d.path()).unwrap();
    let ids: Vec<u64> = kept(&rep)
        .iter()
        .map(|l| match &l.record {
            Record::RunStarted(r) => r.run_id,
            _ => 0,
        })
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert!(rep.torn.is_none());
}

#[test]
fn torn_tail_is_truncated_before_the_next_append() {
    let d = tempfile::tempdir().unwrap();
    let (mut w, _) = Wal::open(d.path()).unwrap();
    w.append(&[started(1)]).unwrap();
    let seg = w.segment().to_owned();
    drop(w);
    // The file is longer than its records (preallocated zeros).
    let rep = replay_records(d.path()).unwrap();
    let end = kept(&rep).last().map(|l| l.offset + l.len).unwrap();
    assert!(fs::metadata(&seg).unwrap().len() > end);
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(end - 5).unwrap();
    let (mut w, rep) = Wal::open(d.path()).unwrap();
    assert!(rep.torn.is_some());
    assert!(rep.records.is_none());
    assert_eq!(rep.state, State::default());
    w.append(&[started(2)]).unwrap();
    let rep = replay_records(d.path()).unwrap();
    assert!(rep.torn.is_none());
    assert_eq!(kept(&rep).len(), 1);
}

#[test]
fn compaction_keeps_the_state_and_drops_old_segments() {
    let d = tempfile::tempdir().unwrap();
    let (mut w, _) = Wal::open(d.path()).unwrap();
    for run in 1..=50 {
        w.append(&[started(run)]).unwrap();
    }
    let before = replay(d.path()).unwrap().state;
    w.compact(&before).unwrap();
    w.append(&[started(51)]).unwrap();
    let rep = replay_records(d.path()).unwrap();
    assert_eq!(rep.segments.len(), 1);
    assert_eq!(kept(&rep).len(), 2, "snapshot + one record");
    assert_eq!(rep.state.next_run_id, 52);
    assert_eq!(list_segments(&wal_dir(d.path())).unwrap().len(), 1);
}

/// Write a segment file holding `records`; `flip` damages the payload of
/// the record at that index (with more records after it: corruption).
fn write_segment(dir: &Path, seq: u64, records: &[Record], flip: Option<usize>) -> u64 {
    let mut bytes = format::segment_header().to_vec();
    let mut damaged_at = 0;
    for (i, r) in records.iter().enumerate() {
        if Some(i) == flip {
            damaged_at = bytes.len();
        }
        r.encode(&mut bytes);
    }
    if flip.is_some() {
        bytes[damaged_at + format::RECORD_HEADER_LEN] ^= 1;
    }
    fs::write(dir.join(segment_name(seq)), &bytes).unwrap();
    damaged_at as u64
}

fn corrupt_in(e: Error) -> (String, u64) {
    match e {
        Error::Corrupt {
            segment, offset, ..
        } => (
            segment.file_name().unwrap().to_string_lossy().into_owned(),
            offset,
        ),
        other => panic!("not corruption: {other}"),
    }
}

#[test]
fn replay_starts_at_the_newest_snapshot_and_reports_the_newest_damage() {
    let d = tempfile::tempdir().unwrap();
    let dir = wal_dir(d.path());
    create_private_dir(&dir).unwrap();
    let mut snap = State::default();
    snap.apply(&started(7));
    let snapshot = Record::Snapshot(Box::new(snap));
    // Damage older than the newest snapshot is never read.
    write_segment(&dir, 1, &[started(1), started(2)], Some(0));
    write_segment(&dir, 2, &[snapshot.clone(), started(8), started(9)], None);
    write_segment(&dir, 3, &[started(10), started(11)], None);
    for keep in [Keep::State, Keep::Records] {
        let rep = replay_in(&Fs, &dir, keep).unwrap();
        assert_eq!(rep.segments.len(), 2);
        assert_eq!(rep.state.next_run_id, 12);
        assert_eq!(
            rep.records.map(|r| r.len()),
            (keep == Keep::Records).then_some(5)
        );
    }
    // Damage in both replayed segments: the newest one is reported, as a
    // newest-first decode meets it first.
    let at2 = write_segment(
        &dir,
        2,
        &[snapshot.clone(), started(8), started(9)],
        Some(1),
    );
    let at3 = write_segment(&dir, 3, &[started(10), started(11)], Some(0));
    for keep in [Keep::State, Keep::Records] {
        let e = replay_in(&Fs, &dir, keep).unwrap_err();
        assert_eq!(corrupt_in(e), (segment_name(3), at3));
    }
    write_segment(&dir, 3, &[started(10), started(11)], None);
    for keep in [Keep::State, Keep::Records] {
        let e = replay_in(&Fs, &dir, keep).unwrap_err();
        assert_eq!(corrupt_in(e), (segment_name(2), at2));
    }
    // A damaged snapshot record does not start the replay: the error is
    // its own, not one from an older segment.
    let at2 = write_segment(&dir, 2, &[snapshot, started(8)], Some(0));
    for keep in [Keep::State, Keep::Records] {
        let e = replay_in(&Fs, &dir, keep).unwrap_err();
        assert_eq!(corrupt_in(e), (segment_name(2), at2));
    }
}
