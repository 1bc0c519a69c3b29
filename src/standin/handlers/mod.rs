//! Routing and the shared reply helpers, with Weaviate's status codes and
//! bodies. The endpoints live by family: [`batch`] (the batch upsert and
//! delete, where the faults apply), [`schema`], [`objects`], [`graphql`] (the `Get` of `search`), and
//! [`control`] (the stand-in's own `/__standin/` endpoints).
//!
//! Every handler runs under the state lock and answers with a ready
//! response; only the batch upsert parses and replies outside it.

// Early-return helpers carry a ready response as their error; one per request.
#![allow(clippy::result_large_err)]

mod batch;
mod control;
mod graphql;
mod objects;
mod schema;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::faults::{Faults, Injected};
use super::{BatchLogged, Dumped, Recorded, Release, Shared, State, Stored};

use batch::{batch_delete, batch_ids, batch_parse, batch_reply, batch_store};
use control::control;
pub use control::dump;
use objects::{list_objects, object};
use schema::{add_property, create_class};

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

    if method == Method::DELETE
        && path.trim_end_matches('/') == "/v1/batch/objects"
        && wait_for_release(&shared).await == Some(Release::Drop)
    {
        return Err(DropConnection);
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
                parsed.max_tokens = shared.cfg.vectorizer_max_tokens;
                let per_object = shared.lock().faults.vectorizer_us_per_object;
                if per_object > 0 {
                    let n = parsed.objects.len() as u64;
                    tokio::time::sleep(std::time::Duration::from_micros(
                        per_object.saturating_mul(n),
                    ))
                    .await;
                }
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

/// Wait while [`super::Standin::hold_deletes`] holds batch deletes; how the
/// hold ended if this request waited on it, `None` if it did not wait.
async fn wait_for_release(shared: &Shared) -> Option<Release> {
    /// Counts the request among the held while it waits, even if its
    /// connection goes and the wait is dropped.
    struct Held<'a>(&'a Shared);
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            self.0.lock().held_deletes -= 1;
        }
    }
    let mut held = None;
    loop {
        let released = shared.released.notified();
        tokio::pin!(released);
        // Registered before the check, so a release in between is not missed.
        released.as_mut().enable();
        let release = {
            let mut st = shared.lock();
            if st.hold_deletes && held.is_none() {
                st.held_deletes += 1;
            }
            (!st.hold_deletes).then_some(st.release)
        };
        // The lock is free again: dropping `Held` takes it.
        if let Some(how) = release {
            return held.map(|_: Held<'_>| how);
        }
        held.get_or_insert(Held(shared));
        released.await;
    }
}

/// Note in the batch log that request `seq` is answered now.
fn answered(shared: &Shared, st: &mut State, seq: u64) {
    let now = shared.clock_us(std::time::Instant::now());
    // Entries are in seq order; a reset may have removed this one.
    if let Ok(i) = st.batches.binary_search_by_key(&seq, |b| b.seq) {
        st.batches[i].answered_us = Some(now);
    }
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
            Ok(mut parsed) => {
                parsed.max_tokens = shared.cfg.vectorizer_max_tokens;
                batch_reply(batch_store(st, parsed))
            }
            Err(r) => r,
        },
        (&Method::DELETE, ["batch", "objects"]) => batch_delete(shared, st, params, body),
        (&Method::GET, ["objects"]) => list_objects(st, params),
        (&Method::POST, ["graphql"]) => graphql::graphql(st, body),
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
