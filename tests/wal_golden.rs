//! The golden WAL: a segment checked into tests/data/ holding one record of
//! every type. Decoding it must give exactly these records and encoding these
//! records must give exactly its bytes, so neither the code nor
//! docs/wal-format.md (whose hex dump is checked below) can drift.
//!
//! To regenerate after a deliberate format change (and a version bump):
//! `ELYSIACTL_BLESS=1 cargo test --test wal_golden`.

use std::collections::BTreeMap;
use std::path::Path;

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

fn golden_bytes() -> Vec<u8> {
    let mut out = format::segment_header().to_vec();
    for r in golden_records() {
        r.encode(&mut out);
    }
    out
}

fn golden_path() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/golden.wal"
    ))
}

#[test]
fn golden_wal_decodes_to_the_known_records_and_re_encodes_byte_for_byte() {
    if std::env::var_os("ELYSIACTL_BLESS").is_some() {
        std::fs::write(golden_path(), golden_bytes()).unwrap();
    }
    let file = std::fs::read(golden_path()).expect("tests/data/golden.wal");
    assert_eq!(
        file,
        golden_bytes(),
        "encoding drifted from the golden file"
    );
    let (records, torn, end) = decode_segment(golden_path(), &file, true).unwrap();
    assert!(torn.is_none());
    assert_eq!(end as usize, file.len());
    let decoded: Vec<Record> = records.into_iter().map(|l| l.record).collect();
    assert_eq!(decoded, golden_records());
    // The type bytes are part of the format.
    let kinds: Vec<u8> = decoded.iter().map(Record::kind).collect();
    assert_eq!(kinds, vec![1, 2, 4, 5, 3, 6, 7, 8]);
}

/// The hex dump in docs/wal-format.md is the start of the golden file.
#[test]
fn format_doc_hex_dump_matches_the_golden_file() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/wal-format.md"))
        .expect("docs/wal-format.md");
    let start = doc
        .find("<!-- golden-hex -->")
        .expect("hex marker in the doc");
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
    let file = std::fs::read(golden_path()).unwrap();
    assert!(bytes.len() >= 48, "the doc shows at least the headers");
    assert_eq!(
        &file[..bytes.len()],
        &bytes[..],
        "docs/wal-format.md hex dump is stale"
    );
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
