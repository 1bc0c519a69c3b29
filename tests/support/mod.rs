//! Shared helpers for the integration tests: generated trees and manifests,
//! running the real binary, and the expected index computed independently
//! of the engine (straight from SPEC.md's rules).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub mod chunks;
pub mod open_watch;
pub mod verify;

pub const BIN: &str = env!("CARGO_BIN_EXE_elysiactl");

/// A deterministic generator (xorshift), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c.env_remove("ELYSIACTL_STATE_DIR");
    c.env_remove("ELYSIACTL_WEAVIATE_URL");
    c.stdin(Stdio::null());
    c
}

/// Wait at most `limit` for `child`; if it is still running then, kill and
/// reap it and return None.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One run of the binary with `args` (and `--from-line 1` when `from_top`:
/// the manifest was finished, so the next kill still lands in real work),
/// SIGKILLed after `wait` if it is still running. Returns (killed, exited 0).
pub fn run_killed_after(args: &[&str], from_top: bool, wait: Duration) -> (bool, bool) {
    let mut a = args.to_vec();
    if from_top {
        a.extend(["--from-line", "1"]);
    }
    let child = cmd(&a)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    kill_after(child, wait)
}

/// SIGKILL `child` after `wait` if it is still running, and reap it.
/// Returns (killed, exited 0).
pub fn kill_after(mut child: Child, wait: Duration) -> (bool, bool) {
    std::thread::sleep(wait);
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        child.kill().unwrap(); // SIGKILL
    }
    let status = child.wait().unwrap();
    (killed, status.code() == Some(0))
}

/// Lives of a run until `want` SIGKILLs have landed or `lives` lives have
/// run: `life(from_top)` runs one (`from_top` when the life before it
/// exited 0) and says (killed, exited 0). Returns how many kills landed.
pub fn kill_lives(lives: usize, want: usize, mut life: impl FnMut(bool) -> (bool, bool)) -> usize {
    let (mut kills, mut from_top) = (0, false);
    for _ in 0..lives {
        if kills >= want {
            break;
        }
        let (killed, finished) = life(from_top);
        kills += usize::from(killed);
        from_top = finished;
    }
    kills
}

pub fn run(args: &[&str]) -> Output {
    cmd(args).output().expect("run elysiactl")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `args`, then `--state-dir STATE`: the read commands and `--status`.
pub fn run_state(args: &[&str], state: &Path) -> Output {
    let mut all = args.to_vec();
    all.extend(["--state-dir", arg(state)]);
    run(&all)
}

/// Asserts that `out` exited with `code`, its stderr in the message, and
/// returns that stderr.
pub fn expect_code(out: &Output, code: i32) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

/// A temp dir by its canonical path `dir` (the one the binary prints), with
/// the folders `root` and `outside` it (for what must never be read), and
/// the path `state`.
pub struct Sandbox {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub root: PathBuf,
    pub outside: PathBuf,
    pub state: PathBuf,
}

pub fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let (root, outside) = (dir.join("root"), dir.join("outside"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    Sandbox {
        _tmp: tmp,
        state: dir.join("state"),
        dir,
        root,
        outside,
    }
}

/// Every entry under `dir`, recursively (directories are entered, not
/// followed through links); empty when `dir` does not exist.
pub fn entries_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out
}

/// Every file under `dir`, which must exist, with its bytes.
pub fn files_with_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    assert!(dir.is_dir(), "no directory {}", dir.display());
    entries_under(dir)
        .into_iter()
        .filter(|p| !p.symlink_metadata().unwrap().is_dir())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect()
}

/// The flags of a run against Weaviate at `url` with no retries, files of
/// 2 KiB at most, batches of `batch_size` and the metrics file `metrics`.
pub fn weaviate_flags<'a>(url: &'a str, metrics: &'a Path, batch_size: &'a str) -> Vec<&'a str> {
    let mut flags = vec!["--target", "weaviate", "--weaviate-url", url];
    flags.extend(["--max-file-size", "2048", "--metrics-file", arg(metrics)]);
    flags.extend(["--max-retries", "0", "--batch-size", batch_size]);
    flags
}

/// Asserts that `hay` contains each of `needles`.
pub fn assert_contains_all(hay: &str, needles: &[&str]) {
    for n in needles {
        assert!(hay.contains(n), "no {n:?} in\n{hay}");
    }
}

/// The arguments of `index sync --input INPUT --root ROOT --state-dir STATE`,
/// then `extra`. `input` may be `-` (the manifest on stdin).
pub fn sync_args<'a>(
    input: &'a Path,
    root: &'a Path,
    state: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["index", "sync", "--input", arg(input), "--root", arg(root)];
    args.extend(["--state-dir", arg(state)]);
    args.extend_from_slice(extra);
    args
}

/// [`cmd`] for `index sync` with [`sync_args`]: to spawn, or to give it
/// pipes or environment first.
pub fn sync_cmd(input: &Path, root: &Path, state: &Path, extra: &[&str]) -> Command {
    cmd(&sync_args(input, root, state, extra))
}

/// `index sync` with the usual flags.
pub fn sync(manifest: &Path, root: &Path, state: &Path, extra: &[&str]) -> Output {
    run(&sync_args(manifest, root, state, extra))
}

/// [`sync`] of the shipped sample (`examples/sample-changes.jsonl` over
/// `examples/sample-root`) into `state`.
pub fn sync_sample(state: &Path, extra: &[&str]) -> Output {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    sync(
        &ex.join("sample-changes.jsonl"),
        &ex.join("sample-root"),
        state,
        extra,
    )
}

/// `index sync --input -`, fed `manifest` on stdin; stderr is captured.
pub fn sync_stdin(manifest: &[u8], root: &Path, state: &Path, extra: &[&str]) -> Output {
    feed(&mut sync_cmd(Path::new("-"), root, state, extra), manifest)
}

/// Run `c` fed `input` on stdin; stderr is captured.
pub fn feed(c: &mut Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Asserts that `err` has lines and that every one is JSON; `what` heads
/// the failure message.
pub fn assert_json_lines(err: &str, what: &str) {
    assert!(!err.trim().is_empty(), "{what}: nothing on stderr");
    for line in err.lines() {
        let v: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(v.is_ok(), "{what}: not JSON: {line}");
    }
}

/// `index sync --status` as JSON; it exits 0 whatever the state.
pub fn status(state: &Path) -> serde_json::Value {
    let out = run_state(&["index", "sync", "--status"], state);
    assert_eq!(out.status.code(), Some(0), "--status exits 0");
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

/// `wal inspect --verify` of the state dir must pass (exit 0; a torn tail
/// is not corruption). `what` heads the failure message. Returns its stdout.
pub fn verify_wal(state: &Path, what: &str) -> String {
    let out = run_state(&["wal", "inspect", "--verify"], state);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{what}: {stdout}");
    stdout
}

/// Read a run's stderr `lines` up to and including its `n`-th
/// `[PROCESSED]` line, appending each line read to `log`. False if the
/// stream ended first.
pub fn read_until_processed(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    n: usize,
    log: &mut String,
) -> bool {
    let mut seen = 0;
    for l in lines {
        let l = l.unwrap();
        log.push_str(&l);
        log.push('\n');
        if l.starts_with("[PROCESSED]") {
            seen += 1;
            if seen == n {
                return true;
            }
        }
    }
    false
}

/// `index export` as a map id → (repo/path, sha256).
pub fn export(state: &Path) -> BTreeMap<String, (String, String)> {
    let out = run_state(&["index", "export"], state);
    assert!(out.status.success(), "export failed: {}", text(&out.stderr));
    let mut m = BTreeMap::new();
    for line in text(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("export line is JSON");
        let id = v["id"].as_str().unwrap().to_owned();
        let rp = format!(
            "{}/{}",
            v["repo"].as_str().unwrap(),
            v["path"].as_str().unwrap()
        );
        let sha = v["contentSha256"].as_str().unwrap().to_owned();
        assert!(m.insert(id, (rp, sha)).is_none(), "duplicate object id");
    }
    m
}

/// The repo/path of every object [`export`] lists, sorted.
pub fn exported_paths(state: &Path) -> Vec<String> {
    let mut paths: Vec<String> = export(state).into_values().map(|(p, _)| p).collect();
    paths.sort();
    paths
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// What SPEC.md says the index must hold for `refs` (repo, repo-relative
/// path) given the files under `root`: one object per eligible file.
pub fn expected(
    root: &Path,
    refs: &[(String, String)],
    max: u64,
) -> BTreeMap<String, (String, String)> {
    let mut m = BTreeMap::new();
    let root_c = root.canonicalize().unwrap();
    for (repo, path) in refs {
        let full = root.join(repo).join(path);
        let Ok(c) = full.canonicalize() else { continue };
        if !c.starts_with(&root_c) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&c) else {
            continue;
        };
        if !meta.is_file() || meta.len() > max {
            continue;
        }
        let bytes = std::fs::read(&c).unwrap();
        if bytes[..bytes.len().min(8192)].contains(&0) {
            continue;
        }
        let id = elysiactl::target::object_id(repo, path).to_string();
        m.insert(id, (format!("{repo}/{path}"), sha256_hex(&bytes)));
    }
    m
}

/// A generated tree and a manifest over it, with every kind of line.
pub struct Workload {
    pub root: PathBuf,
    pub manifest: PathBuf,
    pub refs: Vec<(String, String)>,
}

impl Workload {
    /// [`sync`] of this manifest over this tree into `state`.
    pub fn sync(&self, state: &Path, extra: &[&str]) -> Output {
        sync(&self.manifest, &self.root, state, extra)
    }

    /// [`sync_args`] of this manifest over this tree into `state`.
    pub fn sync_args<'a>(&'a self, state: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
        sync_args(&self.manifest, &self.root, state, extra)
    }
}

/// A temp dir holding a [`workload`], and the path of a `state` dir in it.
pub fn temp_workload(
    files: usize,
    lines: usize,
    seed: u64,
) -> (tempfile::TempDir, Workload, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let w = workload(dir.path(), files, lines, seed);
    let state = dir.path().join("state");
    (dir, w, state)
}

/// Make `files` files across 3 repos and a manifest of `lines` lines: adds,
/// updates (some `modify`), deletes of files that are gone and of files that
/// still exist (reconciled), renames, adds of vanished files, binary and
/// oversize files, absolute paths, blank lines.
pub fn workload(dir: &Path, files: usize, lines: usize, seed: u64) -> Workload {
    let root = dir.join("root");
    let repos = ["alpha", "beta", "gamma"];
    let mut rng = Rng(seed | 1);
    let mut live: Vec<(String, String)> = Vec::new();
    for i in 0..files {
        let repo = repos[i % 3];
        let path = format!("src/m{}/f{i}.rs", i % 17);
        let full = root.join(repo).join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        let body = match i % 50 {
            0 => b"bin\0ary".to_vec(),
            1 => vec![b'x'; 3000], // over the 2048-byte limit the tests use
            _ => format!("// file {i}\nfn f{i}() -> u64 {{ {} }}\n", rng.next()).into_bytes(),
        };
        std::fs::write(&full, body).unwrap();
        live.push((repo.to_owned(), path));
    }
    let root_abs = root.canonicalize().unwrap();
    let mut out = String::new();
    let mut refs = Vec::new();
    for n in 0..lines {
        let (repo, path) = live[rng.below(live.len() as u64) as usize].clone();
        let gone = format!("gone/g{}.rs", rng.below(5000));
        let line = match rng.below(20) {
            0..=5 => format!(r#"{{"op":"add","repo":"{repo}","path":"{path}","size":1}}"#),
            6..=8 => format!(r#"{{"op":"update","repo":"{repo}","path":"{path}"}}"#),
            9 => format!(r#"{{"op":"modify","path":"{repo}/{path}"}}"#),
            10 => format!(
                r#"{{"op":"add","path":"{}/{repo}/{path}"}}"#,
                root_abs.display()
            ),
            11..=13 => {
                refs.push((repo.clone(), gone.clone()));
                out.push_str(&format!(
                    r#"{{"op":"delete","repo":"{repo}","path":"{gone}"}}"#
                ));
                out.push('\n');
                continue;
            }
            14 => format!(r#"{{"op":"delete","repo":"{repo}","path":"{path}"}}"#),
            15..=16 => {
                refs.push((repo.clone(), gone.clone()));
                format!(r#"{{"op":"rename","repo":"{repo}","from":"{gone}","path":"{path}"}}"#)
            }
            17 => {
                refs.push((repo.clone(), gone.clone()));
                out.push_str(&format!(
                    r#"{{"op":"add","repo":"{repo}","path":"{gone}"}}"#
                ));
                out.push('\n');
                continue;
            }
            18 => String::new(),
            _ => format!(
                r#"{{"repo":"{repo}","new_changeset":{{"commit":"c{n}","branch":"main"}}}}"#
            ),
        };
        if !line.is_empty() && !line.contains("new_changeset") {
            refs.push((repo, path));
        }
        out.push_str(&line);
        out.push('\n');
    }
    let manifest = dir.join("changes.jsonl");
    std::fs::write(&manifest, out).unwrap();
    refs.sort();
    refs.dedup();
    Workload {
        root,
        manifest,
        refs,
    }
}

/// Write `files` (repo, repo-relative path, content) under `root` and an
/// `add` manifest of them at `manifest`.
pub fn write_corpus(root: &Path, manifest: &Path, files: &[(&str, &str, String)]) {
    let mut lines = String::new();
    for (repo, path, body) in files {
        let p = root.join(repo).join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        let line = serde_json::json!({"op": "add", "repo": repo, "path": path});
        lines.push_str(&format!("{line}\n"));
    }
    std::fs::write(manifest, lines).unwrap();
}

/// A `search --json` hit as `repo/path:start-end [other ranges]`.
pub fn brief(h: &serde_json::Value) -> String {
    let other: Vec<String> = h["other"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}-{}", r["startLine"], r["endLine"]))
        .collect();
    format!(
        "{}/{}:{}-{} [{}]",
        h["repo"].as_str().unwrap(),
        h["path"].as_str().unwrap(),
        h["startLine"],
        h["endLine"],
        other.join(", ")
    )
}
