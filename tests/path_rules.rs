//! SPEC.md's path rules at the edges, through the real binary: an untracked
//! directory line never walks out of the root; a line whose repo has no
//! directory under any root fails and deletes nothing; a `dir/` line on a
//! regular file is malformed; ignored fields are ignored whatever their JSON
//! value.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use support::open_watch::OpenWatch;
use support::*;

fn tree() -> Sandbox {
    let t = sandbox();
    let (root, outside) = (&t.root, &t.outside);
    std::fs::create_dir_all(root.join("ServiceA/src")).unwrap();
    std::fs::create_dir_all(outside.join("deeper")).unwrap();
    std::fs::write(root.join("ServiceA/src/main.py"), "print('a')\n").unwrap();
    std::fs::write(root.join("ServiceA/x.txt"), "x\n").unwrap();
    std::fs::write(outside.join("secret.txt"), "OUTSIDESECRET\n").unwrap();
    std::fs::write(outside.join("deeper/more.txt"), "OUTSIDESECRET\n").unwrap();
    t
}

/// The manifest `name` of `lines` in the temp dir.
fn manifest(t: &Sandbox, name: &str, lines: &[impl AsRef<str>]) -> PathBuf {
    let m = t.dir.join(name);
    let lines: Vec<&str> = lines.iter().map(AsRef::as_ref).collect();
    std::fs::write(&m, lines.join("\n") + "\n").unwrap();
    m
}

/// The failures `--status` lists, as (line, kind, reason).
fn failures(state: &Path) -> Vec<(u64, String, String)> {
    let s = status(state);
    s["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["line"].as_u64().unwrap(),
                f["kind"].as_str().unwrap().to_owned(),
                f["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn untracked_dir_walk_never_leaves_the_root() {
    let t = tree();
    let repo = t.root.join("ServiceA");
    let d = repo.join("new");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("a.txt"), "a\n").unwrap();
    std::fs::write(d.join("sub/b.txt"), "b\n").unwrap();
    // Below the directory: symlinked directories out of the root (absolute
    // and relative), one inside it, and a symlinked file inside it.
    symlink(&t.outside, d.join("esc")).unwrap();
    symlink("../../../outside", d.join("rel")).unwrap();
    symlink("sub", d.join("inlink")).unwrap();
    symlink("a.txt", d.join("alias.txt")).unwrap();
    // The directory named by the line itself a symlink: out of the root,
    // to `/`, and to a directory inside the root.
    symlink(&t.outside, repo.join("outl")).unwrap();
    symlink("/", repo.join("rootlink")).unwrap();
    symlink("new", repo.join("inl")).unwrap();
    let lines: Vec<String> = ["outl/", "rootlink/", "new/", "inl/", "outl/deeper/"]
        .iter()
        .map(|p| format!(r#"{{"repo":"ServiceA","op":"add","path":"{p}"}}"#))
        .collect();
    let m = manifest(&t, "m.jsonl", &lines);

    // (Listing a directory to watch it is an open the other watch sees.)
    let deeper = OpenWatch::tree(&t.outside.join("deeper"));
    let watch = OpenWatch::tree(&t.outside);
    let out = sync(&m, &t.root, &t.state, &[]);
    let err = text(&out.stderr);
    let opened = [watch.events(), deeper.events()].concat();
    assert!(
        opened.is_empty(),
        "the walk opened or listed outside the root: {opened:?}\n{err}"
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        exported_paths(&t.state),
        [
            "ServiceA/inl/a.txt",
            "ServiceA/inl/alias.txt",
            "ServiceA/inl/sub/b.txt",
            "ServiceA/new/a.txt",
            "ServiceA/new/alias.txt",
            "ServiceA/new/sub/b.txt",
        ]
    );

    // The watches see a listing (so the check above can fail).
    let _ = std::fs::read_dir(&t.outside).unwrap().count();
    assert!(!watch.events().is_empty());
}

#[test]
fn a_repo_without_a_directory_under_any_root_is_a_failed_item_never_a_deletion() {
    let t = tree();
    let abs = t.root.join("ServiceA/x.txt");
    let add = manifest(
        &t,
        "add.jsonl",
        &[
            r#"{"op":"add","repo":"ServiceA","path":"src/main.py"}"#.into(),
            format!(r#"{{"op":"add","path":"{}"}}"#, abs.display()),
        ],
    );
    let out = sync(&add, &t.root, &t.state, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let indexed = vec!["ServiceA/src/main.py", "ServiceA/x.txt"];
    assert_eq!(exported_paths(&t.state), indexed);

    // A repo name in the wrong case: another repo, which has no directory.
    let wrong_case = [
        r#"{"op":"delete","repo":"servicea","path":"src/main.py"}"#.to_owned(),
        r#"{"op":"update","repo":"servicea","path":"x.txt"}"#.to_owned(),
        r#"{"op":"delete","path":"servicea/x.txt"}"#.to_owned(),
        format!(
            r#"{{"op":"delete","path":"{}/servicea/x.txt"}}"#,
            t.root.display()
        ),
        r#"{"op":"rename","repo":"servicea","from":"x.txt","path":"y.txt"}"#.to_owned(),
        r#"{"repo":"servicea","op":"add","path":"src/"}"#.to_owned(),
    ];
    let m = manifest(&t, "case.jsonl", &wrong_case);
    let out = sync(&m, &t.root, &t.state, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(exported_paths(&t.state), indexed, "{err}");
    let want = format!(
        "repo directory servicea not found under any --root ({})",
        t.root.display()
    );
    let failed = failures(&t.state);
    assert_eq!(failed.len(), wrong_case.len(), "{failed:?}");
    for (line, _, reason) in &failed {
        assert_eq!(reason, &want, "line {line}");
    }

    // A wrong --root (empty, as an unmounted one), and two of them.
    let empty_a = t.dir.join("empty_a");
    let empty_b = t.dir.join("empty_b");
    std::fs::create_dir_all(&empty_a).unwrap();
    std::fs::create_dir_all(&empty_b).unwrap();
    let gone = [
        r#"{"op":"delete","repo":"ServiceA","path":"src/main.py"}"#,
        r#"{"op":"add","repo":"ServiceA","path":"x.txt"}"#,
        r#"{"op":"delete","path":"ServiceA/x.txt"}"#,
    ];
    let m = manifest(&t, "gone.jsonl", &gone);
    let state2 = t.dir.join("state2");
    let out = sync(&add, &t.root, &state2, &[]);
    assert_eq!(out.status.code(), Some(0));
    let out = sync(&m, &empty_a, &state2, &["--root", arg(&empty_b)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "repo directory ServiceA not found under any --root ({}, {})",
            empty_a.display(),
            empty_b.display()
        )),
        "{err}"
    );
    assert!(err.contains(", 0 removed,"), "{err}");
    assert_eq!(exported_paths(&state2), indexed);
}

#[test]
fn prune_still_removes_the_objects_of_a_vanished_repo() {
    let t = tree();
    let adds = [
        r#"{"op":"add","repo":"ServiceA","path":"src/main.py"}"#,
        r#"{"op":"add","repo":"ServiceA","path":"x.txt"}"#,
    ];
    let add = manifest(&t, "add.jsonl", &adds);
    let out = sync(&add, &t.root, &t.state, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(exported_paths(&t.state).len(), 2);
    std::fs::remove_dir_all(t.root.join("ServiceA")).unwrap();
    let m = manifest(&t, "prune.jsonl", &[r#"{"op":"prune","repo":"ServiceA"}"#]);
    let out = sync(&m, &t.root, &t.state, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(exported_paths(&t.state).is_empty(), "{err}");
}

#[test]
fn a_directory_line_on_a_regular_file_is_malformed_not_a_transient_failure() {
    let t = tree();
    let line = r#"{"repo":"ServiceA","op":"add","path":"x.txt/"}"#;
    let m = manifest(&t, "m.jsonl", &[line]);
    let out = sync(&m, &t.root, &t.state, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let failed = failures(&t.state);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (line, kind, reason) = &failed[0];
    assert_eq!((*line, kind.as_str()), (1, "malformed_line"), "{reason}");
    assert_eq!(
        reason,
        r#"path "x.txt/" names a directory, but ServiceA/x.txt is a regular file"#
    );
}

#[test]
fn ignored_fields_are_ignored_whatever_their_json_value() {
    let t = tree();
    std::fs::create_dir_all(t.root.join("ServiceA/newdir")).unwrap();
    std::fs::write(t.root.join("ServiceA/newdir/n.txt"), "n\n").unwrap();
    // The values the parser's own test feeds it too, and two more.
    let mut odd: Vec<&str> = include_str!("data/odd-json-values.txt").lines().collect();
    odd.extend([
        "1.7976931348623157e309",
        "{\"deep\":[1e999,{\"n\":18446744073709551616}],\"s\":\"1e999\"}",
    ]);
    let mut lines: Vec<String> = odd
        .iter()
        .map(|v| {
            format!(
                r#"{{"op":"add","repo":"ServiceA","path":"x.txt","size":{v},"mime":null,"extra":{{"k":{v}}}}}"#
            )
        })
        .collect();
    lines.push(r#"{"repo":"ServiceA","op":"add","path":"newdir/","size":1e999}"#.into());
    lines.push(
        r#"{"repo":"ServiceA","op":"modify","path":"src/old.py -> src/main.py","size":-1e999}"#
            .into(),
    );
    // Numbers that are not JSON stay errors.
    let invalid = ["01", "1.", "-", "--5", "1e", "+1"];
    for v in invalid {
        lines.push(format!(
            r#"{{"op":"add","repo":"ServiceA","path":"x.txt","size":{v}}}"#
        ));
    }
    let m = manifest(&t, "m.jsonl", &lines);
    let out = sync(&m, &t.root, &t.state, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let failed = failures(&t.state);
    let failed_lines: Vec<u64> = failed.iter().map(|f| f.0).collect();
    let first_invalid = (odd.len() + 3) as u64;
    let want: Vec<u64> = (first_invalid..first_invalid + invalid.len() as u64).collect();
    assert_eq!(failed_lines, want, "{failed:?}");
    for (_, kind, reason) in &failed {
        assert_eq!(kind, "malformed_line");
        assert!(reason.starts_with("invalid JSON"), "{reason}");
    }
    assert_eq!(
        exported_paths(&t.state),
        [
            "ServiceA/newdir/n.txt",
            "ServiceA/src/main.py",
            "ServiceA/x.txt"
        ]
    );
}
