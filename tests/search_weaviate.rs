//! `search` on both targets: a small fixture corpus synced into the local
//! index and into the Weaviate stand-in (chunks of 256 bytes), searched by
//! keyword, hybrid and semantic with `--repo` and `--path`; hostile query
//! texts, whose GraphQL documents must parse as GraphQL (graphql-parser, an
//! independent parser); and each error case, one line with its exit code.

mod support;

#[allow(unused_imports)]
#[path = "weaviate_support/mod.rs"]
mod wsupport;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output};

use elysiactl::target::search::{Mode, Query};
use elysiactl::target::weaviate::search::graphql_query;
use serde_json::Value;
use support::{brief, cmd, sync_cmd, text, write_corpus};
use wsupport::standin::{Config, Standin};

/// The binary, with no secret from the environment.
fn elysiactl(mut c: Command) -> Output {
    c.env_remove("WEAVIATE_API_KEY").output().unwrap()
}

/// Filler lines of the same shape in every file, so chunk lengths compare.
fn filler(i: usize) -> String {
    format!("let filler{i} = {i};\n")
}

/// A file of `lines` lines, with `text` on the given 1-based lines.
fn file(lines: usize, at: &[(usize, &str)]) -> String {
    (1..=lines)
        .map(|n| match at.iter().find(|(l, _)| *l == n) {
            Some((_, t)) => format!("{t}\n"),
            None => filler(n),
        })
        .collect()
}

/// (repo, path, content): `backoff` three times on line 3 of retry.rs and
/// once on its line 35 (another chunk), twice in wait.py, once in guide.md,
/// never in none.py.
fn corpus() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "A",
            "src/retry.rs",
            file(40, &[(3, "backoff backoff backoff"), (35, "backoff once")]),
        ),
        ("B", "lib/wait.py", file(10, &[(4, "backoff backoff")])),
        ("A", "docs/guide.md", file(10, &[(7, "backoff")])),
        ("B", "lib/none.py", file(10, &[])),
    ]
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: PathBuf,
    standin: Standin,
}

const COLLECTION: &str = "Code";
const VECTORIZED: &str = "Vec";

/// The corpus synced into the local index and into two stand-in
/// collections: `Code` (no vectorizer) and `Vec` (text2vec-openai).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let m = dir.path().join("m.jsonl");
    write_corpus(&root, &m, &corpus());
    let standin = Standin::start(Config::default()).unwrap();
    let url = standin.url();
    let runs: [(&str, Vec<&str>); 3] = [
        ("local", vec![]),
        (
            "code",
            vec!["--weaviate-url", &url, "--collection", COLLECTION],
        ),
        (
            "vec",
            vec![
                "--weaviate-url",
                &url,
                "--collection",
                VECTORIZED,
                "--vectorizer",
                "text2vec-openai",
            ],
        ),
    ];
    for (name, flags) in runs {
        let state = dir.path().join(format!("state-{name}"));
        let mut extra = vec!["--quiet", "--chunk-size", "256"];
        extra.extend(flags);
        let out = elysiactl(sync_cmd(&m, &root, &state, &extra));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
    }
    Fixture {
        state: dir.path().join("state-local"),
        _dir: dir,
        standin,
    }
}

impl Fixture {
    fn run(&self, target: &str, args: &[&str]) -> Output {
        let url = self.standin.url();
        let mut all = vec!["search"];
        all.extend_from_slice(args);
        match target {
            "local" => all.extend(["--state-dir", self.state.to_str().unwrap()]),
            collection => all.extend(["--weaviate-url", &url, "--collection", collection]),
        }
        elysiactl(cmd(&all))
    }

    /// The `--json` hits of a search that must succeed.
    fn hits(&self, target: &str, args: &[&str]) -> Vec<Value> {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.run(target, &a);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{target} {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn paths(hits: &[Value]) -> Vec<String> {
    hits.iter()
        .map(|h| {
            format!(
                "{}/{}",
                h["repo"].as_str().unwrap(),
                h["path"].as_str().unwrap()
            )
        })
        .collect()
}

fn range(h: &Value) -> (u64, u64) {
    (
        h["startLine"].as_u64().unwrap(),
        h["endLine"].as_u64().unwrap(),
    )
}

/// What both targets must answer to `backoff`: every file that has the
/// word, best first, each at the chunk holding its best line, retry.rs with
/// its line 35 chunk as another range.
fn check_keyword_backoff(hits: &[Value], what: &str) {
    assert_eq!(
        paths(hits),
        ["A/src/retry.rs", "B/lib/wait.py", "A/docs/guide.md"],
        "{what}: {hits:?}"
    );
    let (a, b) = range(&hits[0]);
    assert!(
        a <= 3 && (3..35).contains(&b),
        "{what}: {}",
        brief(&hits[0])
    );
    let other = hits[0]["other"].as_array().unwrap();
    assert_eq!(other.len(), 1, "{what}: {}", brief(&hits[0]));
    let (c, d) = range(&other[0]);
    assert!(c <= 35 && 35 <= d, "{what}: {}", brief(&hits[0]));
    assert_eq!(range(&hits[1]), (1, 10), "{what}");
    assert_eq!(range(&hits[2]), (1, 10), "{what}");
    assert!(hits[1]["other"].as_array().unwrap().is_empty());
    for h in hits {
        assert!(
            h["snippet"].as_str().unwrap().contains("[backoff]"),
            "{what}: {h}"
        );
        assert!(!h["id"].as_str().unwrap().is_empty(), "{what}: {h}");
        assert!(h["score"].as_f64().unwrap() > 0.0, "{what}: {h}");
    }
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "{what}: {scores:?}"
    );
}

#[test]
fn keyword_search_answers_the_same_files_and_lines_on_both_targets_with_filters() {
    let f = fixture();
    let local = f.hits("local", &["backoff"]);
    let weaviate = f.hits(COLLECTION, &["backoff"]);
    check_keyword_backoff(&local, "local");
    check_keyword_backoff(&weaviate, "weaviate");
    let briefs = |h: &[Value]| h.iter().map(brief).collect::<Vec<_>>();
    assert_eq!(briefs(&local), briefs(&weaviate));

    // The text form: the hit line, the snippet's lines around line 3 with
    // their numbers, the other ranges; the same on both targets but for
    // the score.
    let (a, b) = range(&weaviate[0]);
    let o = &weaviate[0]["other"][0];
    let mut forms = Vec::new();
    for target in ["local", COLLECTION] {
        let out = f.run(target, &["backoff", "--limit", "1"]);
        let stdout = text(&out.stdout);
        let (head, rest) = stdout.split_once('\n').unwrap();
        let (loc, score) = head.split_once("  ").unwrap();
        assert_eq!(loc, format!("A/src/retry.rs:{a}-{b}"), "{target}: {stdout}");
        assert!(
            score.starts_with('(') && score.ends_with(')'),
            "{target}: {stdout}"
        );
        assert_eq!(
            rest,
            format!(
                "    2: let filler2 = 2;\n    3: [backoff] [backoff] [backoff]\n    4: let filler4 = 4;\n    also: {}-{}\n",
                o["startLine"], o["endLine"]
            ),
            "{target}"
        );
        forms.push(rest.to_owned());
    }
    assert_eq!(forms[0], forms[1]);
    assert_eq!(local[0]["snippetLine"], 2);
    assert_eq!(
        local[0]["snippet"],
        "let filler2 = 2;\n[backoff] [backoff] [backoff]\nlet filler4 = 4;"
    );
    assert_eq!(local[0]["snippet"], weaviate[0]["snippet"]);

    // (args, the files in order) on both targets.
    let cases: &[(&[&str], &[&str])] = &[
        (&["backoff", "--repo", "B"], &["B/lib/wait.py"]),
        (
            &["backoff", "--repo", "B", "--repo", "A"],
            &["A/src/retry.rs", "B/lib/wait.py", "A/docs/guide.md"],
        ),
        (&["backoff", "--path", "src/"], &["A/src/retry.rs"]),
        (&["backoff", "--path", "docs"], &["A/docs/guide.md"]),
        (&["backoff", "--path", "lib/", "--repo", "A"], &[]),
        (
            &["backoff", "--path", "lib/w", "--repo", "B", "--repo", "A"],
            &["B/lib/wait.py"],
        ),
    ];
    for target in ["local", COLLECTION] {
        let p = |args: &[&str]| paths(&f.hits(target, args));
        for (args, want) in cases {
            assert_eq!(p(args), *want, "{target} {args:?}");
        }
        assert_eq!(p(&["backoff", "--limit", "2"]).len(), 2, "{target}");
        assert!(p(&["nosuchword"]).is_empty(), "{target}");
    }
}

#[test]
fn hybrid_and_semantic_rank_by_the_standins_documented_ranking() {
    let f = fixture();
    // alpha 0 is keyword alone.
    let keyword = f.hits(VECTORIZED, &["backoff"]);
    check_keyword_backoff(&keyword, "keyword on Vec");
    let h0 = f.hits(VECTORIZED, &["backoff", "--mode", "hybrid", "--alpha", "0"]);
    assert_eq!(paths(&h0), paths(&keyword));
    // Semantic: cosine of word counts. wait.py's chunk is 2 of 10 lines
    // backoff-only; retry.rs's first chunk has 3 in one line; every file
    // comes back (nearText has no cut-off), the one without the word last.
    let sem = f.hits(VECTORIZED, &["backoff", "--mode", "semantic"]);
    let sp = paths(&sem);
    assert_eq!(sp.len(), 4, "{sp:?}");
    assert_eq!(sp[3], "B/lib/none.py", "{sp:?}");
    assert_eq!(sem[3]["score"].as_f64(), Some(0.0));
    // alpha 1 is the vector side alone (the files that match at all).
    let h1 = f.hits(VECTORIZED, &["backoff", "--mode", "hybrid", "--alpha", "1"]);
    assert_eq!(paths(&h1), sp[..3]);
    // The default alpha mixes both; the filters apply.
    let h = f.hits(VECTORIZED, &["backoff", "--mode", "hybrid", "--repo", "A"]);
    assert_eq!(
        {
            let mut p = paths(&h);
            p.sort();
            p
        },
        ["A/docs/guide.md", "A/src/retry.rs"]
    );
    let s = f.hits(
        VECTORIZED,
        &["backoff", "--mode", "semantic", "--path", "lib/"],
    );
    assert_eq!(paths(&s), ["B/lib/wait.py", "B/lib/none.py"]);
    // Each hit sits at the chunk that matched.
    for hit in sem.iter().chain(&h1) {
        if hit["path"] == "src/retry.rs" {
            let (a, b) = range(hit);
            assert!(a <= 3 && 3 <= b, "{}", brief(hit));
        }
    }
}

/// Query texts that would break a document built by pasting.
const HOSTILE: &[&str] = &[
    "\"",
    "\\",
    "\\\"",
    "back\"off",
    "a\nb",
    "a\r\nb\tc",
    "}{",
    "\") { id } } mutation { x }",
    "#comment",
    "é 😀 日本",
    "\u{1}\u{1f}\u{7f}\u{85}",
    "\\u0041",
    "$var",
    "x\u{2028}y",
];

/// The string argument `key` of the search field, through graphql-parser.
fn parsed_query_text(doc: &str, arg: &str, key: &str) -> String {
    use graphql_parser::query::{Definition, OperationDefinition, Selection, Value as V};
    let d = graphql_parser::parse_query::<String>(doc)
        .unwrap_or_else(|e| panic!("not GraphQL: {e}\n{doc}"));
    assert_eq!(d.definitions.len(), 1, "{doc}");
    let Definition::Operation(OperationDefinition::SelectionSet(set)) = &d.definitions[0] else {
        panic!("{doc}")
    };
    fn field<'a>(s: &Selection<'a, String>) -> graphql_parser::query::Field<'a, String> {
        match s {
            Selection::Field(f) => f.clone(),
            _ => panic!("not a field"),
        }
    }
    let get = field(&set.items[0]);
    assert_eq!(get.name, "Get");
    assert_eq!(get.selection_set.items.len(), 1, "{doc}");
    let class = field(&get.selection_set.items[0]);
    assert_eq!(class.name, "Code");
    let fields: Vec<String> = class
        .selection_set
        .items
        .iter()
        .map(|s| field(s).name)
        .collect();
    assert_eq!(
        fields,
        [
            "repo",
            "path",
            "chunk",
            "startLine",
            "endLine",
            "content",
            "_additional"
        ]
    );
    let (_, v) = class.arguments.iter().find(|(n, _)| n == arg).expect(arg);
    let V::Object(o) = v else { panic!("{doc}") };
    match &o[key] {
        V::String(s) => s.clone(),
        V::List(l) => match &l[..] {
            [V::String(s)] => s.clone(),
            _ => panic!("{doc}"),
        },
        _ => panic!("{doc}"),
    }
}

#[test]
fn hostile_query_texts_make_documents_that_parse_as_graphql_and_carry_the_text() {
    for text in HOSTILE {
        for (mode, arg, key) in [
            (Mode::Keyword, "bm25", "query"),
            (Mode::Hybrid, "hybrid", "query"),
            (Mode::Semantic, "nearText", "concepts"),
        ] {
            let mut q = Query::keyword(text, 5);
            q.mode = mode;
            q.repos = vec![text.to_string(), "B".into()];
            q.path_prefix = Some(text.to_string());
            let doc = graphql_query("Code", &q);
            assert!(!doc.contains('\n'), "{doc}");
            assert_eq!(&parsed_query_text(&doc, arg, key), text, "{doc}");
        }
    }
}

#[test]
fn hostile_query_texts_reach_the_server_intact() {
    let f = fixture();
    f.standin.clear_requests();
    for t in HOSTILE {
        let hits = f.hits(COLLECTION, &[t, "--repo", t]);
        assert!(hits.is_empty(), "{t:?}: {hits:?}");
    }
    let sent: Vec<String> = f
        .standin
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/graphql")
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["query"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(sent.len(), HOSTILE.len());
    for (doc, t) in sent.iter().zip(HOSTILE) {
        assert_eq!(&parsed_query_text(doc, "bm25", "query"), t);
    }
    // And a hostile text that also matches finds what it should.
    let hits = f.hits(COLLECTION, &["\"backoff\" }{ \\"]);
    assert_eq!(paths(&hits)[0], "A/src/retry.rs");
}

/// One line on stderr, nothing on stdout, exit `code`.
fn one_line_error(out: &Output, code: i32, what: &str) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
    assert!(text(&out.stdout).is_empty(), "{what}");
    err
}

#[test]
fn each_error_is_one_clear_line() {
    let f = fixture();
    for mode in ["hybrid", "semantic"] {
        let err = one_line_error(&f.run(COLLECTION, &["backoff", "--mode", mode]), 2, mode);
        assert!(err.contains("no vectorizer") && err.contains(mode), "{err}");
        let err = one_line_error(&f.run("local", &["backoff", "--mode", mode]), 2, mode);
        assert!(err.contains("the local index has none"), "{err}");
    }
    let err = one_line_error(&f.run("Nope", &["backoff"]), 3, "unknown collection");
    assert!(err.contains("has no collection Nope"), "{err}");
    let err = one_line_error(&f.run(COLLECTION, &["  "]), 2, "empty");
    assert!(err.contains("empty"), "{err}");
    let out = f.run(COLLECTION, &["x", "--alpha", "2", "--mode", "hybrid"]);
    assert_eq!(out.status.code(), Some(2));

    // A wrong API key: 401, exit 3, the key never shown.
    let locked = Standin::start(Config {
        api_key: Some("right-key".into()),
        ..Config::default()
    })
    .unwrap();
    let url = locked.url();
    let out = search_x(&url)
        .env("WEAVIATE_API_KEY", "wrong-key-SECRET")
        .output()
        .unwrap();
    let err = one_line_error(&out, 3, "401");
    assert!(err.contains("401") && !err.contains("SECRET"), "{err}");

    // A server that refuses (403) or answers GraphQL errors in a 200.
    for (reply, want) in [
        (
            (
                403,
                r#"{"error":[{"message":"forbidden: no read on Code"}]}"#,
            ),
            "403",
        ),
        (
            (
                200,
                r#"{"data":{"Get":null},"errors":[{"message":"explorer: list class: search: object search at index code: shard xyz: something broke"}]}"#,
            ),
            "the server refused the query: explorer: list class",
        ),
        (
            (
                200,
                r#"{"errors":[{"message":"Cannot query field \"Code\" on type \"GetObjectsObj\"."}]}"#,
            ),
            "has no collection Code",
        ),
        ((200, r#"{"data":{}}"#), "no data.Get.Code"),
    ] {
        let url = canned(reply);
        let out = elysiactl(search_x(&url));
        let err = one_line_error(&out, 3, want);
        assert!(err.contains(want), "{want}: {err}");
    }
    // Nothing listening.
    let out = elysiactl(search_x("http://127.0.0.1:9"));
    one_line_error(&out, 3, "unreachable");
}

/// `search x` on collection `Code` of the server at `url`.
fn search_x(url: &str) -> Command {
    cmd(&["search", "x", "--weaviate-url", url, "--collection", "Code"])
}

/// A server answering `GET /v1/schema/...` with a class and every other
/// request with `reply`; its URL.
fn canned((status, body): (u16, &'static str)) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut b = vec![0; len];
            let _ = r.read_exact(&mut b);
            let (st, body) = if first.contains("/v1/schema/") {
                (
                    200,
                    r#"{"class":"Code","vectorizer":"none","properties":[]}"#,
                )
            } else {
                (status, body)
            };
            let _ = write!(
                s,
                "HTTP/1.1 {st} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}
