//! What a Weaviate reply means for the ops that were sent: one pure function
//! per endpoint over (status, headers, body bytes, ids sent), or over the
//! transport failure when no reply came.
//!
//! The rules are CONTRACT.md's: partial failure is always HTTP 200 with
//! per-object `FAILED` results (retryable when the message names a rate limit,
//! a deadline or an overload); 429 is transient unless its body says
//! `USAGE_LIMIT_EXCEEDED`; 5xx is transient; other 4xx are permanent. A
//! connection dropped after the request was sent may have stored the objects,
//! which is harmless to retry because ids are deterministic.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;
use uuid::Uuid;

use crate::target::{Error, OpOutcome};

/// Longest Retry-After honoured; a larger value is clamped so one bad header
/// cannot park a worker for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Server messages quoted in errors are cut to this many characters.
const MAX_QUOTED: usize = 300;

/// How a request ended when no HTTP reply was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportFailure {
    /// No connection could be made (refused, DNS, TLS handshake): nothing was sent.
    Connect(String),
    /// The per-request timeout fired; the server may still be working on it.
    Timeout(String),
    /// The connection dropped after the request was (maybe) sent: EOF, reset,
    /// truncated reply. The objects may have been stored.
    Dropped(String),
}

/// One exchange with the server, as the classifier sees it.
#[derive(Debug, Clone, Copy)]
pub enum Reply<'a> {
    Http {
        status: u16,
        headers: &'a HeaderMap,
        body: &'a [u8],
    },
    NoReply(&'a TransportFailure),
}

/// The outcome of one DELETE /v1/batch/objects round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRound {
    /// Objects the filter matched (may exceed what this round deleted).
    pub matches: u64,
    /// The server's per-call limit (`QUERY_MAXIMUM_RESULTS`).
    pub limit: u64,
    pub successful: u64,
    pub failed: u64,
    /// Per-id failures reported by the server, with their message.
    pub failures: HashMap<Uuid, String>,
}

impl DeleteRound {
    /// More objects matched than this round processed: call again.
    pub fn more_to_delete(&self) -> bool {
        self.matches > self.successful + self.failed
    }
}

/// Classify a reply to `POST /v1/batch/objects` carrying objects `sent` (in
/// request order, no duplicates). `Ok` has one outcome per sent id, in order.
pub fn classify_upsert(
    target: &str,
    reply: Reply<'_>,
    sent: &[Uuid],
) -> Result<Vec<OpOutcome>, Error> {
    let (status, headers, body) = success(target, "batch upsert", reply)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        // weaviate#5168: a 200 with nothing in it says nothing about what was
        // stored; resending is safe.
        return Err(Error::Transient {
            message: format!("batch upsert: HTTP {status} with an empty body"),
            retry_after: retry_after(headers),
        });
    }
    // Only `id` and `result` are read: the echoed properties (the whole file
    // content) are skipped by the parser, never built.
    let items = match serde_json::from_slice::<Vec<UpsertItem>>(body) {
        Ok(items) => items,
        Err(_) => {
            return Err(Error::Transient {
                message: format!(
                    "batch upsert: HTTP {status} body is not a JSON array: {}",
                    quote(body)
                ),
                retry_after: retry_after(headers),
            })
        }
    };
    let item_id = |v: &UpsertItem| v.id.as_ref().and_then(Value::as_str).map(Uuid::parse_str);
    let positional = items.len() == sent.len()
        && items
            .iter()
            .zip(sent)
            .all(|(item, id)| match item_id(item) {
                None => true,
                Some(Ok(x)) => x == *id,
                Some(Err(_)) => false,
            });
    if positional {
        return collection_present(items.iter().map(object_outcome).collect());
    }
    // Out of order or a different length: match by id, and anything the server
    // did not mention is unknown, so retried.
    let mut by_id = HashMap::with_capacity(items.len());
    for item in &items {
        if let Some(Ok(id)) = item_id(item) {
            by_id.insert(id, object_outcome(item));
        }
    }
    collection_present(
        sent.iter()
            .map(|id| {
                by_id.remove(id).unwrap_or_else(|| OpOutcome::Failed {
                    retryable: true,
                    message: "object missing from the batch response".to_string(),
                })
            })
            .collect(),
    )
}

/// Whether a server message says the collection (class) does not exist.
fn names_missing_collection(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not present in schema")
        || m.contains("not found in schema")
        || m.contains("class not found")
        || m.contains("no such class")
        || (m.contains("class") && m.contains("does not exist"))
}

/// Objects refused because the collection is gone (deleted while the run
/// went on) are no per-object failure: every later write would be refused
/// too, so the run ends (exit 3) whatever `--on-error` says.
fn collection_present(outcomes: Vec<OpOutcome>) -> Result<Vec<OpOutcome>, Error> {
    for o in &outcomes {
        if let OpOutcome::Failed { message, .. } = o {
            if names_missing_collection(message) {
                return Err(collection_gone("batch upsert", message));
            }
        }
    }
    Ok(outcomes)
}

fn collection_gone(what: &str, message: &str) -> Error {
    Error::Fatal {
        message: format!(
            "{what}: the collection does not exist ({message}); it was deleted or renamed behind this run. \
             State is saved: the next run creates it again and resumes (an emptied index is refilled \
             only by lines still to apply — re-run the manifests that built it)"
        ),
    }
}

/// Classify a reply to `DELETE /v1/batch/objects` whose filter named `sent`.
pub fn classify_delete(target: &str, reply: Reply<'_>) -> Result<DeleteRound, Error> {
    let (status, headers, body) = success(target, "batch delete", reply)?;
    let unreadable = |why: &str| Error::Transient {
        message: format!("batch delete: HTTP {status} {why}: {}", quote(body)),
        retry_after: retry_after(headers),
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| unreadable("body is not JSON"))?;
    let results = v
        .get("results")
        .filter(|r| r.is_object())
        .ok_or_else(|| unreadable("body has no results"))?;
    let num = |k: &str| results.get(k).and_then(Value::as_f64).unwrap_or(0.0) as u64;
    let mut round = DeleteRound {
        matches: num("matches"),
        limit: num("limit"),
        successful: num("successful"),
        failed: num("failed"),
        failures: HashMap::new(),
    };
    if let Some(objects) = results.get("objects").and_then(Value::as_array) {
        for o in objects {
            if o.get("status").and_then(Value::as_str) == Some("FAILED") {
                let id = o.get("id").and_then(Value::as_str).map(Uuid::parse_str);
                if let Some(Ok(id)) = id {
                    let msg = error_messages(o.get("errors"))
                        .unwrap_or_else(|| "delete failed".to_string());
                    round.failures.insert(id, msg);
                }
            }
        }
    }
    Ok(round)
}

/// A 2xx reply's status, headers and body; any other ending of call `what`
/// as its error.
fn success<'a>(
    target: &str,
    what: &str,
    reply: Reply<'a>,
) -> Result<(u16, &'a HeaderMap, &'a [u8]), Error> {
    match reply {
        Reply::NoReply(f) => Err(transport_error(target, what, f)),
        Reply::Http {
            status,
            headers,
            body,
        } if (200..300).contains(&status) => Ok((status, headers, body)),
        Reply::Http {
            status,
            headers,
            body,
        } => Err(status_error(what, status, headers, body)),
    }
}

/// The error for a non-2xx reply to any call.
pub fn status_error(what: &str, status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    let msg = body_message(body);
    let message = if msg.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status}: {msg}")
    };
    let transient = |message| Error::Transient {
        message,
        retry_after: retry_after(headers),
    };
    match status {
        // A slow upload hits the server's read timeout (weaviate#2966).
        400 if msg.contains("i/o timeout") => transient(message),
        // Authentication refused: every request would be, so the run ends
        // (exit 3) whatever `--on-error` says.
        401 | 403 => Error::Fatal {
            message: format!("{message} (check WEAVIATE_API_KEY and its rights on the collection)"),
        },
        422 if names_missing_collection(&msg) => collection_gone(what, &msg),
        404 => Error::Fatal {
            message: format!("{message} (is the URL a Weaviate server, given without /v1?)"),
        },
        408 => transient(message),
        429 if is_usage_limit(body) => Error::Rejected { message },
        429 => transient(message),
        501 | 505 => Error::Fatal { message },
        500..=599 => transient(message),
        400..=499 => Error::Rejected { message },
        _ => Error::Fatal {
            message: format!("{message} (unexpected status)"),
        },
    }
}

/// The error for a request that got no HTTP reply.
pub fn transport_error(target: &str, what: &str, f: &TransportFailure) -> Error {
    match f {
        TransportFailure::Connect(detail) => Error::Unreachable {
            target: target.to_string(),
            message: format!("{what}: cannot connect: {detail}"),
            retry_after: None,
        },
        TransportFailure::Timeout(detail) => Error::Transient {
            message: format!("{what}: timed out (the server may still apply it): {detail}"),
            retry_after: None,
        },
        TransportFailure::Dropped(detail) => Error::Transient {
            message: format!(
                "{what}: connection dropped before the reply (objects may be stored; \
                 resending is safe): {detail}"
            ),
            retry_after: None,
        },
    }
}

/// What an operator does about an object the embedding model refused as
/// too long.
pub const TOO_LONG_HINT: &str = "the chunk is longer than the collection's embedding model \
    accepts: run again with a smaller --chunk-size for this model (the default is 4096 bytes; \
    try 2048, or 1024 for 512-token models), with --rechunk on an index built at the larger size";

/// Whether a per-object error says the vectorizer's model refused the input
/// as too long (OpenAI's `maximum context length is N tokens`, and the
/// wordings of other providers). Permanent: the same object fails again.
pub fn is_too_long_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "maximum context length",
        "context_length_exceeded",
        "input is too long",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// Whether a per-object error message says the embedding provider (or
/// Weaviate) asked to slow down: a rate limit, not an outage. Such an object
/// is retried with patience (`--rate-limit-patience`) instead of using up
/// `--max-retries`.
pub fn is_rate_limited_message(message: &str) -> bool {
    const WORDS: &[&str] = &[
        "rate limit",
        "ratelimit",
        "rate_limit",
        "too many requests",
        "tokens per min",
        "requests per min",
        "(tpm)",
        "(rpm)",
    ];
    let lower = message.to_ascii_lowercase();
    WORDS.iter().any(|w| lower.contains(w))
}

/// The wait a rate-limit message asks for: OpenAI's `Please try again in
/// 20ms` (also `1.5s`, `6m0s`), capped at [`MAX_RETRY_AFTER`].
pub fn rate_limit_hint(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("try again in ")? + "try again in ".len();
    let mut rest = lower[at..].trim_start();
    let mut total = 0f64;
    let mut any = false;
    loop {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let Ok(n) = rest[..num_len].parse::<f64>() else {
            break;
        };
        let unit_part = rest[num_len..].trim_start();
        let (scale, len) = if unit_part.starts_with("ms") {
            (0.001, 2)
        } else if unit_part.starts_with("s") {
            (1.0, 1)
        } else if unit_part.starts_with("m") {
            (60.0, 1)
        } else if unit_part.starts_with("h") {
            (3600.0, 1)
        } else {
            break;
        };
        total += n * scale;
        any = true;
        rest = &unit_part[len..];
    }
    any.then(|| Duration::from_secs_f64(total.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// Whether a per-object error message names a condition that passes: a rate
/// limit, a deadline, an overloaded or unavailable provider.
pub fn is_retryable_message(message: &str) -> bool {
    if is_rate_limited_message(message) {
        return true;
    }
    const WORDS: &[&str] = &[
        "deadline exceeded",
        "timeout",
        "timed out",
        "overload",
        "temporarily unavailable",
        "service unavailable",
        "currently unavailable",
        "bad gateway",
        "try again",
        "connection reset",
        "connection refused",
        "not enough memory",
    ];
    let lower = message.to_ascii_lowercase();
    if WORDS.iter().any(|w| lower.contains(w)) {
        return true;
    }
    // Provider status codes quoted in the message ("status: 429", "503 Service ...").
    lower
        .split(|c: char| !c.is_ascii_digit())
        .any(|n| matches!(n, "429" | "500" | "502" | "503" | "504"))
}

/// What is read of one element of a batch upsert reply.
#[derive(serde::Deserialize)]
struct UpsertItem {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    result: Option<Value>,
}

/// The outcome of one element of a batch upsert reply.
fn object_outcome(item: &UpsertItem) -> OpOutcome {
    let result = item.result.as_ref();
    let failed = result
        .and_then(|r| r.get("status"))
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("FAILED"));
    let errors = error_messages(result.and_then(|r| r.get("errors")));
    match (failed, errors) {
        (false, None) => OpOutcome::Ok,
        (_, Some(message)) if is_too_long_message(&message) => OpOutcome::Failed {
            retryable: false,
            message: format!("{message} ({TOO_LONG_HINT})"),
        },
        (_, Some(message)) => OpOutcome::Failed {
            retryable: is_retryable_message(&message),
            message,
        },
        (true, None) => OpOutcome::Failed {
            retryable: false,
            message: "object FAILED without a message".to_string(),
        },
    }
}

/// The messages of an `ErrorResponse` (`{"error":[{"message":..}]}`), joined.
fn error_messages(errors: Option<&Value>) -> Option<String> {
    let list = errors?.get("error")?.as_array()?;
    let msgs: Vec<&str> = list
        .iter()
        .filter_map(|e| e.get("message").and_then(Value::as_str))
        .collect();
    (!msgs.is_empty()).then(|| truncate(&msgs.join("; ")))
}

/// The human message of an error body, whichever of Weaviate's shapes it has.
fn body_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = error_messages(Some(&v)) {
            return m;
        }
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            return truncate(m);
        }
    }
    quote(body)
}

fn is_usage_limit(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errorCode")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .is_some_and(|c| c == "USAGE_LIMIT_EXCEEDED")
}

/// Retry-After as delta-seconds or an HTTP date, clamped to [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = raw.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(raw).ok()?;
        when.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

fn quote(body: &[u8]) -> String {
    truncate(String::from_utf8_lossy(body).trim())
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
