//! The secrets elysiactl holds for Weaviate (the API key, provider keys,
//! URL credentials) never leave the Weaviate target, even when the server or
//! a proxy in front of it quotes the request's headers in its errors: not in
//! stderr, the WAL, the failed-run file, `wal inspect`, `--status`,
//! `index failures` or the metrics file (docs/SECURITY.md, *Secrets*).

mod support;

#[allow(unused_imports)]
#[path = "weaviate_support/mod.rs"]
mod wsupport;

use std::path::Path;

use base64::Engine;
use support::*;
use wsupport::standin::{Config, Faults, Standin};

const KEY: &str = "wk-Ech0edK3y-b1c2d3e4f5";
const WRONG_KEY: &str = "wk-WR0NG-Echoed-a9b8c7";
const PROVIDER_KEY: &str = "sk-PR0VIDER-openai-e5f6a7";
const URL_PASSWORD: &str = "pw-URLPASS-c4d5e6";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_echoed_by_the_server_never_reach_stderr_state_status_failures_or_metrics() {
    let (dir, w, state) = temp_workload(40, 120, 0xec40);
    let state_url = dir.path().join("state-url");
    let metrics = dir.path().join("metrics.prom");
    // A leaky proxy: every error reply and every per-object failure quotes
    // the request's headers, Authorization and X-OpenAI-Api-Key included.
    let standin = Standin::start(Config {
        api_key: Some(KEY.into()),
        record: false,
        faults: Faults {
            echo_headers: true,
            p_object_reject: 0.3,
            p500: 0.2,
            ..Faults::default()
        },
        ..Config::default()
    })
    .unwrap();
    let url = standin.url();
    let url_with_credentials = url.replacen("http://", &format!("http://alice:{URL_PASSWORD}@"), 1);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{URL_PASSWORD}"));
    let sync_run = |url: &str, state: &Path, key: &str| {
        sync_cmd(
            &w.manifest,
            &w.root,
            state,
            &weaviate_flags(url, &metrics, "7"),
        )
        .env("WEAVIATE_API_KEY", key)
        .env("OPENAI_APIKEY", PROVIDER_KEY)
        .output()
        .unwrap()
    };

    let mut seen = Vec::new();
    // 1. The right key: per-object rejections and whole-batch 500s, each
    //    quoting the headers, become failed items.
    let out = sync_run(&url, &state, KEY);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    seen.extend_from_slice(&out.stderr);
    seen.extend_from_slice(&out.stdout);
    // 2. A wrong key: the 401 quotes it; the run is fatal (failed-run file).
    let out = sync_run(&url, &state, WRONG_KEY);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    seen.extend_from_slice(&out.stderr);
    // 3. Credentials in the URL: sent as Basic auth, quoted by the 401.
    let out = sync_run(&url_with_credentials, &state_url, KEY);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    seen.extend_from_slice(&out.stderr);

    let mut reports = Vec::new();
    for sd in [&state, &state_url] {
        let sd = sd.to_str().unwrap();
        for args in [
            vec!["wal", "inspect", "--json", "--state-dir", sd],
            vec!["wal", "inspect", "--state-dir", sd],
            vec!["index", "sync", "--status", "--state-dir", sd],
            vec!["index", "failures", "--json", "--state-dir", sd],
        ] {
            let out = run(&args);
            reports.extend_from_slice(&out.stdout);
            reports.extend_from_slice(&out.stderr);
        }
    }
    seen.extend_from_slice(&reports);
    let mut files = files_with_bytes(&state);
    files.extend(files_with_bytes(&state_url));
    assert!(
        files.iter().any(|(p, _)| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("failed-run-"))),
        "the fatal runs left no failed-run file"
    );
    files.push((metrics.clone(), std::fs::read(&metrics).unwrap()));

    for secret in [KEY, WRONG_KEY, PROVIDER_KEY, URL_PASSWORD, basic.as_str()] {
        assert!(
            !contains(&seen, secret.as_bytes()),
            "{secret} leaked into output:\n{}",
            text(&seen)
        );
        for (p, bytes) in &files {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "{secret} leaked into {}",
                p.display()
            );
        }
    }

    // The checks above can fail: the replies did quote the secrets, and
    // what was recorded of them is redacted.
    let failures = run_state(&["index", "failures", "--json"], &state);
    let failures = text(&failures.stdout);
    assert!(
        failures.contains("request headers") && failures.contains("<redacted>"),
        "no echoed failure recorded: {failures}"
    );
    let all = text(&seen);
    for echoed in [
        "authorization: Bearer <redacted>",
        "authorization: Basic <redacted>",
        "x-openai-api-key: <redacted>",
    ] {
        assert!(all.contains(echoed), "no {echoed:?} in:\n{all}");
    }
}
