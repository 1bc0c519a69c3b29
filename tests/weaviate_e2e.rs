//! End to end: the real `elysiactl index sync --target weaviate` binary
//! against the in-process stand-in, under injected faults and SIGKILLs.

#[path = "weaviate_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use elysiactl::target::{object_id, Op, Target};
use sha2::{Digest, Sha256};
use support::standin::{Config, Faults, Standin};
use uuid::Uuid;

const C: &str = "SRC_ENTERPRISE__";
const REPOS: usize = 5;

fn repo(i: usize) -> String {
    format!("R{}", i % REPOS)
}

fn content(kind: &str, i: usize) -> String {
    format!("// {kind} file {i}\nfn f{i}() -> usize {{ {i} }}\n")
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Files on disk, a 10,000-line manifest, and the objects the index must
/// hold at the end: id → (repo, path, sha).
struct Workload {
    manifest: String,
    expected: BTreeMap<Uuid, (String, String, String)>,
    /// Objects to put in the index first, so deletes and renames remove something.
    stale: Vec<(String, String)>,
}

fn build_workload(root: &Path) -> Workload {
    let mut lines = Vec::new();
    let mut expected = BTreeMap::new();
    let mut stale = Vec::new();
    let write = |repo: &str, path: &str, text: &str| {
        let p = root.join(repo).join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    };
    for i in 0..7000 {
        let (r, p) = (repo(i), format!("src/m{}/a{i}.rs", i % 23));
        let text = content("a", i);
        write(&r, &p, &text);
        expected.insert(
            object_id(&r, &p),
            (r.clone(), p.clone(), sha(text.as_bytes())),
        );
        lines.push(format!(r#"{{"op":"add","repo":"{r}","path":"{p}"}}"#));
        if i < 1000 {
            lines.push(format!(r#"{{"op":"update","repo":"{r}","path":"{p}"}}"#));
        }
    }
    for i in 0..1000 {
        let (r, p) = (repo(i), format!("gone/d{i}.py"));
        stale.push((r.clone(), p.clone()));
        lines.push(format!(
            r#"{{"op":"delete","repo":"{r}","path":"{p}","size":0}}"#
        ));
    }
    for i in 0..500 {
        let (r, from, to) = (repo(i), format!("old/o{i}.rs"), format!("new/n{i}.rs"));
        let text = content("n", i);
        write(&r, &to, &text);
        stale.push((r.clone(), from.clone()));
        expected.insert(
            object_id(&r, &to),
            (r.clone(), to.clone(), sha(text.as_bytes())),
        );
        lines.push(format!(
            r#"{{"op":"rename","repo":"{r}","from":"{from}","path":"{to}"}}"#
        ));
    }
    for i in 0..500 {
        // An add for a file that vanished: disk wins, no object.
        let (r, p) = (repo(i), format!("vanished/v{i}.rs"));
        lines.push(format!(r#"{{"op":"add","repo":"{r}","path":"{p}"}}"#));
    }
    assert_eq!(lines.len(), 10_000);
    // Deterministic shuffle so batches mix every kind of op.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..lines.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lines.swap(i, (x % (i as u64 + 1)) as usize);
    }
    Workload {
        manifest: lines.join("\n") + "\n",
        expected,
        stale,
    }
}

fn seed_stale(url: &str, stale: &[(String, String)]) {
    let t = support::target(url, C);
    t.prepare().unwrap();
    let ops: Vec<Op> = stale
        .iter()
        .map(|(r, p)| Op::Upsert(support::doc(r, p, 0)))
        .collect();
    for b in ops.chunks(500) {
        assert!(t.apply(b).unwrap().iter().all(|o| o.is_ok()));
    }
}

fn sync_command(url: &str, root: &Path, state: &Path, manifest: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_elysiactl"));
    cmd.args([
        "index",
        "sync",
        "--target",
        "weaviate",
        "--weaviate-url",
        url,
    ])
    .args(["--collection", C, "--concurrency", "4", "--timeout", "5"])
    .args(["--max-retries", "25", "--retry-base-ms", "5", "--quiet"])
    .arg("--root")
    .arg(root)
    .arg("--state-dir")
    .arg(state)
    .arg("--input")
    .arg(manifest)
    .env_remove("WEAVIATE_API_KEY")
    .env_remove("ELYSIACTL_WEAVIATE_URL")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

/// Wait at most `limit`; None if still running then.
fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

fn assert_index_equals(si: &Standin, expected: &BTreeMap<Uuid, (String, String, String)>) {
    let got: BTreeMap<Uuid, (String, String, String)> = si
        .dump()
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
        .collect();
    let missing = expected.keys().filter(|k| !got.contains_key(k)).count();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, _)| !expected.contains_key(k))
        .take(3)
        .collect();
    let stale = expected
        .iter()
        .filter(|(k, v)| got.get(k).is_some_and(|g| g != *v))
        .count();
    assert!(
        missing == 0 && extra.is_empty() && stale == 0,
        "missing {missing}, extra {extra:?}, stale {stale}; want {} got {}",
        expected.len(),
        got.len()
    );
}

#[test]
fn ten_thousand_lines_under_faults_and_sigkills_leave_the_exact_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let manifest = dir.path().join("changes.jsonl");
    let w = build_workload(&root);
    std::fs::write(&manifest, &w.manifest).unwrap();

    let si = Standin::start(Config {
        record: false,
        seed: 11,
        ..Config::default()
    })
    .unwrap();
    seed_stale(&si.url(), &w.stale);
    si.set_faults(Faults {
        latency_ms: 2,
        jitter_ms: 20,
        p429: 0.1,
        retry_after_secs: 0,
        p500: 0.03,
        p503: 0.03,
        p_drop: 0.05,
        p_apply_drop: 0.1,
        p_object_fail: 0.1,
        all_endpoints: false,
    });

    // Kill the run mid-flight a few times; each restart resumes from the WAL.
    let mut killed_mid_run = 0;
    for kill_after_ms in [250u64, 600, 400] {
        let mut child = sync_command(&si.url(), &root, &state, &manifest)
            .spawn()
            .unwrap();
        match wait_for(&mut child, Duration::from_millis(kill_after_ms)) {
            None => {
                child.kill().unwrap(); // SIGKILL
                let _ = child.wait();
                killed_mid_run += 1;
            }
            Some(status) => {
                let err = stderr_of(&mut child);
                assert!(status.success(), "run ended early with {status}: {err}");
            }
        }
    }
    assert!(killed_mid_run >= 1, "no SIGKILL landed mid-run");

    let mut child = sync_command(&si.url(), &root, &state, &manifest)
        .spawn()
        .unwrap();
    let status = wait_for(&mut child, Duration::from_secs(150));
    let err = stderr_of(&mut child);
    if status.is_none() {
        let _ = child.kill();
        panic!("final run did not finish: {err}");
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    let stats = si.stats();
    for kind in ["429", "drop", "apply_then_drop", "object_fail"] {
        assert!(
            stats.injected.get(kind).copied().unwrap_or(0) > 0,
            "{kind} never injected: {stats:?}"
        );
    }
    assert_index_equals(&si, &w.expected);

    // Running the same manifest again changes nothing.
    si.set_faults(Faults::default());
    let before = si.dump();
    let out = sync_command(&si.url(), &root, &state, &manifest)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(si.dump(), before);
}

#[test]
fn unreachable_weaviate_exits_3_naming_the_url_and_a_later_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let manifest = dir.path().join("changes.jsonl");
    let mut text = String::new();
    let mut expected = BTreeMap::new();
    for i in 0..50 {
        let (r, p) = (repo(i), format!("f{i}.rs"));
        let body = content("u", i);
        std::fs::create_dir_all(root.join(&r)).unwrap();
        std::fs::write(root.join(&r).join(&p), &body).unwrap();
        expected.insert(
            object_id(&r, &p),
            (r.clone(), p.clone(), sha(body.as_bytes())),
        );
        text.push_str(&format!(r#"{{"op":"add","repo":"{r}","path":"{p}"}}"#));
        text.push('\n');
    }
    std::fs::write(&manifest, text).unwrap();

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = format!("http://127.0.0.1:{port}");
    let out = sync_command(&dead, &root, &state, &manifest)
        .env("WEAVIATE_API_KEY", "SECRET-e2e-key")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&dead), "{err}");
    assert!(!err.contains("SECRET"), "{err}");

    let si = Standin::start(Config::default()).unwrap();
    let status = sync_command(&si.url(), &root, &state, &manifest)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_index_equals(&si, &expected);
}

#[test]
fn target_weaviate_without_url_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(&manifest, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_elysiactl"))
        .args(["index", "sync", "--target", "weaviate", "--input"])
        .arg(&manifest)
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .env_remove("ELYSIACTL_WEAVIATE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
