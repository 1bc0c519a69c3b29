//! Shared by the `weaviate_*` integration tests: the in-process stand-in, an
//! OpenAPI body validator, a raw HTTP helper, and a generated workload with
//! helpers to drive the real binary and read its WAL (`e2e`).

#![allow(dead_code)]

#[path = "../../src/standin/mod.rs"]
pub mod standin;

pub mod e2e;
pub mod openapi;

use std::time::Duration;

use elysiactl::object::ChunkSize;
use elysiactl::target::weaviate::client::{Client, Exchange};
use elysiactl::target::weaviate::{WeaviateConfig, WeaviateTarget};
use elysiactl::target::{object_id, Document, Op};
use reqwest::header::HeaderMap;
use reqwest::Method;

/// The kinds of fault the stand-in injects that a run can still converge
/// under with retries (not the permanent or echoing ones), by the names of
/// its `injected` stats.
pub const TRANSIENT_FAULTS: &[&str] = &[
    "429",
    "500",
    "503",
    "drop",
    "apply_then_drop",
    "object_fail",
];

/// One raw request; for poking the stand-in directly.
pub struct Raw {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Raw {
    pub fn new(base: &str, headers: HeaderMap) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = Client::new(base, headers, Duration::from_secs(10), 1).expect("client");
        Raw { rt, client }
    }

    pub fn call(&self, method: Method, path: &str, body: Option<&str>) -> Exchange {
        let body = body.map(|b| b.as_bytes().to_vec());
        self.rt.block_on(self.client.send(method, path, body))
    }

    /// Status and body, panicking when no reply came.
    pub fn status(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        match self.call(method, path, body) {
            Exchange::Http { status, body, .. } => {
                let v = if body.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::from_slice(&body).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
                    })
                };
                (status.as_u16(), v)
            }
            Exchange::NoReply(f) => panic!("no reply: {f:?}"),
        }
    }
}

pub fn config(url: &str, collection: &str) -> WeaviateConfig {
    WeaviateConfig::from_lookup(
        url.to_string(),
        collection.to_string(),
        None,
        Duration::from_secs(10),
        4,
        |_| None,
    )
}

pub fn target(url: &str, collection: &str) -> WeaviateTarget {
    WeaviateTarget::new(config(url, collection)).expect("target")
}

pub fn doc(repo: &str, path: &str, version: u32) -> Document {
    let content = format!("// {repo}/{path} v{version}\n");
    Document::new(repo, path, content.into_bytes(), ChunkSize::DEFAULT)
}

pub fn del(repo: &str, path: &str) -> Op {
    Op::Delete {
        id: object_id(repo, path),
        repo: repo.to_string(),
        path: path.to_string(),
    }
}
