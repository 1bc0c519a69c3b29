//! A permanent refusal of the target ends the run with exit 3 under every
//! `--on-error`, `retry` included (it once retried a deleted collection
//! forever).

#[path = "weaviate_support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;
use support::e2e::*;
use support::standin::{Config, Faults, Standin};
use support::Raw;

/// A stand-in that records nothing, with `faults`.
fn standin(faults: Faults) -> Standin {
    let si = Standin::start(Config {
        record: false,
        ..Config::default()
    })
    .unwrap();
    si.set_faults(faults);
    si
}

#[test]
fn a_collection_deleted_mid_run_ends_the_run_with_exit_3_under_every_on_error() {
    let Shared { root, manifest, .. } = shared_workload(2000);
    for on_error in ["retry", "continue", "stop"] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let si = standin(Faults {
            latency_ms: 5,
            ..Faults::default()
        });
        let mut cmd = sync_command_verbose(
            &si.url(),
            &root,
            &state,
            &manifest,
            &[
                "--on-error",
                on_error,
                "--batch-size",
                "10",
                "--concurrency",
                "2",
            ],
        );
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = String::new();
        for l in lines.by_ref() {
            let l = l.unwrap();
            log.push_str(&l);
            log.push('\n');
            if is_progress(&l) {
                break;
            }
        }
        let raw = Raw::new(&si.url(), HeaderMap::new());
        let (code, body) = raw.status(Method::DELETE, &format!("/v1/schema/{C}"), None);
        assert_eq!(code, 200, "{body}");
        let reader = std::thread::spawn(move || {
            let mut rest = String::new();
            for l in lines.map_while(Result::ok) {
                rest.push_str(&l);
                rest.push('\n');
            }
            rest
        });
        let status = wait_for(&mut child, Duration::from_secs(90));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        log.push_str(&reader.join().unwrap_or_default());
        let status = status.unwrap_or_else(|| panic!("--on-error {on_error}: never ended: {log}"));
        assert_eq!(status.code(), Some(3), "--on-error {on_error}: {log}");
        assert!(
            log.contains("collection does not exist"),
            "--on-error {on_error}: {log}"
        );
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_elysiactl"))
            .args(["index", "sync", "--status", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        assert_eq!(st["status"], "failed", "{st}");
    }
}

#[test]
fn on_error_retry_lines_name_the_error_and_the_wait() {
    let Shared { root, manifest, .. } = shared_workload(200);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let si = standin(Faults {
        p_object_fail: 0.3,
        ..Faults::default()
    });
    let cmd = sync_command_verbose(
        &si.url(),
        &root,
        &state,
        &manifest,
        &[
            "--on-error",
            "retry",
            "--max-retries",
            "0",
            // Rate limits as ordinary transient failures: with patience they
            // would be waited out inside the batch, and no line refused.
            "--rate-limit-patience",
            "0s",
            "--batch-size",
            "20",
        ],
    );
    let (code, err) = run_to_end(cmd, Duration::from_secs(120));
    assert_eq!(code, 0, "{err}");
    let retry = err
        .lines()
        .find(|l| l.starts_with("[RETRY]"))
        .unwrap_or_else(|| panic!("no [RETRY] line: {err}"));
    assert!(retry.contains("refused by the index ("), "{retry}");
    assert!(retry.to_ascii_lowercase().contains("rate limit"), "{retry}");
    assert!(retry.contains("retrying the batch in "), "{retry}");
    assert!(retry.contains("attempt 1"), "{retry}");
}
