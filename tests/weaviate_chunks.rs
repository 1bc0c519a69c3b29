//! Chunked objects on Weaviate, end to end: the real binary against the
//! in-process stand-in, every index read back with `index export --content`
//! and checked invariant by invariant by the independent checker of
//! `tests/support/chunks.rs`. A vectorizer that refuses inputs over 8,192
//! tokens (OpenAI's limit), files growing and shrinking across chunk counts
//! under SIGKILLs and faults, a kill in the window between a file's new
//! chunks and the removal of its old ones, and the way from whole-file
//! objects (a change of chunk size, a collection from before chunks).

mod support;

#[allow(unused_imports)]
#[path = "weaviate_support/mod.rs"]
mod wsupport;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::chunks::{assert_exact, chunk_uuid, export_objects, Churn, Obj};
use support::{kill_after, kill_lives, run_state, sha256_hex, text, Rng};
use wsupport::e2e::{run_to_end, sync_into};
use wsupport::standin::{estimate_tokens, Config, Faults, Release, Standin};
use wsupport::Raw;

/// The default `--max-file-size`.
const MAX: u64 = 1 << 20;

/// `index sync --target weaviate` into `collection`, fast backoff, quiet,
/// stderr piped, no key or URL from the environment.
fn sync(
    url: &str,
    collection: &str,
    root: &Path,
    state: &Path,
    manifest: &Path,
    extra: &[&str],
) -> Command {
    let mut c = sync_into(url, collection, "10", root, state, manifest, extra);
    c.arg("--quiet");
    c
}

/// A temp dir and in it the paths `root`, `state` and `manifest`.
fn tmp(state: &str, manifest: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (root, state, manifest) = (p.join("root"), p.join(state), p.join(manifest));
    (dir, root, state, manifest)
}

/// A stand-in of `config` that records nothing, and its URL.
fn standin(config: Config) -> (Standin, String) {
    let si = Standin::start(Config {
        record: false,
        ..config
    })
    .unwrap();
    let url = si.url();
    (si, url)
}

/// One sync to its end: exit code and stderr.
fn sync_to_end(cmd: Command) -> (i32, String) {
    run_to_end(cmd, Duration::from_secs(120))
}

/// Every object of `collection`, with its text.
fn export(url: &str, collection: &str) -> Vec<Obj> {
    export_objects(&[
        "--target",
        "weaviate",
        "--weaviate-url",
        url,
        "--collection",
        collection,
    ])
}

/// Write `files` (repo, path, bytes) under `root` and an `add` line for each
/// into `manifest`.
fn write_tree(root: &Path, manifest: &Path, files: &[(String, String, Vec<u8>)]) {
    let mut m = String::new();
    for (repo, path, bytes) in files {
        let full = root.join(repo).join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, bytes).unwrap();
        m.push_str(&json!({"op": "add", "repo": repo, "path": path}).to_string());
        m.push('\n');
    }
    std::fs::write(manifest, m).unwrap();
}

fn refs_of(files: &[(String, String, Vec<u8>)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(r, p, _)| (r.clone(), p.clone()))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. The vectorizer's limit
// ---------------------------------------------------------------------------

const WORDS: &[&str] = &[
    "parse", "config", "index", "batch", "chunk", "retry", "state", "manifest", "writer", "reader",
    "buffer", "token", "value", "count", "item", "path", "repo", "offset", "len", "schema",
    "client", "reply", "error", "span", "line", "cursor",
];

/// Comments in several scripts: two- to four-byte UTF-8.
const COMMENTS: &[&str] = &[
    "größer als erwartet — Puffer vergrößern",
    "日本語のコメント：境界を確認する",
    "naïve café résumé, déjà vu",
    "🦀 fast path 🚀 for the common case",
    "Ошибка чтения файла: повторить",
    "数据块边界不能在字符中间",
    "ελέγχουμε το μέγεθος του αρχείου",
];

fn ident(rng: &mut Rng) -> String {
    let n = 1 + rng.below(3) as usize;
    let mut parts: Vec<&str> = (0..n)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect();
    parts.dedup();
    let mut s = parts.join("_");
    if rng.below(4) == 0 {
        s.push_str(&rng.below(100).to_string());
    }
    s
}

fn camel(rng: &mut Rng) -> String {
    ident(rng)
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A long line: a string literal of words (a fixture, a generated table),
/// `len` bytes or so.
fn long_line(rng: &mut Rng, len: usize) -> String {
    let mut s = format!("    const {}: &str = \"", ident(rng).to_uppercase());
    while s.len() < len {
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        s.push(if rng.below(9) == 0 { '-' } else { ' ' });
        if rng.below(40) == 0 {
            s.push_str(COMMENTS[rng.below(COMMENTS.len() as u64) as usize]);
        }
    }
    s.push_str("\";\n");
    s
}

/// Rust-like source: functions of statements, doc comments in several
/// scripts, blank lines, now and then a line of kilobytes.
fn rust_like(rng: &mut Rng, out: &mut String, size: usize) {
    while out.len() < size {
        if rng.below(3) == 0 {
            let c = COMMENTS[rng.below(COMMENTS.len() as u64) as usize];
            out.push_str(&format!("/// {c}\n"));
        }
        let (f, a, t) = (ident(rng), ident(rng), camel(rng));
        out.push_str(&format!(
            "pub fn {f}({a}: &mut {t}, limit: usize) -> Result<usize, Error> {{\n"
        ));
        for _ in 0..3 + rng.below(25) {
            let (x, y, z) = (ident(rng), ident(rng), ident(rng));
            let n = rng.below(100_000);
            let line = match rng.below(9) {
                0 => format!("    let {x} = {y}.{z}({a}, {n})?;\n"),
                1 => format!(
                    "    if {x} > {n} {{\n        return Err(Error::{}(\"{}\".into()));\n    }}\n",
                    camel(rng),
                    COMMENTS[rng.below(COMMENTS.len() as u64) as usize]
                ),
                2 => format!("    for {x} in {y}.iter().filter(|v| v.{z} != {n}) {{\n        {a}.push({x});\n    }}\n"),
                3 => format!(
                    "    // {}\n",
                    COMMENTS[rng.below(COMMENTS.len() as u64) as usize]
                ),
                4 => "\n".to_string(),
                5 if rng.below(6) == 0 => {
                    let len = 2_000 + rng.below(30_000) as usize;
                    long_line(rng, len)
                }
                _ => format!("    {x}.{y} += {z}.len() * {n};\n"),
            };
            out.push_str(&line);
        }
        out.push_str("    Ok(limit)\n}\n\n");
    }
}

/// Python-like source.
fn python_like(rng: &mut Rng, out: &mut String, size: usize) {
    while out.len() < size {
        let (c, f) = (camel(rng), ident(rng));
        out.push_str(&format!(
            "class {c}:\n    \"\"\"{}\"\"\"\n\n",
            COMMENTS[rng.below(7) as usize]
        ));
        for _ in 0..1 + rng.below(5) {
            out.push_str(&format!(
                "    def {f}(self, {}, {}=None):\n",
                ident(rng),
                ident(rng)
            ));
            for _ in 0..2 + rng.below(12) {
                let (x, y) = (ident(rng), ident(rng));
                out.push_str(&format!(
                    "        {x} = self.{y}.get({:?}, {})\n",
                    ident(rng),
                    rng.below(999)
                ));
            }
            out.push_str("        return None\n\n");
        }
    }
}

/// Minified script: one line, hardly a space.
fn minified(rng: &mut Rng, out: &mut String, size: usize) {
    while out.len() < size {
        let (a, b, c) = (ident(rng), ident(rng), ident(rng));
        out.push_str(&format!(
            "var {a}=function({b}){{return {b}.{c}+{}}};",
            rng.below(1000)
        ));
        if rng.below(50) == 0 {
            out.push_str(&format!("/*{}*/", COMMENTS[rng.below(7) as usize]));
        }
    }
}

/// Prose in several scripts, paragraphs under headings.
fn markdown(rng: &mut Rng, out: &mut String, size: usize) {
    while out.len() < size {
        out.push_str(&format!("## {}\n\n", camel(rng)));
        for _ in 0..1 + rng.below(6) {
            for _ in 0..3 + rng.below(12) {
                out.push_str(COMMENTS[rng.below(7) as usize]);
                out.push(' ');
            }
            out.push_str("\n\n");
        }
    }
}

/// A code-like file of exactly `size` bytes (cut at a character boundary,
/// padded with newlines).
fn code_file(rng: &mut Rng, kind: &str, size: usize) -> Vec<u8> {
    let mut s = String::with_capacity(size + 40_000);
    match kind {
        "py" => python_like(rng, &mut s, size),
        "js" => minified(rng, &mut s, size),
        "md" => markdown(rng, &mut s, size),
        _ => rust_like(rng, &mut s, size),
    }
    let mut cut = size.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    let mut b = s.into_bytes();
    b.resize(size, b'\n');
    b
}

/// The tree of the vectorizer tests: many sizes, from empty to 1 MiB and
/// one byte over (not eligible), code, Python, minified script, prose.
fn vectorizer_tree(rng: &mut Rng) -> Vec<(String, String, Vec<u8>)> {
    const FILES: &[(&str, usize)] = &[
        ("rs", 0),
        ("rs", 1),
        ("rs", 300),
        ("py", 2_000),
        ("rs", 4_095),
        ("rs", 4_096),
        ("rs", 4_097),
        ("md", 9_000),
        ("py", 15_000),
        ("rs", 20_000),
        ("rs", 33_000),
        ("js", 40_000),
        ("py", 70_000),
        ("md", 120_000),
        ("rs", 150_000),
        ("rs", 210_000),
        ("js", 300_000),
        ("py", 450_000),
        ("rs", 700_000),
        ("rs", 1 << 20),
        ("rs", (1 << 20) + 1),
    ];
    FILES
        .iter()
        .enumerate()
        .map(|(i, &(kind, size))| {
            let repo = ["core", "web"][i % 2].to_string();
            let path = format!("src/m{}/f{i}_{size}.{kind}", i % 3);
            (repo, path, code_file(rng, kind, size))
        })
        .collect()
}

/// Eligible files whose whole text is over the vectorizer's limit.
fn over_limit(
    files: &[(String, String, Vec<u8>)],
    max_tokens: usize,
) -> BTreeSet<(String, String)> {
    files
        .iter()
        .filter(|(_, _, b)| b.len() as u64 <= MAX)
        .filter(|(_, _, b)| estimate_tokens(&String::from_utf8_lossy(b)) > max_tokens)
        .map(|(r, p, _)| (r.clone(), p.clone()))
        .collect()
}

/// `index failures --json` of a state dir, one JSON object per failed line.
fn failures(state: &Path) -> Vec<Value> {
    let out = run_state(&["index", "failures", "--json"], state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a failure is JSON"))
        .collect()
}

/// At the default chunk size every chunk of a tree of files up to 1 MiB
/// (long lines, multibyte text, minified script) fits an 8,192-token
/// embedding model: nothing fails, and the index holds exactly the chunks.
#[test]
fn default_chunk_size_keeps_every_chunk_of_files_up_to_1_mib_under_an_8192_token_vectorizer() {
    let (_dir, root, state, manifest) = tmp("state", "changes.jsonl");
    let files = vectorizer_tree(&mut Rng(0x07e5_7012));
    write_tree(&root, &manifest, &files);
    let refs = refs_of(&files);
    // The whole files would not fit: the chunking is what makes them pass.
    let big = over_limit(&files, 8192);
    assert!(big.len() >= 6, "too few files over the limit: {big:?}");

    let (si, url) = standin(Config {
        vectorizer_max_tokens: 8192,
        ..Config::default()
    });
    let (code, err) = sync_to_end(sync(
        &url,
        "Chunked",
        &root,
        &state,
        &manifest,
        &["--vectorizer", "text2vec-openai"],
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        si.class("Chunked").unwrap()["vectorizer"],
        "text2vec-openai",
        "the limit applies only to a class with a vectorizer"
    );
    assert!(failures(&state).is_empty(), "{:?}", failures(&state));
    let st = support::status(&state);
    assert_eq!(st["status"], "complete", "{st}");
    assert_eq!(st["failures"], json!([]), "{st}");

    let objs = export(&url, "Chunked");
    let chunks = assert_exact(&objs, &root, &refs, MAX, 4096);
    // A 1 MiB file alone is 256 chunks or more.
    assert!(chunks > 600, "only {chunks} chunks");
    for o in &objs {
        let tokens = estimate_tokens(o.content.as_deref().unwrap_or_default());
        assert!(
            tokens <= 8192,
            "{}/{} chunk {}: {tokens} tokens",
            o.repo,
            o.path,
            o.chunk
        );
    }
}

/// At `--chunk-size 0` the files over the model's limit fail, permanently:
/// each is sent once (never retried within the run), listed with the
/// model's message and a hint naming `--chunk-size`, and the run exits 1;
/// every other file is in the index whole.
#[test]
fn whole_file_objects_over_the_token_limit_fail_permanently_with_a_chunk_size_hint() {
    let (_dir, root, state, manifest) = tmp("state0", "changes.jsonl");
    let files = vectorizer_tree(&mut Rng(0x07e5_7012));
    write_tree(&root, &manifest, &files);
    let big = over_limit(&files, 8192);
    assert!(big.len() >= 6, "too few files over the limit: {big:?}");
    for (r, p, b) in &files {
        if b.len() >= 200_000 && b.len() as u64 <= MAX {
            assert!(
                big.contains(&(r.clone(), p.clone())),
                "{r}/{p} should be over the limit"
            );
        }
    }

    let (si, url) = standin(Config {
        log_batches: true,
        vectorizer_max_tokens: 8192,
        ..Config::default()
    });
    let mark = si.mark();
    let (code, err) = sync_to_end(sync(
        &url,
        "Whole",
        &root,
        &state,
        &manifest,
        &[
            "--vectorizer",
            "text2vec-openai",
            "--chunk-size",
            "0",
            "--max-retries",
            "3",
        ],
    ));
    assert_eq!(code, 1, "{err}");

    let failed = failures(&state);
    let failed_files: BTreeSet<(String, String)> = failed
        .iter()
        .map(|f| {
            (
                f["repo"].as_str().unwrap().to_owned(),
                f["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        failed_files, big,
        "the failed files are exactly those over the limit"
    );
    for f in &failed {
        let reason = f["reason"].as_str().unwrap();
        assert!(
            reason.contains("maximum context length is 8192 tokens"),
            "{f}"
        );
        assert!(reason.contains("--chunk-size"), "no hint in {f}");
        assert_eq!(f["kind"], "index_error", "{f}");
        assert_eq!(f["attempts"], 1, "{f}");
    }
    // Permanent: each was sent once in the run, whatever --max-retries.
    let batches = si.batches_since(mark);
    for (r, p) in &big {
        let id = chunk_uuid(r, p, 0);
        let sent = batches
            .iter()
            .filter(|b| b.method == "POST" && b.ids.contains(&id))
            .count();
        assert_eq!(sent, 1, "{r}/{p} was sent {sent} times");
    }

    // Every other eligible file is there, one object each.
    let rest: Vec<(String, String)> = refs_of(&files)
        .into_iter()
        .filter(|f| !big.contains(f))
        .collect();
    let objs = export(&url, "Whole");
    assert_exact(&objs, &root, &rest, MAX, 0);
}

// ---------------------------------------------------------------------------
// 2. Growing and shrinking under SIGKILLs
// ---------------------------------------------------------------------------

/// Files that grow and shrink across chunk counts between SIGKILLs of the
/// real binary (from none to two dozen chunks of 128 bytes and back, some
/// vanishing and returning), with four batches in flight to a server that
/// is slow, answers out of order and sometimes 503: after a last run of
/// every line, every file has exactly its current chunks.
#[test]
fn weaviate_resume_after_kills_with_files_growing_and_shrinking_across_chunks_ends_exact() {
    const C: &str = "Grow";
    let (dir, root, state, manifest_path) = tmp("state", "changes.jsonl");
    let mut churn = Churn::new(&root, 200, 0x9a0e_5a11);
    churn.write_manifest(&manifest_path, 4);

    let (si, url) = standin(Config {
        seed: 0x6a0e,
        ..Config::default()
    });
    si.set_faults(Faults {
        latency_ms: 1,
        jitter_ms: 8,
        p503: 0.1,
        ..Faults::default()
    });
    let extra = [
        "--batch-size",
        "13",
        "--chunk-size",
        "128",
        "--concurrency",
        "4",
        "--max-retries",
        "8",
    ];
    let cmd = |extra_more: &[&str]| {
        let mut all = extra.to_vec();
        all.extend_from_slice(extra_more);
        sync(&url, C, &root, &state, &manifest_path, &all)
    };

    // One uninterrupted run into another collection, to spread the kills.
    let t = Instant::now();
    let probe = sync_to_end(sync(
        &url,
        "Probe",
        &root,
        &dir.path().join("probe"),
        &manifest_path,
        &extra,
    ));
    assert_eq!(probe.0, 0, "{}", probe.1);
    let budget = (t.elapsed().as_millis() as u64 / 6).max(30);

    let kills = kill_lives(60, 12, |from_top| {
        // Between lives the files change: grow, shrink, vanish, return.
        churn.change(30);
        let from: &[&str] = if from_top { &["--from-line", "1"] } else { &[] };
        let mut c = cmd(from);
        c.stderr(Stdio::null());
        let wait = Duration::from_millis(5 + churn.rng.below(budget));
        kill_after(c.spawn().unwrap(), wait)
    });
    assert!(kills >= 8, "only {kills} kills landed mid-run");

    // Every line again against the disk as it is now.
    let (code, err) = sync_to_end(cmd(&["--from-line", "1"]));
    assert_eq!(code, 0, "{err}");
    let objs = export(&url, C);
    let refs = &churn.refs;
    let chunks = assert_exact(&objs, &root, refs, MAX, 128);
    assert!(
        chunks > refs.len() * 2,
        "the files should span many chunks: {chunks} for {} files",
        refs.len()
    );
    let injected = si.stats().injected.get("503").copied().unwrap_or(0);
    assert!(injected > 0, "no 503 was injected");
    eprintln!("{kills} kills, {injected} 503s, {chunks} chunks at the end");
}

// ---------------------------------------------------------------------------
// 3. The window between new chunks and the removal of old ones
// ---------------------------------------------------------------------------

/// `n` paragraphs of Rust of about 100 bytes each, each its own chunk at
/// `--chunk-size 128`, told apart by `tag`.
fn paragraphs(n: usize, tag: &str) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!("fn {tag}_{i:02}() -> u64 {{\n    let v = {i} * 7;\n    v + {i} // {tag} ünïcödé\n}}\n\n")
        })
        .collect::<String>()
        .into_bytes()
}

/// A file shrinks from 10 chunks to 2. The sync writes the new chunks, then
/// the stand-in holds its delete of the surplus: in that window chunks 0
/// and 1 already have the new content (the file is never absent from
/// search) and chunks 2..9 are still there. A SIGKILL there, a delete that
/// never happens, and the next run removes the surplus: the index is exact.
#[test]
fn a_kill_between_writing_new_chunks_and_deleting_old_ones_leaves_no_surplus_after_the_next_run() {
    const C: &str = "Window";
    let (_dir, root, state, manifest) = tmp("state", "changes.jsonl");
    let (repo, path) = ("R".to_string(), "src/shrinks.rs".to_string());
    let files = vec![(repo.clone(), path.clone(), paragraphs(10, "old"))];
    write_tree(&root, &manifest, &files);
    let refs = refs_of(&files);
    let (si, url) = standin(Config {
        log_batches: true,
        ..Config::default()
    });
    let extra = ["--chunk-size", "128"];

    let (code, err) = sync_to_end(sync(&url, C, &root, &state, &manifest, &extra));
    assert_eq!(code, 0, "{err}");
    assert_eq!(assert_exact(&export(&url, C), &root, &refs, MAX, 128), 10);

    // Shrink to two chunks; hold every batch delete; sync again.
    let new = paragraphs(2, "new");
    std::fs::write(root.join(&repo).join(&path), &new).unwrap();
    si.hold_deletes();
    let mark = si.mark();
    let mut child = sync(&url, C, &root, &state, &manifest, &extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while si.held_deletes() == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync ended without sending a batch delete"
        );
        assert!(Instant::now() < deadline, "no batch delete arrived");
        std::thread::sleep(Duration::from_millis(2));
    }

    // The window is real: the new chunks' write was answered before the
    // delete came, and the surplus is still stored.
    let log = si.batches_since(mark);
    let file_id = chunk_uuid(&repo, &path, 0);
    let post = log
        .iter()
        .find(|b| b.method == "POST" && b.ids.contains(&file_id))
        .expect("the new chunks were written");
    let delete = log
        .iter()
        .find(|b| b.method == "DELETE")
        .expect("the held delete is in the log");
    assert!(delete.ids.contains(&file_id), "{delete:?}");
    let answered = post.answered_us.expect("the write was answered");
    assert!(
        post.seq < delete.seq && answered <= delete.received_us,
        "the delete came before the write was answered: {post:?} {delete:?}"
    );
    for k in 2..10 {
        assert!(
            si.object(C, chunk_uuid(&repo, &path, k)).is_some(),
            "surplus chunk {k} is already gone: the window was not held"
        );
    }
    // Meanwhile the file is searchable, at its new content.
    let mut joined = Vec::new();
    for k in 0..2 {
        let o = si
            .object(C, chunk_uuid(&repo, &path, k))
            .unwrap_or_else(|| panic!("chunk {k} is absent"));
        assert_eq!(o["chunkCount"], 2, "chunk {k}: {o:?}");
        assert_eq!(o["contentSha256"], sha256_hex(&new).as_str(), "chunk {k}");
        assert_eq!(o["byteStart"], joined.len(), "chunk {k}");
        joined.extend_from_slice(o["content"].as_str().unwrap().as_bytes());
    }
    assert_eq!(joined, new, "chunks 0 and 1 hold the new file");

    child.kill().unwrap(); // SIGKILL, the delete unanswered
    let _ = child.wait();
    // The held delete is dropped unapplied, as if lost with its client.
    si.release_deletes(Release::Drop);
    while si.held_deletes() > 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        si.object(C, chunk_uuid(&repo, &path, 9)).is_some(),
        "the dropped delete must not have applied"
    );

    let (code, err) = sync_to_end(sync(&url, C, &root, &state, &manifest, &extra));
    assert_eq!(code, 0, "{err}");
    assert_eq!(assert_exact(&export(&url, C), &root, &refs, MAX, 128), 2);
    for k in 2..10 {
        assert!(
            si.object(C, chunk_uuid(&repo, &path, k)).is_none(),
            "surplus chunk {k} survived the next run"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. From whole-file objects to chunks
// ---------------------------------------------------------------------------

/// Files from a few bytes to many chunks at 4096.
fn upgrade_tree(rng: &mut Rng) -> Vec<(String, String, Vec<u8>)> {
    [0usize, 100, 4_096, 5_000, 13_000, 40_000, 90_000]
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let kind = ["rs", "py", "md"][i % 3];
            (
                ["app", "lib"][i % 2].to_string(),
                format!("src/u{i}.{kind}"),
                code_file(rng, kind, size),
            )
        })
        .collect()
}

/// A collection of whole-file objects (`--chunk-size 0`) is not mixed with
/// chunks: a run at the default size is refused (exit 2, both sizes and
/// `--rechunk` named) and changes nothing; `--rechunk` re-writes every file
/// the index holds at 4096, and drops one gone from the disk, with no
/// manifest lines of its own.
#[test]
fn a_whole_file_weaviate_index_refuses_another_chunk_size_until_rechunk_makes_it_exact() {
    const C: &str = "Upgrade";
    let (dir, root, state, manifest) = tmp("state", "changes.jsonl");
    let files = upgrade_tree(&mut Rng(0x0b5e_1e7e));
    write_tree(&root, &manifest, &files);
    let refs = refs_of(&files);
    let (_si, url) = standin(Config::default());

    let (code, err) = sync_to_end(sync(
        &url,
        C,
        &root,
        &state,
        &manifest,
        &["--chunk-size", "0"],
    ));
    assert_eq!(code, 0, "{err}");
    let whole = export(&url, C);
    assert_eq!(assert_exact(&whole, &root, &refs, MAX, 0), files.len());

    let (code, err) = sync_to_end(sync(&url, C, &root, &state, &manifest, &[]));
    assert_eq!(code, 2, "{err}");
    for needle in ["--chunk-size 0", "--chunk-size 4096", "--rechunk"] {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
    assert_eq!(export(&url, C), whole, "a refused run changed the index");

    // One file leaves the disk; the re-chunk runs with an empty manifest,
    // so its own list of the indexed files is all that re-writes them.
    let (gone_repo, gone_path, _) = &files[3];
    std::fs::remove_file(root.join(gone_repo).join(gone_path)).unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let (code, err) = sync_to_end(sync(&url, C, &root, &state, &empty, &["--rechunk"]));
    assert_eq!(code, 0, "{err}");
    let objs = export(&url, C);
    let chunks = assert_exact(&objs, &root, &refs, MAX, 4096);
    assert!(
        chunks > files.len() + 20,
        "only {chunks} chunks after the re-chunk"
    );
    assert!(
        !objs.iter().any(|o| &o.path == gone_path),
        "the gone file is still there"
    );

    // From now on the default size is this index's own.
    let (code, err) = sync_to_end(sync(&url, C, &root, &state, &manifest, &[]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(export(&url, C), objs);
}

/// A collection from before chunked objects — declared without the int
/// properties, one whole-file object per file under the file's id — is
/// re-chunked from a fresh state dir: the class gains the int properties
/// and the index ends exact at 4096 (stale content re-read from the disk,
/// a file gone from the disk dropped).
#[test]
fn a_legacy_collection_without_chunk_properties_gains_them_and_rechunks_exact() {
    const C: &str = "Legacy";
    let (_dir, root, state, manifest) = tmp("state", "empty.jsonl");
    let mut files = upgrade_tree(&mut Rng(0x001e_6ac7));
    write_tree(&root, &manifest, &files);
    std::fs::write(&manifest, "").unwrap();
    let (si, url) = standin(Config::default());
    let raw = Raw::new(&url, Default::default());

    let text_prop =
        |name: &str| json!({"name": name, "dataType": ["text"], "tokenization": "field"});
    let class = json!({
        "class": C,
        "vectorizer": "none",
        "properties": [
            text_prop("repo"),
            text_prop("path"),
            {"name": "content", "dataType": ["text"]},
            text_prop("contentSha256"),
            {"name": "size", "dataType": ["int"]},
        ],
    });
    let (status, reply) = raw.status(
        reqwest::Method::POST,
        "/v1/schema",
        Some(&class.to_string()),
    );
    assert_eq!(status, 200, "{reply}");

    // What the old version stored: every file whole. One is stale (the disk
    // changed since), one is gone from the disk.
    let stale = 2;
    files.push((
        "app".into(),
        "src/vanished.rs".into(),
        b"fn gone() {}\n".to_vec(),
    ));
    let objects: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(i, (repo, path, bytes))| {
            let bytes: Vec<u8> = if i == stale {
                b"old text\n".to_vec()
            } else {
                bytes.clone()
            };
            json!({
                "class": C,
                "id": chunk_uuid(repo, path, 0).to_string(),
                "properties": {
                    "repo": repo,
                    "path": path,
                    "content": String::from_utf8_lossy(&bytes),
                    "contentSha256": sha256_hex(&bytes),
                    "size": bytes.len(),
                },
            })
        })
        .collect();
    let (status, reply) = raw.status(
        reqwest::Method::POST,
        "/v1/batch/objects",
        Some(&json!({ "objects": objects }).to_string()),
    );
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"]["status"] == "SUCCESS"),
        "{reply}"
    );

    let (code, err) = sync_to_end(sync(&url, C, &root, &state, &manifest, &["--rechunk"]));
    assert_eq!(code, 0, "{err}");

    let declared: BTreeMap<String, String> = si.class(C).unwrap()["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["dataType"][0].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for name in [
        "chunk",
        "chunkCount",
        "byteStart",
        "byteEnd",
        "startLine",
        "endLine",
        "size",
    ] {
        assert_eq!(
            declared.get(name).map(String::as_str),
            Some("int"),
            "{name}: {declared:?}"
        );
    }
    let objs = export(&url, C);
    let chunks = assert_exact(&objs, &root, &refs_of(&files), MAX, 4096);
    assert!(
        chunks > files.len() + 20,
        "only {chunks} chunks after the re-chunk"
    );
}
