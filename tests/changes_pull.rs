//! `elysiactl changes --pull` against local remotes (file:// URLs).

#[path = "changes_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use elysiactl::changes::{self, ChangesOptions};
use serde_json::{json, Value};
use support::gitrepo::Repo;

/// A temp dir with empty `dev-parent` and `root` folders in it.
fn site() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(tmp.path().join("dev-parent")).expect("mkdir");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    (tmp, root)
}

/// A bare origin with one commit, and a developer clone under `dev-parent`
/// to push from.
fn origin(tmp: &Path, name: &str) -> (String, Repo) {
    support::gitrepo::origin(tmp, &tmp.join("dev-parent"), name, "1")
}

fn run(opts: &ChangesOptions) -> (Vec<Value>, String, changes::ChangesReport) {
    let r = support::run_changes(opts);
    (r.lines, r.log, r.report)
}

#[test]
fn pull_fast_forwards_each_repo_and_a_failing_remote_is_reported_not_fatal() {
    let (tmp, root) = site();
    let mut bases = BTreeMap::new();
    let mut devs = Vec::new();
    for name in ["A", "B", "C"] {
        let (url, dev) = origin(tmp.path(), name);
        let clone = Repo::clone_from(&root, name, &url);
        bases.insert(name.to_string(), clone.head());
        devs.push(dev);
    }
    // New upstream commits for A and C; B's remote disappears.
    for dev in [&devs[0], &devs[2]] {
        dev.write("second.txt", "2");
        dev.commit("second");
        dev.push();
    }
    std::fs::remove_dir_all(tmp.path().join("remotes/B.git")).expect("rm remote");

    let mut opts = ChangesOptions::new(vec![root.clone()]);
    opts.bases = bases;
    opts.pull = true;
    opts.jobs = 2;
    let (lines, log, report) = run(&opts);

    assert_eq!(report.repos_scanned, 3);
    assert!(report.any_failed());
    let failed: Vec<&str> = report.failures.iter().map(|f| f.repo.as_str()).collect();
    assert_eq!(failed, vec!["B"], "{log}");
    assert!(report.failures[0].reason.starts_with("pull:"));
    for name in ["A", "C"] {
        assert!(
            lines.contains(&json!({"op":"add","repo":name,"path":"second.txt"})),
            "{lines:?}\n{log}"
        );
        assert!(log.contains(&format!("[PULLED] {name}")), "{log}");
    }
    // B is still diffed at its current HEAD: nothing changed, so no lines.
    assert!(lines.iter().all(|l| l["repo"] != "B"));
}

#[test]
fn diverged_upstream_is_reported_and_never_reset() {
    let (tmp, root) = site();
    let (url, dev) = origin(tmp.path(), "A");
    let clone = Repo::clone_from(&root, "A", &url);
    let local = clone.head();
    dev.git(&["commit", "-q", "--amend", "-m", "rewritten upstream"]);
    dev.git(&["push", "-q", "--force", "origin", "HEAD:main"]);

    let mut opts = ChangesOptions::new(vec![root.clone()]);
    opts.bases.insert("A".into(), local.clone());
    opts.pull = true;
    let (lines, log, report) = run(&opts);
    assert!(report.any_failed(), "{log}");
    assert_eq!(clone.head(), local, "local work is never reset");
    assert!(lines.is_empty());
}

#[test]
fn credentials_in_a_remote_url_are_never_logged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let a = Repo::init(&root, "A");
    a.write("f", "f").commit("c");
    // Port 9 (discard) is closed: the fetch fails at once.
    a.set_upstream("https://alice:s3cr3t-token@127.0.0.1:9/A.git");
    let mut opts = ChangesOptions::new(vec![root.clone()]);
    opts.pull = true;
    let (_, log, report) = run(&opts);
    assert!(report.any_failed(), "{log}");
    let reasons: String = report.failures.iter().map(|f| f.reason.clone()).collect();
    assert!(
        !log.contains("s3cr3t") && !reasons.contains("s3cr3t"),
        "{log}"
    );
}
