//! What docs/changes.md promises for a repository whose pull fails: it is
//! reported (exit 1) and still diffed at its local HEAD, whose commit its
//! `new_changeset` carries, so the index keeps matching the disk.

#[path = "changes_support/mod.rs"]
mod support;

use elysiactl::changes::ChangesOptions;
use serde_json::json;
use support::gitrepo::Repo;

#[test]
fn a_failed_pull_is_still_diffed_at_its_local_head_and_gets_its_changeset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let a = Repo::init(&root, "A");
    let base = a.write("one.txt", "1\n").commit("one");
    // A local commit the index has not seen, and an upstream that is gone.
    let head = a.write("two.txt", "2\n").commit("two");
    let gone = tmp.path().join("gone.git");
    a.set_upstream(gone.to_str().expect("utf-8"));

    let mut opts = ChangesOptions::new(vec![root.clone()]);
    opts.bases.insert("A".into(), base.clone());
    opts.pull = true;
    let r = support::run_changes(&opts);
    assert!(r.report.any_failed(), "{}", r.log);
    assert!(
        r.report.failures[0].reason.starts_with("pull:"),
        "{}",
        r.log
    );
    assert!(r
        .lines
        .contains(&json!({"op":"add","repo":"A","path":"two.txt"})));
    let cs = r
        .changeset("A")
        .expect("a new_changeset for the failed pull");
    assert_eq!(cs["commit"], head.as_str());
    assert_eq!(cs["parent"], base.as_str());
}
