//! `search` on the local index with the code tokenizer: a small corpus of
//! identifiers in every spelling (camelCase, PascalCase, acronyms,
//! snake_case, SCREAMING_CASE, kebab-case, digits) synced at chunks of 256
//! bytes; golden answers (the files in order, their line ranges, the text
//! form); and an index built with the tokenizer from before, which a sync
//! rebuilds from the disk while search goes on answering from it.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use elysiactl::object::{ChunkSize, Document};
use elysiactl::target::local::{self, LocalIndex};
use elysiactl::target::{Op, Target};
use support::{
    brief, expect_code, kill_lives, run_killed_after, run_state, sync, sync_args, text,
    write_corpus,
};

/// (repo, path, content).
fn corpus() -> Vec<(&'static str, &'static str, String)> {
    let mut big = String::new();
    for i in 1..=30 {
        big.push_str(&format!("let pad_{i} = {i};\n"));
        if i == 3 || i == 27 {
            big.push_str("let who = user.name;\n");
        }
    }
    vec![
        (
            "App",
            "src/userStore.ts",
            "// the store of users\n\
             export class UserStore {\n\
             \x20 getUserName(id: number): string {\n\
             \x20   return this.names[id];\n\
             \x20 }\n\
             }\n"
            .to_owned(),
        ),
        (
            "App",
            "src/retry.py",
            "MAX_RETRIES = 3\n\
             \n\
             def retry(fn, max_retries=MAX_RETRIES):\n\
             \x20   for attempt in range(max_retries):\n\
             \x20       fn()\n"
                .to_owned(),
        ),
        (
            "App",
            "src/server.go",
            "package web\n\
             \n\
             type HTTPServer struct {\n\
             \x20   addr string\n\
             }\n\
             \n\
             func NewHTTPServer(addr string) *HTTPServer {\n\
             \x20   return &HTTPServer{addr: addr}\n\
             }\n"
            .to_owned(),
        ),
        (
            "App",
            "config/app.yaml",
            "log-level: debug\nmax-retries: 5\n".to_owned(),
        ),
        (
            "Lib",
            "src/utf8_decode.rs",
            "pub fn utf8Decode(b: &[u8]) -> Option<char> {\n\
             \x20   sha256sum(b);\n\
             \x20   None\n\
             }\n"
            .to_owned(),
        ),
        (
            "Lib",
            "docs/notes.md",
            "# Notes\n\nGet the user name from the store.\n".to_owned(),
        ),
        ("Lib", "src/big.rs", big),
    ]
}

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let m = dir.path().join("m.jsonl");
    write_corpus(&root, &m, &corpus());
    expect_code(
        &sync(&m, &root, &state, &["--quiet", "--chunk-size", "256"]),
        0,
    );
    Fixture { dir, root, state }
}

/// The `--json` hits of a search that must succeed, as
/// `repo/path:start-end [other ranges]`.
fn hits(state: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["search"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run_state(&all, state);
    expect_code(&out, 0);
    text(&out.stdout)
        .lines()
        .map(|l| brief(&serde_json::from_str(l).unwrap()))
        .collect()
}

/// (query, the hits in order): the golden answers of the corpus.
const GOLDEN: &[(&str, &[&str])] = &[
    // camelCase: the parts find it, apart or as a phrase; the identifier
    // itself finds it, ranked above the prose that has the same words.
    ("getUserName", &["App/src/userStore.ts:1-6 []"]),
    ("getusername", &["App/src/userStore.ts:1-6 []"]),
    ("GET_USER_NAME", &["App/src/userStore.ts:1-6 []"]),
    (
        "user name",
        &[
            "App/src/userStore.ts:1-6 []",
            "Lib/docs/notes.md:1-3 []",
            "Lib/src/big.rs:16-29 [1-15]",
        ],
    ),
    (
        "\"user name\"",
        &[
            "Lib/docs/notes.md:1-3 []",
            "App/src/userStore.ts:1-6 []",
            "Lib/src/big.rs:16-29 [1-15]",
        ],
    ),
    (
        "get user name",
        &["App/src/userStore.ts:1-6 []", "Lib/docs/notes.md:1-3 []"],
    ),
    // PascalCase, and the path's components.
    ("UserStore", &["App/src/userStore.ts:1-6 []"]),
    (
        "store",
        &["App/src/userStore.ts:1-6 []", "Lib/docs/notes.md:1-3 []"],
    ),
    // snake_case, SCREAMING_CASE, kebab-case.
    (
        "max_retries",
        &["App/src/retry.py:1-5 []", "App/config/app.yaml:1-2 []"],
    ),
    (
        "max retries",
        &["App/src/retry.py:1-5 []", "App/config/app.yaml:1-2 []"],
    ),
    (
        "MAX_RETRIES",
        &["App/src/retry.py:1-5 []", "App/config/app.yaml:1-2 []"],
    ),
    (
        "max-retries",
        &["App/src/retry.py:1-5 []", "App/config/app.yaml:1-2 []"],
    ),
    ("log level", &["App/config/app.yaml:1-2 []"]),
    // Acronyms.
    ("HTTPServer", &["App/src/server.go:1-9 []"]),
    ("http server", &["App/src/server.go:1-9 []"]),
    ("NewHTTPServer", &["App/src/server.go:1-9 []"]),
    // Digits.
    ("utf8", &["Lib/src/utf8_decode.rs:1-4 []"]),
    ("utf 8 decode", &["Lib/src/utf8_decode.rs:1-4 []"]),
    ("sha256sum", &["Lib/src/utf8_decode.rs:1-4 []"]),
    ("sha 256", &["Lib/src/utf8_decode.rs:1-4 []"]),
    // Path components.
    ("userStore.ts", &["App/src/userStore.ts:1-6 []"]),
    ("config", &["App/config/app.yaml:1-2 []"]),
];

#[test]
fn identifiers_match_by_their_parts_and_whole_in_a_golden_order() {
    let f = fixture();
    let mut wrong = Vec::new();
    for (q, want) in GOLDEN {
        let got = hits(&f.state, &[q]);
        if got != *want {
            wrong.push(format!("{q:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn the_text_form_marks_the_matched_words_in_the_lines_around_them() {
    let f = fixture();
    let out = run_state(&["search", "user name", "--limit", "2"], &f.state);
    expect_code(&out, 0);
    let got = text(&out.stdout);
    let want = "\
App/src/userStore.ts:1-6  (3.74)
    2: export class [User]Store {
    3:   get[UserName](id: number): string {
    4:     return this.names[id];
Lib/docs/notes.md:1-3  (2.27)
    3: Get the [user] [name] from the store.
";
    assert_eq!(got, want);
    // Other chunks of a file that matched: their line ranges.
    let out = run_state(&["search", "who", "--limit", "1"], &f.state);
    assert_eq!(
        text(&out.stdout),
        "Lib/src/big.rs:16-29  (0.89)\n    28: let pad_27 = 27;\n    29: let [who] = user.name;\n    also: 1-15\n"
    );
}

/// The old index: `files` written through the tokenizer from before the
/// code tokenizer (`content` and `path_text` as tantivy's `default`), in
/// place of the index a sync built.
fn make_old_format(state: &Path, files: &[(&str, &str, String)]) {
    let dir = local::index_dir(state);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    tantivy::Index::create_in_dir(&dir, local::schema_with("default")).unwrap();
    let idx = LocalIndex::open(state, ChunkSize::new(256).unwrap()).unwrap();
    let ops: Vec<Op> = files
        .iter()
        .map(|(repo, path, body)| {
            let size = ChunkSize::new(256).unwrap();
            Op::Upsert(Document::new(repo, path, body.as_bytes().to_vec(), size))
        })
        .collect();
    idx.apply(&ops).unwrap();
    idx.close();
    assert_eq!(local::format(state).unwrap(), local::Format::OldTokenizer);
}

#[test]
fn an_index_of_the_old_tokenizer_is_searched_then_rebuilt_by_the_next_sync() {
    let f = fixture();
    let before = text(&run_state(&["index", "export"], &f.state).stdout);
    make_old_format(&f.state, &corpus());
    assert_eq!(
        text(&run_state(&["index", "export"], &f.state).stdout),
        before
    );

    // Search answers from it as it is, and says it is of the old format.
    let out = run_state(&["search", "getusername"], &f.state);
    let err = expect_code(&out, 0);
    assert!(
        err.contains("older format") && err.contains("index sync"),
        "{err}"
    );
    assert_eq!(
        hits(&f.state, &["getusername"]),
        ["App/src/userStore.ts:1-6 []"]
    );
    assert!(hits(&f.state, &["user name"])
        .iter()
        .all(|h| !h.contains("userStore")));

    // The next sync (a cron run with an unrelated manifest) rebuilds it from
    // the disk, says so, and ends complete.
    std::fs::write(f.root.join("App/src/new.rs"), "fn fresh() {}\n").unwrap();
    let m = f.dir.path().join("m2.jsonl");
    std::fs::write(
        &m,
        "{\"op\":\"add\",\"repo\":\"App\",\"path\":\"src/new.rs\"}\n",
    )
    .unwrap();
    let out = sync(&m, &f.root, &f.state, &["--chunk-size", "256"]);
    let err = expect_code(&out, 0);
    assert!(
        err.contains("[REBUILD]") && err.contains("rebuilding the local index from the disk"),
        "{err}"
    );
    assert_eq!(local::format(&f.state).unwrap(), local::Format::Current);
    let after = text(&run_state(&["index", "export"], &f.state).stdout);
    assert_eq!(after.lines().count(), before.lines().count() + 1);
    assert!(hits(&f.state, &["user name"]).contains(&"App/src/userStore.ts:1-6 []".to_owned()));
    let out = run_state(&["search", "getusername"], &f.state);
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));

    // And the one after that has nothing to rebuild.
    let out = sync(&m, &f.root, &f.state, &["--chunk-size", "256"]);
    let err = expect_code(&out, 0);
    assert!(!err.contains("REBUILD"), "{err}");
    let verify = run_state(
        &["index", "verify", "--root", f.root.to_str().unwrap()],
        &f.state,
    );
    expect_code(&verify, 0);
}

/// A cron sync killed in the middle of the rebuild: the next one finishes
/// it (the rebuild is a manifest registered before the old index goes),
/// and the index ends equal to the disk, in the new format.
#[test]
fn a_rebuild_killed_midway_is_finished_by_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    let files: Vec<(&str, &str, String)> = (0..600)
        .map(|i| {
            let path: &'static str = Box::leak(format!("src/f{i}.rs").into_boxed_str());
            (
                "R",
                path,
                format!("fn fooBar{i}() {{ max_retries{i}(); }}\n"),
            )
        })
        .collect();
    let m = dir.path().join("m.jsonl");
    write_corpus(&root, &m, &files);
    expect_code(
        &sync(&m, &root, &state, &["--quiet", "--chunk-size", "256"]),
        0,
    );
    make_old_format(&state, &files);

    let args = sync_args(
        &m,
        &root,
        &state,
        &["--chunk-size", "256", "--batch-size", "2"],
    );
    let mut wait = 40;
    let kills = kill_lives(8, 2, |from_top| {
        wait += 60;
        run_killed_after(&args, from_top, Duration::from_millis(wait))
    });
    assert!(kills >= 1, "no kill landed");
    expect_code(&sync(&m, &root, &state, &["--chunk-size", "256"]), 0);
    assert_eq!(local::format(&state).unwrap(), local::Format::Current);
    let verify = run_state(
        &["index", "verify", "--root", root.to_str().unwrap()],
        &state,
    );
    expect_code(&verify, 0);
    assert_eq!(hits(&state, &["bar 17"]), ["R/src/f17.rs:1-1 []"]);
    assert_eq!(hits(&state, &["max_retries599"]), ["R/src/f599.rs:1-1 []"]);
}
