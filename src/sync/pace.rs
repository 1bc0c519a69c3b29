//! Pacing the objects sent while the target's vectorizer is rate limited: a
//! send rate shared by every worker, learnt from what the provider let
//! through, so that objects are not sent only to be refused.
//!
//! Nothing is paced until the provider refuses more than [`TOLERATED`] of
//! what is sent (over at least [`SAMPLE`] objects or a whole [`WINDOW`]): a
//! flaky vectorizer that refuses a few objects whatever the rate must not
//! slow the run. From then on the rate is what the provider accepted a
//! second (this window, or the last whole one), less a tenth: a first guess
//! until a round sent after those refusals comes back (so that every round
//! in flight with them is counted), then settled. Then, window after window
//! (about a second each): a window refusing more than the tolerated share
//! multiplies the rate by the share accepted, less a twentieth (a share, not
//! objects per second, so that a window holding one batch more than the
//! next does not swing the rate); any other window raises it by a hundredth
//! while it is within nine tenths of the rate last found allowed, by a tenth
//! when further below (probing, so a quota that grows is found again,
//! without the overshoot a provider's bucket invites: full after a slow
//! spell, it lets a rate above its own through for a while before it
//! refuses). A window refused almost whole lowers the rate, not the rate to
//! climb back to (a per-minute quota spent, not a slower provider).
//!
//! Sends keep to the rate: a round of `n` objects starts `n / rate` seconds
//! after the one before it, whichever worker sends it; refused objects push
//! the next send back by their own turn (the allowance is spent; they go
//! again); and [`Pacer::budget`] keeps a round within what the rate lets
//! through in a window. What the provider counts is objects (chunks), so
//! the weights are the chunks of each upserted file; deletes are never
//! paced.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::target::{Op, OpOutcome};

/// How long the pacer watches before it changes the rate.
pub const WINDOW: Duration = Duration::from_secs(1);
/// The slowest it paces, in objects per second.
const FLOOR: f64 = 0.5;
/// Refusals of at most this share of what is sent are not acted on: a
/// provider that refuses a few objects whatever the rate (a flaky
/// vectorizer) must not slow the run down, and a window of a few hundred
/// objects varies by some percent by chance.
pub const TOLERATED: f64 = 0.15;
/// The objects seen before a share is trusted (or a whole window).
const SAMPLE: u64 = 200;

/// The shared send rate (see the module docs).
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Objects per second; `None` until a rate limit was met.
    rate: Option<f64>,
    /// When the next send may start.
    next_free: Instant,
    /// The current window: its start, and the objects accepted and refused
    /// in it.
    since: Instant,
    accepted: u64,
    refused: u64,
    /// The lowest rate of the run.
    lowest: Option<f64>,
    /// When the first object was refused (the rate is set once a round
    /// sent after it comes back, so every round in flight then is counted).
    limited: Option<Instant>,
    /// The rate is a first guess, made at the first refusal before the
    /// rounds in flight with it were back.
    provisional: bool,
    /// The rate the provider was last found to allow.
    ceiling: Option<f64>,
    /// Objects accepted a second in the last whole window before pacing.
    last_window_rate: f64,
}

impl Default for Pacer {
    fn default() -> Self {
        let now = Instant::now();
        Pacer {
            state: Mutex::new(State {
                rate: None,
                next_free: now,
                since: now,
                accepted: 0,
                refused: 0,
                lowest: None,
                limited: None,
                provisional: false,
                ceiling: None,
                last_window_rate: 0.0,
            }),
        }
    }
}

/// What the provider counts of an op: every chunk of an upsert, nothing of
/// a delete.
pub fn weight(op: &Op) -> u64 {
    match op {
        Op::Upsert(d) => d.chunks.len().max(1) as u64,
        Op::Delete { .. } => 0,
    }
}

impl Pacer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The send rate now, objects per second (`None`: not paced).
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// The most objects one round may send now: what the rate lets through
    /// in a [`WINDOW`] (`None`: not paced).
    pub fn budget(&self) -> Option<u64> {
        self.lock()
            .rate
            .map(|r| (r * WINDOW.as_secs_f64()).ceil().max(1.0) as u64)
    }

    /// The lowest rate of the run (`None`: never paced).
    pub fn lowest(&self) -> Option<f64> {
        self.lock().lowest
    }

    /// Wait for the turn of `n` objects; returns how long it waited.
    pub fn wait(&self, n: u64) -> Duration {
        let until = {
            let mut st = self.lock();
            let Some(rate) = st.rate else {
                return Duration::ZERO;
            };
            if n == 0 {
                return Duration::ZERO;
            }
            let now = Instant::now();
            let start = st.next_free.max(now);
            st.next_free = start + Duration::from_secs_f64(n as f64 / rate);
            start
        };
        let wait = until.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        wait
    }

    /// A round sent at `sent` came back: `accepted` objects written,
    /// `refused` refused for a rate limit. A round sent before the rate last
    /// changed says nothing of the new rate and is not counted (the burst
    /// that met the limit first must not bring the rate down twice).
    pub fn observe(&self, sent: Instant, accepted: u64, refused: u64) {
        self.observe_at(sent, accepted, refused, Instant::now());
    }

    fn observe_at(&self, sent: Instant, accepted: u64, refused: u64, now: Instant) {
        let mut st = self.lock();
        if !st.provisional && st.rate.is_some() && sent < st.since {
            return;
        }
        st.accepted += accepted;
        st.refused += refused;
        let elapsed = now.saturating_duration_since(st.since);
        let seen = st.accepted + st.refused;
        let share = if seen == 0 {
            0.0
        } else {
            st.refused as f64 / seen as f64
        };
        // What the provider accepted a second: this window's, or the last
        // whole one's when this one has only begun.
        let measured = ((st.accepted as f64 / elapsed.max(WINDOW).as_secs_f64())
            .max(st.last_window_rate)
            * 0.9)
            .max(FLOOR);
        let rate = match (st.rate, st.limited) {
            // Too few objects yet to tell a share (the first round of a
            // flaky provider can refuse a fifth by chance).
            (None, _)
                if refused == 0 || share <= TOLERATED || (seen < SAMPLE && elapsed < WINDOW) =>
            {
                if elapsed >= WINDOW {
                    st.last_window_rate = st.accepted as f64 / elapsed.as_secs_f64();
                    (st.since, st.accepted, st.refused) = (now, 0, 0);
                }
                return;
            }
            (None, _) => {
                // The first refusals: paced at once on what is known, and
                // settled when the rounds in flight with them are back.
                (st.rate, st.limited, st.provisional) = (Some(measured), Some(now), true);
                return;
            }
            (Some(_), Some(t)) if st.provisional => {
                st.rate = Some(measured);
                if sent < t && now.saturating_duration_since(t) < WINDOW {
                    return;
                }
                st.provisional = false;
                st.ceiling = Some(measured / 0.9);
                measured
            }
            (Some(r), _) if elapsed < WINDOW => {
                self.charge(&mut st, refused, r, now);
                return;
            }
            (Some(r), _) if share > TOLERATED => {
                let allowed = r * (1.0 - share);
                // A window refused almost whole says the provider's own
                // window is spent, not that its rate fell: the rate drops,
                // the allowance to climb back to stays.
                if st.ceiling.is_none_or(|c| allowed >= c / 2.0) {
                    st.ceiling = Some(allowed);
                }
                (allowed * 0.95).max(FLOOR)
            }
            // Up fast while far below the rate last found allowed, slowly
            // near it (a provider's bucket, full after a slow spell, lets
            // a rate above its own through for a while before it refuses).
            (Some(r), _) => match st.ceiling {
                Some(c) if r >= c * 0.9 => r * 1.01,
                _ => r * 1.1,
            },
        };
        st.rate = Some(rate);
        st.lowest = Some(st.lowest.map_or(rate, |l| l.min(rate)));
        (st.since, st.accepted, st.refused) = (now, 0, 0);
        self.charge(&mut st, refused, rate, now);
    }

    /// The provider's allowance is spent for now: the objects it refused
    /// used their turn (they go again in a later one), so the next send
    /// waits as long as they take at the rate.
    fn charge(&self, st: &mut State, refused: u64, rate: f64, now: Instant) {
        if refused > 0 {
            st.next_free = st.next_free.max(now) + Duration::from_secs_f64(refused as f64 / rate);
        }
    }
}

/// The weights of a round's ops that were accepted and refused for a rate
/// limit.
pub fn tally<'a>(
    ops: impl Iterator<Item = &'a Op>,
    outcomes: &[OpOutcome],
    rate_limited: impl Fn(&OpOutcome) -> bool,
) -> (u64, u64) {
    let (mut ok, mut refused) = (0, 0);
    for (op, o) in ops.zip(outcomes) {
        if o.is_ok() {
            ok += weight(op);
        } else if rate_limited(o) {
            refused += weight(op);
        }
    }
    (ok, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A round sent 10 ms before it came back at `at`.
    fn back(p: &Pacer, accepted: u64, refused: u64, at: Instant) {
        p.observe_at(at - secs(0.01), accepted, refused, at);
    }

    /// The first refusal comes back at `at`, and a round sent after it at
    /// once, which settles the rate.
    fn limit(p: &Pacer, accepted: u64, refused: u64, at: Instant) {
        p.observe_at(at - secs(0.01), accepted, refused, at);
        p.observe_at(at, 0, 0, at);
    }

    #[test]
    fn nothing_is_paced_before_a_rate_limit() {
        let p = Pacer::default();
        let t0 = p.lock().since;
        back(&p, 1000, 0, t0 + secs(5.0));
        assert_eq!(p.rate(), None);
        assert_eq!(p.wait(100), Duration::ZERO);
    }

    #[test]
    fn the_first_refusals_pace_at_nine_tenths_of_what_was_accepted() {
        let p = Pacer::default();
        let t0 = p.lock().since;
        // A burst of rounds sent at once: too few objects yet to tell a
        // share, then enough, half refused. The rate is a guess until a
        // round sent after the refusals is back; less than a window has
        // passed, so it is measured over one window.
        p.observe_at(t0, 0, 100, t0 + secs(0.01));
        assert_eq!(p.rate(), None);
        p.observe_at(t0, 100, 100, t0 + secs(0.011));
        assert_eq!(p.rate(), Some(90.0));
        p.observe_at(t0, 100, 0, t0 + secs(0.012));
        assert_eq!(p.rate(), Some(180.0));
        assert_eq!(p.lowest(), None);
        // The first round sent after the refusals settles the rate.
        p.observe_at(t0 + secs(0.02), 0, 100, t0 + secs(0.03));
        assert_eq!(p.rate(), Some(180.0));
        assert_eq!(p.lowest(), Some(180.0));
        // A window of 200 accepted in two seconds, then refusals early in
        // the next: measured on the last whole window.
        let p = Pacer::default();
        let t0 = p.lock().since;
        back(&p, 200, 0, t0 + secs(2.0));
        limit(&p, 0, 200, t0 + secs(2.1));
        assert_eq!(p.rate(), Some(90.0));
        assert_eq!(p.lowest(), Some(90.0));
    }

    #[test]
    fn refusals_within_the_tolerated_share_are_no_reason_to_pace() {
        // A flaky provider refusing a tenth whatever the rate: never paced,
        // however long it goes on.
        let p = Pacer::default();
        let t0 = p.lock().since;
        for s in 1..=5 {
            back(&p, 900, 100, t0 + secs(f64::from(s)));
        }
        assert_eq!(p.rate(), None);
        // Once paced, a window within the share probes up as a clean one.
        limit(&p, 1000, 1000, t0 + secs(6.0));
        let r = p.rate().unwrap();
        back(&p, 900, 100, t0 + secs(7.0));
        assert!((p.rate().unwrap() - r * 1.01).abs() < 1e-9);
    }

    #[test]
    fn a_window_with_refusals_decreases_and_a_clean_one_probes_up() {
        let p = Pacer::default();
        let t0 = p.lock().since;
        limit(&p, 100, 100, t0 + secs(1.0));
        assert_eq!(p.rate(), Some(90.0));
        // Within the window nothing changes, whatever comes back.
        back(&p, 30, 20, t0 + secs(1.5));
        assert_eq!(p.rate(), Some(90.0));
        // The window closes with refusals in it: 60 of 80 objects accepted,
        // so 0.95 × 3/4 of the rate.
        back(&p, 30, 0, t0 + secs(2.0));
        let r = p.rate().unwrap();
        assert!((r - 64.125).abs() < 1e-9, "{r}");
        // A clean window near the rate last found allowed (67.5): a
        // hundredth more.
        back(&p, 54, 0, t0 + secs(3.0));
        let up = p.rate().unwrap();
        assert!((up - r * 1.01).abs() < 1e-9, "{up}");
        assert_eq!(p.lowest(), Some(r));
        // A round sent before the rate last changed is not counted.
        let t = p.lock().since;
        p.observe_at(t - secs(0.5), 0, 1000, t + secs(1.0));
        assert_eq!(p.rate(), Some(up));
        // Never below the floor.
        back(&p, 0, 100, t0 + secs(4.0));
        assert_eq!(p.rate(), Some(FLOOR));
        // Far below the allowance found before: a tenth more a window.
        back(&p, 1, 0, t0 + secs(5.0));
        assert_eq!(p.rate(), Some(FLOOR * 1.1));
    }

    #[test]
    fn sends_keep_to_the_rate_across_callers() {
        let p = Pacer::default();
        let t0 = p.lock().since;
        limit(&p, 1000, 1000, t0 + secs(1.0));
        // 900 objects a second: 90 objects take 100 ms of turn each, after
        // the turn the refused objects took (1000 / 900 s from the limit).
        let r = p.rate().unwrap();
        assert_eq!(r, 900.0);
        assert_eq!(p.budget(), Some(900));
        p.lock().next_free = Instant::now();
        let started = Instant::now();
        for _ in 0..3 {
            p.wait(90);
        }
        // The first goes at once, the third after two turns.
        let took = started.elapsed();
        assert!(took >= secs(0.19), "{took:?}");
        assert_eq!(p.wait(0), Duration::ZERO);
    }

    #[test]
    fn weights_count_chunks_of_upserts_and_nothing_of_deletes() {
        let doc = crate::object::Document::new(
            "r",
            "a.txt",
            b"0123456789\n".repeat(40),
            crate::object::ChunkSize::new(128).unwrap(),
        );
        let chunks = doc.chunks.len() as u64;
        assert!(chunks > 1);
        let ops = [
            Op::Upsert(doc),
            Op::Delete {
                id: uuid::Uuid::nil(),
                repo: "r".into(),
                path: "b".into(),
            },
        ];
        let refused = OpOutcome::Failed {
            retryable: true,
            message: "rate limit".into(),
        };
        assert_eq!(
            tally(ops.iter(), &[OpOutcome::Ok, OpOutcome::Ok], |_| true),
            (chunks, 0)
        );
        assert_eq!(
            tally(ops.iter(), &[refused.clone(), OpOutcome::Ok], |_| true),
            (0, chunks)
        );
    }
}
