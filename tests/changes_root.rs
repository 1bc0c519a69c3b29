//! `changes --root` given the wrong directory says what it found and how to
//! fix it, and exits 2 without publishing a manifest (docs/changes.md).

#[path = "changes_support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::gitrepo::Repo;

const BIN: &str = env!("CARGO_BIN_EXE_elysiactl");

fn changes(roots: &[&Path], state: &Path, output: &Path) -> Output {
    let mut c = Command::new(BIN);
    c.arg("changes");
    for r in roots {
        c.arg("--root").arg(r);
    }
    c.arg("--state-dir")
        .arg(state)
        .arg("--output")
        .arg(output)
        .env_remove("ELYSIACTL_STATE_DIR")
        .output()
        .expect("run elysiactl")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_root_that_is_itself_a_repository_exits_2_naming_the_parent_to_use() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let parent = tmp.path().join("repos");
    let a = Repo::init(&parent, "ServiceA");
    a.write("src/main.py", "print(1)\n");
    a.commit("c");
    let out = tmp.path().join("changes.jsonl");
    let o = changes(&[&a.dir], &tmp.path().join("state"), &out);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("is itself a git repository"), "{e}");
    assert!(
        e.contains("--root takes the directory that holds the repositories"),
        "{e}"
    );
    let parent = parent.canonicalize().expect("canonical");
    assert!(
        e.contains(&format!("e.g. --root {}", parent.display())),
        "{e}"
    );
    assert!(!out.exists(), "a manifest was published");

    // Pointed at the parent, the same repository is found.
    let o = changes(&[&parent], &tmp.path().join("state"), &out);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(std::fs::read_to_string(&out)
        .expect("manifest")
        .contains("src/main.py"));
}

#[test]
fn a_root_with_no_repositories_exits_2_and_says_so_unless_another_root_has_some() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("not-a-repo")).expect("mkdir");
    let out = tmp.path().join("changes.jsonl");
    let state = tmp.path().join("state");
    let o = changes(&[&empty], &state, &out);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("no git repository under"), "{e}");
    assert!(e.contains(&empty.display().to_string()), "{e}");
    assert!(!out.exists(), "a manifest was published");

    // With repositories under another root, an empty one is only reported.
    let full = tmp.path().join("full");
    let b = Repo::init(&full, "B");
    b.write("b.txt", "b\n");
    b.commit("b");
    let o = changes(&[&full, &empty], &state, &out);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        e.contains(&format!("[EMPTY-ROOT] {}", empty.display())),
        "{e}"
    );
    assert!(out.exists());
}
