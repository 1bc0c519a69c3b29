//! For the end-to-end tests: a generated workload (files on disk, a manifest
//! of adds, updates, deletes and renames, the objects the index must hold at
//! the end), the real `elysiactl` binary, and readers of its WAL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use elysiactl::target::{object_id, Op, Target};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::standin::Standin;

pub const C: &str = "SRC_ENTERPRISE__";
const REPOS: usize = 5;

pub fn repo(i: usize) -> String {
    format!("R{}", i % REPOS)
}

pub fn content(kind: &str, i: usize) -> String {
    format!("// {kind} file {i}\nfn f{i}() -> usize {{ {i} }}\n")
}

pub fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// id → (repo, path, contentSha256).
pub type Expected = BTreeMap<Uuid, (String, String, String)>;

/// Files on disk, a manifest, and the objects the index must hold at the end.
pub struct Workload {
    pub manifest: String,
    pub expected: Expected,
    /// Objects to put in the index first, so deletes and renames remove something.
    pub stale: Vec<(String, String)>,
    /// Per manifest line (index 0 is line 1): the object ids it touches.
    pub line_ids: Vec<Vec<Uuid>>,
    /// Per manifest line: its byte range.
    pub line_spans: Vec<(u64, u64)>,
}

/// [`generate`] `n` lines and write their files under `root`.
pub fn build_workload(root: &Path, n: usize) -> Workload {
    let (w, files) = generate(n);
    write_files(root, &files);
    w
}

/// A fresh temp dir and the paths in it of a `root`, a `state` dir and a
/// manifest `changes.jsonl` (none made yet): (dir, root, state, manifest).
pub fn scratch() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (root, state, manifest) = (path("root"), path("state"), path("changes.jsonl"));
    (dir, root, state, manifest)
}

/// [`build_workload`] of `n` lines under `root`, its manifest written to
/// `manifest`.
pub fn write_workload(root: &Path, manifest: &Path, n: usize) -> Workload {
    let w = build_workload(root, n);
    std::fs::write(manifest, &w.manifest).unwrap();
    w
}

fn write_files(root: &Path, files: &[(String, String)]) {
    let mut made = BTreeSet::new();
    for (rel, text) in files {
        let p = root.join(rel);
        let parent = p.parent().unwrap().to_path_buf();
        if made.insert(parent.clone()) {
            std::fs::create_dir_all(&parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
    }
}

/// A generated workload whose files (and manifest, `changes.jsonl`) live in
/// a directory shared by every test and every run: writing 8,000 files
/// takes seconds on a busy disk, and they are only read.
pub struct Shared {
    pub root: std::path::PathBuf,
    pub manifest: std::path::PathBuf,
    pub w: Workload,
}

/// The workload of `n` lines in `$CARGO_TARGET_TMPDIR/weaviate-workload-N`,
/// written once: a marker holding the manifest's SHA-256 says the directory
/// is complete and current; otherwise it is rebuilt in a sibling and renamed
/// into place (so concurrent test processes never see half of it).
pub fn shared_workload(n: usize) -> Shared {
    let (w, files) = generate(n);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("weaviate-workload-{n}"));
    let marker = sha(w.manifest.as_bytes());
    let current = |d: &Path| std::fs::read_to_string(d.join("complete")).is_ok_and(|m| m == marker);
    // One builder per process; the others wait and then find it current.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    if !current(&dir) {
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".weaviate-workload-{n}-"))
            .tempdir_in(base)
            .unwrap();
        write_files(&tmp.path().join("root"), &files);
        std::fs::write(tmp.path().join("changes.jsonl"), &w.manifest).unwrap();
        std::fs::write(tmp.path().join("complete"), &marker).unwrap();
        if dir.exists() && !current(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
        }
        match std::fs::rename(tmp.path(), &dir) {
            Ok(()) => {
                let _ = tmp.keep();
            }
            // Another process published it first; ours is removed on drop.
            Err(_) => assert!(current(&dir), "cannot publish {}", dir.display()),
        }
    }
    Shared {
        root: dir.join("root"),
        manifest: dir.join("changes.jsonl"),
        w,
    }
}

/// `n` lines (a multiple of 20), shuffled: 70 % adds, 10 % updates of added
/// files, 10 % deletes of stale objects, 5 % renames of stale objects, 5 %
/// adds of files that do not exist (disk wins: no object). Also returns the
/// files to write: (path under the root, content).
pub fn generate(n: usize) -> (Workload, Vec<(String, String)>) {
    assert_eq!(n % 20, 0, "workload size must be a multiple of 20");
    let (adds, updates, deletes, renames, vanished) = (n * 7 / 10, n / 10, n / 10, n / 20, n / 20);
    let mut lines: Vec<(String, Vec<Uuid>)> = Vec::new();
    let mut expected = BTreeMap::new();
    let mut stale = Vec::new();
    let mut files = Vec::new();
    let mut write = |repo: &str, path: &str, text: &str| {
        files.push((format!("{repo}/{path}"), text.to_string()));
    };
    for i in 0..adds {
        let (r, p) = (repo(i), format!("src/m{}/a{i}.rs", i % 23));
        let text = content("a", i);
        write(&r, &p, &text);
        let id = object_id(&r, &p);
        expected.insert(id, (r.clone(), p.clone(), sha(text.as_bytes())));
        lines.push((
            format!(r#"{{"op":"add","repo":"{r}","path":"{p}"}}"#),
            vec![id],
        ));
        if i < updates {
            lines.push((
                format!(r#"{{"op":"update","repo":"{r}","path":"{p}"}}"#),
                vec![id],
            ));
        }
    }
    for i in 0..deletes {
        let (r, p) = (repo(i), format!("gone/d{i}.py"));
        stale.push((r.clone(), p.clone()));
        lines.push((
            format!(r#"{{"op":"delete","repo":"{r}","path":"{p}","size":0}}"#),
            vec![object_id(&r, &p)],
        ));
    }
    for i in 0..renames {
        let (r, from, to) = (repo(i), format!("old/o{i}.rs"), format!("new/n{i}.rs"));
        let text = content("n", i);
        write(&r, &to, &text);
        stale.push((r.clone(), from.clone()));
        let id = object_id(&r, &to);
        expected.insert(id, (r.clone(), to.clone(), sha(text.as_bytes())));
        lines.push((
            format!(r#"{{"op":"rename","repo":"{r}","from":"{from}","path":"{to}"}}"#),
            vec![object_id(&r, &from), id],
        ));
    }
    for i in 0..vanished {
        let (r, p) = (repo(i), format!("vanished/v{i}.rs"));
        lines.push((
            format!(r#"{{"op":"add","repo":"{r}","path":"{p}"}}"#),
            vec![object_id(&r, &p)],
        ));
    }
    assert_eq!(lines.len(), n);
    // Deterministic shuffle so batches mix every kind of op.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..lines.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lines.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut manifest = String::new();
    let mut line_spans = Vec::new();
    for (text, _) in &lines {
        let start = manifest.len() as u64;
        manifest.push_str(text);
        manifest.push('\n');
        line_spans.push((start, manifest.len() as u64));
    }
    let w = Workload {
        manifest,
        expected,
        stale,
        line_ids: lines.into_iter().map(|(_, ids)| ids).collect(),
        line_spans,
    };
    (w, files)
}

/// Store the stale objects (fault-free), so deletes and renames have work.
pub fn seed_stale(url: &str, stale: &[(String, String)]) {
    let t = super::target(url, C);
    t.prepare().unwrap();
    let ops: Vec<Op> = stale
        .iter()
        .map(|(r, p)| Op::Upsert(super::doc(r, p, 0)))
        .collect();
    for b in ops.chunks(500) {
        assert!(t.apply(b).unwrap().iter().all(|o| o.is_ok()));
    }
}

/// `elysiactl index sync --target weaviate` with fast backoff (1 ms base),
/// `--quiet` and `extra` flags (batch size, concurrency, retries …).
pub fn sync_command(
    url: &str,
    root: &Path,
    state: &Path,
    manifest: &Path,
    extra: &[&str],
) -> Command {
    let mut cmd = sync_command_verbose(url, root, state, manifest, extra);
    cmd.arg("--quiet");
    cmd
}

/// [`sync_command`] without `--quiet`: a `[PROCESSED]` line per batch.
pub fn sync_command_verbose(
    url: &str,
    root: &Path,
    state: &Path,
    manifest: &Path,
    extra: &[&str],
) -> Command {
    sync_into(url, C, "5", root, state, manifest, extra)
}

/// `elysiactl index sync --target weaviate` into `collection`, `timeout`
/// seconds a request, fast backoff (1 ms base) and `extra` flags; stdin and
/// stdout null, stderr piped, no key, URL or state dir from the environment.
pub fn sync_into(
    url: &str,
    collection: &str,
    timeout: &str,
    root: &Path,
    state: &Path,
    manifest: &Path,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_elysiactl"));
    cmd.args([
        "index",
        "sync",
        "--target",
        "weaviate",
        "--weaviate-url",
        url,
    ])
    .args(["--collection", collection, "--timeout", timeout])
    .args(["--retry-base-ms", "1"])
    .args(extra)
    .arg("--root")
    .arg(root)
    .arg("--state-dir")
    .arg(state)
    .arg("--input")
    .arg(manifest)
    .env_remove("WEAVIATE_API_KEY")
    .env_remove("ELYSIACTL_WEAVIATE_URL")
    .env_remove("ELYSIACTL_STATE_DIR")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

/// Wait at most `limit`; None if still running then.
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// How a life of the binary ended under [`kill_at`].
#[derive(Debug)]
pub enum Life {
    /// SIGKILLed; the instant is taken just before the signal.
    Killed(Instant),
    /// It exited on its own first: exit code and stderr.
    Ended(i32, String),
}

/// Spawn `cmd` (made by [`sync_command_verbose`]), wait until it has
/// recorded its first batch (its first `[PROCESSED]`/`[RETRIED]` line; the
/// line follows the WAL record) when `after_first_batch`, then `delay` more,
/// and SIGKILL it.
pub fn kill_at(cmd: Command, after_first_batch: bool, delay: Duration) -> Life {
    kill_when(
        cmd,
        move |line| !after_first_batch || is_progress(line),
        delay,
    )
}

/// A line a run prints right after it records a batch done.
pub fn is_progress(line: &str) -> bool {
    line.starts_with("[PROCESSED]") || line.starts_with("[RETRIED]")
}

/// The line range of a `[PROCESSED] Line A-B: …` line.
pub fn progress_range(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("[PROCESSED] Line ")?;
    let (range, _) = rest.split_once(':')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Spawn `cmd` (made by [`sync_command_verbose`]), wait until `trigger`
/// accepts one of its stderr lines (it is also asked once with "" at
/// start), then `delay` more, and SIGKILL it.
pub fn kill_when(
    mut cmd: Command,
    mut trigger: impl FnMut(&str) -> bool + Send + 'static,
    delay: Duration,
) -> Life {
    let mut child = cmd.spawn().expect("spawn elysiactl");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut pipe = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        let mut tx = Some(tx);
        if trigger("") {
            tx = None;
        }
        for line in std::io::BufReader::new(&mut pipe).lines() {
            let Ok(line) = line else { break };
            if tx.is_some() && trigger(&line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    // Either the trigger fired, or the process ended (the pipe closed).
    let _ = rx.recv_timeout(Duration::from_secs(60));
    if let Some(status) = wait_for(&mut child, delay) {
        let err = reader.join().unwrap_or_default();
        return Life::Ended(status.code().unwrap_or(-1), err);
    }
    let at = Instant::now();
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let _ = reader.join();
    Life::Killed(at)
}

/// One run to its end (at most `limit`): exit code and stderr.
pub fn run_to_end(mut cmd: Command, limit: Duration) -> (i32, String) {
    let mut child = cmd.spawn().expect("spawn elysiactl");
    // Read stderr on the side so a chatty run cannot block on a full pipe.
    let mut pipe = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let status = wait_for(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let err = reader.join().unwrap_or_default();
    match status {
        Some(s) => (s.code().unwrap_or(-1), err),
        None => panic!("elysiactl did not finish within {limit:?}: {err}"),
    }
}

/// Run the sync until it exits 0, at most `max_runs` times. Exit 1 (some
/// items failed, e.g. retries exhausted under faults) is allowed before
/// that: the next run of the same manifest retries those items. Returns
/// each run's exit code and stderr.
pub fn sync_until_clean(
    mut make: impl FnMut() -> Command,
    max_runs: usize,
    what: &str,
) -> Vec<(i32, String)> {
    let mut runs = Vec::new();
    for _ in 0..max_runs {
        let (code, err) = run_to_end(make(), Duration::from_secs(120));
        let done = code == 0;
        assert!(
            code == 0 || code == 1,
            "{what}: run {} exited {code}: {err}",
            runs.len() + 1
        );
        runs.push((code, err));
        if done {
            return runs;
        }
    }
    let last = runs.last().map(|r| r.1.as_str()).unwrap_or("");
    panic!("{what}: still not clean after {max_runs} runs; last stderr: {last}");
}

/// What the stand-in holds, in the shape of [`Expected`].
pub fn index_of(si: &Standin) -> Expected {
    si.dump()
        .into_iter()
        .map(|d| {
            (
                d.id,
                (
                    d.repo.unwrap_or_default(),
                    d.path.unwrap_or_default(),
                    d.content_sha256.unwrap_or_default(),
                ),
            )
        })
        .collect()
}

pub fn assert_index_equals(si: &Standin, expected: &Expected, what: &str) {
    let got = index_of(si);
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, _)| !got.contains_key(k))
        .take(3)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, _)| !expected.contains_key(k))
        .take(3)
        .collect();
    let stale: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(k).is_some_and(|g| g != *v))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && stale.is_empty(),
        "{what}: the index is not the expected set: missing {missing:?}, extra {extra:?}, \
         stale {stale:?}; want {} objects, got {}",
        expected.len(),
        got.len()
    );
}

/// A byte range of the manifest recorded as done (`BatchDone.spans`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DoneSpan {
    pub start: u64,
    pub end: u64,
    pub first_line: u64,
    pub next_line: u64,
}

/// A `BatchDone` record as `wal inspect --json` prints it.
#[derive(Debug, Clone)]
pub struct DoneBatch {
    pub run_id: u64,
    pub seq: u64,
    pub spans: Vec<DoneSpan>,
}

/// Every record of the state dir's WAL (`elysiactl wal inspect --json`),
/// and how many torn tails it reported.
pub fn wal_records(state: &Path) -> (Vec<serde_json::Value>, usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_elysiactl"))
        .args(["wal", "inspect", "--json", "--state-dir"])
        .arg(state)
        .output()
        .expect("wal inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "wal inspect: {text}");
    let mut records = Vec::new();
    let mut torn = 0;
    for line in text.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => records.push(v),
            Err(_) if line.starts_with("torn tail") => torn += 1,
            Err(_) if line.starts_with("no WAL segments") => {}
            Err(e) => panic!("wal inspect printed {line:?}: {e}"),
        }
    }
    (records, torn)
}

/// The `BatchDone` records of the WAL, in log order.
pub fn done_batches(state: &Path) -> Vec<DoneBatch> {
    let (records, _) = wal_records(state);
    records
        .iter()
        .filter(|r| r["type"] == "BatchDone")
        .map(|r| {
            let rec = &r["record"];
            let n = |v: &serde_json::Value| v.as_u64().expect("a number");
            DoneBatch {
                run_id: n(&rec["run_id"]),
                seq: n(&rec["seq"]),
                spans: rec["spans"]
                    .as_array()
                    .expect("spans")
                    .iter()
                    .map(|s| DoneSpan {
                        start: n(&s["start"]),
                        end: n(&s["end"]),
                        first_line: n(&s["first_line"]),
                        next_line: n(&s["next_line"]),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Spans sorted and merged where they touch or overlap.
pub fn merge(spans: impl IntoIterator<Item = DoneSpan>) -> Vec<DoneSpan> {
    let mut all: Vec<DoneSpan> = spans.into_iter().collect();
    all.sort();
    let mut out: Vec<DoneSpan> = Vec::new();
    for s in all {
        match out.last_mut() {
            Some(last) if s.start <= last.end => {
                if s.end > last.end {
                    last.end = s.end;
                    last.next_line = s.next_line;
                }
            }
            _ => out.push(s),
        }
    }
    out
}

/// Lines (1-based) inside `spans`.
pub fn lines_in(spans: &[DoneSpan]) -> BTreeSet<u64> {
    spans
        .iter()
        .flat_map(|s| s.first_line..s.next_line)
        .collect()
}
