//! Applying a batch to the target with retries: full-jitter exponential
//! backoff, honouring the server's Retry-After, up to `--max-retries` for
//! transient failures whatever `--on-error` says. Objects the server
//! refused because of a rate limit are the exception: they do not use up
//! `--max-retries` and are retried until the batch has been throttled for
//! `--rate-limit-patience` without a break.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::target::weaviate::classify::{is_rate_limited_message, rate_limit_hint};
use crate::target::{Error, Op, OpOutcome, Target};

use super::pace::{self, Pacer};

/// Longest backoff between two rounds of a batch that is only throttled
/// (the provider's own hint, when longer, wins).
const RATE_LIMIT_BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
        }
    }
}

/// A small xorshift generator: jitter needs no cryptographic randomness.
pub struct Jitter(u64);

impl Jitter {
    pub fn new() -> Self {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Jitter(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// Full jitter: uniform in [0, min(cap, base·2^attempt)], but never less
    /// than the server's Retry-After.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, j: &mut Jitter) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.cap);
        let ms = exp.as_millis() as u64;
        let d = Duration::from_millis(if ms == 0 { 0 } else { j.next() % (ms + 1) });
        match retry_after {
            Some(ra) => d.max(ra.min(self.cap.max(ra))),
            None => d,
        }
    }
}

/// What waiting out rate limits cost a run, added up by every worker, and
/// the pacing every worker keeps to.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Files refused for a rate limit (one refused in three rounds counts
    /// three; two lines of one file in a batch count once a round).
    pub rate_limited: AtomicU64,
    /// Milliseconds batches waited between throttled rounds and for their
    /// turn at the paced rate (summed over the batches in flight).
    pub throttled_ms: AtomicU64,
    /// The send rate learnt from the provider, shared by every batch.
    pub pacer: Arc<Pacer>,
    /// The batches allowed at the target now, and the fewest of the run
    /// (0: not known yet).
    pub in_flight_limit: AtomicU64,
    pub lowest_in_flight_limit: AtomicU64,
}

impl Throttle {
    /// Fresh counts for one batch, pacing with the run's pacer.
    pub fn for_batch(&self) -> Throttle {
        Throttle {
            pacer: Arc::clone(&self.pacer),
            ..Throttle::default()
        }
    }

    /// The permits' limit changed to (or stayed at) `n`.
    pub fn note_in_flight_limit(&self, n: usize) {
        let n = n as u64;
        self.in_flight_limit.store(n, Ordering::Relaxed);
        let _ =
            self.lowest_in_flight_limit
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                    (l == 0 || n < l).then_some(n)
                });
    }

    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Add another's counts to these.
    pub fn add(&self, other: &Throttle) {
        self.rate_limited
            .fetch_add(other.rate_limited(), Ordering::Relaxed);
        self.throttled_ms.fetch_add(
            other.throttled_ms.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    pub fn throttled_secs(&self) -> f64 {
        self.throttled_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Everything at once, for progress lines and metrics.
    pub fn reading(&self) -> ThrottleReading {
        ThrottleReading {
            rate_limited: self.rate_limited(),
            throttled_ms: self.throttled_ms.load(Ordering::Relaxed),
            pace_per_sec: self.pacer.rate(),
            lowest_pace_per_sec: self.pacer.lowest(),
            in_flight_limit: self.in_flight_limit.load(Ordering::Relaxed),
            lowest_in_flight_limit: self.lowest_in_flight_limit.load(Ordering::Relaxed),
        }
    }
}

/// A [`Throttle`] read at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThrottleReading {
    pub rate_limited: u64,
    pub throttled_ms: u64,
    /// The send rate, objects per second (`None`: not paced).
    pub pace_per_sec: Option<f64>,
    pub lowest_pace_per_sec: Option<f64>,
    /// Batches allowed at the target (0: no batch sent yet).
    pub in_flight_limit: u64,
    pub lowest_in_flight_limit: u64,
}

/// How a batch ended.
#[derive(Debug)]
pub enum Applied {
    /// One outcome per op.
    Done(Vec<OpOutcome>),
    /// The target cannot go on (unreachable after retries, or broken).
    Fatal(Error),
}

/// Apply `ops`, retrying transient failures (whole-batch or per-op) up to
/// `max_retries` times. A per-op failure whose message names a rate limit
/// does not count: it is retried (waiting at least the wait the message asks
/// for) until the batch has been throttled for `patience` without a round
/// free of rate limits, and then fails as a retryable (transient) failure.
/// A `patience` of zero makes rate limits ordinary transient failures.
pub fn apply_with_retries(
    target: &dyn Target,
    ops: &[Op],
    max_retries: u32,
    backoff: Backoff,
    patience: Duration,
    throttle: &Throttle,
) -> Applied {
    if ops.is_empty() {
        return Applied::Done(Vec::new());
    }
    let mut jitter = Jitter::new();
    let mut outcomes: Vec<Option<OpOutcome>> = vec![None; ops.len()];
    let mut pending: Vec<usize> = (0..ops.len()).collect();
    // Rounds so far (the backoff's exponent), and those that used up
    // `--max-retries` (any but a round where only rate limits failed).
    let mut round: u32 = 0;
    let mut attempt: u32 = 0;
    let mut throttled_since: Option<Instant> = None;
    let pacing = !patience.is_zero();
    loop {
        // Paced, a round holds no more than the rate lets through in a
        // window: a batch larger than the provider's allowance would
        // otherwise be refused in part however long it waited for its turn.
        let take = match throttle.pacer.budget().filter(|_| pacing) {
            Some(budget) => {
                let mut w = 0;
                let n = pending
                    .iter()
                    .take_while(|&&i| {
                        w += pace::weight(&ops[i]);
                        w <= budget
                    })
                    .count();
                n.max(1)
            }
            None => pending.len(),
        };
        let later = pending.split_off(take);
        if pacing {
            let n = pending.iter().map(|&i| pace::weight(&ops[i])).sum();
            let waited = throttle.pacer.wait(n);
            throttle
                .throttled_ms
                .fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
        }
        let sent = Instant::now();
        let result = if pending.len() == ops.len() {
            target.apply(ops)
        } else {
            let sub: Vec<Op> = pending.iter().map(|&i| ops[i].clone()).collect();
            target.apply(&sub)
        };
        let mut retry_after = None;
        let exhausted = attempt >= max_retries;
        let patient = !patience.is_zero() && throttled_since.is_none_or(|t| t.elapsed() < patience);
        // What this round saw: objects refused for a rate limit (with the
        // longest wait asked for), and other failures worth retrying.
        let mut throttled: Option<Option<Duration>> = None;
        let mut other_retry = false;
        // The batch was throttled past the patience: what it has not sent
        // yet fails with what it sent.
        let mut gave_up: Option<OpOutcome> = None;
        match result {
            Ok(outs) if outs.len() == pending.len() => {
                if pacing {
                    let (ok, refused) = pace::tally(
                        pending.iter().map(|&i| &ops[i]),
                        &outs,
                        |o| matches!(o, OpOutcome::Failed { retryable: true, message } if is_rate_limited_message(message)),
                    );
                    throttle.pacer.observe(sent, ok, refused);
                }
                let mut still = Vec::new();
                // Two lines of one file in a batch are one object sent once:
                // its refusal counts once.
                let mut counted = std::collections::HashSet::new();
                for (&i, o) in pending.iter().zip(outs) {
                    match o {
                        OpOutcome::Failed {
                            retryable: true,
                            message,
                        } if pacing && is_rate_limited_message(&message) => {
                            if counted.insert(ops[i].id()) {
                                throttle.rate_limited.fetch_add(1, Ordering::Relaxed);
                            }
                            if patient {
                                let hint = throttled.flatten().max(rate_limit_hint(&message));
                                throttled = Some(hint);
                                still.push(i);
                            } else {
                                let failed = OpOutcome::Failed {
                                    retryable: true,
                                    message: format!(
                                        "{message} (still rate limited after --rate-limit-patience {})",
                                        crate::util::format_duration(patience)
                                    ),
                                };
                                gave_up.get_or_insert_with(|| failed.clone());
                                outcomes[i] = Some(failed);
                            }
                        }
                        OpOutcome::Failed {
                            retryable: true, ..
                        } if !exhausted => {
                            other_retry = true;
                            still.push(i);
                        }
                        other => outcomes[i] = Some(other),
                    }
                }
                pending = still;
                if throttled.is_some() {
                    throttled_since.get_or_insert_with(Instant::now);
                } else {
                    throttled_since = None;
                }
            }
            Ok(outs) => {
                let msg = format!(
                    "target answered {} results for {} objects",
                    outs.len(),
                    pending.len()
                );
                other_retry = true;
                if exhausted {
                    fail_all(&mut outcomes, &pending, false, &msg);
                    pending.clear();
                }
            }
            Err(e) if e.is_retryable() && !exhausted => {
                other_retry = true;
                retry_after = e.retry_after();
            }
            Err(e) if e.is_fatal() => return Applied::Fatal(e),
            Err(e) => {
                fail_all(&mut outcomes, &pending, e.is_retryable(), &e.to_string());
                pending.clear();
            }
        }
        // What this round did not send goes after what it must send again
        // (the manifest's order within the batch is kept: a refused op
        // always precedes the later ops it was read before).
        let clean = pending.is_empty();
        match gave_up {
            Some(failed) => later
                .iter()
                .for_each(|&i| outcomes[i] = Some(failed.clone())),
            None => pending.extend(later),
        }
        if pending.is_empty() {
            break;
        }
        if clean && throttled.is_none() && !other_retry {
            // Only the rest of a paced batch is left: its turn is the wait.
            continue;
        }
        let wait = match throttled {
            // Only throttled, and told how long: that wait plus up to as much
            // again, so the batches in flight do not come back together.
            Some(Some(hint)) if !other_retry => {
                let span = hint.max(backoff.base).as_millis() as u64;
                hint + Duration::from_millis(jitter.next() % (span + 1))
            }
            Some(None) if !other_retry => Backoff {
                base: backoff.base,
                cap: backoff.cap.min(RATE_LIMIT_BACKOFF_CAP),
            }
            .delay(round, None, &mut jitter),
            hint => backoff.delay(round, retry_after.max(hint.flatten()), &mut jitter),
        };
        if throttled.is_some() {
            throttle
                .throttled_ms
                .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
        }
        std::thread::sleep(wait);
        round = round.saturating_add(1);
        if other_retry {
            attempt += 1;
        }
    }
    Applied::Done(
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(OpOutcome::Failed {
                    retryable: false,
                    message: "no result".into(),
                })
            })
            .collect(),
    )
}

fn fail_all(outcomes: &mut [Option<OpOutcome>], idx: &[usize], retryable: bool, msg: &str) {
    for &i in idx {
        outcomes[i] = Some(OpOutcome::Failed {
            retryable,
            message: msg.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A scripted target: its first `outages` calls fail the whole batch
    /// (503), its first `limited` calls refuse every op with a rate limit,
    /// and with `refuse_first` the first op of every batch is refused with
    /// a rate limit for good. Records each call's batch size.
    #[derive(Default)]
    struct Scripted {
        outages: Mutex<u32>,
        limited: Mutex<u32>,
        refuse_first: bool,
        calls: Mutex<Vec<usize>>,
    }

    impl Scripted {
        /// Batch sizes of the calls so far.
        fn calls(&self) -> Vec<usize> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Target for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn prepare(&self) -> Result<(), Error> {
            Ok(())
        }
        fn list_repo(&self, _: &str) -> Result<Vec<String>, Error> {
            Ok(Vec::new())
        }
        fn export(&self, _: bool) -> Result<Vec<crate::target::Exported>, Error> {
            Ok(Vec::new())
        }
        fn apply(&self, ops: &[Op]) -> Result<Vec<OpOutcome>, Error> {
            self.calls.lock().unwrap().push(ops.len());
            let mut f = self.outages.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(Error::Transient {
                    message: "503".into(),
                    retry_after: None,
                });
            }
            let mut l = self.limited.lock().unwrap();
            let limited = *l > 0;
            *l = l.saturating_sub(1);
            let refused = |message: &str| OpOutcome::Failed {
                retryable: true,
                message: message.into(),
            };
            Ok((0..ops.len())
                .map(|i| {
                    if limited {
                        refused("Rate limit reached. Please try again in 1ms.")
                    } else if i == 0 && self.refuse_first {
                        refused("rate limit")
                    } else {
                        OpOutcome::Ok
                    }
                })
                .collect())
        }
    }

    /// Refuses every op with a rate limit for its first `limited` calls.
    fn throttled(limited: u32) -> Scripted {
        Scripted {
            limited: Mutex::new(limited),
            ..Scripted::default()
        }
    }

    fn del(n: u8) -> Op {
        Op::Delete {
            id: uuid::Uuid::from_bytes([n; 16]),
            repo: "r".into(),
            path: format!("{n}"),
        }
    }

    #[test]
    fn transient_failures_are_retried_up_to_max_then_reported() {
        // Two whole-batch outages; the first op always fails with a rate limit.
        let t = Scripted {
            outages: Mutex::new(2),
            refuse_first: true,
            ..Scripted::default()
        };
        let ops = vec![del(1), del(2), del(3)];
        let Applied::Done(out) =
            apply_with_retries(&t, &ops, 4, FAST, Duration::ZERO, &Throttle::default())
        else {
            panic!("fatal")
        };
        assert!(matches!(out[0], OpOutcome::Failed { .. }));
        assert!(out[1].is_ok() && out[2].is_ok());
        // 2 whole-batch failures, then 3 ops, then only the failing op twice.
        assert_eq!(t.calls(), vec![3, 3, 3, 1, 1]);
    }

    const FAST: Backoff = Backoff {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
    };

    #[test]
    fn rate_limits_do_not_use_up_max_retries_within_the_patience() {
        let t = throttled(10);
        // Two lines of one file (the same object, sent once) and another.
        let ops = vec![del(1), del(1), del(2)];
        let throttle = Throttle::default();
        let Applied::Done(out) =
            apply_with_retries(&t, &ops, 1, FAST, Duration::from_secs(3600), &throttle)
        else {
            panic!("fatal")
        };
        assert!(out.iter().all(OpOutcome::is_ok), "{out:?}");
        assert_eq!(t.calls().len(), 11);
        // Ten refused rounds of two objects each.
        assert_eq!(throttle.rate_limited(), 20);
        assert!(throttle.throttled_secs() > 0.0);
    }

    #[test]
    fn zero_patience_makes_rate_limits_ordinary_transient_failures() {
        let t = throttled(10);
        let ops = vec![del(1)];
        let Applied::Done(out) =
            apply_with_retries(&t, &ops, 2, FAST, Duration::ZERO, &Throttle::default())
        else {
            panic!("fatal")
        };
        assert!(matches!(
            out[0],
            OpOutcome::Failed {
                retryable: true,
                ..
            }
        ));
        assert_eq!(t.calls().len(), 3);
    }

    #[test]
    fn throttling_past_the_patience_fails_the_objects_as_transient() {
        let t = throttled(u32::MAX);
        let ops = vec![del(1), del(2)];
        let Applied::Done(out) = apply_with_retries(
            &t,
            &ops,
            0,
            FAST,
            Duration::from_millis(20),
            &Throttle::default(),
        ) else {
            panic!("fatal")
        };
        for o in &out {
            let OpOutcome::Failed { retryable, message } = o else {
                panic!("{o:?}")
            };
            assert!(
                *retryable && message.contains("--rate-limit-patience 20ms"),
                "{message}"
            );
        }
        assert!(t.calls().len() > 1);
    }

    #[test]
    fn backoff_honours_retry_after_and_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        let mut j = Jitter::new();
        for attempt in 0..30 {
            assert!(b.delay(attempt, None, &mut j) <= Duration::from_secs(1));
        }
        let ra = Duration::from_secs(3);
        assert!(b.delay(0, Some(ra), &mut j) >= ra);
    }
}
