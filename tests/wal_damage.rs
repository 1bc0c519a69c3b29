//! Exhaustive damage to a real WAL segment: cut at every byte of its last
//! three records (with and without the preallocated zero fill after the
//! cut), and flip every bit of a record in the middle. A torn tail is
//! dropped and the log appends cleanly after it; earlier damage is an error
//! naming the segment and the offset; nothing panics.

mod support;

use std::path::{Path, PathBuf};

use elysiactl::wal::storage::Fs;
use elysiactl::wal::*;
use support::*;

fn batch(k: u64, reason_len: usize) -> Vec<Record> {
    let fp = [3u8; 32];
    vec![
        Record::ItemFailed(ItemFailed {
            run_id: 1,
            fingerprint: fp,
            line: k,
            offset: k * 10,
            end: k * 10 + 10,
            repo: "R".into(),
            path: format!("src/f{k}.rs"),
            kind: FailureKind::Source,
            reason: "x".repeat(reason_len),
            attempts: 1,
        }),
        Record::BatchDone(BatchDone {
            run_id: 1,
            fingerprint: fp,
            seq: k,
            spans: vec![Span {
                start: k * 10,
                end: k * 10 + 10,
                first_line: k + 1,
                next_line: k + 2,
            }],
            counts: Counts::default(),
        }),
    ]
}

/// A state dir whose single segment holds 12 records; returns the segment
/// path, its bytes (zero fill included) and each record's (offset, len).
fn golden(dir: &Path) -> (PathBuf, Vec<u8>, Vec<(usize, usize)>) {
    let (mut w, _) = Wal::open(dir).unwrap();
    for k in 0..6 {
        w.append(&batch(k, 5 + k as usize * 7)).unwrap();
    }
    let seg = w.segment().to_owned();
    drop(w);
    let rep = replay_records(dir).unwrap();
    let spans: Vec<(usize, usize)> = kept(&rep)
        .iter()
        .map(|l| (l.offset as usize, l.len as usize))
        .collect();
    assert_eq!(spans.len(), 12);
    let bytes = std::fs::read(&seg).unwrap();
    let end = spans.last().map(|(o, l)| o + l).unwrap();
    assert!(
        bytes.len() > end,
        "the segment is preallocated past its records"
    );
    (seg, bytes, spans)
}

/// Scratch space for the many reopen cycles: tmpfs when there is one (the
/// fsyncs are what would cost), else the usual temp dir.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

fn kept(rep: &Replay) -> &[Located] {
    rep.records.as_deref().expect("records kept")
}

fn records_of(rep: &Replay) -> Vec<Record> {
    kept(rep).iter().map(|l| l.record.clone()).collect()
}

/// Replay keeping the records, and check that the state-only replay
/// (recovery's path) agrees with it.
fn replay_both(state_dir: &Path) -> Result<Replay, Error> {
    let fast = replay(state_dir);
    let full = replay_records(state_dir);
    match (&fast, &full) {
        (Ok(a), Ok(b)) => {
            assert!(a.records.is_none());
            assert_eq!(a.state, b.state);
            assert_eq!(a.torn, b.torn);
            assert_eq!((&a.segments, a.bytes), (&b.segments, b.bytes));
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("state-only and full replay disagree: {fast:?} vs {full:?}"),
    }
    full
}

#[test]
fn torn_tail_at_every_byte_of_the_last_three_records_is_dropped_and_appended_after() {
    let tmp = scratch();
    let (seg, bytes, spans) = golden(&tmp.path().join("golden"));
    let all = records_of(&replay_records(&tmp.path().join("golden")).unwrap());
    let end = spans.last().map(|(o, l)| o + l).unwrap();
    let from = spans[spans.len() - 3].0;
    let name = seg.file_name().unwrap();
    let mut checked = 0;
    for cut in from..end {
        for zero_fill in [false, true] {
            let state = tmp.path().join("s");
            let _ = std::fs::remove_dir_all(&state);
            std::fs::create_dir_all(state.join("wal")).unwrap();
            let mut damaged = bytes[..cut].to_vec();
            if zero_fill {
                damaged.resize(bytes.len(), 0);
            }
            let path = state.join("wal").join(name);
            std::fs::write(&path, &damaged).unwrap();

            // Records whose bytes all survived (a cut inside trailing zero
            // bytes of a record, then zero fill, leaves it whole).
            let whole = spans
                .iter()
                .take_while(|(o, l)| damaged.get(*o..o + l) == bytes.get(*o..o + l))
                .count();
            let rep = replay_both(&state).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(records_of(&rep), all[..whole], "cut at {cut}");
            let partial = spans.get(whole).is_some_and(|(o, _)| *o < cut);
            assert_eq!(
                rep.torn.is_some(),
                partial,
                "cut at {cut} zero_fill {zero_fill}"
            );
            if let Some(t) = &rep.torn {
                assert_eq!(t.offset as usize, spans[whole].0);
                assert_eq!(t.segment, path);
            }

            // The writer cuts the tail off and appends after the last whole record.
            let (mut w, rep2) = Wal::open_in_keeping(Fs, &wal_dir(&state), Keep::Records).unwrap();
            assert_eq!(kept(&rep2).len(), whole);
            assert_eq!(rep2.state, rep.state);
            w.append(&batch(99, 3)).unwrap();
            drop(w);
            let after = replay_both(&state).unwrap();
            assert!(
                after.torn.is_none(),
                "cut at {cut}: torn tail survived reopening"
            );
            let mut want = all[..whole].to_vec();
            want.extend(batch(99, 3));
            assert_eq!(records_of(&after), want, "cut at {cut}");
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} cuts");
}

#[test]
fn flipped_bit_in_a_middle_record_is_an_error_naming_segment_and_offset() {
    let tmp = scratch();
    let golden_dir = tmp.path().join("golden");
    let (seg, bytes, spans) = golden(&golden_dir);
    let (off, len) = spans[5];
    let state = tmp.path().join("s");
    std::fs::create_dir_all(state.join("wal")).unwrap();
    let path = state.join("wal").join(seg.file_name().unwrap());
    for byte in off..off + len {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[byte] ^= 1 << bit;
            std::fs::write(&path, &damaged).unwrap();
            let err = match replay_both(&state) {
                Ok(_) => panic!("flip of byte {byte} bit {bit} went unnoticed"),
                Err(e) => e,
            };
            assert!(err.is_corrupt(), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains(&format!("byte {off}")),
                "byte {byte} bit {bit}: {msg}"
            );
            // The writer refuses it too, rather than truncating good records.
            let open = Wal::open(&state).map(|_| ());
            assert!(matches!(open, Err(e) if e.is_corrupt()));
            assert_eq!(
                std::fs::read(&path).unwrap(),
                damaged,
                "recovery modified a corrupt log"
            );
        }
    }
}

#[test]
fn the_binary_reports_damage_with_segment_and_offset_and_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (seg, mut bytes, spans) = golden(&state);
    let sd = state.to_str().unwrap();

    // Torn tail: verify passes and says what it drops.
    let end = spans.last().map(|(o, l)| o + l).unwrap();
    std::fs::write(&seg, &bytes[..end - 3]).unwrap();
    let out = run(&["wal", "inspect", "--verify", "--state-dir", sd]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("torn tail"),
        "{}",
        text(&out.stdout)
    );

    // Damage before the tail: inspect and sync both refuse, naming where.
    let (off, _) = spans[4];
    bytes[off + 20] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let out = run(&["wal", "inspect", "--verify", "--state-dir", sd]);
    assert_eq!(out.status.code(), Some(3));
    let msg = text(&out.stdout);
    assert!(
        msg.contains(&seg.display().to_string()) && msg.contains(&format!("byte {off}")),
        "{msg}"
    );

    let m = tmp.path().join("m.jsonl");
    std::fs::write(&m, "{\"op\":\"delete\",\"repo\":\"R\",\"path\":\"x\"}\n").unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let out = sync(&m, &root, &state, &[]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("WAL corrupt") && err.contains(&format!("byte {off}")),
        "{err}"
    );
    assert!(!err.contains("panicked at"), "{err}");
}
