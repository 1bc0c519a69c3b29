//! `index export`, `search` and `index failures` on state dirs that are
//! missing, mistyped, read-only or unreadable, and on bad queries: an
//! answer, or one line naming the path or the query with an exit code —
//! never an empty answer that looks like success, never a write.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn sd(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A temp dir, and a state dir in it holding the shipped sample, synced
/// into the local index.
fn synced_sample() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = sync_sample(&state, &["--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    (dir, state)
}

/// Every file under `dir` with its length and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path(), (m.len(), m.modified().unwrap()));
        }
    }
    out
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The stderr of a failed read command: exactly one line, no panic.
fn one_line_error(out: &std::process::Output, what: &str) -> String {
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
    err
}

#[test]
fn export_and_search_without_an_index_fail_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mistyped-state");
    let empty = dir.path().join("empty-state");
    std::fs::create_dir(&empty).unwrap();
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "x").unwrap();
    for state in [&missing, &empty, &a_file] {
        for args in [
            vec!["index", "export", "--state-dir", sd(state)],
            vec!["search", "ledger", "--state-dir", sd(state)],
        ] {
            let out = run(&args);
            let err = one_line_error(&out, &format!("{args:?}"));
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains("no local index at")
                    && err.contains(sd(state))
                    && err.contains("elysiactl index sync"),
                "{args:?}: {err}"
            );
        }
    }
    assert!(!missing.exists(), "a read command created the state dir");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "a read command wrote into an empty state dir"
    );
}

/// tantivy's reader creates `.tantivy-meta.lock` for writing; a read
/// command must write nothing, so it works on a read-only state dir.
#[test]
fn export_and_search_write_nothing_in_the_state_dir() {
    let (_dir, state) = synced_sample();
    let want = export(&state);
    assert!(!want.is_empty());
    std::fs::remove_file(state.join("index/.tantivy-meta.lock")).unwrap();
    let before = snapshot(&state);
    assert_eq!(export(&state), want);
    let out = run(&["search", "ledger", "--state-dir", sd(&state)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ServiceB/lib/ledger.rs"));
    assert_eq!(
        snapshot(&state),
        before,
        "a read command changed the state dir"
    );
}

/// Root ignores file modes, so the state dir is made read-only for real: a
/// read-only bind mount of it in a private mount namespace.
#[test]
fn export_and_search_read_a_read_only_state_dir() {
    let (_dir, state) = synced_sample();
    let want = export(&state);
    let script = r#"mount --bind "$1" "$1" || exit 98
mount -o remount,bind,ro "$1" "$1" || exit 98
if touch "$1/.rw-probe" 2>/dev/null; then exit 97; fi
shift
exec "$@""#;
    let on_ro = |args: &[&str]| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .arg("sh")
            .arg(&state)
            .arg(BIN)
            .args(args)
            .env_remove("ELYSIACTL_STATE_DIR")
            .output()
    };
    match Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!("SKIPPED: unshare refused: {}", text(&o.stderr).trim());
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run unshare: {e}");
            return;
        }
    }
    let out = on_ro(&["index", "export", "--state-dir", sd(&state)]).unwrap();
    if out.status.code() == Some(98) {
        eprintln!(
            "SKIPPED: cannot make a read-only bind mount here: {}",
            text(&out.stderr).trim()
        );
        return;
    }
    assert_ne!(out.status.code(), Some(97), "the bind mount is writable");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(got.len(), want.len(), "{got:?}");
    for line in &got {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["id"].as_str().unwrap();
        assert_eq!(
            want.get(id).map(|(_, sha)| sha.as_str()),
            v["contentSha256"].as_str(),
            "{line}"
        );
    }
    let out = on_ro(&["search", "ledger", "--state-dir", sd(&state)]).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ServiceB/lib/ledger.rs"),
        "{}",
        text(&out.stdout)
    );
}

/// A state dir the user cannot read is an error (exit 3), not an empty index.
#[test]
fn an_unreadable_state_dir_is_an_error_not_an_empty_answer() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to run the binary as another user");
        return;
    }
    let (dir, state) = synced_sample();
    // The state dir stays 0700 root; its parent lets `nobody` reach it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for args in [
        vec!["index", "export", "--state-dir", sd(&state)],
        vec!["search", "ledger", "--state-dir", sd(&state)],
    ] {
        let out = match Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(BIN)
            .args(&args)
            .env_remove("ELYSIACTL_STATE_DIR")
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!("SKIPPED: cannot run setpriv: {e}");
                return;
            }
        };
        let err = one_line_error(&out, &format!("{args:?}"));
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains(sd(&state)) && err.contains("Permission denied"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_bad_query_is_one_line_naming_the_query_exit_2() {
    let (_dir, state) = synced_sample();
    for (query, what) in [
        ("foo:(bar", "syntax error"),
        ("fn main()", "syntax error"),
        ("nosuchfield:x", "no field `nosuchfield`"),
        ("size:big", "whole number"),
        ("   ", "empty"),
    ] {
        let out = run(&["search", query, "--state-dir", sd(&state)]);
        let err = one_line_error(&out, query);
        assert_eq!(out.status.code(), Some(2), "{query}: {err}");
        assert!(
            err.contains(&format!("bad query {query:?}")) && err.contains(what),
            "{query}: {err}"
        );
    }
    // The fix the message suggests works.
    let out = run(&["search", "\"Ledger { entries\"", "--state-dir", sd(&state)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ServiceB/lib/ledger.rs"));
}

/// What the README says local search matches: words of the content and of
/// the repo-relative path; `repo:` and `path:` match exactly; the repo name
/// is not a path word.
#[test]
fn search_matches_content_and_path_words_and_exact_repo_and_path_fields() {
    let (_dir, state) = synced_sample();
    let paths = |q: &str| -> Vec<String> {
        let out = run(&["search", q, "--json", "--state-dir", sd(&state)]);
        assert_eq!(out.status.code(), Some(0), "{q}: {}", text(&out.stderr));
        let mut v: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| {
                let h: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{}/{}",
                    h["repo"].as_str().unwrap(),
                    h["path"].as_str().unwrap()
                )
            })
            .collect();
        v.sort();
        v
    };
    // "src" is only a path word: no sample file has it in its content.
    assert_eq!(
        paths("src"),
        vec!["ServiceA/src/main.py", "ServiceA/src/utils.py"]
    );
    assert_eq!(paths("lib/ledger.rs"), vec!["ServiceB/lib/ledger.rs"]);
    assert_eq!(paths("path:lib/ledger.rs"), vec!["ServiceB/lib/ledger.rs"]);
    assert_eq!(
        paths("repo:ServiceB ledger"),
        vec!["ServiceB/config.yaml", "ServiceB/lib/ledger.rs"]
    );
    assert!(paths("ServiceB/lib/ledger.rs").is_empty());
}

#[test]
fn failures_on_a_missing_state_dir_says_it_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mistyped-state");
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec!["index", "failures", "--state-dir", sd(&missing)];
        args.extend_from_slice(extra);
        let out = run(&args);
        let err = one_line_error(&out, "failures");
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(sd(&missing)) && err.contains("does not exist"),
            "{err}"
        );
    }
    assert!(!missing.exists());
    // A state dir that exists but never ran has no failed lines.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let out = run(&["index", "failures", "--state-dir", sd(&fresh)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "no failed lines\n");
}
