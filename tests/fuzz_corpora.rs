//! Every committed fuzz corpus file (and every kept crasher) replayed on
//! stable through the same checks the libFuzzer targets run
//! (`fuzz/harness.rs`), so CI holds the fuzzed properties without nightly.

#[allow(dead_code)]
#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let res = std::panic::catch_unwind(|| check(&data));
            assert!(res.is_ok(), "{target}: {} fails its property", f.display());
            n += 1;
        }
    }
    assert!(
        n >= 5,
        "{target}: only {n} corpus files; the seeds are missing"
    );
}

#[test]
fn wal_decode_corpus_never_panics_and_stays_consistent() {
    replay("wal_decode", harness::wal_decode);
}

#[test]
fn wal_roundtrip_corpus_recovers_a_prefix() {
    replay("wal_roundtrip", harness::wal_roundtrip);
}

#[test]
fn manifest_line_corpus_parses_or_errs_and_never_escapes_a_root() {
    replay("manifest_line", harness::manifest_line);
}

#[test]
fn chunk_corpus_passes_every_chunk_invariant() {
    replay("chunk", harness::chunk);
}
