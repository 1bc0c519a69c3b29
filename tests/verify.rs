//! `index verify [--repair]` on the local index: each kind of drift made
//! behind the tool's back is reported with the right counts (exit 1), a
//! repair fixes it, and verify is then clean (exit 0); a repair SIGKILLed at
//! random instants ends exact.

mod support;

use std::path::Path;
use std::time::Duration;

use support::chunks::{assert_exact, chunk_uuid};
use support::verify::{totals, write_bulk, write_tree, Index, CHUNK, MAX};
use support::*;
use tantivy::schema::Value as _;

/// The tree of [`write_tree`], indexed; returns every (repo, path).
fn indexed(s: &Sandbox) -> Vec<(String, String)> {
    let refs = write_tree(&s.root, &s.dir.join("changes.jsonl"));
    let out = sync(
        &s.dir.join("changes.jsonl"),
        &s.root,
        &s.state,
        &["--chunk-size", CHUNK, "--quiet"],
    );
    expect_code(&out, 0);
    refs
}

/// The local index of `s`.
fn ix(s: &Sandbox) -> Index<'_> {
    Index {
        root: &s.root,
        state: &s.state,
        target: Vec::new(),
    }
}

/// Change the local index behind the tool's back: `edit` gets every stored
/// document and says what to put back (`None`: delete it).
fn tamper(
    state: &Path,
    mut edit: impl FnMut(&str, &tantivy::TantivyDocument) -> Option<tantivy::TantivyDocument>,
) {
    let index = tantivy::Index::open_in_dir(state.join("index")).unwrap();
    elysiactl::target::local::register_tokenizers(&index);
    let schema = index.schema();
    let id = schema.get_field("id").unwrap();
    let reader = index.reader().unwrap();
    let searcher = reader.searcher();
    let mut changes = Vec::new();
    for seg in searcher.segment_readers() {
        let store = seg.get_store_reader(8).unwrap();
        for d in seg.doc_ids_alive() {
            let doc: tantivy::TantivyDocument = store.get(d).unwrap();
            let key = doc
                .get_first(id)
                .and_then(|v| v.as_str())
                .unwrap()
                .to_owned();
            let new = edit(&key, &doc);
            if new.as_ref() != Some(&doc) {
                changes.push((key, new));
            }
        }
    }
    let mut w: tantivy::IndexWriter = index.writer_with_num_threads(1, 20 << 20).unwrap();
    for (key, new) in changes {
        w.delete_term(tantivy::Term::from_field_text(id, &key));
        if let Some(doc) = new {
            w.add_document(doc).unwrap();
        }
    }
    w.commit().unwrap();
}

/// `doc` with its text field `name` replaced.
fn with_text(
    state: &Path,
    doc: &tantivy::TantivyDocument,
    name: &str,
    value: &str,
) -> tantivy::TantivyDocument {
    let index = tantivy::Index::open_in_dir(state.join("index")).unwrap();
    let field = index.schema().get_field(name).unwrap();
    let mut out = tantivy::TantivyDocument::default();
    for (f, v) in doc.field_values() {
        if f == field {
            out.add_text(f, value);
        } else {
            out.add_field_value(f, &tantivy::schema::OwnedValue::from(v));
        }
    }
    out
}

fn chunk_id(repo: &str, path: &str, k: u64) -> String {
    chunk_uuid(repo, path, k).to_string()
}

/// [`tamper`]: delete the object `id`.
fn delete_object(state: &Path, id: &str) {
    tamper(state, |key, doc| (key != id).then(|| doc.clone()));
}

#[test]
fn a_fresh_index_verifies_clean() {
    let s = sandbox();
    let refs = indexed(&s);
    let (code, doc) = ix(&s).verify(&[]);
    assert_eq!((code, totals(&doc)), (0, (0, 0, 0)), "{doc}");
    assert_eq!(doc["total"]["files"].as_u64(), Some(refs.len() as u64));
    // Text output names the verdict.
    let out = run_state(&["index", "verify", "--root", arg(&s.root)], &s.state);
    assert!(expect_code(&out, 0).contains("the index equals the disk"));
}

#[test]
fn an_object_deleted_behind_the_tools_back_is_missing_and_repaired() {
    let s = sandbox();
    let refs = indexed(&s);
    delete_object(&s.state, &chunk_id("A", "src/f2.rs", 0));
    ix(&s).repaired(&refs, (1, 0, 0));
}

#[test]
fn a_chunk_missing_from_the_middle_of_a_file_is_reported_and_repaired() {
    let s = sandbox();
    let refs = indexed(&s);
    // f4 is ~3000 bytes: a dozen chunks.
    delete_object(&s.state, &chunk_id("A", "src/f4.rs", 3));
    let (_, doc) = ix(&s).verify(&[]);
    let why = doc["repos"]["A"]["first"][0]["why"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("chunk 3 of"), "{why}");
    ix(&s).repaired(&refs, (1, 0, 0));
}

#[test]
fn an_altered_content_or_hash_is_stale_and_repaired() {
    let s = sandbox();
    let refs = indexed(&s);
    let (a, b) = (chunk_id("A", "src/f2.rs", 0), chunk_id("B", "src/f3.rs", 1));
    let state = s.state.clone();
    tamper(&s.state, |key, doc| {
        Some(if key == a {
            with_text(&state, doc, "content", "edited by another client")
        } else if key == b {
            with_text(&state, doc, "contentSha256", &"0".repeat(64))
        } else {
            doc.clone()
        })
    });
    ix(&s).repaired(&refs, (0, 0, 2));
}

#[test]
fn an_extra_object_for_a_gone_file_and_a_removed_repo_are_removed() {
    let s = sandbox();
    let mut refs = indexed(&s);
    std::fs::remove_file(s.root.join("A/src/f4.rs")).unwrap();
    std::fs::remove_dir_all(s.root.join("B")).unwrap();
    let (code, doc) = ix(&s).verify(&[]);
    assert_eq!(code, 1);
    assert_eq!(doc["repos"]["B"]["gone"], true, "{doc}");
    // 12 files of B are extra, and f4 of A.
    assert_eq!(totals(&doc), (0, 13, 0), "{doc}");
    refs.retain(|(r, _)| r != "B");
    ix(&s).repaired(&refs, (0, 13, 0));
    let objs = ix(&s).export();
    assert!(objs.iter().all(|o| o.repo != "B" && o.path != "src/f4.rs"));
}

#[test]
fn objects_of_another_chunk_size_are_stale_and_repaired() {
    let s = sandbox();
    let refs = indexed(&s);
    // Another state dir built the same files at 1024; its index replaces ours.
    let other = s.dir.join("other");
    let out = sync(
        &s.dir.join("changes.jsonl"),
        &s.root,
        &other,
        &["--chunk-size", "1024", "--quiet"],
    );
    expect_code(&out, 0);
    std::fs::remove_dir_all(s.state.join("index")).unwrap();
    std::process::Command::new("cp")
        .args(["-r", arg(&other.join("index")), arg(&s.state.join("index"))])
        .status()
        .unwrap();
    let (_, doc) = ix(&s).verify(&[]);
    let stale = totals(&doc).2;
    assert!(
        stale >= 8,
        "files of 2+ chunks at 256 should be stale: {doc}"
    );
    ix(&s).repaired(&refs, (0, 0, stale));
}

#[test]
fn a_deleted_local_index_is_all_missing_and_rebuilt_by_repair() {
    let s = sandbox();
    let refs = indexed(&s);
    std::fs::remove_dir_all(s.state.join("index")).unwrap();
    // The files that have content (the empty ones are one empty chunk each).
    ix(&s).repaired(&refs, (refs.len() as u64, 0, 0));
}

#[test]
fn repair_dry_run_prints_the_lines_and_changes_nothing() {
    let s = sandbox();
    indexed(&s);
    std::fs::remove_file(s.root.join("A/src/f2.rs")).unwrap();
    let before = ix(&s).export();
    let out = run_state(
        &[
            "index",
            "verify",
            "--root",
            arg(&s.root),
            "--repair",
            "--dry-run",
        ],
        &s.state,
    );
    expect_code(&out, 1);
    let lines = text(&out.stdout);
    assert!(lines.contains(r#""path":"src/f2.rs""#), "{lines}");
    assert_eq!(ix(&s).export(), before);
}

#[test]
fn a_repair_killed_at_random_instants_ends_exact() {
    let s = sandbox();
    let refs = indexed(&s);
    // Lose the whole index: the repair has every file to write.
    let more = write_bulk(&s.root, 600);
    std::fs::remove_dir_all(s.state.join("index")).unwrap();
    let mut rng = Rng(0xbadc0de);
    let mut args = ix(&s).repair_args();
    args.push("--quiet");
    let index = s.state.join("index");
    let kills = kill_lives(60, 10, |from_top| {
        if from_top {
            // The last life finished the repair: lose the index again, so
            // the next kill still lands in real repair work.
            std::fs::remove_dir_all(&index).unwrap();
        }
        let wait = Duration::from_millis(20 + rng.below(400));
        run_killed_after(&args, false, wait)
    });
    assert!(kills >= 10, "only {kills} kills landed mid-repair");
    let out = run(&args);
    expect_code(&out, 0);
    let mut all = refs;
    all.extend(more);
    ix(&s).assert_clean_and_exact(&all);
}

#[test]
fn a_sync_that_finds_its_index_deleted_says_so_until_a_repair() {
    let s = sandbox();
    let refs = indexed(&s);
    std::fs::remove_dir_all(s.state.join("index")).unwrap();
    // Nothing new to apply: the sync must still not call this complete.
    let empty = s.dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let metrics = s.dir.join("sync.prom");
    let args = ["--chunk-size", CHUNK, "--metrics-file", arg(&metrics)];
    let err = expect_code(&sync(&empty, &s.root, &s.state, &args), 1);
    assert_contains_all(
        &err,
        &[
            "[INDEX_LOST]",
            "index verify --repair",
            "partially_complete",
        ],
    );
    assert!(status(&s.state)["index_lost"]["detected_ms"]
        .as_u64()
        .is_some());
    assert!(std::fs::read_to_string(&metrics)
        .unwrap()
        .contains("elysiactl_index_lost 1"));
    // It stays so on the next run, even with work done meanwhile.
    let err = expect_code(
        &sync(&s.dir.join("changes.jsonl"), &s.root, &s.state, &args),
        1,
    );
    assert!(err.contains("[INDEX_LOST]"), "{err}");
    // A repair makes the index equal the disk and clears the mark.
    expect_code(&run(&ix(&s).repair_args()), 0);
    assert!(status(&s.state)["index_lost"].is_null());
    assert_eq!(status(&s.state)["last_verify"]["equal"], true);
    let err = expect_code(&sync(&empty, &s.root, &s.state, &args), 0);
    assert!(!err.contains("[INDEX_LOST]"), "{err}");
    assert!(std::fs::read_to_string(&metrics)
        .unwrap()
        .contains("elysiactl_index_lost 0"));
    assert_exact(&ix(&s).export(), &s.root, &refs, MAX, 256);
}
