//! The golden WAL: segments checked into tests/data/ holding one record of
//! every type. `golden.wal` holds types 1-8 as the first builds wrote them
//! (it must never change: it is what every existing log looks like);
//! `golden-2.wal` the types added after (9-12). Decoding each must give
//! exactly these records and encoding these records must give exactly its
//! bytes, so neither the code nor docs/wal-format.md (whose hex dumps are
//! checked below) can drift.
//!
//! To regenerate after a deliberate format change (and a version bump):
//! `ELYSIACTL_BLESS=1 cargo test --test wal_golden`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use elysiactl::wal::format;
use elysiactl::wal::*;

fn golden_records() -> Vec<Record> {
    let fp = [0xab; 32];
    let manifest = ManifestId {
        path: "/tmp/changes.jsonl".into(),
        size: 662,
        fingerprint: fp,
        spooled: false,
    };
    let counts = Counts {
        lines: 3,
        add: 1,
        update: 1,
        delete: 1,
        upserted: 2,
        deleted: 1,
        failed: 1,
        ..Counts::default()
    };
    let mut state = State::default();
    let started = Record::RunStarted(RunStarted {
        run_id: 1,
        started_ms: 1_735_727_400_000,
        pid: 4242,
        version: "0.1.0".into(),
        target: "local".into(),
        batch_size: 100,
        on_error: "continue".into(),
        max_retries: 3,
    });
    let mstarted = Record::ManifestStarted(ManifestStarted {
        run_id: 1,
        manifest,
        total_lines: 4,
        from: None,
    });
    let failed = Record::ItemFailed(ItemFailed {
        run_id: 1,
        fingerprint: fp,
        line: 2,
        offset: 64,
        end: 120,
        repo: "ServiceA".into(),
        path: "src/x.py".into(),
        kind: FailureKind::Source,
        reason: "cannot read file: Permission denied (os error 13)".into(),
        attempts: 1,
    });
    let cs = Record::ChangesetSeen(ChangesetSeen {
        run_id: 1,
        fingerprint: fp,
        line: 4,
        repo: "ServiceA".into(),
        commit: "9f1c2d3e".into(),
        branch: Some("main".into()),
        parent: None,
        base: true,
    });
    let batch = Record::BatchDone(BatchDone {
        run_id: 1,
        fingerprint: fp,
        seq: 1,
        spans: vec![Span {
            start: 0,
            end: 662,
            first_line: 1,
            next_line: 5,
        }],
        counts,
    });
    let finished = Record::RunFinished(RunFinished {
        run_id: 1,
        finished_ms: 1_735_727_401_000,
        status: RunStatus::Failures,
        counts,
        message: None,
    });
    let abandoned = Record::ManifestAbandoned(ManifestAbandoned {
        run_id: 2,
        fingerprint: [0xcd; 32],
        path: "/tmp/old.jsonl".into(),
        remaining_lines: 7,
    });
    for r in [&started, &mstarted, &failed, &cs, &batch, &finished] {
        state.apply(r);
    }
    let snapshot = Record::Snapshot(Box::new(state.compacted()));
    vec![
        started, mstarted, failed, cs, batch, finished, abandoned, snapshot,
    ]
}

/// The records of `golden-2.wal`, one of each type added after the first
/// builds, on top of the state `golden_records` built: the target bound, a
/// failed line resolved, the manifest restarted, and a compaction snapshot.
fn golden_2_records() -> Vec<Record> {
    let fp = [0xab; 32];
    let bound = Record::TargetBound(TargetIdentity {
        kind: "weaviate".into(),
        server: "http://localhost:8080".into(),
        collection: "Docs".into(),
        chunk_size: 0,
    });
    let resolved = Record::FailuresResolved(FailuresResolved {
        run_id: 2,
        entries: vec![(fp, 64)],
    });
    let restarted = Record::ManifestRestarted(ManifestRestarted {
        run_id: 3,
        fingerprint: fp,
    });
    let mut state = State::default();
    for r in golden_records().iter().take(6) {
        state.apply(r);
    }
    for r in [&bound, &resolved, &restarted] {
        state.apply(r);
    }
    let snapshot = Record::SnapshotV2(Box::new(state.compacted()));
    vec![bound, resolved, restarted, snapshot]
}

fn encoded(records: &[Record]) -> Vec<u8> {
    let mut out = format::segment_header().to_vec();
    for r in records {
        r.encode(&mut out);
    }
    out
}

fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `name` holds exactly `records`, both ways, with these type bytes.
fn holds_exactly(name: &str, records: Vec<Record>, kinds: &[u8]) {
    let path = data_path(name);
    if std::env::var_os("ELYSIACTL_BLESS").is_some() {
        std::fs::write(&path, encoded(&records)).unwrap();
    }
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("tests/data/{name}: {e}"));
    assert_eq!(
        file,
        encoded(&records),
        "encoding drifted from tests/data/{name}"
    );
    let (decoded, torn, end) = decode_segment(&path, &file, true).unwrap();
    assert!(torn.is_none());
    assert_eq!(end as usize, file.len());
    let decoded: Vec<Record> = decoded.into_iter().map(|l| l.record).collect();
    assert_eq!(decoded, records);
    // The type bytes are part of the format.
    let got: Vec<u8> = decoded.iter().map(Record::kind).collect();
    assert_eq!(got, kinds);
}

#[test]
fn golden_wal_decodes_to_the_known_records_and_re_encodes_byte_for_byte() {
    holds_exactly("golden.wal", golden_records(), &[1, 2, 4, 5, 3, 6, 7, 8]);
}

#[test]
fn golden_2_wal_pins_the_records_added_later_both_ways() {
    holds_exactly("golden-2.wal", golden_2_records(), &[10, 11, 9, 12]);
}

/// The bytes of the hex dump after `marker` in docs/wal-format.md.
fn doc_hex(doc: &str, marker: &str) -> Vec<u8> {
    let start = doc.find(marker).expect("hex marker in the doc");
    let block = &doc[start..];
    let block = &block[block.find("```").unwrap() + 3..];
    let block = &block[block.find('\n').unwrap() + 1..];
    let block = &block[..block.find("```").unwrap()];
    let mut bytes = Vec::new();
    for line in block.lines() {
        // "00000010  5f 00 00 00 01 00 00 00  ..." : offset, then hex pairs
        // up to a double space before the comment.
        let hex = line.split("  |").next().unwrap_or("");
        for tok in hex.split_whitespace().skip(1) {
            bytes.push(u8::from_str_radix(tok, 16).expect("hex byte"));
        }
    }
    bytes
}

/// The hex dumps in docs/wal-format.md are the start of the golden files.
#[test]
fn format_doc_hex_dump_matches_the_golden_file() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/wal-format.md"))
        .expect("docs/wal-format.md");
    for (marker, name) in [
        ("<!-- golden-hex -->", "golden.wal"),
        ("<!-- golden-2-hex -->", "golden-2.wal"),
    ] {
        let bytes = doc_hex(&doc, marker);
        let file = std::fs::read(data_path(name)).unwrap();
        assert!(bytes.len() >= 48, "the doc shows at least the headers");
        assert_eq!(
            &file[..bytes.len()],
            &bytes[..],
            "docs/wal-format.md hex dump of {name} is stale"
        );
    }
    // And the field table matches the constants.
    assert!(doc.contains(&format!("`{}`", String::from_utf8_lossy(&format::MAGIC))));
    assert!(doc.contains(&format!("version `{}`", format::VERSION)));
}

/// Every record type survives a state replay: the snapshot reproduces the
/// state the records before it built.
#[test]
fn snapshot_in_the_golden_file_equals_the_replayed_state() {
    let recs = golden_records();
    let mut st = State::default();
    for r in &recs[..6] {
        st.apply(r);
    }
    let Record::Snapshot(snap) = &recs[7] else {
        panic!("last record is the snapshot")
    };
    assert_eq!(**snap, st.compacted());
    let m = st.manifests.first().unwrap();
    assert_eq!(m.failed.len(), 1);
    let repos: BTreeMap<_, _> = st.repos.clone();
    assert!(
        repos.is_empty(),
        "a repo with a failed line is not yet applied"
    );
}

/// The snapshot in golden-2.wal reproduces the state all the records before
/// it built, target included; the type-8 snapshot of golden.wal has none.
#[test]
fn snapshot_v2_in_golden_2_equals_the_replayed_state_with_its_target() {
    let mut st = State::default();
    for r in golden_records().iter().take(6) {
        st.apply(r);
    }
    let v2 = golden_2_records();
    for r in &v2[..3] {
        st.apply(r);
    }
    let Record::SnapshotV2(snap) = &v2[3] else {
        panic!("last record is the snapshot")
    };
    assert_eq!(**snap, st.compacted());
    assert_eq!(
        snap.target.as_ref().map(|t| t.kind.as_str()),
        Some("weaviate")
    );
    let m = snap.manifests.first().unwrap();
    assert!(m.failed.is_empty(), "the failed line was resolved");
    assert!(m.done.is_empty(), "the manifest was restarted");
    let Record::Snapshot(old) = &golden_records()[7] else {
        panic!("golden.wal ends with a type-8 snapshot")
    };
    assert_eq!(old.target, None);
}
