//! The stand-in's own endpoints under `/__standin/` (objects, faults, stats,
//! batches, reset), for tests to look at or steer the server. Never
//! faulted, never echoing headers.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response};
use serde_json::{json, Value};

use super::{error_list, reply, Dumped, Faults, Resp, Shared, State};

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

pub(super) fn control(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Resp {
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
