//! A Weaviate URL or collection name that cannot work is a usage error:
//! exit 2 with a message naming the flag, the value and the fix, and nothing
//! written to the state dir (no WAL, no failed-run file).

mod support;

use std::path::Path;

use support::*;

/// Every entry under `dir`, recursively (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let all = entries_under(dir).into_iter();
    all.map(|p| p.display().to_string()).collect()
}

#[test]
fn bad_weaviate_url_or_collection_exits_2_naming_the_fix_and_writes_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let w = workload(dir.path(), 6, 10, 0xbad);
    let cases: &[(&[&str], Option<&str>, &[&str])] = &[
        (
            &["--weaviate-url", "http://h:8080/v1"],
            None,
            &[
                "--weaviate-url",
                "\"http://h:8080/v1\"",
                "drop the /v1",
                "http://h:8080",
            ],
        ),
        (
            &["--weaviate-url", "localhost:8080"],
            None,
            &[
                "--weaviate-url",
                "\"localhost:8080\"",
                "http://localhost:8080",
            ],
        ),
        (
            &[
                "--weaviate-url",
                "http://127.0.0.1:1",
                "--collection",
                "bad-name",
            ],
            None,
            &["--collection", "\"bad-name\"", "Bad_name"],
        ),
        // The same rule for a URL from the environment.
        (
            &["--target", "weaviate"],
            Some("http://h:8080/v1/"),
            &["ELYSIACTL_WEAVIATE_URL", "drop the /v1"],
        ),
    ];
    for (i, (flags, env_url, wanted)) in cases.iter().enumerate() {
        let state = dir.path().join(format!("state-{i}"));
        let mut c = sync_cmd(&w.manifest, &w.root, &state, flags);
        if let Some(u) = env_url {
            c.env("ELYSIACTL_WEAVIATE_URL", u);
        }
        let out = c.output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        for want in *wanted {
            assert!(err.contains(want), "{flags:?}: no {want:?} in {err}");
        }
        assert_eq!(err.lines().count(), 1, "one line with the fix: {err}");
        let written = entries(&state);
        assert!(
            !written
                .iter()
                .any(|p| p.contains("failed-run") || p.ends_with(".wal")),
            "{flags:?} wrote state: {written:?}"
        );
    }

    // The check is on the value, not on the flag: a good URL gets past it
    // (and fails later, for a server that is not there).
    let state = dir.path().join("state-ok");
    let unreachable = ["--weaviate-url", "http://127.0.0.1:1", "--max-retries", "0"];
    expect_code(&w.sync(&state, &unreachable), 3);
}
