//! The whole pipeline through the real binary: `elysiactl changes`, then
//! `elysiactl index sync`, then `elysiactl index export` compared with every
//! repository's HEAD tree under SPEC.md's rules.

#[path = "changes_support/mod.rs"]
mod support;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::gitrepo::Repo;
use support::model;

const BIN: &str = env!("CARGO_BIN_EXE_elysiactl");

fn elysiactl(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("ELYSIACTL_STATE_DIR")
        .env_remove("ELYSIACTL_WEAVIATE_URL")
        .output()
        .expect("run elysiactl")
}

struct Pipeline<'a> {
    root: &'a Path,
    state: &'a Path,
    dir: &'a Path,
    /// Each `changes` writes a new file, as examples/sync-all-repos.sh does:
    /// a manifest a killed sync left unfinished must stay readable.
    runs: Cell<u32>,
    manifest: RefCell<String>,
}

impl Pipeline<'_> {
    fn s(p: &Path) -> &str {
        p.to_str().expect("utf-8 temp path")
    }

    /// `changes`; returns the manifest's lines.
    fn changes(&self) -> Vec<Value> {
        self.runs.set(self.runs.get() + 1);
        let path = self.dir.join(format!("changes-{}.jsonl", self.runs.get()));
        *self.manifest.borrow_mut() = path.display().to_string();
        let manifest = self.manifest.borrow().clone();
        let out = elysiactl(&[
            "changes",
            "--root",
            Self::s(self.root),
            "--state-dir",
            Self::s(self.state),
            "--output",
            &manifest,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "changes failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        support::json_lines(&std::fs::read(&manifest).expect("manifest written"))
    }

    fn sync_args(&self) -> Vec<String> {
        [
            "index",
            "sync",
            "--input",
            &self.manifest.borrow(),
            "--root",
            Self::s(self.root),
            "--state-dir",
            Self::s(self.state),
            "--quiet",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn sync(&self) {
        let args = self.sync_args();
        let out = elysiactl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            out.status.code(),
            Some(0),
            "sync failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Start a sync and SIGKILL it after `ms` milliseconds.
    fn killed_sync(&self, ms: u64) {
        let mut args = self.sync_args();
        args.extend(["--batch-size".to_owned(), "1".to_owned()]);
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sync");
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// (repo, path, contentSha256) of every object in the index.
    fn export(&self) -> BTreeSet<(String, String, String)> {
        let out = elysiactl(&["index", "export", "--state-dir", Self::s(self.state)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: Value = serde_json::from_slice(l).expect("json");
                let f = |k: &str| v[k].as_str().expect(k).to_string();
                (f("repo"), f("path"), f("contentSha256"))
            })
            .collect()
    }

    fn assert_exact(&self) {
        let expected: BTreeSet<(String, String, String)> = model::expected(self.root)
            .into_iter()
            .map(|((r, p), c)| (r, p, hex(&Sha256::digest(&c))))
            .collect();
        let got = self.export();
        let missing: Vec<_> = expected.difference(&got).collect();
        let extra: Vec<_> = got.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "index differs from HEAD trees\nmissing: {missing:?}\nextra: {extra:?}\nmanifest:\n{}",
            std::fs::read_to_string(&*self.manifest.borrow()).unwrap_or_default()
        );
    }

    fn cycle(&self) {
        self.changes();
        self.sync();
        self.assert_exact();
        let again = self.changes();
        assert!(
            again.iter().all(|l| l.get("new_changeset").is_some()),
            "second changes right after a sync must have no file lines: {again:?}"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn changes_then_sync_mirrors_every_head_tree_through_a_real_history() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&root).expect("mkdir");
    let p = Pipeline {
        root: &root,
        state: &state,
        dir: tmp.path(),
        runs: Cell::new(0),
        manifest: RefCell::new(String::new()),
    };

    let lib = Repo::init(tmp.path(), "lib-origin");
    lib.write("lib.txt", "lib");
    lib.commit("lib");

    let a = Repo::init(&root, "A");
    a.write("src/main.py", "print('a')\n")
        .write("edit.txt", "v1\n")
        .write("gone.txt", "bye\n")
        .write(
            "old/name.txt",
            "long enough content to be detected as a rename\n",
        )
        .write("script.sh", "echo hi\n")
        .write("to-link.txt", "plain\n")
        .write("with space.txt", "s")
        .write("quote\"d.txt", "q")
        .write("new\nline.txt", "n")
        .write("ünïcødé/✓.txt", "u")
        .write("binary.bin", [0u8, 159, 146, 150])
        .write(model::os(b"bad\xffname.txt"), "x")
        .symlink("link-to-main", "src/main.py");
    a.add_submodule(&lib, "vendor/lib");
    a.commit("A one");
    let b = Repo::init(&root, "B");
    b.write("b.txt", "b1").symlink("cross", "../A/edit.txt");
    b.commit("B one");
    p.cycle();

    // Every kind of change.
    a.write("edit.txt", "v2\n")
        .rm("gone.txt")
        .write("added.txt", "new\n")
        .chmod("script.sh", 0o755)
        .symlink("to-link.txt", "edit.txt")
        .write("quote\"d.txt", "q2");
    a.mv("old/name.txt", "new/name.txt");
    a.mv("with space.txt", "still spaced.txt");
    a.commit("A two");
    b.write("b.txt", "b2");
    b.commit("B two");
    p.cycle();

    // Force push: history rewritten and the old base collected.
    b.write("after-rewrite.txt", "r").rm("b.txt");
    b.rewrite_history_and_gc("B rewritten");
    p.cycle();

    // A killed sync, more commits, then changes + sync: still exact.
    for i in 0..40 {
        a.write(format!("many/{i}.txt"), format!("{i}"));
    }
    a.commit("A many");
    p.changes();
    p.killed_sync(150);
    // Killed again, on a newer manifest, while the first is still unfinished.
    a.write("many/5.txt", "edited");
    a.commit("A between kills");
    p.changes();
    p.killed_sync(100);
    a.rm("many/3.txt").write("many/4.txt", "edited");
    a.commit("A after kill");
    p.cycle();

    // A repository disappears: its objects go.
    std::fs::remove_dir_all(root.join("B")).expect("rm B");
    p.cycle();
    assert!(p.export().iter().all(|(r, _, _)| r != "B"));
}

#[test]
fn cli_exit_codes_and_a_failed_repo_still_publishes_the_manifest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let state = tmp.path().join("state");
    let out = tmp.path().join("m.jsonl");
    let s = |p: &Path| p.to_str().expect("utf-8").to_owned();

    let missing = elysiactl(&[
        "changes",
        "--root",
        &s(&tmp.path().join("nope")),
        "--output",
        &s(&out),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(!out.exists(), "no manifest is published on a usage error");

    let good = Repo::init(&root, "good");
    good.write("g.txt", "g");
    good.commit("g");
    std::fs::create_dir_all(root.join("broken/.git")).expect("mkdir");
    let r = elysiactl(&[
        "changes",
        "--root",
        &s(&root),
        "--state-dir",
        &s(&state),
        "--output",
        &s(&out),
    ]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(String::from_utf8_lossy(&r.stderr).contains("[FAILED] broken"));
    let manifest = std::fs::read_to_string(&out).expect("published");
    assert!(manifest.contains(r#"{"op":"add","repo":"good","path":"g.txt"}"#));
    assert!(!manifest.contains("broken"));
    // Producing a manifest writes no state; no temporary file is left behind.
    assert!(!state.exists());
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
