//! `elysiactl changes` on generated repositories with real histories: the
//! manifest it writes, and (through a model of the sync's SPEC.md rules)
//! that applying it makes the index equal every repository's HEAD tree.

#[path = "changes_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use elysiactl::changes::{self, ChangesOptions};
use serde_json::{json, Value};
use support::gitrepo::Repo;
use support::model::{self, ModelSync};
use support::{run_changes, ChangesRun as Run};

fn run(root: &Path, bases: &BTreeMap<String, String>) -> Run {
    let mut opts = ChangesOptions::new(vec![root.to_path_buf()]);
    opts.bases = bases.clone();
    run_changes(&opts)
}

/// changes, then apply everything with the model sync; asserts the index is
/// exact afterwards and returns the run.
fn cycle(root: &Path, sync: &mut ModelSync) -> Run {
    let r = run(root, &sync.bases);
    sync.apply(root, &r.bytes, None);
    assert_eq!(
        model::keys(&sync.objects),
        model::keys(&model::expected(root)),
        "index differs from HEAD trees after manifest:\n{}\nlog:\n{}",
        String::from_utf8_lossy(&r.bytes),
        r.log
    );
    assert_eq!(sync.objects, model::expected(root), "contents differ");
    r
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|x| x.to_string());
    v
}

#[test]
fn first_run_lists_every_tracked_file_as_add_then_prunes() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = Repo::init(root.path(), "A");
    a.write("src/main.py", "print(1)\n")
        .write("README.md", "# A\n");
    let head = a.commit("one");
    std::fs::create_dir(root.path().join("not-a-repo")).expect("mkdir");

    let r = run(root.path(), &BTreeMap::new());
    assert_eq!(
        r.lines,
        vec![
            json!({"op":"add","repo":"A","path":"README.md"}),
            json!({"op":"add","repo":"A","path":"src/main.py"}),
            json!({"op":"prune","repo":"A"}),
            json!({"repo":"A","new_changeset":{"commit":head,"parent":null,"branch":"main"}}),
        ]
    );
    assert_eq!(r.report.repos_scanned, 1);
    assert_eq!(r.report.full_snapshots, 1);
    assert_eq!(r.report.file_lines, 3);
    assert_eq!(r.report.lines_written, 4);
    assert!(!r.report.any_failed());
}

#[test]
fn history_maps_add_edit_delete_rename_mode_and_type_changes() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = Repo::init(root.path(), "A");
    a.write("keep.txt", "keep\n")
        .write("edit.txt", "v1\n")
        .write("gone.txt", "bye\n")
        .write(
            "old/name.txt",
            "a file long enough to be recognised as renamed\n",
        )
        .write("script.sh", "echo hi\n")
        .write("becomes-link.txt", "plain\n");
    let base = a.commit("base");
    let mut sync = ModelSync::default();
    cycle(root.path(), &mut sync);
    assert_eq!(sync.bases.get("A"), Some(&base));

    a.write("edit.txt", "v2\n")
        .rm("gone.txt")
        .write("new.txt", "new\n")
        .chmod("script.sh", 0o755)
        .symlink("becomes-link.txt", "keep.txt");
    a.mv("old/name.txt", "new/name.txt");
    let head = a.commit("changes");

    let r = cycle(root.path(), &mut sync);
    assert_eq!(
        sorted(r.file_lines().into_iter().cloned().collect()),
        sorted(vec![
            json!({"op":"update","repo":"A","path":"edit.txt"}),
            json!({"op":"delete","repo":"A","path":"gone.txt"}),
            json!({"op":"add","repo":"A","path":"new.txt"}),
            json!({"op":"update","repo":"A","path":"script.sh"}),
            json!({"op":"update","repo":"A","path":"becomes-link.txt"}),
            json!({"op":"rename","repo":"A","from":"old/name.txt","path":"new/name.txt"}),
            // symlinks are refreshed whenever anything changed
            json!({"op":"update","repo":"A","path":"becomes-link.txt"}),
        ])
    );
    assert_eq!(
        r.changeset("A"),
        Some(&json!({"commit":head,"parent":base,"branch":"main"}))
    );
    assert_eq!(sync.bases.get("A"), Some(&head));
}

#[test]
fn second_run_after_a_successful_sync_yields_no_file_lines() {
    let root = tempfile::tempdir().expect("tempdir");
    for name in ["A", "B"] {
        let r = Repo::init(root.path(), name);
        r.write("f.txt", name).symlink("l.txt", "f.txt").commit("c");
    }
    let mut sync = ModelSync::default();
    cycle(root.path(), &mut sync);
    let again = cycle(root.path(), &mut sync);
    assert!(again.lines.is_empty(), "{:?}", again.lines);
    assert_eq!(again.report.repos_changed, 0);
}

#[test]
fn odd_paths_are_exact_and_non_utf8_is_skipped_and_counted() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = Repo::init(root.path(), "A");
    let odd = [
        "with space.txt",
        "quote\"d.txt",
        "new\nline.txt",
        "tab\there.txt",
        "back\\slash.txt",
        "café/ünïcode ✓.txt",
        "-leading-dash.txt",
        "a -> b.txt",
        " leading space.txt",
    ];
    for p in odd {
        a.write(p, p);
    }
    a.write(model::os(b"bad\xffname.txt"), "x").commit("odd");
    let mut sync = ModelSync::default();
    let r = cycle(root.path(), &mut sync);
    let paths: Vec<&str> = r
        .file_lines()
        .iter()
        .filter_map(|l| l["path"].as_str())
        .collect();
    for p in odd {
        assert!(paths.contains(&p), "{p:?} missing from {paths:?}");
    }
    assert_eq!(r.report.paths_skipped_non_utf8, 1);
    assert!(r.log.contains(r"bad\xffname.txt"), "{}", r.log);

    // Renames and deletes of odd paths, and renames out of a non-UTF-8 name.
    a.mv("with space.txt", "still spaced.txt");
    a.mv(model::os(b"bad\xffname.txt"), "good-now.txt");
    a.rm("new\nline.txt");
    a.write("quote\"d.txt", "edited").commit("odd 2");
    let r = cycle(root.path(), &mut sync);
    let lines = r.file_lines();
    assert!(lines.contains(
        &&json!({"op":"rename","repo":"A","from":"with space.txt","path":"still spaced.txt"})
    ));
    assert!(lines.contains(&&json!({"op":"add","repo":"A","path":"good-now.txt"})));
    assert!(lines.contains(&&json!({"op":"delete","repo":"A","path":"new\nline.txt"})));
}

#[test]
fn submodules_are_skipped_and_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lib = Repo::init(tmp.path(), "lib-origin");
    lib.write("lib.txt", "lib").commit("lib");
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let a = Repo::init(&root, "A");
    a.write("a.txt", "a");
    a.add_submodule(&lib, "vendor/lib");
    a.commit("with submodule");

    let mut sync = ModelSync::default();
    let r = cycle(&root, &mut sync);
    assert_eq!(r.report.submodules_skipped, 1);
    assert!(r.log.contains("vendor/lib"), "{}", r.log);
    let paths: Vec<_> = r.file_lines().iter().map(|l| l["path"].clone()).collect();
    assert!(!paths.contains(&json!("vendor/lib")));
    assert!(paths.contains(&json!(".gitmodules")));

    // The submodule moves to a new commit, then is removed: still skipped.
    lib.write("lib.txt", "lib v2").commit("lib 2");
    let sub = a.path("vendor/lib");
    support::gitrepo::git(&sub, ["pull", "-q"]);
    a.commit("bump submodule");
    let r = cycle(&root, &mut sync);
    assert_eq!(r.report.submodules_skipped, 1);
    assert!(r.file_lines().is_empty(), "{:?}", r.lines);
    a.git(&["rm", "-q", "vendor/lib"]);
    a.commit("drop submodule");
    let r = cycle(&root, &mut sync);
    assert_eq!(r.report.submodules_skipped, 1);
}

#[test]
fn force_push_with_base_collected_lists_everything_and_prunes() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = Repo::init(root.path(), "A");
    let old = a.write("x.txt", "x").write("y.txt", "y").commit("one");
    let mut sync = ModelSync::default();
    cycle(root.path(), &mut sync);

    a.rm("y.txt").write("z.txt", "z");
    let new = a.rewrite_history_and_gc("rewritten");
    assert!(!a.has_object(&old), "old base must be collected");

    let r = cycle(root.path(), &mut sync);
    assert!(r.log.contains("[REWRITTEN] A"), "{}", r.log);
    assert_eq!(r.report.full_snapshots, 1);
    assert!(r.lines.contains(&json!({"op":"prune","repo":"A"})));
    assert_eq!(
        r.changeset("A"),
        Some(&json!({"commit":new,"parent":old,"branch":"main"}))
    );
    assert!(!sync.objects.contains_key(&("A".into(), "y.txt".into())));
}

#[test]
fn rewritten_history_with_base_object_still_present_diffs_against_base_tree() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = Repo::init(root.path(), "A");
    a.write("x.txt", "x").write("y.txt", "y").commit("one");
    let mut sync = ModelSync::default();
    cycle(root.path(), &mut sync);

    a.git(&["checkout", "-q", "--orphan", "other"]);
    a.rm("y.txt").write("z.txt", "z");
    a.commit("unrelated history");
    let r = cycle(root.path(), &mut sync);
    assert_eq!(r.report.full_snapshots, 0);
    assert_eq!(
        sorted(r.file_lines().into_iter().cloned().collect()),
        sorted(vec![
            json!({"op":"delete","repo":"A","path":"y.txt"}),
            json!({"op":"add","repo":"A","path":"z.txt"}),
        ])
    );
    assert_eq!(r.changeset("A").expect("changeset")["branch"], "other");
}

#[test]
fn killed_sync_then_changes_and_sync_still_ends_exact() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = Repo::init(root.path(), "A");
    let b = Repo::init(root.path(), "B");
    for i in 0..6 {
        a.write(format!("a{i}.txt"), format!("{i}"));
        b.write(format!("b{i}.txt"), format!("{i}"));
    }
    a.commit("a");
    b.commit("b");
    let mut sync = ModelSync::default();
    cycle(root.path(), &mut sync);

    a.write("a0.txt", "edited").rm("a1.txt");
    a.mv("a2.txt", "moved/a2.txt");
    b.rm("b3.txt").write("b9.txt", "9");
    a.commit("a2");
    b.commit("b2");
    let first = run(root.path(), &sync.bases);
    // Killed after three lines: no new_changeset was reached.
    sync.apply(root.path(), &first.bytes, Some(3));
    assert!(sync.objects != model::expected(root.path()));

    // More commits land before the next run.
    a.write("a5.txt", "later").commit("a3");
    let second = cycle(root.path(), &mut sync);
    // It still covers what the killed sync never applied.
    assert!(second
        .file_lines()
        .contains(&&json!({"op":"delete","repo":"B","path":"b3.txt"})));
    let third = cycle(root.path(), &mut sync);
    assert!(third.lines.is_empty());
}

#[test]
fn symlinks_follow_their_target_even_across_repositories() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = Repo::init(root.path(), "A");
    let b = Repo::init(root.path(), "B");
    b.write("shared.txt", "v1").commit("b");
    a.write("target.txt", "t1")
        .symlink("local-link", "target.txt")
        .symlink("cross-link", "../B/shared.txt")
        .symlink("escaping-link", "/etc/hostname")
        .symlink("dangling", "nowhere");
    a.commit("links");
    let mut sync = ModelSync::default();
    cycle(root.path(), &mut sync);
    assert!(sync
        .objects
        .contains_key(&("A".into(), "cross-link".into())));
    assert!(!sync
        .objects
        .contains_key(&("A".into(), "escaping-link".into())));

    // Only B changes, yet A's cross-repo link now has new content.
    b.write("shared.txt", "v2").commit("b2");
    cycle(root.path(), &mut sync);
    assert_eq!(
        sync.objects
            .get(&("A".to_string(), "cross-link".to_string())),
        Some(&b"v2".to_vec())
    );
    a.write("target.txt", "t2").commit("a2");
    cycle(root.path(), &mut sync);
}

#[test]
fn vanished_repository_is_pruned_and_its_base_forgotten() {
    let root = tempfile::tempdir().expect("tempdir");
    for name in ["A", "B"] {
        let r = Repo::init(root.path(), name);
        r.write("f.txt", name).commit("c");
    }
    let mut sync = ModelSync::default();
    cycle(root.path(), &mut sync);
    let base_b = sync.bases["B"].clone();
    std::fs::remove_dir_all(root.path().join("B")).expect("rm B");

    let r = cycle(root.path(), &mut sync);
    assert_eq!(r.report.repos_missing, 1);
    assert_eq!(
        r.lines,
        vec![
            json!({"op":"prune","repo":"B"}),
            json!({"repo":"B","new_changeset":{"commit":"","parent":base_b,"branch":null}}),
        ]
    );
    assert_eq!(sync.bases.get("B").map(String::as_str), Some(changes::GONE));
    assert!(cycle(root.path(), &mut sync).lines.is_empty());

    // It comes back (re-cloned): listed in full again, not diffed from the
    // old base, since the index no longer holds anything of it.
    let b = Repo::init(root.path(), "B");
    b.write("f.txt", "B again").commit("c");
    let r = cycle(root.path(), &mut sync);
    assert_eq!(r.report.full_snapshots, 1);
    assert_eq!(r.changeset("B").expect("changeset")["parent"], Value::Null);
}

#[test]
fn keep_missing_and_an_emptied_root_never_prune() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut bases = BTreeMap::new();
    bases.insert("Gone".to_string(), "0".repeat(40));
    let mut opts = ChangesOptions::new(vec![root.path().to_path_buf()]);
    opts.bases = bases;
    let mut out = Vec::new();
    let err = changes::run(&opts, &mut out, &mut Vec::new()).expect_err("refuses");
    assert!(matches!(err, changes::Error::EverythingMissing { .. }));
    assert!(err.to_string().contains("--keep-missing"));
    assert!(out.is_empty());

    opts.prune_missing = false;
    let r = run_changes(&opts);
    assert!(r.lines.is_empty());
    assert!(r.log.contains("kept"), "{}", r.log);
}

#[test]
fn corrupt_and_empty_repositories_are_reported_and_the_others_processed() {
    let root = tempfile::tempdir().expect("tempdir");
    let good = Repo::init(root.path(), "good");
    good.write("g.txt", "g").commit("g");
    let bad = Repo::init(root.path(), "bad");
    let bad_head = bad.write("b.txt", "b").commit("b");
    // Corrupt: HEAD points at a commit whose object is gone.
    let obj = bad
        .dir
        .join(".git/objects")
        .join(&bad_head[..2])
        .join(&bad_head[2..]);
    std::fs::remove_file(obj).expect("rm object");
    Repo::init(root.path(), "empty");
    // A directory with a broken .git must not be mistaken for an enclosing repo.
    std::fs::create_dir_all(root.path().join("broken/.git")).expect("mkdir");

    let mut bases = BTreeMap::new();
    bases.insert("empty".to_string(), "1".repeat(40));
    let r = run(root.path(), &bases);
    assert!(r.report.any_failed());
    let failed: Vec<&str> = r.report.failures.iter().map(|f| f.repo.as_str()).collect();
    assert_eq!(failed, vec!["bad", "broken"], "{}", r.log);
    assert!(r
        .lines
        .contains(&json!({"op":"add","repo":"good","path":"g.txt"})));
    assert!(r.changeset("good").is_some());
    assert!(r.changeset("bad").is_none());
    // An empty repository the index knew: its objects go.
    assert!(r.lines.contains(&json!({"op":"prune","repo":"empty"})));
    assert_eq!(r.changeset("empty").expect("changeset")["commit"], "");
}

#[test]
fn random_histories_stay_exact_round_after_round() {
    // A small deterministic generator: no extra dependency, reproducible.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let root = tempfile::tempdir().expect("tempdir");
    let repos: Vec<Repo> = ["R1", "R2"]
        .iter()
        .map(|n| Repo::init(root.path(), n))
        .collect();
    let names = ["a.txt", "d/b.txt", "d/e/c.txt", "sp ace.txt", "x.bin", "l"];
    let mut sync = ModelSync::default();
    for round in 0..6 {
        for repo in &repos {
            for _ in 0..4 {
                let name = names[next(names.len() as u64) as usize];
                let exists = repo.path(name).symlink_metadata().is_ok();
                match next(5) {
                    0 | 1 => {
                        let body = format!("round {round} {}\n", next(1000)).repeat(20);
                        repo.write(name, body);
                    }
                    2 if exists => {
                        repo.rm(name);
                    }
                    3 if exists => {
                        let to = format!("moved{round}-{}", next(100));
                        repo.mv(name, &to);
                    }
                    4 => {
                        repo.symlink(name, names[next(3) as usize]);
                    }
                    _ => {}
                }
            }
            repo.write("x.bin", [0u8, 1, 2])
                .commit(&format!("round {round}"));
        }
        // Sometimes the sync is killed part-way.
        if next(3) == 0 {
            let r = run(root.path(), &sync.bases);
            let cut = next(r.lines.len() as u64 + 1) as usize;
            sync.apply(root.path(), &r.bytes, Some(cut));
        }
        cycle(root.path(), &mut sync);
    }
}
