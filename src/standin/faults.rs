//! Fault injection settings and the seeded RNG that draws them.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What goes wrong, and how often (probabilities in 0..=1, per request
/// unless said otherwise). All zero by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fixed latency added to every faulted request.
    pub latency_ms: u64,
    /// Random extra latency in 0..=jitter_ms, so replies complete out of order.
    pub jitter_ms: u64,
    /// Answer 429 with `Retry-After: retry_after_secs` and do nothing.
    pub p429: f64,
    pub retry_after_secs: u64,
    /// Answer 500 (`not enough memory`) and do nothing.
    pub p500: f64,
    /// Answer 503 and do nothing.
    pub p503: f64,
    /// Close the connection without reading on: nothing applied.
    pub p_drop: f64,
    /// Apply the request, then close the connection without a reply (the
    /// EOF-after-store of weaviate#2722).
    pub p_apply_drop: f64,
    /// Per object of a batch upsert: report FAILED with a provider rate-limit
    /// message and store nothing for it.
    pub p_object_fail: f64,
    /// Per object of a batch upsert: report FAILED with a permanent
    /// validation message and store nothing for it.
    pub p_object_reject: f64,
    /// The vectorizer's quota in objects per second, 0 = off: a token bucket
    /// of this many objects (refilled at this rate) shared by every batch
    /// upsert. The objects of a batch past it are FAILED with OpenAI's
    /// rate-limit message ("Please try again in Xms", from the bucket) and
    /// not stored. Every upserted object counts, whatever its class's
    /// vectorizer.
    pub vectorizer_quota_per_sec: u32,
    /// A slow vectorizer: every batch upsert takes this many microseconds
    /// per object before it is stored and answered (0 = off), so that more
    /// objects in one request, or more requests at once, show in the reply
    /// time as they do behind a real embedding model.
    pub vectorizer_us_per_object: u64,
    /// A server or proxy that quotes the request in its errors: every error
    /// reply (injected or not, the 401s included) and every per-object
    /// failure message carries the request's headers, `Authorization` and
    /// provider keys included.
    pub echo_headers: bool,
    /// Fault every `/v1` endpoint except readiness, not only the batch ones.
    pub all_endpoints: bool,
}

/// What one request suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    None,
    Drop,
    TooMany,
    Internal,
    Unavailable,
    ApplyThenDrop,
}

impl Injected {
    pub fn name(self) -> &'static str {
        match self {
            Injected::None => "none",
            Injected::Drop => "drop",
            Injected::TooMany => "429",
            Injected::Internal => "500",
            Injected::Unavailable => "503",
            Injected::ApplyThenDrop => "apply_then_drop",
        }
    }
}

impl Faults {
    /// Draw this request's delay and fault.
    pub fn draw(&self, rng: &mut Rng) -> (Duration, Injected) {
        let jitter = if self.jitter_ms > 0 {
            rng.below(self.jitter_ms + 1)
        } else {
            0
        };
        let delay = Duration::from_millis(self.latency_ms + jitter);
        let fault = if rng.chance(self.p_drop) {
            Injected::Drop
        } else if rng.chance(self.p429) {
            Injected::TooMany
        } else if rng.chance(self.p500) {
            Injected::Internal
        } else if rng.chance(self.p503) {
            Injected::Unavailable
        } else if rng.chance(self.p_apply_drop) {
            Injected::ApplyThenDrop
        } else {
            Injected::None
        };
        (delay, fault)
    }
}

/// The token bucket of [`Faults::vectorizer_quota_per_sec`].
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: u32,
    tokens: f64,
    at: Instant,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            rate: 0,
            tokens: 0.0,
            at: Instant::now(),
        }
    }
}

impl Bucket {
    /// Take one object's token at `rate` objects per second (a new rate
    /// starts a full bucket); `Err(wait)` until the next token when none is
    /// left. A zero rate never refuses.
    pub fn take(&mut self, rate: u32, now: Instant) -> Result<(), Duration> {
        if rate == 0 {
            return Ok(());
        }
        let r = f64::from(rate);
        if rate != self.rate {
            (self.rate, self.tokens, self.at) = (rate, r, now);
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * r).min(r);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / r))
        }
    }
}

/// SplitMix64: tiny, seedable, good enough for fault draws.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}
