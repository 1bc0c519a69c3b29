//! Security promises (docs/SECURITY.md): the API key only ever comes from
//! the environment and never shows up in argv, logs, status, metrics or the
//! WAL; the state dir and what elysiactl writes in it are owner-only; a
//! second run on a busy state dir is refused at once.

mod support;

#[allow(unused_imports)]
#[path = "weaviate_support/mod.rs"]
mod wsupport;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

const SECRET: &str = "wk-Sup3rS3cretKey-7f3a9c";

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn the_api_key_never_appears_in_argv_logs_status_metrics_or_the_wal() {
    use wsupport::standin::{Config, Standin};
    let (dir, w, state) = temp_workload(40, 120, 0x5ec);
    let metrics = dir.path().join("metrics.prom");
    let standin = Standin::start(Config {
        api_key: Some(SECRET.into()),
        record: false,
        ..Config::default()
    })
    .unwrap();
    let url = standin.url();
    let sync_weaviate = |batch_size: &str| {
        sync_cmd(
            &w.manifest,
            &w.root,
            &state,
            &weaviate_flags(&url, &metrics, batch_size),
        )
    };

    // The right key (from the environment), watched while it runs: the
    // process's argv never holds it.
    let mut child = sync_weaviate("7")
        .env("WEAVIATE_API_KEY", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    assert!(!contains(&cmdline, SECRET));
    let mut logs = Vec::new();
    child.stderr.take().unwrap().read_to_end_into(&mut logs);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", text(&logs));
    assert!(
        !standin.dump().is_empty(),
        "nothing was written: the key was not used"
    );

    // A wrong key: the 401 is reported without echoing either key.
    let bad = sync_weaviate("5")
        .env("WEAVIATE_API_KEY", "wk-WRONG-0000-secret")
        .output()
        .unwrap();
    assert_ne!(bad.status.code(), Some(0));
    logs.extend_from_slice(&bad.stderr);
    logs.extend_from_slice(&bad.stdout);
    assert!(!contains(&logs, "wk-WRONG-0000-secret"), "{}", text(&logs));

    // No flag takes a key: it is refused as a usage error.
    let flag = run(&[
        "index",
        "sync",
        "--input",
        "x",
        "--weaviate-api-key",
        SECRET,
    ]);
    assert_eq!(flag.status.code(), Some(2));

    let sd = state.to_str().unwrap();
    let mut outputs = logs;
    for a in [
        vec!["index", "sync", "--status", "--state-dir", sd],
        vec!["wal", "inspect", "--json", "--state-dir", sd],
        vec!["wal", "inspect", "--state-dir", sd],
    ] {
        let out = run(&a);
        outputs.extend_from_slice(&out.stdout);
        outputs.extend_from_slice(&out.stderr);
    }
    assert!(!contains(&outputs, SECRET), "the key leaked into output");
    for (p, bytes) in files_with_bytes(&state)
        .into_iter()
        .chain([(metrics.clone(), std::fs::read(&metrics).unwrap())])
    {
        assert!(
            !contains(&bytes, SECRET),
            "the key leaked into {}",
            p.display()
        );
    }
    // The checks can fail: the key is findable where it is.
    assert!(contains(format!("Bearer {SECRET}").as_bytes(), SECRET));
}

trait ReadAll {
    fn read_to_end_into(&mut self, buf: &mut Vec<u8>);
}

impl<R: std::io::Read> ReadAll for R {
    fn read_to_end_into(&mut self, buf: &mut Vec<u8>) {
        let _ = self.read_to_end(buf);
    }
}

#[test]
fn the_state_dir_is_owner_only_and_so_is_what_elysiactl_writes_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let w = workload(dir.path(), 40, 120, 0x700);
    let state = dir.path().join("new").join("state");
    // A piped manifest is spooled into the state dir: it must be private too.
    let manifest = std::fs::read(&w.manifest).unwrap();
    let out = sync_stdin(&manifest, &w.root, &state, &["--max-file-size", "2048"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700, "state dir");
    let mut checked = 0;
    let mut stack = vec![state.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                stack.push(p);
            } else if !p.starts_with(state.join("index")) {
                // The WAL, the lock, spooled manifests. (The embedded index's
                // own files are made by tantivy; they sit in a 0700 directory.)
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "only {checked} files checked");
    assert!(state.join("wal").is_dir() && state.join("lock").is_file());
}

#[test]
fn a_second_run_on_a_busy_state_dir_is_refused_at_once_and_the_first_finishes() {
    let (_dir, w, state) = temp_workload(150, 500, 0x10c);
    let args = w.sync_args(&state, &["--batch-size", "5", "--max-file-size", "2048"]);
    let mut first = cmd(&args).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    assert!(read_until_processed(&mut lines, 1, &mut String::new()));
    let t = Instant::now();
    let second = run(&args);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the second run waited"
    );
    let err = text(&second.stderr);
    assert_ne!(second.status.code(), Some(0), "{err}");
    assert!(
        err.contains("another elysiactl run holds the state dir"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    for l in lines {
        let _ = l;
    }
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(export(&state), expected(&w.root, &w.refs, 2048));
}
