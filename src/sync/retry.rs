//! Applying a batch to the target with retries: full-jitter exponential
//! backoff, honouring the server's Retry-After, up to `--max-retries` for
//! transient failures whatever `--on-error` says.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::target::{Error, Op, OpOutcome, Target};

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

/// How a batch ended.
#[derive(Debug)]
pub enum Applied {
    /// One outcome per op.
    Done(Vec<OpOutcome>),
    /// The target cannot go on (unreachable after retries, or broken).
    Fatal(Error),
}

/// Apply `ops`, retrying transient failures (whole-batch or per-op) up to
/// `max_retries` times.
pub fn apply_with_retries(
    target: &dyn Target,
    ops: &[Op],
    max_retries: u32,
    backoff: Backoff,
) -> Applied {
    if ops.is_empty() {
        return Applied::Done(Vec::new());
    }
    let mut jitter = Jitter::new();
    let mut outcomes: Vec<Option<OpOutcome>> = vec![None; ops.len()];
    let mut pending: Vec<usize> = (0..ops.len()).collect();
    let mut attempt: u32 = 0;
    loop {
        let result = if pending.len() == ops.len() {
            target.apply(ops)
        } else {
            let sub: Vec<Op> = pending.iter().map(|&i| ops[i].clone()).collect();
            target.apply(&sub)
        };
        let mut retry_after = None;
        let exhausted = attempt >= max_retries;
        match result {
            Ok(outs) if outs.len() == pending.len() => {
                let mut still = Vec::new();
                for (&i, o) in pending.iter().zip(outs) {
                    match o {
                        OpOutcome::Failed {
                            retryable: true, ..
                        } if !exhausted => still.push(i),
                        other => outcomes[i] = Some(other),
                    }
                }
                pending = still;
            }
            Ok(outs) => {
                let msg = format!(
                    "target answered {} results for {} objects",
                    outs.len(),
                    pending.len()
                );
                if exhausted {
                    fail_all(&mut outcomes, &pending, false, &msg);
                    pending.clear();
                }
            }
            Err(e) if e.is_retryable() && !exhausted => retry_after = e.retry_after(),
            Err(e) if e.is_fatal() => return Applied::Fatal(e),
            Err(e) => {
                fail_all(&mut outcomes, &pending, e.is_retryable(), &e.to_string());
                pending.clear();
            }
        }
        if pending.is_empty() {
            break;
        }
        std::thread::sleep(backoff.delay(attempt, retry_after, &mut jitter));
        attempt += 1;
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

    struct Flaky {
        fail_first: Mutex<u32>,
        calls: Mutex<Vec<usize>>,
    }

    impl Target for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
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
            let mut f = self.fail_first.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(Error::Transient {
                    message: "503".into(),
                    retry_after: None,
                });
            }
            // The first op always fails with a rate limit.
            Ok(ops
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    if i == 0 {
                        OpOutcome::Failed {
                            retryable: true,
                            message: "rate limit".into(),
                        }
                    } else {
                        OpOutcome::Ok
                    }
                })
                .collect())
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
        let t = Flaky {
            fail_first: Mutex::new(2),
            calls: Mutex::new(Vec::new()),
        };
        let fast = Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let ops = vec![del(1), del(2), del(3)];
        let Applied::Done(out) = apply_with_retries(&t, &ops, 4, fast) else {
            panic!("fatal")
        };
        assert!(matches!(out[0], OpOutcome::Failed { .. }));
        assert!(out[1].is_ok() && out[2].is_ok());
        // 2 whole-batch failures, then 3 ops, then only the failing op twice.
        assert_eq!(*t.calls.lock().unwrap(), vec![3, 3, 3, 1, 1]);
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
