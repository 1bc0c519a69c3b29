//! Routing and the endpoints, with Weaviate's status codes and bodies.

// Early-return helpers carry a ready response as their error; one per request.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::faults::{Faults, Injected};
use super::{filter, BatchLogged, Dumped, Recorded, Shared, State, Stored};

type Resp = Response<Full<Bytes>>;

/// Returned by a handler to close the connection without a reply.
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stand-in dropped the connection")
    }
}

impl std::error::Error for DropConnection {}

const RATE_LIMIT_MESSAGE: &str =
    "update vector: connection to: OpenAI API failed with status: 429 \
     error: Rate limit reached for text-embedding-3-small in organization org-standin on \
     requests per min (RPM): Limit 3000, Used 3000, Requested 1. Please try again in 20ms.";

const REJECT_MESSAGE: &str = "invalid object: rejected by the stand-in (validation fault)";

const PRIMITIVE_TYPES: &[&str] = &[
    "text",
    "int",
    "number",
    "boolean",
    "date",
    "uuid",
    "geoCoordinates",
    "phoneNumber",
    "blob",
    "object",
    "text[]",
    "int[]",
    "number[]",
    "boolean[]",
    "date[]",
    "uuid[]",
    "object[]",
];

const TOKENIZATIONS: &[&str] = &[
    "word",
    "lowercase",
    "whitespace",
    "field",
    "trigram",
    "gse",
    "kagome_kr",
    "kagome_ja",
    "gse_ch",
];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn reply(status: u16, body: Option<&Value>) -> Resp {
    let mut b = Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
    let bytes = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(v).unwrap_or_default())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(bytes))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error_list(status: u16, message: &str) -> Resp {
    reply(status, Some(&json!({"error": [{"message": message}]})))
}

fn code_message(status: u16, code: u16, message: &str) -> Resp {
    reply(status, Some(&json!({"code": code, "message": message})))
}

/// The class name as the server looks it up: first letter uppercased.
fn upper_first(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn valid_class_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_uppercase()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn valid_property_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 231
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn query_params(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

/// Serve one request; with [`Faults::echo_headers`], every error reply
/// (but those of the control endpoints) quotes the request's headers.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, DropConnection> {
    let echo = (shared.lock().faults.echo_headers && !req.uri().path().starts_with("/__standin/"))
        .then(|| headers_text(req.headers()));
    let resp = serve_one(shared, req, echo.clone()).await?;
    Ok(match echo {
        Some(e) if !resp.status().is_success() => echo_error(resp, &e).await,
        _ => resp,
    })
}

/// The request's headers as one line, as a leaky proxy would quote them
/// (`content-length` left out: it is noise, and its digits could read as a
/// status code to a classifier).
fn headers_text(headers: &hyper::HeaderMap) -> String {
    headers
        .iter()
        .filter(|(k, _)| *k != hyper::header::CONTENT_LENGTH)
        .map(|(k, v)| format!("{}: {}", k.as_str(), String::from_utf8_lossy(v.as_bytes())))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error reply rewritten to carry `echo` in its message.
async fn echo_error(resp: Resp, echo: &str) -> Resp {
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let original = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.pointer("/error/0/message")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let mut r = error_list(
        parts.status.as_u16(),
        &format!("{original} (request headers: {echo})"),
    );
    for (k, v) in &parts.headers {
        if k != hyper::header::CONTENT_TYPE && k != hyper::header::CONTENT_LENGTH {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r
}

async fn serve_one(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    echo: Option<String>,
) -> Result<Resp, DropConnection> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let headers: Vec<(String, String)> = if shared.cfg.record {
        req.headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DropConnection),
    };

    let mut logged = None;
    let (delay, injected) = {
        let mut st = shared.lock();
        st.stats.requests += 1;
        if shared.cfg.record {
            let full = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            st.requests.push(Recorded {
                method: method.to_string(),
                path: full,
                authorization: authorization.clone(),
                headers,
                body: body.clone(),
            });
        }
        let faulted = path.starts_with("/v1/batch/")
            || (st.faults.all_endpoints
                && path.starts_with("/v1/")
                && !path.starts_with("/v1/.well-known/"));
        let d = if faulted {
            let faults = st.faults.clone();
            let d = faults.draw(&mut st.rng);
            if d.1 != Injected::None {
                *st.stats.injected.entry(d.1.name().to_string()).or_default() += 1;
            }
            d
        } else {
            (std::time::Duration::ZERO, Injected::None)
        };
        if shared.cfg.log_batches
            && path == "/v1/batch/objects"
            && (method == Method::POST || method == Method::DELETE)
        {
            let seq = st.stats.requests;
            logged = Some(seq);
            st.batches.push(BatchLogged {
                seq,
                method: method.to_string(),
                ids: batch_ids(&method, body.as_ref()),
                fault: d.1.name().to_string(),
                received_us: shared.clock_us(std::time::Instant::now()),
                answered_us: None,
            });
        }
        d
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    if let Some(rest) = path.strip_prefix("/__standin/") {
        return Ok(control(&shared, &method, rest, body.as_ref()));
    }
    match path.as_str() {
        "/v1/.well-known/ready" | "/v1/.well-known/live" => return Ok(reply(200, None)),
        _ => {}
    }
    if let Some(denied) = check_auth(&shared, authorization.as_deref()) {
        return Ok(denied);
    }
    let refused = match injected {
        Injected::None | Injected::ApplyThenDrop => None,
        Injected::Drop => return Err(DropConnection),
        Injected::TooMany => {
            let secs = shared.lock().faults.retry_after_secs;
            let mut r = error_list(429, "too many requests (stand-in fault)");
            if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            Some(r)
        }
        Injected::Internal => Some(error_list(
            500,
            "batch objects: cannot process batch: not enough memory (stand-in fault)",
        )),
        Injected::Unavailable => Some(reply(503, None)),
    };
    if let Some(r) = refused {
        if let Some(seq) = logged {
            answered(&shared, &mut shared.lock(), seq);
        }
        return Ok(r);
    }

    let params = query_params(query.as_deref());
    if method == Method::POST && path.trim_end_matches('/') == "/v1/batch/objects" {
        // Parse before and reply after the lock: the stand-in must not be
        // the bottleneck of a throughput benchmark.
        let resp = match batch_parse(&params, body.as_ref()) {
            Err(r) => {
                if let (Some(seq), false) = (logged, injected == Injected::ApplyThenDrop) {
                    answered(&shared, &mut shared.lock(), seq);
                }
                r
            }
            Ok(mut parsed) => {
                parsed.echo = echo;
                let stored = {
                    let mut st = shared.lock();
                    let stored = batch_store(&mut st, parsed);
                    if let (Some(seq), false) = (logged, injected == Injected::ApplyThenDrop) {
                        answered(&shared, &mut st, seq);
                    }
                    stored
                };
                batch_reply(stored)
            }
        };
        if injected == Injected::ApplyThenDrop {
            return Err(DropConnection);
        }
        return Ok(resp);
    }
    let resp = {
        let mut st = shared.lock();
        let resp = route(&shared, &mut st, &method, &path, &params, body.as_ref());
        if let (Some(seq), false) = (logged, injected == Injected::ApplyThenDrop) {
            answered(&shared, &mut st, seq);
        }
        resp
    };
    if injected == Injected::ApplyThenDrop {
        return Err(DropConnection);
    }
    Ok(resp)
}

/// Note in the batch log that request `seq` is answered now.
fn answered(shared: &Shared, st: &mut State, seq: u64) {
    let now = shared.clock_us(std::time::Instant::now());
    // Entries are in seq order; a reset may have removed this one.
    if let Ok(i) = st.batches.binary_search_by_key(&seq, |b| b.seq) {
        st.batches[i].answered_us = Some(now);
    }
}

/// The object ids a batch request names: an upsert's object ids, or the
/// `id`/`_id` values of a delete's filter. Unparsable bodies name none.
fn batch_ids(method: &Method, body: &[u8]) -> Vec<Uuid> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let parse = |s: &Value| s.as_str().and_then(|s| Uuid::parse_str(s).ok());
    if *method == Method::POST {
        return v
            .get("objects")
            .and_then(Value::as_array)
            .map(|objs| {
                objs.iter()
                    .filter_map(|o| o.get("id").and_then(parse))
                    .collect()
            })
            .unwrap_or_default();
    }
    fn walk(w: &Value, out: &mut Vec<Uuid>) {
        if let Some(ops) = w.get("operands").and_then(Value::as_array) {
            ops.iter().for_each(|o| walk(o, out));
        }
        let on_id = w
            .get("path")
            .and_then(Value::as_array)
            .is_some_and(|p| matches!(p.as_slice(), [Value::String(s)] if s == "id" || s == "_id"));
        if !on_id {
            return;
        }
        let one = w.get("valueText").into_iter();
        let many = w
            .get("valueTextArray")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        out.extend(
            one.chain(many)
                .filter_map(|s| s.as_str().and_then(|s| Uuid::parse_str(s).ok())),
        );
    }
    let mut out = Vec::new();
    if let Some(w) = v.pointer("/match/where") {
        walk(w, &mut out);
    }
    out
}

fn check_auth(shared: &Shared, authorization: Option<&str>) -> Option<Resp> {
    match (&shared.cfg.api_key, authorization) {
        (None, None) => None,
        (None, Some(_)) => Some(code_message(
            401,
            401,
            "unauthorized: an Authorization header was sent but no authentication scheme is configured",
        )),
        (Some(_), None) => Some(code_message(
            401,
            401,
            "anonymous access not enabled, please provide an auth scheme such as OIDC",
        )),
        (Some(key), Some(h)) => {
            if h.strip_prefix("Bearer ") == Some(key.as_str()) {
                None
            } else {
                Some(code_message(401, 401, "unauthorized: invalid api key"))
            }
        }
    }
}

fn route(
    shared: &Shared,
    st: &mut State,
    method: &Method,
    path: &str,
    params: &HashMap<String, String>,
    body: &[u8],
) -> Resp {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["meta"]) => reply(
            200,
            Some(&json!({"hostname": "http://[::]:8080", "version": "1.39.0",
                "modules": {}, "grpcMaxMessageSize": 104858000})),
        ),
        (&Method::POST, ["batch", "objects"]) => match batch_parse(params, body) {
            Ok(parsed) => batch_reply(batch_store(st, parsed)),
            Err(r) => r,
        },
        (&Method::DELETE, ["batch", "objects"]) => batch_delete(shared, st, params, body),
        (&Method::GET, ["objects"]) => list_objects(st, params),
        (m, ["objects", class, id]) => object(st, m, class, id),
        (&Method::GET, ["schema"]) => {
            let classes: Vec<&Value> = st.classes.values().collect();
            reply(200, Some(&json!({ "classes": classes })))
        }
        (&Method::POST, ["schema"]) => create_class(st, body),
        (&Method::GET, ["schema", class]) => match st.classes.get(&upper_first(class)) {
            Some(c) => reply(200, Some(c)),
            None => reply(404, None),
        },
        (&Method::DELETE, ["schema", class]) => {
            let c = upper_first(class);
            st.classes.remove(&c);
            st.objects.remove(&c);
            reply(200, None)
        }
        (&Method::POST, ["schema", class, "properties"]) => add_property(st, class, body),
        _ => code_message(404, 404, &format!("path {path} not found")),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Resp> {
    serde_json::from_slice(body).map_err(|e| {
        code_message(
            400,
            400,
            &format!("parsing body body from \"\" failed, because {e}"),
        )
    })
}

fn check_consistency(params: &HashMap<String, String>) -> Option<Resp> {
    match params.get("consistency_level").map(String::as_str) {
        None | Some("ONE") | Some("QUORUM") | Some("ALL") => None,
        Some(other) => Some(error_list(
            400,
            &format!("unrecognized consistency level {other:?}, try one of the following: ['ONE', 'QUORUM', 'ALL']"),
        )),
    }
}

/// Spec validation of the BatchObjects body, as go-openapi reports it.
fn validate_batch_body(v: Value) -> Result<Vec<Value>, Resp> {
    let Value::Object(mut obj) = v else {
        return Err(code_message(
            422,
            601,
            "body in body must be of type object: \"array\"",
        ));
    };
    if let Some(fields) = obj.get("fields") {
        let ok = fields.as_array().is_some_and(|a| {
            a.iter().all(|f| {
                matches!(
                    f.as_str(),
                    Some("ALL" | "class" | "schema" | "id" | "creationTimeUnix")
                )
            })
        });
        if !ok {
            return Err(code_message(
                422,
                602,
                "body.fields in body should be one of [ALL class schema id creationTimeUnix]",
            ));
        }
    }
    let objects = match obj.remove("objects") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(code_message(
                422,
                601,
                "body.objects in body must be of type array",
            ))
        }
    };
    for (i, o) in objects.iter().enumerate() {
        let Some(o) = o.as_object() else {
            return Err(code_message(
                422,
                601,
                &format!("body.objects.{i} in body must be of type object"),
            ));
        };
        if let Some(id) = o.get("id") {
            let ok = id.as_str().is_some_and(|s| Uuid::parse_str(s).is_ok());
            if !ok {
                return Err(code_message(
                    422,
                    606,
                    &format!("body.objects.{i}.id in body must be of type uuid: {id}"),
                ));
            }
        }
        for (k, ty) in [
            ("class", "string"),
            ("tenant", "string"),
            ("properties", "object"),
        ] {
            let bad = match (o.get(k), ty) {
                (None | Some(Value::Null), _) => false,
                (Some(v), "string") => !v.is_string(),
                (Some(v), _) => !v.is_object(),
            };
            if bad {
                return Err(code_message(
                    422,
                    601,
                    &format!("body.objects.{i}.{k} in body must be of type {ty}"),
                ));
            }
        }
        if let Some(vec) = o.get("vector") {
            let ok = vec.is_null()
                || vec
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_number));
            if !ok {
                return Err(code_message(
                    422,
                    601,
                    &format!("body.objects.{i}.vector in body must be of type array of number"),
                ));
            }
        }
    }
    if objects.is_empty() {
        return Err(error_list(
            422,
            "invalid param 'objects': cannot be empty, need at least one object for batching",
        ));
    }
    Ok(objects)
}

/// Why one object cannot be stored, if it cannot.
fn object_error(st: &State, class: &str, props: &Map<String, Value>) -> Option<String> {
    if class.is_empty() {
        return Some("object has an empty class".into());
    }
    let Some(def) = st.classes.get(class) else {
        return Some(format!("class '{class}' not present in schema"));
    };
    let declared: HashMap<&str, &str> = def
        .get("properties")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let n = p.get("name")?.as_str()?;
                    let t = p.get("dataType")?.as_array()?.first()?.as_str()?;
                    Some((n, t))
                })
                .collect()
        })
        .unwrap_or_default();
    for (name, value) in props {
        if matches!(name.as_str(), "id" | "_id" | "_additional") {
            return Some(format!(
                "'{name}' is a reserved property name, use a different one"
            ));
        }
        let Some(ty) = declared.get(name.as_str()) else {
            return Some(format!(
                "no such prop with name '{name}' found in class '{class}' in the schema. \
                 Check your schema files for which properties in this class are available"
            ));
        };
        if value.is_null() {
            continue;
        }
        let go_type = |v: &Value| match v {
            Value::String(_) => "string",
            Value::Number(_) => "float64",
            Value::Bool(_) => "bool",
            Value::Array(_) => "[]interface {}",
            Value::Object(_) => "map[string]interface {}",
            Value::Null => "nil",
        };
        let bad = match *ty {
            "text" => (!value.is_string()).then(|| {
                format!(
                    "invalid text property '{name}' on class '{class}': not a string, but {}",
                    go_type(value)
                )
            }),
            "int" => {
                let is_int = value
                    .as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.2e18);
                (!is_int).then(|| {
                    format!(
                        "invalid integer property '{name}' on class '{class}': requires an \
                         integer, the given value is '{value}'"
                    )
                })
            }
            "number" => (!value.is_number()).then(|| {
                format!("invalid number property '{name}' on class '{class}': not a number")
            }),
            "boolean" => (!value.is_boolean()).then(|| {
                format!("invalid boolean property '{name}' on class '{class}': not a boolean")
            }),
            _ => None,
        };
        if bad.is_some() {
            return bad;
        }
    }
    None
}

/// `POST /v1/batch/objects`, in three steps so that the state lock is held
/// only for the cheap middle one: parse and validate the body
/// ([`batch_parse`]), decide and store each object ([`batch_store`]), then
/// build the reply ([`batch_reply`]). The wire behaviour is that of one
/// step; only the stand-in's own throughput changes.
pub(super) struct ParsedBatch {
    objects: Vec<Value>,
    /// With [`Faults::echo_headers`]: the request's headers, quoted in
    /// every per-object failure.
    echo: Option<String>,
}

/// One object's fate, between the store and the reply.
pub(super) struct StoredBatch {
    objects: Vec<Value>,
    /// (class, id, error) per object.
    fates: Vec<(String, Uuid, Option<String>)>,
    now: u64,
}

pub(super) fn batch_parse(
    params: &HashMap<String, String>,
    body: &[u8],
) -> Result<ParsedBatch, Resp> {
    if let Some(r) = check_consistency(params) {
        return Err(r);
    }
    let v = parse_body(body)?;
    Ok(ParsedBatch {
        objects: validate_batch_body(v)?,
        echo: None,
    })
}

pub(super) fn batch_store(st: &mut State, parsed: ParsedBatch) -> StoredBatch {
    let objects = parsed.objects;
    let now = now_ms();
    let p_fail = st.faults.p_object_fail;
    let p_reject = st.faults.p_object_reject;
    let empty = Map::new();
    let mut fates = Vec::with_capacity(objects.len());
    for o in &objects {
        let class = upper_first(o.get("class").and_then(Value::as_str).unwrap_or(""));
        let id = match o.get("id").and_then(Value::as_str).map(Uuid::parse_str) {
            Some(Ok(id)) => id,
            _ => {
                let bits = (u128::from(st.rng.next_u64()) << 64) | u128::from(st.rng.next_u64());
                uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid()
            }
        };
        let props = o
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut err = object_error(st, &class, props);
        if err.is_none() && st.rng.chance(p_fail) {
            err = Some(RATE_LIMIT_MESSAGE.to_string());
            *st.stats.injected.entry("object_fail".into()).or_default() += 1;
        }
        if err.is_none() && st.rng.chance(p_reject) {
            err = Some(REJECT_MESSAGE.to_string());
            *st.stats.injected.entry("object_reject".into()).or_default() += 1;
        }
        if let (Some(e), Some(echo)) = (&mut err, &parsed.echo) {
            e.push_str(&format!(" (request headers: {echo})"));
        }
        fates.push((class, id, err));
    }
    // Duplicates in one request: only the last occurrence is written; the
    // earlier ones are skipped and still reported SUCCESS.
    let mut last: HashMap<(&str, Uuid), usize> = HashMap::new();
    for (i, (class, id, _)) in fates.iter().enumerate() {
        last.insert((class.as_str(), *id), i);
    }
    for (i, (class, id, err)) in fates.iter().enumerate() {
        if err.is_some() || last.get(&(class.as_str(), *id)) != Some(&i) {
            continue;
        }
        let properties = objects[i]
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        st.objects.entry(class.clone()).or_default().insert(
            *id,
            Stored {
                properties,
                created: now,
                updated: now,
            },
        );
        st.stats.objects_written += 1;
    }
    StoredBatch {
        objects,
        fates,
        now,
    }
}

/// One element of the batch reply, serialized straight from the request's
/// values. Fields in the order `json!` would give them (serde_json's map is
/// sorted by key), so the bytes are those of the `Value` it replaces.
#[derive(serde::Serialize)]
#[allow(non_snake_case)]
struct ReplyItem<'a> {
    class: &'a str,
    creationTimeUnix: u64,
    deprecations: Option<()>,
    id: String,
    lastUpdateTimeUnix: u64,
    properties: &'a Value,
    result: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    vector: Option<&'a Value>,
}

pub(super) fn batch_reply(stored: StoredBatch) -> Resp {
    let now = stored.now;
    let empty = Value::Object(Map::new());
    let out: Vec<ReplyItem<'_>> = stored
        .fates
        .iter()
        .zip(&stored.objects)
        .map(|((class, id, err), o)| ReplyItem {
            class,
            creationTimeUnix: now,
            deprecations: None,
            id: id.to_string(),
            lastUpdateTimeUnix: now,
            properties: o
                .get("properties")
                .filter(|p| p.is_object())
                .unwrap_or(&empty),
            result: match err {
                None => json!({"status": "SUCCESS"}),
                Some(m) => json!({"status": "FAILED", "errors": {"error": [{"message": m}]}}),
            },
            vector: o.get("vector").filter(|v| !v.is_null()),
        })
        .collect();
    let bytes = serde_json::to_vec(&out).unwrap_or_default();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn batch_delete(
    shared: &Shared,
    st: &mut State,
    params: &HashMap<String, String>,
    body: &[u8],
) -> Resp {
    if let Some(r) = check_consistency(params) {
        return r;
    }
    let v = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let output = v.get("output").and_then(Value::as_str).unwrap_or("minimal");
    if output != "minimal" && output != "verbose" {
        return error_list(422, &format!("validate: output: unknown output {output:?}"));
    }
    let dry_run = match v.get("dryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return code_message(422, 601, "body.dryRun in body must be of type boolean"),
    };
    let Some(m) = v.get("match").and_then(Value::as_object) else {
        return error_list(422, "validate: empty match clause");
    };
    let Some(class) = m
        .get("class")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    else {
        return error_list(422, "validate: empty match.class clause");
    };
    let Some(where_) = m.get("where").filter(|w| !w.is_null()) else {
        return error_list(422, "validate: empty match.where clause");
    };
    let class = upper_first(class);
    if !st.classes.contains_key(&class) {
        return error_list(422, &format!("validate: class: {class}: class not found"));
    }
    let f = match filter::parse(where_) {
        Ok(f) => f,
        Err(e) => return error_list(422, &format!("validate: failed to parse where filter: {e}")),
    };
    let limit = shared.cfg.delete_limit.max(1);
    let matched: Vec<Uuid> = st
        .objects
        .get(&class)
        .map(|objs| {
            objs.iter()
                .filter(|(id, o)| filter::matches(&f, id, &o.properties))
                .map(|(id, _)| *id)
                .collect()
        })
        .unwrap_or_default();
    let batch: Vec<Uuid> = matched.iter().take(limit).copied().collect();
    if !dry_run {
        if let Some(objs) = st.objects.get_mut(&class) {
            for id in &batch {
                objs.remove(id);
            }
        }
        st.stats.objects_deleted += batch.len() as u64;
    }
    let status = if dry_run { "DRYRUN" } else { "SUCCESS" };
    let objects = if output == "verbose" {
        Value::Array(
            batch
                .iter()
                .map(|id| json!({"id": id.to_string(), "status": status}))
                .collect(),
        )
    } else {
        Value::Null
    };
    let mut echo_match = m.clone();
    echo_match.insert("class".into(), json!(class));
    reply(
        200,
        Some(&json!({
            "match": echo_match,
            "output": output,
            "dryRun": dry_run,
            "deletionTimeUnixMilli": now_ms(),
            "results": {
                "matches": matched.len(),
                "limit": limit,
                "successful": if dry_run { 0 } else { batch.len() },
                "failed": 0,
                "objects": objects,
            },
        })),
    )
}

fn object_json(class: &str, id: &Uuid, o: &Stored) -> Value {
    json!({
        "class": class,
        "id": id.to_string(),
        "properties": o.properties,
        "creationTimeUnix": o.created,
        "lastUpdateTimeUnix": o.updated,
    })
}

fn list_objects(st: &State, params: &HashMap<String, String>) -> Resp {
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 25,
        Some(Ok(l)) => l,
        Some(Err(_)) => return code_message(422, 601, "limit in query must be of type int64"),
    };
    let after = match params.get("after").filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match Uuid::parse_str(a) {
            Ok(u) => Some(u),
            Err(_) => {
                return error_list(422, &format!("invalid cursor: after {a:?} is not a uuid"))
            }
        },
    };
    let mut out = Vec::new();
    match params.get("class").map(|c| upper_first(c)) {
        Some(class) => {
            if !st.classes.contains_key(&class) {
                return error_list(404, &format!("class {class} not found"));
            }
            if let Some(objs) = st.objects.get(&class) {
                let range = match after {
                    Some(a) => {
                        objs.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    }
                    None => objs.range(..),
                };
                out.extend(range.take(limit).map(|(id, o)| object_json(&class, id, o)));
            }
        }
        None => {
            if after.is_some() {
                return error_list(422, "the 'after' cursor requires the 'class' parameter");
            }
            let mut classes: Vec<&String> = st.objects.keys().collect();
            classes.sort();
            for c in classes {
                for (id, o) in &st.objects[c] {
                    if out.len() >= limit {
                        break;
                    }
                    out.push(object_json(c, id, o));
                }
            }
        }
    }
    let n = out.len();
    reply(
        200,
        Some(&json!({"objects": out, "totalResults": n, "deprecations": null})),
    )
}

fn object(st: &mut State, method: &Method, class: &str, id: &str) -> Resp {
    let Ok(id) = Uuid::parse_str(id) else {
        return code_message(
            422,
            606,
            &format!("id in path must be of type uuid: {id:?}"),
        );
    };
    let class = upper_first(class);
    match *method {
        Method::DELETE => {
            if !st.classes.contains_key(&class) {
                return error_list(500, &format!("delete from non-existing index for {class}"));
            }
            if let Some(objs) = st.objects.get_mut(&class) {
                if objs.remove(&id).is_some() {
                    st.stats.objects_deleted += 1;
                }
            }
            // Since 1.25.29/1.26 a missing object is not checked: 204 either way.
            reply(204, None)
        }
        Method::HEAD | Method::GET => match st.objects.get(&class).and_then(|m| m.get(&id)) {
            Some(o) if *method == Method::GET => reply(200, Some(&object_json(&class, &id, o))),
            Some(_) => reply(204, None),
            None => reply(404, None),
        },
        _ => code_message(405, 405, "method not allowed"),
    }
}

/// Check a Property body; Ok(with defaults filled in).
fn check_property(p: &Value, class: &str) -> Result<Value, String> {
    let mut p = p.as_object().cloned().ok_or("property must be an object")?;
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .ok_or("property name is required")?
        .to_string();
    if !valid_property_name(&name) {
        return Err(format!("'{name}' is not a valid property name"));
    }
    if matches!(name.as_str(), "id" | "_id" | "_additional") {
        return Err(format!("'{name}' is a reserved property name"));
    }
    let types: Vec<&str> = p
        .get("dataType")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(ty) = types.first().copied() else {
        return Err(format!(
            "property '{name}' on class '{class}': dataType is required"
        ));
    };
    let is_primitive = PRIMITIVE_TYPES.contains(&ty);
    if !is_primitive && !valid_class_name(ty) {
        return Err(format!("property '{name}': invalid dataType {ty:?}"));
    }
    let is_text = ty == "text" || ty == "text[]";
    match p.get("tokenization") {
        None | Some(Value::Null) => {
            if is_text {
                p.insert("tokenization".into(), json!("word"));
            }
        }
        Some(t) => {
            let t = t.as_str().unwrap_or("");
            if !TOKENIZATIONS.contains(&t) {
                return Err(format!("property '{name}': unknown tokenization {t:?}"));
            }
            if !is_text {
                return Err(format!(
                    "Tokenization is not allowed for data type '{ty}' (property '{name}')"
                ));
            }
        }
    }
    p.entry("indexFilterable").or_insert(json!(true));
    p.entry("indexSearchable").or_insert(json!(is_text));
    Ok(Value::Object(p))
}

fn create_class(st: &mut State, body: &[u8]) -> Resp {
    let v = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(mut c) = v.as_object().cloned() else {
        return code_message(422, 601, "objectClass in body must be of type object");
    };
    let Some(name) = c.get("class").and_then(Value::as_str).map(upper_first) else {
        return error_list(422, "class name must not be empty");
    };
    if !valid_class_name(&name) {
        return error_list(422, &format!("'{name}' is not a valid class name"));
    }
    if st.classes.contains_key(&name) {
        return error_list(422, &format!("class name {name} already exists"));
    }
    if let Some(similar) = st.classes.keys().find(|k| k.eq_ignore_ascii_case(&name)) {
        return error_list(
            422,
            &format!("class name {name:?} already exists as a similar class {similar:?} (found similar class)"),
        );
    }
    let mut props = Vec::new();
    let mut seen = Vec::new();
    for p in c
        .get("properties")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        match check_property(&p, &name) {
            Ok(p) => {
                let n = p["name"].as_str().unwrap_or("").to_ascii_lowercase();
                if seen.contains(&n) {
                    return error_list(
                        422,
                        &format!("class '{name}': property '{n}' already exists"),
                    );
                }
                seen.push(n);
                props.push(p);
            }
            Err(e) => return error_list(422, &e),
        }
    }
    c.insert("class".into(), json!(name));
    c.insert("properties".into(), Value::Array(props));
    let vectorizer = c.get("vectorizer").and_then(Value::as_str).unwrap_or("");
    if vectorizer.is_empty() {
        c.insert("vectorizer".into(), json!("none"));
    }
    c.entry("vectorIndexType").or_insert(json!("hnsw"));
    c.entry("invertedIndexConfig").or_insert(json!({
        "bm25": {"b": 0.75, "k1": 1.2}, "cleanupIntervalSeconds": 60, "stopwords": {"preset": "en"}
    }));
    c.entry("multiTenancyConfig")
        .or_insert(json!({"enabled": false}));
    c.entry("replicationConfig").or_insert(json!({"factor": 1}));
    let c = Value::Object(c);
    st.classes.insert(name, c.clone());
    reply(200, Some(&c))
}

fn add_property(st: &mut State, class: &str, body: &[u8]) -> Resp {
    let v = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let class = upper_first(class);
    let p = match check_property(&v, &class) {
        Ok(p) => p,
        Err(e) => return error_list(422, &e),
    };
    let Some(c) = st.classes.get_mut(&class) else {
        return error_list(422, &format!("class {class:?} not found"));
    };
    let name = p["name"].as_str().unwrap_or("").to_string();
    let Some(props) = c.get_mut("properties").and_then(Value::as_array_mut) else {
        return error_list(500, "class has no properties list");
    };
    if props.iter().any(|q| {
        q["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
    }) {
        return error_list(422, &format!("property '{name}' already exists"));
    }
    props.push(p.clone());
    reply(200, Some(&p))
}

pub fn dump(st: &State) -> Vec<Dumped> {
    let mut out = Vec::new();
    for (class, objs) in &st.objects {
        for (id, o) in objs {
            let s = |k: &str| {
                o.properties
                    .get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            out.push(Dumped {
                class: class.clone(),
                id: *id,
                repo: s("repo"),
                path: s("path"),
                content_sha256: s("contentSha256"),
            });
        }
    }
    out.sort();
    out
}

fn control(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Resp {
    let mut st = shared.lock();
    match (method, rest) {
        (&Method::GET, "objects") => {
            let mut text = String::new();
            for d in dump(&st) {
                text.push_str(&serde_json::to_string(&d).unwrap_or_default());
                text.push('\n');
            }
            Response::builder()
                .header("content-type", "application/x-ndjson")
                .body(Full::new(Bytes::from(text)))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
        }
        (&Method::GET, "faults") => reply(200, Some(&json!(st.faults))),
        (&Method::PUT | &Method::POST, "faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => {
                st.faults = f;
                reply(200, Some(&json!(st.faults)))
            }
            Err(e) => error_list(422, &format!("bad faults: {e}")),
        },
        (&Method::GET, "stats") => reply(200, Some(&json!(st.stats))),
        (&Method::GET, "batches") => {
            let mut text = String::new();
            for b in &st.batches {
                text.push_str(&serde_json::to_string(b).unwrap_or_default());
                text.push('\n');
            }
            Response::builder()
                .header("content-type", "application/x-ndjson")
                .body(Full::new(Bytes::from(text)))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
        }
        (&Method::POST, "reset") => {
            st.classes.clear();
            st.objects.clear();
            st.requests.clear();
            st.batches.clear();
            reply(200, None)
        }
        _ => error_list(404, "unknown stand-in control endpoint"),
    }
}
