//! The ordered checkpoint, through the real binary against the stand-in:
//! with several batches in flight completing out of order, a SIGKILL and a
//! restart neither skip a batch nor redo one that was recorded done.
//!
//! The first run is killed mid-way; its WAL (`wal inspect --json`) says which
//! byte ranges were recorded done, and must show a done range beyond a gap
//! (out-of-order completion really happened and was recorded — otherwise the
//! attempt proves nothing and is repeated with another seed and more
//! jitter). The restarted run must then send, according to the stand-in's
//! batch log, every object of every line outside those ranges (nothing
//! skipped) and no object that only lines inside them name (nothing redone);
//! batches that were in flight but not recorded may be sent again. And what
//! run 1 recorded done was really applied: each of those objects was in a
//! request the stand-in answered before the kill.

#[path = "weaviate_support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::e2e::*;
use support::standin::{Config, Faults, Rng, Standin};
use uuid::Uuid;

const ATTEMPTS: u64 = 8;

#[test]
fn kill_and_restart_with_out_of_order_completion_neither_skip_nor_redo_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let Shared { root, manifest, w } = shared_workload(2000);
    let args = ["--concurrency", "4", "--batch-size", "10"];
    let mut rng = Rng::new(0x0D0E);

    for attempt in 0..ATTEMPTS {
        let state = dir.path().join(format!("state{attempt}"));
        let si = Standin::start(Config {
            record: false,
            log_batches: true,
            seed: 100 + attempt,
            ..Config::default()
        })
        .unwrap();
        seed_stale(&si.url(), &w.stale);
        let mark0 = si.mark();
        // Random per-request latency: batches complete out of order.
        si.set_faults(Faults {
            latency_ms: 2,
            jitter_ms: 40 + 20 * attempt,
            ..Faults::default()
        });

        // Run 1 is killed at the first moment, after a random 50..300 ms,
        // when its progress lines (printed right after each WAL record)
        // show a batch recorded beyond one still missing.
        let min = Duration::from_millis(50 + rng.below(250));
        let started = std::time::Instant::now();
        let mut recorded: Vec<(u64, u64)> = Vec::new();
        let trigger = move |line: &str| {
            let Some(r) = progress_range(line) else {
                return false;
            };
            recorded.push(r);
            recorded.sort();
            let mut prefix = 0;
            for &(a, b) in &recorded {
                if a > prefix + 1 {
                    return started.elapsed() >= min;
                }
                prefix = prefix.max(b);
            }
            false
        };
        let cmd = sync_command_verbose(&si.url(), &root, &state, &manifest, &args);
        let killed_after;
        let killed_at = match kill_when(cmd, trigger, Duration::ZERO) {
            Life::Killed(at) => {
                killed_after = at - started;
                si.clock_us(at)
            }
            Life::Ended(code, err) => {
                eprintln!("attempt {attempt}: run 1 ended (exit {code}) before the kill; again");
                assert!(code == 0, "run 1 failed: {err}");
                continue;
            }
        };
        // Requests the dead process had already written may still be read
        // by the stand-in; let them land before the marker.
        std::thread::sleep(Duration::from_millis(300));

        let run1 = done_batches(&state);
        let done = merge(run1.iter().flat_map(|b| b.spans.iter().copied()));
        let beyond_gap = done.iter().any(|s| s.start > 0);
        let inversions = run1.windows(2).filter(|p| p[0].seq > p[1].seq).count();
        if !beyond_gap {
            eprintln!(
                "attempt {attempt}: the WAL holds only a contiguous prefix ({done:?}, {} \
                 batches, {inversions} out of order); again with more jitter",
                run1.len()
            );
            continue;
        }

        // Recorded done means applied: every object of a line recorded done
        // was in a request of run 1 answered (applied) before the kill.
        let mark = si.mark();
        let acked: BTreeSet<Uuid> = si
            .batches_since(mark0)
            .into_iter()
            .filter(|b| b.seq <= mark && b.fault == "none")
            .filter(|b| b.answered_us.is_some_and(|t| t <= killed_at))
            .flat_map(|b| b.ids)
            .collect();
        let done_lines = lines_in(&done);
        let unacked: Vec<(u64, Uuid)> = done_lines
            .iter()
            .flat_map(|&line| {
                w.line_ids[line as usize - 1]
                    .iter()
                    .map(move |id| (line, *id))
            })
            .filter(|(_, id)| !acked.contains(id))
            .collect();
        assert!(
            unacked.is_empty(),
            "run 1 recorded {} line(s) done whose objects no request answered before the kill, \
             e.g. (line, id) {:?}",
            unacked.len(),
            &unacked[..unacked.len().min(5)]
        );

        // Run 2, to the end; the stand-in logs what it sends.
        let (code, err) = run_to_end(
            sync_command(&si.url(), &root, &state, &manifest, &args),
            Duration::from_secs(60),
        );
        assert_eq!(code, 0, "run 2: {err}");
        let sent: BTreeSet<Uuid> = si
            .batches_since(mark)
            .into_iter()
            .flat_map(|b| b.ids)
            .collect();

        let mut owed: BTreeMap<Uuid, u64> = BTreeMap::new(); // id → a line not done
        for (i, ids) in w.line_ids.iter().enumerate() {
            let line = i as u64 + 1;
            if !done_lines.contains(&line) {
                for id in ids {
                    owed.entry(*id).or_insert(line);
                }
            }
        }
        assert!(
            !owed.is_empty(),
            "run 1 was killed after it recorded everything"
        );
        // (a) Nothing skipped: every object of a line not recorded done is sent.
        let skipped: Vec<_> = owed.iter().filter(|(id, _)| !sent.contains(id)).collect();
        assert!(
            skipped.is_empty(),
            "run 2 skipped {} object(s) of lines not recorded done, e.g. (id, line) {:?}; \
             done spans {done:?}",
            skipped.len(),
            &skipped[..skipped.len().min(5)]
        );
        // (b) Nothing redone: no object that only done lines name is sent.
        let mut redone = Vec::new();
        for (i, ids) in w.line_ids.iter().enumerate() {
            let line = i as u64 + 1;
            if done_lines.contains(&line) {
                redone.extend(
                    ids.iter()
                        .filter(|id| sent.contains(id) && !owed.contains_key(id))
                        .map(|id| (line, *id)),
                );
            }
        }
        assert!(
            redone.is_empty(),
            "run 2 resent {} object(s) of lines recorded done before the kill, e.g. (line, id) \
             {:?}; done spans {done:?}",
            redone.len(),
            &redone[..redone.len().min(5)]
        );
        // The WAL agrees: run 2 recorded exactly the ranges run 1 had not.
        let all = done_batches(&state);
        let run1_id = run1.first().map(|b| b.run_id).unwrap_or(0);
        let run2: Vec<DoneSpan> = all
            .iter()
            .filter(|b| b.run_id > run1_id)
            .flat_map(|b| b.spans.iter().copied())
            .collect();
        let run2_lines = lines_in(&merge(run2.iter().copied()));
        let overlap: Vec<_> = run2_lines.intersection(&done_lines).take(5).collect();
        assert!(
            overlap.is_empty(),
            "run 2 recorded lines run 1 had recorded: {overlap:?}"
        );
        let total = w.line_ids.len() as u64;
        let covered = done_lines.len() + run2_lines.len();
        assert_eq!(
            covered as u64, total,
            "run 1 and run 2 together recorded {covered} of {total} lines"
        );
        // And the index is exactly right.
        assert_index_equals(&si, &w.expected, "after kill and restart");
        eprintln!(
            "attempt {attempt}: killed after {:?} with {} batches recorded ({inversions} \
             out of order), done spans {done:?}; run 2 sent {} objects, all owed, none redone",
            killed_after,
            run1.len(),
            sent.len()
        );
        return;
    }
    panic!("no attempt in {ATTEMPTS} left a done range beyond a gap in the WAL");
}
