//! Generated git repositories with real histories, for the `changes` tests.
//!
//! git runs with a fixed identity and no global or system config, so the
//! tests neither depend on nor touch the machine's git setup.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run git in `dir` with a hermetic environment; panics with git's stderr on
/// failure (test code).
pub fn git<I, S>(dir: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = git_cmd(dir, args).output().expect("run git");
    assert!(
        out.status.success(),
        "git failed in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn git_cmd<I, S>(dir: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    c
}

/// A bare origin at `<tmp>/remotes/<name>.git` whose `main` has one commit
/// (`first.txt` holding `first`), and the developer clone under `devs` that
/// pushed it. Returns the origin's `file://` URL and the clone.
pub fn origin(tmp: &Path, devs: &Path, name: &str, first: &str) -> (String, Repo) {
    let bare = tmp.join("remotes").join(format!("{name}.git"));
    std::fs::create_dir_all(&bare).expect("mkdir");
    git(&bare, ["init", "-q", "--bare"]);
    let url = format!("file://{}", bare.display());
    let dev = Repo::clone_from(devs, name, &url);
    dev.write("first.txt", first);
    dev.commit("first");
    dev.push();
    (url, dev)
}

/// One working repository under a root.
pub struct Repo {
    pub dir: PathBuf,
}

impl Repo {
    pub fn init(root: &Path, name: &str) -> Repo {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir repo");
        git(&dir, ["init", "-q"]);
        Repo { dir }
    }

    pub fn clone_from(root: &Path, name: &str, url: &str) -> Repo {
        git(root, ["clone", "-q", url, name]);
        Repo {
            dir: root.join(name),
        }
    }

    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string()
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn write(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        // A symlink in the way is replaced, not written through.
        if p.symlink_metadata()
            .map(|m| m.is_symlink())
            .unwrap_or(false)
        {
            std::fs::remove_file(&p).expect("rm symlink");
        }
        std::fs::write(p, content).expect("write file");
        self
    }

    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        if p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p).expect("rm");
        }
        std::os::unix::fs::symlink(target, p).expect("symlink");
        self
    }

    pub fn chmod(&self, rel: impl AsRef<Path>, mode: u32) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
        self
    }

    pub fn rm(&self, rel: impl AsRef<Path>) -> &Self {
        std::fs::remove_file(self.path(rel)).expect("rm");
        self
    }

    pub fn mv(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> &Self {
        if let Some(parent) = self.dir.join(to.as_ref()).parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let mut c = git_cmd(&self.dir, ["mv"]);
        c.arg("--").arg(from).arg(to);
        assert!(c.status().expect("git mv").success());
        self
    }

    /// Stage everything and commit; returns the new HEAD.
    pub fn commit(&self, msg: &str) -> String {
        git(&self.dir, ["add", "-A"]);
        git(&self.dir, ["commit", "-q", "--allow-empty", "-m", msg]);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.dir, ["rev-parse", "HEAD"])
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.dir, args)
    }

    /// `git push -q origin HEAD:main`.
    pub fn push(&self) -> String {
        self.git(&["push", "-q", "origin", "HEAD:main"])
    }

    /// Make `url` the remote `origin` that `main` pulls from.
    pub fn set_upstream(&self, url: &str) -> &Self {
        self.git(&["remote", "add", "origin", url]);
        self.git(&["config", "branch.main.remote", "origin"]);
        self.git(&["config", "branch.main.merge", "refs/heads/main"]);
        self
    }

    /// `git submodule add` of `origin` at `at` (staged, not committed).
    pub fn add_submodule(&self, origin: &Repo, at: &str) -> &Self {
        self.git(&[
            "submodule",
            "add",
            "-q",
            origin.dir.to_str().expect("utf-8"),
            at,
        ]);
        self
    }

    /// Rewrite history: a new root commit with the current tree, the old
    /// history unreachable and garbage-collected.
    pub fn rewrite_history_and_gc(&self, msg: &str) -> String {
        git(&self.dir, ["checkout", "-q", "--orphan", "rewritten"]);
        git(&self.dir, ["add", "-A"]);
        git(&self.dir, ["commit", "-q", "-m", msg]);
        git(&self.dir, ["branch", "-q", "-D", "main"]);
        git(&self.dir, ["branch", "-q", "-m", "main"]);
        git(&self.dir, ["reflog", "expire", "--expire=now", "--all"]);
        git(&self.dir, ["gc", "-q", "--prune=now"]);
        self.head()
    }

    pub fn has_object(&self, sha: &str) -> bool {
        git_cmd(&self.dir, ["cat-file", "-e", sha])
            .status()
            .expect("cat-file")
            .success()
    }
}
