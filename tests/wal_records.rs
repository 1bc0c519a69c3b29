//! What `ManifestRestarted`, `TargetBound` and `FailuresResolved` do to the
//! recovered `State`: applied directly, replayed from a real log (both
//! replay paths), and carried through compaction by the snapshot. Also
//! `State::outstanding_count`.

use std::path::Path;

use elysiactl::wal::*;

const A: [u8; 32] = [0xa1; 32];
const B: [u8; 32] = [0xb2; 32];

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

fn run_started(run_id: u64) -> Record {
    Record::RunStarted(RunStarted {
        run_id,
        started_ms: run_id,
        pid: 1,
        version: "t".into(),
        target: "local".into(),
        batch_size: 10,
        on_error: "continue".into(),
        max_retries: 3,
    })
}

/// Manifest `fp`: 100 bytes, 10 lines of 10 bytes.
fn manifest_started(run_id: u64, fp: [u8; 32]) -> Record {
    Record::ManifestStarted(ManifestStarted {
        run_id,
        manifest: ManifestId {
            path: format!("/m-{}.jsonl", fp[0]),
            size: 100,
            fingerprint: fp,
            spooled: false,
        },
        total_lines: 10,
        from: None,
    })
}

/// Lines `first..next` (1-based) of manifest `fp` went through a batch.
fn batch(run_id: u64, fp: [u8; 32], first: u64, next: u64) -> Record {
    Record::BatchDone(BatchDone {
        run_id,
        fingerprint: fp,
        seq: first,
        spans: vec![Span {
            start: (first - 1) * 10,
            end: (next - 1) * 10,
            first_line: first,
            next_line: next,
        }],
        counts: Counts {
            lines: next - first,
            ..Counts::default()
        },
    })
}

/// Line `line` of manifest `fp` (repo `repo`) failed, for the
/// `attempts`-th time.
fn failed(run_id: u64, fp: [u8; 32], line: u64, repo: &str, attempts: u32) -> Record {
    Record::ItemFailed(ItemFailed {
        run_id,
        fingerprint: fp,
        line,
        offset: (line - 1) * 10,
        end: line * 10,
        repo: repo.into(),
        path: format!("f{line}"),
        kind: FailureKind::Target,
        reason: "refused".into(),
        attempts,
    })
}

fn target(server: &str) -> TargetIdentity {
    TargetIdentity {
        kind: "weaviate".into(),
        server: server.into(),
        collection: "Docs".into(),
        chunk_size: 4096,
    }
}

/// Run 1 over manifest A: every line through a batch, lines 3 and 7 failed
/// (line 7 a dead letter after 5 attempts).
fn applied_with_two_failures() -> Vec<Record> {
    vec![
        run_started(1),
        manifest_started(1, A),
        failed(1, A, 3, "R", 2),
        failed(1, A, 7, "S", 5),
        batch(1, A, 1, 11),
    ]
}

fn state_of(records: &[Record]) -> State {
    let mut s = State::default();
    for r in records {
        s.apply(r);
    }
    s
}

/// Write `records` to a fresh log (one append each), check that both replay
/// paths rebuild the state applying them gives, compact, check the
/// snapshot gives it too (as compaction keeps it), and return it.
fn through_the_log(dir: &Path, records: &[Record]) -> State {
    let want = state_of(records);
    let (mut w, _) = Wal::open(dir).unwrap();
    for r in records {
        w.append(std::slice::from_ref(r)).unwrap();
    }
    let fast = replay(dir).unwrap();
    let full = replay_records(dir).unwrap();
    assert_eq!(fast.state, want, "state-only replay");
    assert_eq!(full.state, want, "replay keeping records");
    let decoded: Vec<Record> = full
        .records
        .unwrap()
        .into_iter()
        .map(|l| l.record)
        .collect();
    assert_eq!(decoded, records, "the records read back");
    w.compact(&want).unwrap();
    drop(w);
    let after = replay_records(dir).unwrap();
    let recs = after.records.unwrap();
    assert_eq!(recs.len(), 1);
    assert!(matches!(recs[0].record, Record::SnapshotV2(_)));
    assert_eq!(after.state, want.compacted(), "through the snapshot");
    after.state
}

#[test]
fn manifest_restarted_forgets_applied_ranges_and_keeps_failures_with_their_attempts() {
    let mut recs = applied_with_two_failures();
    let before = state_of(&recs);
    let m = before.manifest(&A).unwrap();
    assert!(m.all_lines_seen() && before.unfinished().count() == 0);
    recs.push(run_started(2));
    recs.push(manifest_started(2, A));
    recs.push(Record::ManifestRestarted(ManifestRestarted {
        run_id: 2,
        fingerprint: A,
    }));
    let s = state_of(&recs);
    let m = s.manifest(&A).unwrap();
    assert!(m.done.is_empty(), "{:?}", m.done);
    assert_eq!(m.resume_point(), (0, 1));
    assert_eq!(
        m.counts,
        Counts::default(),
        "the pass's counters start over"
    );
    assert_eq!(s.unfinished().count(), 1, "unfinished again");
    let failed: Vec<(u64, u32)> = m.failed.iter().map(|(o, f)| (*o, f.attempts)).collect();
    assert_eq!(failed, vec![(20, 2), (60, 5)], "failures and attempts kept");
    assert_eq!(s.outstanding_count(), 2);

    // Killed after its first batch: the next run resumes after it.
    recs.push(batch(2, A, 1, 5));
    let tmp = scratch();
    let s = through_the_log(&tmp.path().join("s"), &recs);
    let m = s.manifest(&A).unwrap();
    assert_eq!(m.resume_point(), (40, 5));
    assert!(!m.all_lines_seen());
    // Line 3 lay in the batch: applied this time. Line 7 is still failed.
    assert_eq!(m.failed.keys().copied().collect::<Vec<_>>(), vec![60]);
}

#[test]
fn manifest_restarted_of_a_complete_manifest_makes_it_unfinished_and_of_an_unknown_one_nothing() {
    let mut recs = vec![run_started(1), manifest_started(1, A), batch(1, A, 1, 11)];
    let s = state_of(&recs);
    assert!(s.manifest(&A).unwrap().complete());
    recs.push(Record::ManifestRestarted(ManifestRestarted {
        run_id: 2,
        fingerprint: B,
    }));
    assert_eq!(state_of(&recs), s, "an unknown manifest is ignored");
    recs.push(Record::ManifestRestarted(ManifestRestarted {
        run_id: 2,
        fingerprint: A,
    }));
    let tmp = scratch();
    let s = through_the_log(&tmp.path().join("s"), &recs);
    let m = s.manifest(&A).unwrap();
    assert!(!m.complete() && m.done.is_empty());
    assert_eq!(s.unfinished().count(), 1);
}

#[test]
fn target_bound_is_remembered_the_last_one_wins_and_survives_compaction() {
    let mut recs = vec![run_started(1)];
    assert_eq!(state_of(&recs).target, None);
    recs.push(Record::TargetBound(target("http://a:8080")));
    recs.push(Record::TargetBound(target("http://b:8080")));
    let tmp = scratch();
    let s = through_the_log(&tmp.path().join("s"), &recs);
    assert_eq!(s.target, Some(target("http://b:8080")));
    // A later run on top of the compacted log keeps it.
    let (mut w, rep) = Wal::open(&tmp.path().join("s")).unwrap();
    assert_eq!(rep.state.target, Some(target("http://b:8080")));
    w.append(&[run_started(2)]).unwrap();
    drop(w);
    let rep = replay(&tmp.path().join("s")).unwrap();
    assert_eq!(rep.state.target, Some(target("http://b:8080")));
    assert_eq!(rep.state.next_run_id, 3);
}

#[test]
fn a_type_8_snapshot_from_an_older_build_decodes_with_no_target() {
    let mut s = state_of(&applied_with_two_failures());
    s.apply(&Record::TargetBound(target("http://a")));
    let mut v1 = Vec::new();
    Record::Snapshot(Box::new(s.compacted())).encode(&mut v1);
    let mut v2 = Vec::new();
    Record::SnapshotV2(Box::new(s.compacted())).encode(&mut v2);
    let payload = |b: &[u8]| b[format::RECORD_HEADER_LEN..].to_vec();
    // Type 12 is type 8's bytes, then the target.
    assert!(payload(&v2).starts_with(&payload(&v1)));
    let Record::Snapshot(old) = Record::decode(8, &payload(&v1)).unwrap() else {
        panic!("type 8 is a Snapshot");
    };
    let mut want = s.compacted();
    want.target = None;
    assert_eq!(*old, want);
    let Record::SnapshotV2(new) = Record::decode(12, &payload(&v2)).unwrap() else {
        panic!("type 12 is a SnapshotV2");
    };
    assert_eq!(*new, s.compacted());
    // Replay starts at either.
    for bytes in [v1, v2] {
        let tmp = scratch();
        let dir = wal_dir(tmp.path());
        create_private_dir(&dir).unwrap();
        let mut seg = format::segment_header().to_vec();
        seg.extend_from_slice(&bytes);
        run_started(9).encode(&mut seg);
        std::fs::write(dir.join("00000000000000000004.wal"), &seg).unwrap();
        let rep = replay(tmp.path()).unwrap();
        assert_eq!(rep.state.next_run_id, 10);
        assert_eq!(rep.state.manifest(&A).unwrap().failed.len(), 2);
    }
}

#[test]
fn failures_resolved_removes_the_named_failed_lines_and_ignores_unknown_ones() {
    let mut recs = applied_with_two_failures();
    recs.extend([
        run_started(2),
        manifest_started(2, B),
        failed(2, B, 2, "R", 1),
        failed(2, B, 9, "R", 1),
        batch(2, B, 1, 11),
    ]);
    assert_eq!(state_of(&recs).outstanding_count(), 4);
    recs.push(Record::FailuresResolved(FailuresResolved {
        run_id: 2,
        entries: vec![
            (A, 20),      // A line 3
            (B, 80),      // B line 9
            (B, 55),      // no such failed line
            ([9; 32], 0), // no such manifest
        ],
    }));
    let tmp = scratch();
    let s = through_the_log(&tmp.path().join("s"), &recs);
    let keys =
        |fp: &[u8; 32]| -> Vec<u64> { s.manifest(fp).unwrap().failed.keys().copied().collect() };
    assert_eq!(keys(&A), vec![60]);
    assert_eq!(keys(&B), vec![10]);
    assert_eq!(s.outstanding_count(), 2);
    assert_eq!(
        s.manifest(&A).unwrap().done.len(),
        1,
        "applied ranges untouched"
    );
}

#[test]
fn failures_resolved_lets_a_waiting_changeset_become_the_applied_base() {
    let cs = Record::ChangesetSeen(ChangesetSeen {
        run_id: 1,
        fingerprint: A,
        line: 10,
        repo: "R".into(),
        commit: "c0ffee".into(),
        branch: Some("main".into()),
        parent: Some("beef".into()),
        base: true,
    });
    let mut recs = vec![
        run_started(1),
        manifest_started(1, A),
        failed(1, A, 3, "R", 1),
        cs,
        batch(1, A, 1, 11),
    ];
    let s = state_of(&recs);
    assert!(s.repos.is_empty(), "repo R still has a failed line");
    recs.push(Record::FailuresResolved(FailuresResolved {
        run_id: 1,
        entries: vec![(A, 20)],
    }));
    let tmp = scratch();
    let s = through_the_log(&tmp.path().join("s"), &recs);
    assert_eq!(s.repos.get("R").map(|c| c.commit.as_str()), Some("c0ffee"));
    assert!(s.manifest(&A).unwrap().complete());
}

#[test]
fn outstanding_count_counts_failed_lines_and_dead_letters_of_manifests_not_abandoned() {
    let mut recs = applied_with_two_failures();
    assert_eq!(
        state_of(&recs).outstanding_count(),
        2,
        "a dead letter counts"
    );
    recs.extend([
        run_started(2),
        manifest_started(2, B),
        failed(2, B, 4, "R", 1),
        batch(2, B, 1, 5),
    ]);
    let s = state_of(&recs);
    assert_eq!(s.outstanding_count(), 3);
    assert_eq!(
        s.outstanding_count(),
        s.outstanding_failures().count() as u64
    );
    recs.push(Record::ManifestAbandoned(ManifestAbandoned {
        run_id: 3,
        fingerprint: B,
        path: "/m-178.jsonl".into(),
        remaining_lines: 6,
    }));
    assert_eq!(state_of(&recs).outstanding_count(), 2);
}

#[test]
fn wal_inspect_shows_the_new_records_as_text_and_json() {
    let tmp = scratch();
    let dir = tmp.path().join("s");
    let mut recs = applied_with_two_failures();
    recs.extend([
        Record::TargetBound(target("http://h:8080")),
        Record::FailuresResolved(FailuresResolved {
            run_id: 1,
            entries: vec![(A, 20)],
        }),
        Record::ManifestRestarted(ManifestRestarted {
            run_id: 1,
            fingerprint: A,
        }),
    ]);
    let state = state_of(&recs);
    let (mut w, _) = Wal::open(&dir).unwrap();
    w.append(&recs).unwrap();
    w.compact(&state).unwrap();
    drop(w);
    // The compacted log, then the same records again after it.
    let (mut w, _) = Wal::open(&dir).unwrap();
    w.append(&recs[5..]).unwrap();
    drop(w);
    let bin = env!("CARGO_BIN_EXE_elysiactl");
    let inspect = |extra: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(["wal", "inspect", "--state-dir"])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap()
    };
    let human = inspect(&[]);
    for want in [
        "SnapshotV2",
        "TargetBound",
        "FailuresResolved",
        "ManifestRestarted",
        "server=\"http://h:8080\"",
        "chunk_size=4096",
    ] {
        assert!(human.contains(want), "{want} missing:\n{human}");
    }
    let json: Vec<serde_json::Value> = inspect(&["--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = json.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "SnapshotV2",
            "TargetBound",
            "FailuresResolved",
            "ManifestRestarted"
        ]
    );
    let short = &"a1".repeat(6);
    assert_eq!(json[0]["record"]["target"]["collection"], "Docs");
    assert_eq!(json[0]["record"]["manifests"][0]["failed"], 1);
    assert_eq!(json[1]["record"]["kind"], "weaviate");
    assert_eq!(json[1]["record"]["chunk_size"], 4096);
    assert_eq!(json[2]["record"]["entries"][0]["manifest"], short.as_str());
    assert_eq!(json[2]["record"]["entries"][0]["offset"], 20);
    assert_eq!(json[3]["record"]["manifest"], short.as_str());
    assert!(inspect(&["--verify"]).contains("ok: 4 records in 2 segment(s)"));
}
