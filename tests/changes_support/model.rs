//! A model of what `index sync` does with a manifest under SPEC.md's rules
//! ("the index mirrors the files on disk"; `prune`; `new_changeset` records
//! the base), small enough to trust, so the `changes` tests can prove a
//! manifest brings an index to every repository's HEAD tree.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::Value;

use super::gitrepo::git_cmd;

const MAX_FILE_SIZE: u64 = 1 << 20;

/// (repo, path) → content.
pub type Objects = BTreeMap<(String, String), Vec<u8>>;

#[derive(Debug, Default)]
pub struct ModelSync {
    pub objects: Objects,
    /// Repo → commit whose changes were fully applied.
    pub bases: BTreeMap<String, String>,
}

/// The content the index holds for `<root>/<repo>/<path>`, if the file is
/// eligible: a regular file (a symlink counts while its target stays under
/// the root), at most 1 MiB, no NUL in its first 8 KiB.
pub fn eligible(root: &Path, repo: &str, path: &str) -> Option<Vec<u8>> {
    let p = root.join(repo).join(path);
    p.symlink_metadata().ok()?;
    let canon = std::fs::canonicalize(&p).ok()?;
    let root = std::fs::canonicalize(root).ok()?;
    if !canon.starts_with(&root) {
        return None;
    }
    let meta = std::fs::metadata(&canon).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_SIZE {
        return None;
    }
    let bytes = std::fs::read(&canon).ok()?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return None;
    }
    Some(bytes)
}

impl ModelSync {
    fn refresh(&mut self, root: &Path, repo: &str, path: &str) {
        let key = (repo.to_string(), path.to_string());
        match eligible(root, repo, path) {
            Some(c) => {
                self.objects.insert(key, c);
            }
            None => {
                self.objects.remove(&key);
            }
        }
    }

    /// Apply the first `limit` lines (all when `None`), as a sync killed
    /// after that many lines would have.
    pub fn apply(&mut self, root: &Path, manifest: &[u8], limit: Option<usize>) {
        for (n, raw) in manifest.split(|b| *b == b'\n').enumerate() {
            if limit.is_some_and(|l| n >= l) {
                return;
            }
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = serde_json::from_slice(raw).expect("manifest line is JSON");
            let repo = v["repo"].as_str().expect("repo").to_string();
            if let Some(cs) = v.get("new_changeset") {
                match cs["commit"].as_str() {
                    Some(c) => {
                        self.bases.insert(repo, c.to_string());
                    }
                    None => {
                        self.bases.remove(&repo);
                    }
                }
                continue;
            }
            let path = v["path"].as_str().unwrap_or_default().to_string();
            match v["op"].as_str().expect("op") {
                "add" | "update" | "modify" | "delete" => self.refresh(root, &repo, &path),
                "rename" => {
                    let from = v["from"].as_str().expect("from").to_string();
                    self.refresh(root, &repo, &from);
                    self.refresh(root, &repo, &path);
                }
                "prune" => {
                    let paths: Vec<String> = self
                        .objects
                        .keys()
                        .filter(|(r, _)| *r == repo)
                        .map(|(_, p)| p.clone())
                        .collect();
                    for p in paths {
                        self.refresh(root, &repo, &p);
                    }
                }
                other => panic!("unknown op {other}"),
            }
        }
    }
}

/// What the index must hold: every eligible file of every repository's HEAD
/// tree (paths that are not UTF-8 cannot be indexed and are left out).
pub fn expected(root: &Path) -> Objects {
    let mut out = Objects::new();
    let mut names: Vec<_> = std::fs::read_dir(root)
        .expect("read root")
        .filter_map(Result::ok)
        .filter(|e| e.path().join(".git").exists())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let repo = name.to_str().expect("utf-8 repo name").to_string();
        let dir = root.join(&repo);
        let o = git_cmd(&dir, ["ls-tree", "-r", "-z", "--full-tree", "HEAD"])
            .output()
            .expect("ls-tree");
        if !o.status.success() {
            continue; // unborn
        }
        for entry in o.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let tab = entry.iter().position(|b| *b == b'\t').expect("tab");
            let mode = &entry[..6];
            if mode == b"160000" {
                continue;
            }
            let Ok(path) = std::str::from_utf8(&entry[tab + 1..]) else {
                continue;
            };
            if let Some(c) = eligible(root, &repo, path) {
                out.insert((repo.clone(), path.to_string()), c);
            }
        }
    }
    out
}

/// Keys only, for readable assertion failures.
pub fn keys(o: &Objects) -> Vec<String> {
    o.keys().map(|(r, p)| format!("{r}/{p}")).collect()
}

pub fn os(s: &[u8]) -> &OsStr {
    OsStr::from_bytes(s)
}
