//! Table tests of the reply classifier: one per reply Weaviate gives (saved
//! bodies in `tests/data/weaviate/`), each mapped to Ok, Retry or Fail.

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

/// The variant of `e`, by name.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Unreachable { .. } => "Unreachable",
        Error::Transient { .. } => "Transient",
        Error::Rejected { .. } => "Rejected",
        Error::Fatal { .. } => "Fatal",
    }
}

/// The upsert of one op answered with `status`, the saved body `name` and,
/// if given, a Retry-After: an error, of the variant `want`, whose message
/// names each of `naming`.
fn saved_error(
    status: u16,
    retry_after: Option<&str>,
    name: &str,
    want: &str,
    naming: &[&str],
) -> Error {
    let headers = retry_after.map_or_else(HeaderMap::new, with_retry_after);
    let e = upsert(status, &headers, &data(name), 1).unwrap_err();
    assert_eq!(kind(&e), want, "{name}: {e:?}");
    for words in naming {
        assert!(names(&e, words), "{name}: {e:?} should name {words:?}");
    }
    e
}

/// Whether `e` carries a message (Transient, Rejected or Fatal) naming `words`.
fn names(e: &Error, words: &str) -> bool {
    match e {
        Error::Transient { message, .. }
        | Error::Rejected { message }
        | Error::Fatal { message } => message.contains(words),
        Error::Unreachable { .. } => false,
    }
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
    let body = data("batch_200_all_success.json");
    let out = upsert(200, &HeaderMap::new(), &body, 3).unwrap();
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
    let naming = ["not present in schema", "collection does not exist"];
    saved_error(200, None, "batch_200_no_class.json", "Fatal", &naming);
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
    saved_error(
        400,
        None,
        "batch_400_invalid_json.json",
        "Rejected",
        &["parsing body"],
    );
}

#[test]
fn io_timeout_400_is_transient() {
    saved_error(400, None, "batch_400_io_timeout.json", "Transient", &[]);
}

#[test]
fn unauthorized_401_and_forbidden_403_end_the_run() {
    saved_error(
        401,
        None,
        "401_invalid_key.json",
        "Fatal",
        &["invalid api key"],
    );
    let e = saved_error(403, None, "403_forbidden.json", "Fatal", &[]);
    assert!(e.is_fatal(), "{e:?}");
    assert!(!e.is_retryable());
}

#[test]
fn empty_batch_422_and_bad_uuid_422_are_rejected() {
    for f in ["batch_422_empty.json", "batch_422_bad_uuid.json"] {
        saved_error(422, None, f, "Rejected", &[]);
    }
    let e = saved_error(422, None, "batch_422_bad_uuid.json", "Rejected", &[]);
    assert!(e.to_string().contains("must be of type uuid"), "{e}");
}

#[test]
fn rate_limited_429_is_transient_with_retry_after() {
    let e = saved_error(
        429,
        Some("7"),
        "batch_429_rate_limit.json",
        "Transient",
        &[],
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
}

#[test]
fn usage_limit_429_is_permanent() {
    let e = saved_error(
        429,
        Some("7"),
        "batch_429_usage_limit.json",
        "Rejected",
        &[],
    );
    assert!(!e.is_retryable());
}

#[test]
fn not_enough_memory_500_is_transient() {
    saved_error(
        500,
        None,
        "batch_500_memory.json",
        "Transient",
        &["not enough memory"],
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

#[test]
fn rate_limit_messages_are_told_apart_from_outages_and_give_their_hint() {
    let openai = "update vector: connection to: OpenAI API failed with status: 429 error: \
        Rate limit reached for text-embedding-3-small in organization org-x on requests per \
        min (RPM): Limit 3000, Used 3000, Requested 1. Please try again in 20ms.";
    assert!(is_rate_limited_message(openai));
    assert!(is_retryable_message(openai));
    assert!(!is_rate_limited_message("service unavailable"));
    assert!(!is_rate_limited_message("context deadline exceeded"));
    assert_eq!(rate_limit_hint(openai), Some(Duration::from_millis(20)));
    assert_eq!(
        rate_limit_hint("Please try again in 1.5s."),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        rate_limit_hint("Please try again in 1m30s."),
        Some(Duration::from_secs(90))
    );
    assert_eq!(rate_limit_hint("try again in 10h"), Some(MAX_RETRY_AFTER));
    assert_eq!(rate_limit_hint("try again later"), None);
}
