//! `index verify [--repair]` on the local index: each kind of drift made
//! behind the tool's back is reported with the right counts (exit 1), a
//! repair fixes it, and verify is then clean (exit 0); a repair SIGKILLed at
//! random instants ends exact.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::chunks::{assert_exact, export_objects};
use support::*;
use tantivy::schema::Value as _;

const CHUNK: &str = "256";

/// Two repos of files from 0 to ~3 KB (up to a dozen chunks of 256 bytes),
/// indexed; returns every (repo, path).
fn indexed(s: &Sandbox) -> Vec<(String, String)> {
    let mut rng = Rng(0x7e51f1);
    let mut refs = Vec::new();
    let mut manifest = String::new();
    for i in 0..24 {
        let repo = ["A", "B"][i % 2];
        let path = format!("src/f{i}.rs");
        let full = s.root.join(repo).join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        let mut body = String::new();
        let size = [0, 40, 300, 900, 3000][i % 5];
        while body.len() < size {
            body.push_str(&format!(
                "fn f{}() -> u64 {{ {} }}\n",
                body.len(),
                rng.next()
            ));
        }
        std::fs::write(&full, body).unwrap();
        manifest.push_str(&format!(
            r#"{{"op":"add","repo":"{repo}","path":"{path}"}}"#
        ));
        manifest.push('\n');
        refs.push((repo.to_owned(), path));
    }
    std::fs::write(s.dir.join("changes.jsonl"), manifest).unwrap();
    let out = sync(
        &s.dir.join("changes.jsonl"),
        &s.root,
        &s.state,
        &["--chunk-size", CHUNK, "--quiet"],
    );
    expect_code(&out, 0);
    refs
}

fn verify(s: &Sandbox, more: &[&str]) -> (i32, Value) {
    let mut args = vec!["index", "verify", "--root", arg(&s.root), "--json"];
    args.extend_from_slice(more);
    let out = run_state(&args, &s.state);
    let doc: Value = serde_json::from_str(text(&out.stdout).lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("verify --json: {e}: {}", text(&out.stdout)));
    (out.status.code().unwrap_or(-1), doc)
}

fn totals(doc: &Value) -> (u64, u64, u64) {
    let t = &doc["total"];
    let n = |k: &str| t[k].as_u64().unwrap();
    (n("missing"), n("extra"), n("stale"))
}

/// Report → repair → clean, and the index then holds exactly the disk.
fn repaired(s: &Sandbox, refs: &[(String, String)], want: (u64, u64, u64)) {
    let (code, doc) = verify(s, &[]);
    assert_eq!((code, totals(&doc)), (1, want), "{doc}");
    let out = run_state(
        &["index", "verify", "--root", arg(&s.root), "--repair"],
        &s.state,
    );
    let err = expect_code(&out, 0);
    assert!(err.contains("[REPAIR]"), "{err}");
    let (code, doc) = verify(s, &[]);
    assert_eq!((code, totals(&doc)), (0, (0, 0, 0)), "{doc}");
    let objs = export_objects(&["--state-dir", arg(&s.state)]);
    assert_exact(&objs, &s.root, refs, 1 << 20, 256);
}

/// Change the local index behind the tool's back: `edit` gets every stored
/// document and says what to put back (`None`: delete it).
fn tamper(
    state: &Path,
    mut edit: impl FnMut(&str, &tantivy::TantivyDocument) -> Option<tantivy::TantivyDocument>,
) {
    let index = tantivy::Index::open_in_dir(state.join("index")).unwrap();
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
    let name = if k == 0 {
        format!("elysiactl://{repo}/{path}")
    } else {
        format!("elysiactl://{repo}/{path}//{k}")
    };
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

#[test]
fn a_fresh_index_verifies_clean() {
    let s = sandbox();
    let refs = indexed(&s);
    let (code, doc) = verify(&s, &[]);
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
    let gone = chunk_id("A", "src/f2.rs", 0);
    tamper(&s.state, |key, doc| (key != gone).then(|| doc.clone()));
    repaired(&s, &refs, (1, 0, 0));
}

#[test]
fn a_chunk_missing_from_the_middle_of_a_file_is_reported_and_repaired() {
    let s = sandbox();
    let refs = indexed(&s);
    // f4 is ~3000 bytes: a dozen chunks.
    let middle = chunk_id("A", "src/f4.rs", 3);
    tamper(&s.state, |key, doc| (key != middle).then(|| doc.clone()));
    let (_, doc) = verify(&s, &[]);
    let why = doc["repos"]["A"]["first"][0]["why"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("chunk 3 of"), "{why}");
    repaired(&s, &refs, (1, 0, 0));
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
    repaired(&s, &refs, (0, 0, 2));
}

#[test]
fn an_extra_object_for_a_gone_file_and_a_removed_repo_are_removed() {
    let s = sandbox();
    let mut refs = indexed(&s);
    std::fs::remove_file(s.root.join("A/src/f4.rs")).unwrap();
    std::fs::remove_dir_all(s.root.join("B")).unwrap();
    let (code, doc) = verify(&s, &[]);
    assert_eq!(code, 1);
    assert_eq!(doc["repos"]["B"]["gone"], true, "{doc}");
    // 12 files of B are extra, and f4 of A.
    assert_eq!(totals(&doc), (0, 13, 0), "{doc}");
    refs.retain(|(r, _)| r != "B");
    repaired(&s, &refs, (0, 13, 0));
    let objs = export_objects(&["--state-dir", arg(&s.state)]);
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
    let (_, doc) = verify(&s, &[]);
    let stale = totals(&doc).2;
    assert!(
        stale >= 8,
        "files of 2+ chunks at 256 should be stale: {doc}"
    );
    repaired(&s, &refs, (0, 0, stale));
}

#[test]
fn a_deleted_local_index_is_all_missing_and_rebuilt_by_repair() {
    let s = sandbox();
    let refs = indexed(&s);
    std::fs::remove_dir_all(s.state.join("index")).unwrap();
    // The files that have content (the empty ones are one empty chunk each).
    repaired(&s, &refs, (refs.len() as u64, 0, 0));
}

#[test]
fn repair_dry_run_prints_the_lines_and_changes_nothing() {
    let s = sandbox();
    indexed(&s);
    std::fs::remove_file(s.root.join("A/src/f2.rs")).unwrap();
    let before = export_objects(&["--state-dir", arg(&s.state)]);
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
    assert_eq!(export_objects(&["--state-dir", arg(&s.state)]), before);
}

#[test]
fn a_repair_killed_at_random_instants_ends_exact() {
    let s = sandbox();
    let refs = indexed(&s);
    // Lose the whole index: the repair has every file to write.
    let mut more = Vec::new();
    for i in 0..600 {
        let path = format!("bulk/g{i}.rs");
        let full = s.root.join("A").join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, "fn g() {}\n".repeat(30 + i % 50)).unwrap();
        more.push(("A".to_owned(), path));
    }
    std::fs::remove_dir_all(s.state.join("index")).unwrap();
    let mut rng = Rng(0xbadc0de);
    let args = [
        "index",
        "verify",
        "--root",
        arg(&s.root),
        "--repair",
        "--quiet",
        "--state-dir",
        arg(&s.state),
    ];
    let mut kills = 0;
    for _ in 0..40 {
        if kills >= 10 {
            break;
        }
        let wait = Duration::from_millis(20 + rng.below(400));
        let (killed, _) = run_killed_after(&args, false, wait);
        kills += usize::from(killed);
    }
    assert!(kills >= 10, "only {kills} kills landed mid-repair");
    let out = run(&args);
    expect_code(&out, 0);
    let (code, doc) = verify(&s, &[]);
    assert_eq!((code, totals(&doc)), (0, (0, 0, 0)), "{doc}");
    let mut all = refs;
    all.extend(more);
    assert_exact(
        &export_objects(&["--state-dir", arg(&s.state)]),
        &s.root,
        &all,
        1 << 20,
        256,
    );
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
    let out = run_state(
        &["index", "verify", "--root", arg(&s.root), "--repair"],
        &s.state,
    );
    expect_code(&out, 0);
    assert!(status(&s.state)["index_lost"].is_null());
    assert_eq!(status(&s.state)["last_verify"]["equal"], true);
    let err = expect_code(&sync(&empty, &s.root, &s.state, &args), 0);
    assert!(!err.contains("[INDEX_LOST]"), "{err}");
    assert!(std::fs::read_to_string(&metrics)
        .unwrap()
        .contains("elysiactl_index_lost 0"));
    assert_exact(
        &export_objects(&["--state-dir", arg(&s.state)]),
        &s.root,
        &refs,
        1 << 20,
        256,
    );
}
