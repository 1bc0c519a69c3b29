//! `index verify [--repair]` for the verify tests of both targets: the tree
//! they index, the verify document, and report → repair → clean.

use std::path::Path;

use serde_json::Value;

use super::chunks::{assert_exact, export_objects, Obj};
use super::{arg, expect_code, run, run_state, text, Rng};

/// The chunk size the trees are indexed at.
pub const CHUNK: &str = "256";

/// The default `--max-file-size`.
pub const MAX: u64 = 1 << 20;

/// Two repos of files from 0 to ~3 KB (up to a dozen chunks of 256 bytes)
/// under `root`, and an `add` line for each in `manifest`; returns every
/// (repo, path).
pub fn write_tree(root: &Path, manifest: &Path) -> Vec<(String, String)> {
    let mut rng = Rng(0x7e51f1);
    let mut refs = Vec::new();
    let mut lines = String::new();
    for i in 0..24 {
        let repo = ["A", "B"][i % 2];
        let path = format!("src/f{i}.rs");
        let full = root.join(repo).join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        let mut body = String::new();
        let size = [0, 40, 300, 900, 3000][i % 5];
        while body.len() < size {
            body.push_str(&format!(
                "fn f{}() -> u64 {{ {} }}\n",
                body.len(),
                rng.next()
            ));
        }
        std::fs::write(&full, body).unwrap();
        lines.push_str(&format!(
            r#"{{"op":"add","repo":"{repo}","path":"{path}"}}"#
        ));
        lines.push('\n');
        refs.push((repo.to_owned(), path));
    }
    std::fs::write(manifest, lines).unwrap();
    refs
}

/// `n` more files of repo A under `root` (`bulk/gI.rs`, 300 to 790 bytes);
/// returns their (repo, path).
pub fn write_bulk(root: &Path, n: usize) -> Vec<(String, String)> {
    let mut more = Vec::new();
    for i in 0..n {
        let path = format!("bulk/g{i}.rs");
        let full = root.join("A").join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, "fn g() {}\n".repeat(30 + i % 50)).unwrap();
        more.push(("A".to_owned(), path));
    }
    more
}

/// The document's (missing, extra, stale) totals.
pub fn totals(doc: &Value) -> (u64, u64, u64) {
    let t = &doc["total"];
    let n = |k: &str| {
        t[k].as_u64()
            .unwrap_or_else(|| panic!("no total.{k}: {doc}"))
    };
    (n("missing"), n("extra"), n("stale"))
}

/// An index to verify: the tree under `root`, the state dir `state`, and
/// the `target` flags of every command (none: the local index).
pub struct Index<'a> {
    pub root: &'a Path,
    pub state: &'a Path,
    pub target: Vec<&'a str>,
}

impl<'a> Index<'a> {
    /// `index verify --json` (and `more`): exit code and the document.
    pub fn verify(&self, more: &[&str]) -> (i32, Value) {
        let mut args = vec!["index", "verify", "--root", arg(self.root), "--json"];
        args.extend_from_slice(&self.target);
        args.extend_from_slice(more);
        let out = run_state(&args, self.state);
        let doc: Value = serde_json::from_str(text(&out.stdout).lines().last().unwrap_or("null"))
            .unwrap_or_else(|e| {
                panic!(
                    "verify --json: {e}: {}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                )
            });
        (out.status.code().unwrap_or(-1), doc)
    }

    /// The arguments of `index verify --repair`.
    pub fn repair_args(&self) -> Vec<&'a str> {
        let mut args = vec!["index", "verify", "--root", arg(self.root), "--repair"];
        args.extend_from_slice(&self.target);
        args.extend(["--state-dir", arg(self.state)]);
        args
    }

    /// Every object of the index, with its text.
    pub fn export(&self) -> Vec<Obj> {
        if self.target.is_empty() {
            export_objects(&["--state-dir", arg(self.state)])
        } else {
            export_objects(&self.target)
        }
    }

    /// Verify is clean (exit 0, nothing missing, extra or stale) and the
    /// index holds exactly the chunks of `refs` as they are on the disk.
    pub fn assert_clean_and_exact(&self, refs: &[(String, String)]) {
        let (code, doc) = self.verify(&[]);
        assert_eq!((code, totals(&doc)), (0, (0, 0, 0)), "{doc}");
        assert_exact(&self.export(), self.root, refs, MAX, 256);
    }

    /// Report (exit 1, `want` totals) → repair (exit 0, `[REPAIR]`) → clean,
    /// and the index then holds exactly the disk.
    pub fn repaired(&self, refs: &[(String, String)], want: (u64, u64, u64)) {
        let (code, doc) = self.verify(&[]);
        assert_eq!((code, totals(&doc)), (1, want), "{doc}");
        let err = expect_code(&run(&self.repair_args()), 0);
        assert!(err.contains("[REPAIR]"), "{err}");
        self.assert_clean_and_exact(refs);
    }
}
