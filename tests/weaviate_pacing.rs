//! Pacing under the embedding provider's rate limit (issue 16): the real
//! binary against the stand-in's vectorizer quota (a token bucket of N
//! objects per second; the excess objects FAILED with OpenAI's rate-limit
//! message). Objects refused for a rate limit do not use up
//! `--max-retries`: the run waits them out, up to `--rate-limit-patience` of
//! continuous throttling per batch, and fails them (transient, retried by the
//! next run) only past it.

#[path = "weaviate_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::e2e::*;
use support::standin::faults::Bucket;
use support::standin::{Config, Faults, Rng, Standin};

const LIMIT: Duration = Duration::from_secs(300);

fn quota(per_sec: u32) -> Faults {
    Faults {
        vectorizer_quota_per_sec: per_sec,
        ..Faults::default()
    }
}

/// A stand-in holding the workload's stale objects, then under `faults`.
fn standin(w: &Workload, faults: Faults) -> Standin {
    let si = Standin::start(Config {
        record: false,
        ..Config::default()
    })
    .unwrap();
    seed_stale(&si.url(), &w.stale);
    si.set_faults(faults);
    si
}

fn quota_refusals(si: &Standin) -> u64 {
    si.stats().injected.get("quota").copied().unwrap_or(0)
}

#[test]
fn the_quota_bucket_lets_its_rate_through_per_second_and_names_the_wait() {
    let t0 = Instant::now();
    let mut b = Bucket::default();
    for _ in 0..10 {
        assert_eq!(b.take(10, t0), Ok(()));
    }
    let wait = b.take(10, t0).unwrap_err();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    // 250 ms later: two tokens back, not three.
    let later = t0 + Duration::from_millis(250);
    assert_eq!(b.take(10, later), Ok(()));
    assert_eq!(b.take(10, later), Ok(()));
    assert!(b.take(10, later).is_err());
    // Off never refuses.
    assert_eq!(b.take(0, later), Ok(()));
}

#[test]
fn under_a_quota_well_below_the_send_rate_the_run_waits_it_out_with_no_failed_item_while_zero_patience_fails_items(
) {
    let Shared { root, manifest, w } = shared_workload(400);
    let args = [
        "--concurrency",
        "4",
        "--batch-size",
        "20",
        "--max-retries",
        "3",
    ];

    // Pacing: every object the quota refused was waited out in the run.
    let si = standin(&w, quota(50));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let metrics = dir.path().join("sync.prom");
    let mut paced = args.to_vec();
    paced.extend(["--metrics-file", metrics.to_str().unwrap()]);
    let (code, err) = run_to_end(
        sync_command_verbose(&si.url(), &root, &state, &manifest, &paced),
        LIMIT,
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("[FAILED]"), "{err}");
    assert!(err.contains(" 0 failed"), "{err}");
    let refused = quota_refusals(&si);
    assert!(
        refused > 0,
        "the quota never refused an object: the test tested nothing"
    );
    // The metrics count every refusal the run waited out.
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let value = |name: &str| -> f64 {
        prom.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {prom}"))
    };
    assert_eq!(
        value("elysiactl_sync_rate_limited_objects_total"),
        refused as f64
    );
    assert!(
        value("elysiactl_sync_throttled_seconds_total") > 0.0,
        "{prom}"
    );
    // The send rate was learnt, and batches were held back below
    // --concurrency 4 at some point.
    let paced = value("elysiactl_sync_paced_objects_per_second_lowest");
    assert!(paced > 0.0, "{prom}");
    let fewest = value("elysiactl_sync_in_flight_limit_lowest");
    assert!((1.0..4.0).contains(&fewest), "{prom}");
    // The progress lines say when and how hard the run was throttled, and
    // their counts add up to the run's; the summary names the total.
    let mut said = 0;
    for line in err.lines().filter(|l| l.starts_with("[PROCESSED] ")) {
        if let Some((_, t)) = line.split_once("; throttled: ") {
            let n: u64 = t
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{line}"));
            assert!(t.contains("s waited"), "{line}");
            said += n;
        }
    }
    assert_eq!(said, refused, "{err}");
    assert!(
        err.contains(&format!("0 failed; throttled: {refused} rate-limited, ")),
        "{err}"
    );
    assert_index_equals(&si, &w.expected, "paced run under a 50/s quota");

    // The same run with rate limits as ordinary transient failures (today's
    // rule before pacing): --max-retries 3 runs out, items fail, exit 1.
    let si = standin(&w, quota(50));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut unpaced = args.to_vec();
    unpaced.extend(["--rate-limit-patience", "0s"]);
    let (code, err) = run_to_end(
        sync_command_verbose(&si.url(), &root, &state, &manifest, &unpaced),
        LIMIT,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[FAILED] line "), "{err}");
    assert!(err.to_ascii_lowercase().contains("rate limit"), "{err}");
}

#[test]
fn a_quota_that_never_clears_fails_the_objects_after_the_patience_and_the_next_run_ends_exact() {
    let Shared { root, manifest, w } = shared_workload(40);
    // Every object refused for a rate limit (a quota spent for longer than
    // the run: paced as slowly as it may be, nothing gets through).
    let si = standin(
        &w,
        Faults {
            p_object_fail: 1.0,
            ..Faults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = [
        "--concurrency",
        "2",
        "--batch-size",
        "20",
        "--rate-limit-patience",
        "2s",
    ];
    let (code, err) = run_to_end(
        sync_command_verbose(&si.url(), &root, &state, &manifest, &args),
        LIMIT,
    );
    assert_eq!(code, 1, "{err}");
    let failed = err
        .lines()
        .find(|l| l.starts_with("[FAILED] line "))
        .unwrap_or_else(|| panic!("no [FAILED] line: {err}"));
    assert!(
        failed.contains("Rate limit reached") && failed.contains("--rate-limit-patience 2s"),
        "{failed}"
    );

    // The quota lifted: the next run retries the failed lines and the index
    // is exactly the manifest's.
    si.set_faults(Faults::default());
    let (code, err) = run_to_end(
        sync_command_verbose(&si.url(), &root, &state, &manifest, &args),
        LIMIT,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("failed line(s) to retry"), "{err}");
    assert_index_equals(&si, &w.expected, "after the quota was lifted");
}

#[test]
fn sigkills_while_throttled_by_the_quota_end_exact() {
    const KILLS: usize = 10;
    let Shared { root, manifest, w } = shared_workload(400);
    let si = standin(&w, quota(10));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = ["--concurrency", "4", "--batch-size", "20"];
    let mut rng = Rng::new(0x9ACE);
    let mut kills = 0;
    while kills < KILLS {
        let refused = quota_refusals(&si);
        let delay = Duration::from_millis(rng.below(400));
        let cmd = sync_command_verbose(&si.url(), &root, &state, &manifest, &args);
        match kill_at(cmd, true, delay) {
            Life::Killed(_) => kills += 1,
            Life::Ended(code, err) => {
                panic!(
                    "the run ended (exit {code}) before SIGKILL {}: {err}",
                    kills + 1
                )
            }
        }
        assert!(
            quota_refusals(&si) > refused,
            "life {kills} was never throttled: the kill did not land during throttling"
        );
    }
    let runs = sync_until_clean(
        || sync_command(&si.url(), &root, &state, &manifest, &args),
        3,
        "after SIGKILLs under the quota",
    );
    assert_eq!(runs.len(), 1, "rate limits alone should fail no item");
    assert_index_equals(&si, &w.expected, "after SIGKILLs under the quota");
}
