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

/// Whether a per-object error message names a condition that passes: a rate
/// limit, a deadline, an overloaded or unavailable provider.
pub fn is_retryable_message(message: &str) -> bool {
    const WORDS: &[&str] = &[
        "rate limit",
        "ratelimit",
        "rate_limit",
        "too many requests",
        "tokens per min",
        "requests per min",
        "(tpm)",
        "(rpm)",
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
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const T: &str = "Weaviate at http://127.0.0.1:1";

    fn data(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/weaviate/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn ids(n: usize) -> Vec<Uuid> {
        (1..=n as u128).map(Uuid::from_u128).collect()
    }

    /// The saved bodies name ids 00000000-0000-0000-0000-00000000000N.
    fn upsert(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        n: usize,
    ) -> Result<Vec<OpOutcome>, Error> {
        classify_upsert(
            T,
            Reply::Http {
                status,
                headers,
                body,
            },
            &ids(n),
        )
    }

    fn delete(status: u16, body: &[u8]) -> Result<DeleteRound, Error> {
        classify_delete(
            T,
            Reply::Http {
                status,
                headers: &HeaderMap::new(),
                body,
            },
        )
    }

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn all_success_200_gives_ok_for_every_op() {
        let out = upsert(
            200,
            &HeaderMap::new(),
            &data("batch_200_all_success.json"),
            3,
        )
        .unwrap();
        assert_eq!(out, vec![OpOutcome::Ok; 3]);
    }

    #[test]
    fn partial_failure_rate_limit_is_retryable_validation_is_not() {
        let out = upsert(200, &HeaderMap::new(), &data("batch_200_partial.json"), 4).unwrap();
        assert_eq!(out[0], OpOutcome::Ok);
        let retryable: Vec<Option<bool>> = out
            .iter()
            .map(|o| match o {
                OpOutcome::Ok => None,
                OpOutcome::Failed { retryable, .. } => Some(*retryable),
            })
            .collect();
        // [ok, rate limit 429, invalid text property, context deadline exceeded]
        assert_eq!(retryable, vec![None, Some(true), Some(false), Some(true)]);
        match &out[2] {
            OpOutcome::Failed { message, .. } => assert!(message.contains("invalid text property")),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn class_not_in_schema_means_the_collection_is_gone_and_ends_the_run() {
        let e = upsert(200, &HeaderMap::new(), &data("batch_200_no_class.json"), 1).unwrap_err();
        assert!(
            matches!(&e, Error::Fatal { message } if message.contains("not present in schema") && message.contains("collection does not exist")),
            "{e:?}"
        );
    }

    #[test]
    fn reply_out_of_order_is_matched_by_id() {
        let body = data("batch_200_partial.json");
        let mut sent = ids(4);
        sent.reverse();
        let out = classify_upsert(
            T,
            Reply::Http {
                status: 200,
                headers: &HeaderMap::new(),
                body: &body,
            },
            &sent,
        )
        .unwrap();
        assert_eq!(out[3], OpOutcome::Ok);
        assert!(matches!(
            out[0],
            OpOutcome::Failed {
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn id_missing_from_reply_is_retried_not_assumed_stored() {
        let body = data("batch_200_all_success.json");
        let out = upsert(200, &HeaderMap::new(), &body, 4).unwrap();
        assert_eq!(&out[..3], &[OpOutcome::Ok, OpOutcome::Ok, OpOutcome::Ok]);
        assert!(matches!(
            out[3],
            OpOutcome::Failed {
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn empty_200_body_is_transient() {
        for body in [&b""[..], b"  \n"] {
            let e = upsert(200, &HeaderMap::new(), body, 2).unwrap_err();
            assert!(matches!(e, Error::Transient { .. }), "{e:?}");
        }
        let e = upsert(200, &HeaderMap::new(), b"{\"not\":\"an array\"}", 2).unwrap_err();
        assert!(e.is_retryable());
    }

    #[test]
    fn invalid_json_400_is_rejected() {
        let e = upsert(
            400,
            &HeaderMap::new(),
            &data("batch_400_invalid_json.json"),
            1,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Rejected { message } if message.contains("parsing body")),
            "{e:?}"
        );
    }

    #[test]
    fn io_timeout_400_is_transient() {
        let e = upsert(
            400,
            &HeaderMap::new(),
            &data("batch_400_io_timeout.json"),
            1,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Transient { .. }), "{e:?}");
    }

    #[test]
    fn unauthorized_401_and_forbidden_403_end_the_run() {
        let e = upsert(401, &HeaderMap::new(), &data("401_invalid_key.json"), 1).unwrap_err();
        assert!(
            matches!(&e, Error::Fatal { message } if message.contains("invalid api key")),
            "{e:?}"
        );
        let e = upsert(403, &HeaderMap::new(), &data("403_forbidden.json"), 1).unwrap_err();
        assert!(e.is_fatal(), "{e:?}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn empty_batch_422_and_bad_uuid_422_are_rejected() {
        for f in ["batch_422_empty.json", "batch_422_bad_uuid.json"] {
            let e = upsert(422, &HeaderMap::new(), &data(f), 1).unwrap_err();
            assert!(matches!(e, Error::Rejected { .. }), "{f}: {e:?}");
        }
        let e = upsert(422, &HeaderMap::new(), &data("batch_422_bad_uuid.json"), 1).unwrap_err();
        assert!(e.to_string().contains("must be of type uuid"), "{e}");
    }

    #[test]
    fn rate_limited_429_is_transient_with_retry_after() {
        let e = upsert(
            429,
            &with_retry_after("7"),
            &data("batch_429_rate_limit.json"),
            1,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Transient { .. }), "{e:?}");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn usage_limit_429_is_permanent() {
        let e = upsert(
            429,
            &with_retry_after("7"),
            &data("batch_429_usage_limit.json"),
            1,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Rejected { .. }), "{e:?}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn not_enough_memory_500_is_transient() {
        let e = upsert(500, &HeaderMap::new(), &data("batch_500_memory.json"), 1).unwrap_err();
        assert!(
            matches!(&e, Error::Transient { message, .. } if message.contains("not enough memory")),
            "{e:?}"
        );
    }

    #[test]
    fn gateway_errors_502_503_504_are_transient() {
        for s in [502, 503, 504] {
            let e = upsert(s, &with_retry_after("2"), b"<html>upstream</html>", 1).unwrap_err();
            assert!(matches!(e, Error::Transient { .. }), "{s}: {e:?}");
            assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        }
    }

    #[test]
    fn eof_after_send_is_transient_and_connect_failure_is_unreachable() {
        let f = TransportFailure::Dropped("connection closed before message completed".into());
        let e = classify_upsert(T, Reply::NoReply(&f), &ids(2)).unwrap_err();
        assert!(matches!(e, Error::Transient { .. }), "{e:?}");
        let f = TransportFailure::Timeout("operation timed out".into());
        assert!(classify_upsert(T, Reply::NoReply(&f), &ids(2))
            .unwrap_err()
            .is_retryable());
        let f = TransportFailure::Connect("connection refused".into());
        let e = classify_upsert(T, Reply::NoReply(&f), &ids(2)).unwrap_err();
        assert!(
            matches!(&e, Error::Unreachable { target, .. } if target == T),
            "{e:?}"
        );
    }

    #[test]
    fn wrong_path_404_is_fatal() {
        let e = upsert(404, &HeaderMap::new(), b"", 1).unwrap_err();
        assert!(e.is_fatal() && !e.is_retryable(), "{e:?}");
    }

    #[test]
    fn retry_after_http_date_and_clamp() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after_at(&with_retry_after(&later), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            retry_after_at(&with_retry_after(&past), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after_at(&with_retry_after("999999"), now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after_at(&with_retry_after("soon"), now), None);
        assert_eq!(retry_after_at(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retryable_messages_are_recognised() {
        for m in [
            "update vector: failed with status: 429 error: Rate limit reached for requests",
            "Rate limit reached for text-embedding-3-small on tokens per min (TPM)",
            "context deadline exceeded",
            "connection to: OpenAI API failed with status: 503",
            "Model is overloaded",
        ] {
            assert!(is_retryable_message(m), "{m}");
        }
        for m in [
            "invalid text property 'content' on class 'C': not a string",
            "class 'X' not present in schema",
            "object has an empty class",
            "id 4290-abc",
        ] {
            assert!(!is_retryable_message(m), "{m}");
        }
    }

    #[test]
    fn delete_round_reports_limit_and_failures() {
        let body = data("delete_200_limited.json");
        let r = delete(200, &body).unwrap();
        assert_eq!((r.matches, r.limit, r.successful, r.failed), (5, 2, 1, 1));
        assert!(r.more_to_delete());
        assert_eq!(
            r.failures.get(&Uuid::from_u128(2)).map(String::as_str),
            Some("shard is read-only")
        );
        let body = data("delete_200_done.json");
        let r = delete(200, &body).unwrap();
        assert!(!r.more_to_delete());
    }

    #[test]
    fn delete_unknown_class_422_ends_the_run_and_empty_body_is_transient() {
        let body = data("delete_422_unknown_class.json");
        let e = delete(422, &body).unwrap_err();
        assert!(e.is_fatal(), "{e:?}");
        let e = delete(200, b"").unwrap_err();
        assert!(e.is_retryable());
    }
}
