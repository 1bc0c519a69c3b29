//! Unit tests of mgit's line forms (renames, copies, C quoting, changesets)
//! and of the untracked directory walk.

use super::*;
use serde_json::json;

fn line(v: Value) -> Value {
    match normalize(&v).expect("normalises") {
        Normalized::Line(l) => l,
        other => panic!("expected a line, got {other:?}"),
    }
}

#[test]
fn arrow_rename_becomes_a_spec_rename() {
    let got = line(json!({"repo":"A","op":"modify","path":"src/old.py -> src/new.py"}));
    assert_eq!(
        got,
        json!({"repo":"A","op":"rename","from":"src/old.py","path":"src/new.py"})
    );
}

#[test]
fn quoted_sides_of_a_rename_are_unquoted_and_may_contain_the_arrow() {
    let got = line(json!({"repo":"A","op":"modify","path":"\"a -> b.txt\" -> \"c d.txt\""}));
    assert_eq!(got["from"], "a -> b.txt");
    assert_eq!(got["path"], "c d.txt");
    let got = line(json!({"repo":"A","op":"modify","path":"plain.txt -> \"with space.txt\""}));
    assert_eq!(got["from"], "plain.txt");
    assert_eq!(got["path"], "with space.txt");
}

#[test]
fn copy_is_an_add_of_the_new_path() {
    let got = line(json!({"repo":"A","op":"add","path":"a.txt -> b.txt"}));
    assert_eq!(got, json!({"repo":"A","op":"add","path":"b.txt"}));
}

#[test]
fn c_quoting_follows_git_including_octal_utf8() {
    assert_eq!(
        unquote_c_style(r#""caf\303\251 au lait""#).expect("ok"),
        "café au lait"
    );
    assert_eq!(
        unquote_c_style(r#""tab\there\nnl \"q\" back\\slash""#).expect("ok"),
        "tab\there\nnl \"q\" back\\slash"
    );
    assert_eq!(
        unquote_c_style(r#""\a\b\v\f\r""#).expect("ok"),
        "\u{7}\u{8}\u{b}\u{c}\r"
    );
    let got = line(json!({"repo":"A","op":"modify","path":"\"sp ace/\\303\\244.txt\""}));
    assert_eq!(got["op"], "update");
    assert_eq!(got["path"], "sp ace/ä.txt");
}

#[test]
fn bad_quoting_and_non_utf8_are_errors_not_guesses() {
    assert!(matches!(
        unquote_c_style(r#""\377x""#),
        Err(Error::NotUtf8 { .. })
    ));
    assert!(unquote_c_style(r#""\8""#).is_err());
    assert!(unquote_c_style(r#""\30""#).is_err());
    assert!(unquote_c_style(r#""x\""#).is_err());
    assert!(normalize(&json!({"repo":"A","op":"add","path":"\"open"})).is_err());
    assert!(normalize(&json!({"repo":"A","op":"add","path":"\"a\"b"})).is_err());
}

#[test]
fn untracked_directory_is_reported_for_expansion() {
    assert_eq!(
        normalize(&json!({"repo":"A","op":"add","path":"new dir/"})).expect("ok"),
        Normalized::UntrackedDir {
            repo: Some("A".into()),
            dir: "new dir".into()
        }
    );
    assert_eq!(
        normalize(&json!({"repo":"A","op":"add","path":"\"d\\303\\251j\\303\\240/\""}))
            .expect("ok"),
        Normalized::UntrackedDir {
            repo: Some("A".into()),
            dir: "déjà".into()
        }
    );
    assert!(normalize(&json!({"repo":"A","op":"delete","path":"gone/"})).is_err());
}

#[test]
fn spec_lines_and_unknown_fields_pass_through_unchanged() {
    let v = json!({"op":"add","repo":"A","path":"src/x.py","size":3,"mime":"text/x"});
    assert_eq!(line(v.clone()), v);
    let v = json!({"op":"rename","repo":"A","from":"a","path":"b"});
    assert_eq!(line(v.clone()), v);
}

#[test]
fn mgit_changeset_is_never_a_base() {
    let got = normalize(&json!({"repo":"A","new_changeset":{"commit":"abc","branch":"main"}}))
        .expect("ok");
    assert_eq!(
        got,
        Normalized::Changeset {
            repo: "A".into(),
            commit: Some("abc".into()),
            branch: Some("main".into())
        }
    );
}

#[test]
fn missing_fields_are_named() {
    assert_eq!(
        normalize(&json!({"repo":"A","path":"x"})),
        Err(Error::Field("op"))
    );
    assert_eq!(normalize(&json!([1])), Err(Error::NotAnObject));
    assert_eq!(normalize_bytes(b"{nope"), Err(Error::NotAnObject));
}

#[test]
fn untracked_directory_expands_to_its_files_not_nested_repos() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    std::fs::create_dir_all(base.join("d/sub")).expect("mkdir");
    std::fs::create_dir_all(base.join("d/nested/.git")).expect("mkdir");
    std::fs::write(base.join("d/a.txt"), "a").expect("write");
    std::fs::write(base.join("d/sub/b.txt"), "b").expect("write");
    std::fs::write(base.join("d/nested/c.txt"), "c").expect("write");
    assert_eq!(
        expand_untracked_dir(base, "d/").expect("ok"),
        vec!["d/a.txt".to_string(), "d/sub/b.txt".to_string()]
    );
    assert!(expand_untracked_dir(base, "absent").expect("ok").is_empty());
}

#[test]
fn untracked_directory_walk_never_follows_a_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.txt"), "s").expect("write");
    std::fs::create_dir_all(base.join("d/sub")).expect("mkdir");
    std::fs::write(base.join("d/sub/b.txt"), "b").expect("write");
    std::os::unix::fs::symlink(outside.path(), base.join("d/out")).expect("symlink");
    std::os::unix::fs::symlink("/", base.join("d/slash")).expect("symlink");
    std::os::unix::fs::symlink("sub", base.join("d/again")).expect("symlink");
    std::os::unix::fs::symlink(outside.path(), base.join("link")).expect("symlink");
    // Symlinked directories are listed as entries (reading them decides),
    // never entered.
    assert_eq!(
        expand_untracked_dir(base, "d").expect("ok"),
        ["d/again", "d/out", "d/slash", "d/sub/b.txt"]
    );
    // Nor is a symlink in the directory named.
    assert!(expand_untracked_dir(base, "link").is_err());
    // Deep trees keep few descriptors open.
    let mut deep = base.join("deep");
    for _ in 0..300 {
        deep.push("n");
    }
    std::fs::create_dir_all(&deep).expect("mkdir");
    std::fs::write(deep.join("leaf.txt"), "l").expect("write");
    let got = expand_untracked_dir(base, "deep").expect("ok");
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with("/n/leaf.txt"));
}
