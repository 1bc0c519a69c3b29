//! Chunked objects on the local index, from outside: exact replacement as
//! files grow and shrink, the chunk size bound to the state dir, `--rechunk`
//! (killed and resumed), the upgrade of an index of whole-file objects, and
//! what `search` and `index export` show. Every end state is checked by the
//! independent checker of `support::chunks`.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::chunks::{assert_exact, export_objects, Obj};
use support::*;

/// A tree of `files` files in repo `R` whose sizes vary with `seed` (lines of
/// code, some long), and an `update` manifest naming each once.
fn tree(s: &Sandbox, files: usize, seed: u64) -> Vec<(String, String)> {
    let mut rng = Rng(seed | 1);
    let refs: Vec<(String, String)> = (0..files)
        .map(|i| ("R".to_owned(), format!("src/f{i}.rs")))
        .collect();
    for (repo, path) in &refs {
        write_code(
            &s.root.join(repo).join(path),
            rng.below(6000) as usize,
            &mut rng,
        );
    }
    write_manifest(&s.dir.join("changes.jsonl"), &refs);
    refs
}

/// A sandbox with a [`tree`] of `files` files synced at `chunk`.
fn indexed(
    files: usize,
    seed: u64,
    chunk: &str,
    more: &[&str],
) -> (Sandbox, Vec<(String, String)>) {
    let s = sandbox();
    let refs = tree(&s, files, seed);
    expect_code(&sync_at(&s, chunk, more), 0);
    (s, refs)
}

/// A manifest with no lines: only a re-chunk does anything.
fn empty_manifest(s: &Sandbox) -> std::path::PathBuf {
    let empty = s.dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    empty
}

/// A sync of the manifest `empty` with `extra`, expecting `code`; its stderr.
fn sync_empty(s: &Sandbox, empty: &Path, extra: &[&str], code: i32) -> String {
    expect_code(&sync(empty, &s.root, &s.state, extra), code)
}

fn write_code(path: &Path, size: usize, rng: &mut Rng) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = String::new();
    let mut n = 0;
    while out.len() < size {
        n += 1;
        match rng.below(5) {
            0 => out.push_str(&format!("\nfn f{n}() -> u64 {{\n    {}\n}}\n", rng.next())),
            1 => out.push_str(&format!("// caf\u{e9} \u{1f980} {n}\n")),
            2 => out.push_str(&"x".repeat(150 + rng.below(200) as usize)),
            _ => out.push_str(&format!("    let v{n} = {};\n", rng.next())),
        }
    }
    std::fs::write(path, out).unwrap();
}

fn write_manifest(path: &Path, refs: &[(String, String)]) {
    let mut m = String::new();
    for (repo, p) in refs {
        m.push_str(&format!(
            r#"{{"op":"update","repo":"{repo}","path":"{p}"}}"#
        ));
        m.push('\n');
    }
    std::fs::write(path, m).unwrap();
}

fn sync_at(s: &Sandbox, chunk: &str, more: &[&str]) -> std::process::Output {
    let mut extra = vec!["--chunk-size", chunk, "--quiet"];
    extra.extend_from_slice(more);
    sync(&s.dir.join("changes.jsonl"), &s.root, &s.state, &extra)
}

fn objects(s: &Sandbox) -> Vec<Obj> {
    export_objects(&["--state-dir", arg(&s.state)])
}

#[test]
fn a_file_that_shrinks_keeps_none_of_its_old_chunks_and_one_that_grows_gains_them() {
    let s = sandbox();
    let refs = vec![
        ("R".to_owned(), "big.rs".to_owned()),
        ("R".to_owned(), "small.rs".to_owned()),
    ];
    let mut rng = Rng(7);
    write_code(&s.root.join("R/big.rs"), 3000, &mut rng);
    write_code(&s.root.join("R/small.rs"), 100, &mut rng);
    write_manifest(&s.dir.join("changes.jsonl"), &refs);
    expect_code(&sync_at(&s, "256", &[]), 0);
    let before = objects(&s);
    let big_before = before.iter().filter(|o| o.path == "big.rs").count();
    assert!(big_before >= 10, "big.rs has {big_before} chunks");
    assert_exact(&before, &s.root, &refs, 1 << 20, 256);

    write_code(&s.root.join("R/big.rs"), 300, &mut rng);
    write_code(&s.root.join("R/small.rs"), 2500, &mut rng);
    expect_code(&sync_at(&s, "256", &[]), 0);
    let after = objects(&s);
    assert_exact(&after, &s.root, &refs, 1 << 20, 256);
    let count = |p: &str| after.iter().filter(|o| o.path == p).count();
    assert!(
        count("big.rs") * 3 <= big_before,
        "big.rs went from {big_before} to {} chunks",
        count("big.rs")
    );
    assert!(
        count("small.rs") >= 10,
        "small.rs has {}",
        count("small.rs")
    );

    // Deleted: every chunk goes.
    std::fs::remove_file(s.root.join("R/small.rs")).unwrap();
    expect_code(&sync_at(&s, "256", &[]), 0);
    let gone = objects(&s);
    assert!(gone.iter().all(|o| o.path != "small.rs"), "{gone:?}");
    assert_exact(&gone, &s.root, &refs, 1 << 20, 256);
}

#[test]
fn a_run_at_another_chunk_size_is_refused_naming_both_sizes_and_the_way_forward() {
    let (s, refs) = indexed(20, 3, "512", &[]);
    let before = objects(&s);
    let err = expect_code(&sync_at(&s, "1024", &[]), 2);
    assert_contains_all(
        &err,
        &["--chunk-size 512", "--chunk-size 1024", "--rechunk"],
    );
    // Nothing changed.
    assert_eq!(objects(&s), before);
    assert_exact(&before, &s.root, &refs, 1 << 20, 512);
}

#[test]
fn rechunk_rewrites_every_indexed_file_at_the_new_size_and_ends_exact() {
    let (s, refs) = indexed(40, 11, "0", &[]);
    assert_exact(&objects(&s), &s.root, &refs, 1 << 20, 0);
    // A file changes and one vanishes meanwhile: the re-chunk reads the disk.
    let mut rng = Rng(5);
    write_code(&s.root.join("R/src/f1.rs"), 5000, &mut rng);
    std::fs::remove_file(s.root.join("R/src/f2.rs")).unwrap();
    let empty = empty_manifest(&s);
    let err = sync_empty(&s, &empty, &["--chunk-size", "300", "--rechunk"], 0);
    assert!(err.contains("[RECHUNK]"), "{err}");
    let objs = objects(&s);
    let n = assert_exact(&objs, &s.root, &refs, 1 << 20, 300);
    assert!(n > refs.len() * 3, "{n} chunks");
    // The new size is the state dir's now.
    expect_code(
        &sync(&empty, &s.root, &s.state, &["--chunk-size", "300"]),
        0,
    );
    let err = expect_code(&sync(&empty, &s.root, &s.state, &["--chunk-size", "0"]), 2);
    assert!(err.contains("--chunk-size 300"), "{err}");
}

#[test]
fn a_rechunk_killed_midway_is_finished_by_the_next_run() {
    let (s, refs) = indexed(1500, 23, "0", &["--batch-size", "20"]);
    let empty = empty_manifest(&s);
    let rechunk = [
        "index",
        "sync",
        "--input",
        arg(&empty),
        "--root",
        arg(&s.root),
        "--state-dir",
        arg(&s.state),
        "--chunk-size",
        "200",
        "--rechunk",
        "--batch-size",
        "20",
        "--quiet",
    ];
    // Kill once the re-chunk is registered (its manifest pending in the
    // WAL) and under way.
    let mut child = cmd(&rechunk)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut killed = 0;
    while child.try_wait().unwrap().is_none() {
        let st = status(&s.state);
        let first = st["pending_manifests"].as_array().and_then(|p| p.first());
        if first.and_then(|m| m["processed"].as_u64()).unwrap_or(0) > 0 {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait().unwrap();
    assert_eq!(killed, 1, "no re-chunk was still running when killed");
    // Without --rechunk: the recorded size is the new one, and the pending
    // re-chunk manifest is finished first.
    let err = sync_empty(&s, &empty, &["--chunk-size", "200", "--quiet"], 0);
    assert!(err.contains("[RESUME]"), "{err}");
    assert_exact(&objects(&s), &s.root, &refs, 1 << 20, 200);
}

/// A local index as builds before chunked objects wrote it: whole-file
/// documents with the old schema (no chunk fields), and no WAL.
fn legacy_index(state: &Path, docs: &[(&str, &str, &[u8])]) {
    use tantivy::schema::{
        IndexRecordOption, TextFieldIndexing, TextOptions, INDEXED, STORED, STRING,
    };
    let dir = state.join("index");
    std::fs::create_dir_all(&dir).unwrap();
    let mut b = tantivy::schema::Schema::builder();
    let words = TextFieldIndexing::default()
        .set_tokenizer("default")
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let id = b.add_text_field("id", STRING | STORED);
    let repo = b.add_text_field("repo", STRING | STORED);
    let path = b.add_text_field("path", STRING | STORED);
    let path_text = b.add_text_field(
        "path_text",
        TextOptions::default().set_indexing_options(words.clone()),
    );
    let content = b.add_text_field(
        "content",
        TextOptions::default()
            .set_indexing_options(words)
            .set_stored(),
    );
    let sha = b.add_text_field("contentSha256", STRING | STORED);
    let size = b.add_u64_field("size", INDEXED | STORED);
    let index = tantivy::Index::create_in_dir(&dir, b.build()).unwrap();
    let mut w: tantivy::IndexWriter = index.writer_with_num_threads(1, 20 << 20).unwrap();
    for (r, p, bytes) in docs {
        let mut d = tantivy::TantivyDocument::default();
        d.add_text(id, elysiactl::target::object_id(r, p).to_string());
        d.add_text(repo, r);
        d.add_text(path, p);
        d.add_text(path_text, p);
        d.add_text(content, String::from_utf8_lossy(bytes));
        d.add_text(sha, sha256_hex(bytes));
        d.add_u64(size, bytes.len() as u64);
        w.add_document(d).unwrap();
    }
    w.commit().unwrap();
}

#[test]
fn an_index_of_whole_file_objects_is_upgraded_by_rechunk_and_ends_exact() {
    let s = sandbox();
    let refs = tree(&s, 30, 31);
    let mut rng = Rng(9);
    // What the old index held: every file as it was, and a file since gone.
    let held: Vec<(String, Vec<u8>)> = refs
        .iter()
        .map(|(_, p)| (p.clone(), std::fs::read(s.root.join("R").join(p)).unwrap()))
        .chain([("src/gone.rs".to_owned(), b"fn gone() {}\n".to_vec())])
        .collect();
    let docs: Vec<(&str, &str, &[u8])> = held
        .iter()
        .map(|(p, b)| ("R", p.as_str(), b.as_slice()))
        .collect();
    legacy_index(&s.state, &docs);
    // One file changed since.
    write_code(&s.root.join("R/src/f3.rs"), 4000, &mut rng);
    let mut all = refs.clone();
    all.push(("R".to_owned(), "src/gone.rs".to_owned()));

    // At the default size the old index is refused with the way out, and
    // left as it was.
    let err = expect_code(&sync_at(&s, "4096", &[]), 3);
    assert_contains_all(&err, &["whole-file objects", "--rechunk", "--chunk-size 0"]);
    assert_eq!(objects(&s).len(), held.len());

    let empty = s.dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = sync(
        &empty,
        &s.root,
        &s.state,
        &["--rechunk", "--chunk-size", "1024"],
    );
    expect_code(&out, 0);
    let objs = objects(&s);
    let n = assert_exact(&objs, &s.root, &all, 1 << 20, 1024);
    assert!(n > refs.len(), "{n} chunks for {} files", refs.len());
    assert!(objs.iter().all(|o| o.path != "src/gone.rs"));
}

#[test]
fn search_points_at_the_lines_of_the_chunk_that_matched() {
    let s = sandbox();
    let mut body = String::new();
    for i in 0..200 {
        body.push_str(&format!("fn filler_{i}() {{}}\n"));
    }
    body.push_str("fn needle_here() {}\n");
    std::fs::create_dir_all(s.root.join("R")).unwrap();
    std::fs::write(s.root.join("R/hay.rs"), &body).unwrap();
    write_manifest(
        &s.dir.join("changes.jsonl"),
        &[("R".to_owned(), "hay.rs".to_owned())],
    );
    expect_code(&sync_at(&s, "512", &[]), 0);
    let out = run_state(&["search", "needle_here"], &s.state);
    let stdout = text(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    let (_, range) = first
        .split_once("R/hay.rs:")
        .unwrap_or_else(|| panic!("no repo/path:lines in {stdout:?}"));
    let range = range.split_whitespace().next().unwrap();
    let (a, b) = range.split_once('-').unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(a <= 201 && 201 <= b, "line 201 not in {a}-{b}");
    assert!(a > 1, "the match should be in a later chunk, got {a}-{b}");
    let json = run_state(&["search", "needle_here", "--json"], &s.state);
    let hit: serde_json::Value =
        serde_json::from_str(text(&json.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(
        (hit["startLine"].as_u64(), hit["endLine"].as_u64()),
        (Some(a), Some(b))
    );
    assert!(hit["chunk"].as_u64().unwrap() > 0);
}

#[test]
fn the_checker_rejects_a_surplus_chunk_a_gap_and_wrong_content() {
    let (s, refs) = indexed(3, 41, "256", &[]);
    let good = objects(&s);
    assert_exact(&good, &s.root, &refs, 1 << 20, 256);
    let multi = good
        .iter()
        .position(|o| o.chunk_count > 2)
        .expect("a file of 3+ chunks");
    let check = |objs: Vec<Obj>| {
        let (root, refs) = (s.root.clone(), refs.clone());
        std::panic::catch_unwind(move || assert_exact(&objs, &root, &refs, 1 << 20, 256)).is_err()
    };
    let mut surplus = good.clone();
    let mut extra = good[multi].clone();
    extra.chunk = extra.chunk_count;
    extra.id = format!("{}-surplus", extra.id);
    surplus.push(extra);
    assert!(check(surplus), "a surplus chunk passed");
    let mut gap = good.clone();
    gap[multi].byte_end -= 1;
    assert!(check(gap), "a gap passed");
    let mut content = good.clone();
    content[multi].content.as_mut().unwrap().push('!');
    assert!(check(content), "wrong content passed");
}
