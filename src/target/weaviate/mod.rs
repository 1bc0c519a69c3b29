//! The Weaviate target: a batch of ops becomes one `POST /v1/batch/objects`
//! (every chunk of every upserted file), then one `DELETE /v1/batch/objects`
//! by filter: every object of each deleted file (by repo and path) and every
//! object of each written file but its current chunks. Each is tried once
//! per [`Target::apply`] call (the delete gets a few quick local retries);
//! the sync loop owns retries.
//!
//! Invariants:
//! - ids are deterministic (`target::object_id`), so resending any request
//!   is harmless — which is why a dropped connection is `Transient`;
//! - a batch is reduced to the last op per id before sending, so the two
//!   requests touch disjoint ids and their order does not matter;
//! - secrets (API key, provider keys, URL credentials) live only in sensitive
//!   header values: never in `Debug` or `Display`, and every reply body and
//!   every message leaving the target goes through [`redact::Redactor`], so a
//!   server that echoes the request's headers cannot leak them downstream;
//! - a configuration is checked ([`WeaviateConfig::validate`]) before any
//!   state is touched: a bad URL or collection name is a usage error.
//!
//! The wire rules come from `shared/weaviate/CONTRACT.md`; see
//! `docs/weaviate.md` for the user-facing description.
//!
//! Rooms: this file (the target: prepare, apply, the `Target` impl),
//! [`config`] (what to connect to, checked up front), `listing` (reading the
//! collection back: export and `list_repo`), [`search`] (GraphQL `Get` for
//! `elysiactl search`), [`classify`] (a reply to
//! Ok/Retry/Fail), [`client`] (the HTTP exchange), [`redact`], [`schema`],
//! [`wire`] (the request bodies).

pub mod classify;
pub mod client;
pub mod config;
mod listing;
pub mod redact;
pub mod schema;
pub mod search;
pub mod wire;

use std::collections::HashMap;
use std::fmt;

use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use self::classify::{classify_delete, classify_upsert, status_error, transport_error, Reply};
use self::client::{Client, Exchange};
pub use self::config::{
    ConfigError, WeaviateConfig, API_KEY_ENV, DEFAULT_COLLECTION, DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT, PROVIDER_ENV_HEADERS,
};
use self::redact::Redactor;
use crate::target::{Document, Error, Exported, Op, OpOutcome, Target};

/// The batch endpoint, with writes at an explicit consistency level:
/// `QUORUM` (Weaviate's default, stated so a replicated collection never
/// acknowledges a batch that one replica alone holds).
const BATCH_PATH: &str = "/v1/batch/objects?consistency_level=QUORUM";

pub struct WeaviateTarget {
    /// The class name as the server stores it.
    class: String,
    vectorizer: Option<String>,
    /// The URL for messages (no userinfo).
    shown_url: String,
    concurrency: usize,
    client: Client,
    /// Removes our secrets from reply bodies and from every message out.
    redactor: Redactor,
    /// Owned so `apply` can be called from plain threads, several at once.
    rt: tokio::runtime::Runtime,
}

impl fmt::Debug for WeaviateTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeaviateTarget")
            .field("url", &self.shown_url)
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

impl WeaviateTarget {
    pub fn new(cfg: WeaviateConfig) -> Result<Self, Error> {
        let redactor = Redactor::new(&cfg);
        Self::build(cfg, redactor.clone()).map_err(|e| redactor.error(e))
    }

    fn build(cfg: WeaviateConfig, redactor: Redactor) -> Result<Self, Error> {
        let fatal = |message: String| Error::Fatal { message };
        let shown_url = client::redact_url(&cfg.url);
        cfg.validate().map_err(|e| fatal(e.to_string()))?;
        let base = cfg.url.trim_end_matches('/');
        let class = schema::normalize_class(&cfg.collection).map_err(fatal)?;
        let headers =
            client::default_headers(cfg.api_key.as_deref(), &cfg.headers).map_err(fatal)?;
        let client = Client::new(base, headers, cfg.timeout, cfg.concurrency).map_err(fatal)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weaviate-io")
            .enable_all()
            .build()
            .map_err(|e| fatal(format!("cannot start the I/O runtime: {e}")))?;
        Ok(WeaviateTarget {
            class,
            vectorizer: cfg.vectorizer,
            shown_url,
            concurrency: cfg.concurrency.max(1),
            client,
            redactor,
            rt,
        })
    }

    /// One request; the reply's body comes back with our secrets removed,
    /// before anything can quote (and truncate) it.
    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Exchange {
        match self.client.send(method, path, body).await {
            Exchange::Http {
                status,
                headers,
                body,
            } => {
                let body = match self.redactor.bytes(&body) {
                    std::borrow::Cow::Borrowed(_) => body,
                    std::borrow::Cow::Owned(b) => bytes::Bytes::from(b),
                };
                Exchange::Http {
                    status,
                    headers,
                    body,
                }
            }
            no_reply => no_reply,
        }
    }

    /// The collection name as sent to the server.
    pub fn class(&self) -> &str {
        &self.class
    }

    fn target_name(&self) -> String {
        format!("Weaviate at {}", self.shown_url)
    }

    async fn send_json(&self, method: Method, path: &str, body: &Value) -> Exchange {
        // Serializing a Value cannot fail.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.send(method, path, Some(bytes)).await
    }

    async fn prepare_async(&self) -> Result<(), Error> {
        let target = self.target_name();
        let unreachable = |message: String| Error::Unreachable {
            target: target.clone(),
            message,
            retry_after: None,
        };
        match self.send(Method::GET, "/v1/.well-known/ready", None).await {
            Exchange::NoReply(f) => {
                let e = transport_error(&target, "GET /v1/.well-known/ready", &f);
                return Err(unreachable(match e {
                    Error::Unreachable { message, .. } => message,
                    other => other.to_string(),
                }));
            }
            Exchange::Http { status, .. } if status.is_success() => {}
            Exchange::Http { status, .. } if status.as_u16() == 503 => {
                return Err(unreachable(
                    "not ready (HTTP 503 on /v1/.well-known/ready)".into(),
                ))
            }
            Exchange::Http {
                status,
                headers,
                body,
            } => {
                return Err(self.prepare_error(status_error(
                    "GET /v1/.well-known/ready",
                    status.as_u16(),
                    &headers,
                    &body,
                )))
            }
        }

        let path = format!("/v1/schema/{}", self.class);
        match self.send(Method::GET, &path, None).await {
            Exchange::Http { status, body, .. } if status.is_success() => {
                let class: Value = serde_json::from_slice(&body).map_err(|_| Error::Fatal {
                    message: format!("GET {path}: the reply is not a JSON class"),
                })?;
                for name in schema::missing_properties(&class) {
                    self.add_property(name).await?;
                }
                Ok(())
            }
            Exchange::Http { status, .. } if status.as_u16() == 404 => self.create_class().await,
            ex => Err(self.prepare_error(self.reply_error(&format!("GET {path}"), ex.reply()))),
        }
    }

    async fn create_class(&self) -> Result<(), Error> {
        let body = schema::class_body(&self.class, self.vectorizer.as_deref());
        let ex = self.send_json(Method::POST, "/v1/schema", &body).await;
        // 422 "already exists": another process created it between our GET
        // and POST.
        if created_or_exists(&ex) {
            Ok(())
        } else {
            Err(self.prepare_error(self.reply_error("POST /v1/schema", ex.reply())))
        }
    }

    async fn add_property(&self, name: &str) -> Result<(), Error> {
        let Some((_, data_type)) = schema::PROPERTIES.iter().find(|(n, _)| *n == name) else {
            return Ok(());
        };
        let body = schema::property(name, data_type, self.vectorizer.as_deref());
        let path = format!("/v1/schema/{}/properties", self.class);
        let ex = self.send_json(Method::POST, &path, &body).await;
        if created_or_exists(&ex) {
            Ok(())
        } else {
            Err(self.prepare_error(self.reply_error(&format!("POST {path}"), ex.reply())))
        }
    }

    fn reply_error(&self, what: &str, reply: Reply<'_>) -> Error {
        match reply {
            Reply::NoReply(f) => transport_error(&self.target_name(), what, f),
            Reply::Http {
                status,
                headers,
                body,
            } => status_error(what, status, headers, body),
        }
    }

    /// Nothing can be written until prepare succeeds, so a permanent refusal
    /// there (auth, bad class) stops the run.
    fn prepare_error(&self, e: Error) -> Error {
        match e {
            Error::Rejected { message } => Error::Fatal {
                message: format!("{}: {message}", self.target_name()),
            },
            other => other,
        }
    }

    /// Write every chunk of `docs` in one request; one outcome per
    /// document, `Ok` only when every one of its chunks is.
    async fn upsert(&self, docs: &[&Document]) -> Result<Vec<OpOutcome>, Error> {
        // Sized once for the contents plus room for escapes and the other
        // properties, so a batch body of megabytes is not grown by doubling.
        let guess: usize = docs
            .iter()
            .map(|d| {
                let n = d.chunks.len();
                d.content_len() + d.content_len() / 8 + n * (d.path.len() * 2 + 320)
            })
            .sum();
        let mut bytes = Vec::with_capacity(guess + 64);
        wire::write_batch(&mut bytes, &self.class, docs.iter().flat_map(|d| &d.chunks));
        let ex = self.send(Method::POST, BATCH_PATH, Some(bytes)).await;
        let ids: Vec<Uuid> = docs
            .iter()
            .flat_map(|d| d.chunks.iter().map(|c| c.id))
            .collect();
        let per_chunk = classify_upsert(&self.target_name(), ex.reply(), &ids)?;
        let mut per_chunk = per_chunk.into_iter();
        Ok(docs
            .iter()
            .map(|d| file_outcome(d, per_chunk.by_ref().take(d.chunks.len())))
            .collect())
    }

    /// Delete every object any of `filters` matches, repeating while the
    /// server matched more than its limit let it delete in one call
    /// (QUERY_MAXIMUM_RESULTS). `Some(message)` when objects failed to go:
    /// which file they belong to cannot be told from a chunk's id, so the
    /// caller fails every op of the request.
    async fn delete_where(&self, filters: Vec<Value>) -> Result<Option<String>, Error> {
        if filters.is_empty() {
            return Ok(None);
        }
        let body = wire::batch_delete_where(&self.class, filters);
        // A delete by filter is idempotent and cheap to send again, and the
        // chunks it follows are already written: a failure that may pass
        // (without a server hint to wait) gets a few quick retries here
        // rather than sending the whole batch again.
        let mut attempt = 0u32;
        loop {
            match self.delete_rounds(&body).await {
                Err(e) if e.is_retryable() && e.retry_after().is_none() && attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                r => return r,
            }
        }
    }

    /// One delete by filter, to the end of what it matches.
    async fn delete_rounds(&self, body: &Value) -> Result<Option<String>, Error> {
        let mut failure: Option<String> = None;
        loop {
            let ex = self.send_json(Method::DELETE, BATCH_PATH, body).await;
            let round = classify_delete(&self.target_name(), ex.reply())?;
            let more = round.more_to_delete();
            let progressed = round.successful > 0;
            if failure.is_none() {
                failure = round.failures.into_values().next().or_else(|| {
                    (round.failed > 0)
                        .then(|| format!("batch delete: {} objects failed", round.failed))
                });
            }
            if !more {
                return Ok(failure);
            }
            if !progressed {
                // Objects still match but none went: we cannot say which
                // remain, so none of these deletes may be reported done.
                return Err(Error::Transient {
                    message: format!(
                        "batch delete: {} objects still match but the server deleted none",
                        round.matches
                    ),
                    retry_after: None,
                });
            }
            // Each productive round deletes at least one object, so this
            // ends: the objects matching are finite and only shrink.
        }
    }

    async fn apply_async(&self, ops: &[Op]) -> Result<Vec<OpOutcome>, Error> {
        let reduced = wire::reduce(ops);
        // 1. Every chunk of every upserted file.
        let mut up = if reduced.upserts.is_empty() {
            Vec::new()
        } else {
            match self.upsert(&reduced.upserts).await {
                Ok(u) => u,
                // Stops the run, or a server hint to wait (Retry-After) that
                // holds for the whole batch.
                Err(e) if e.is_fatal() || e.retry_after().is_some() => return Err(e),
                // The whole batch was this one request: its failure is the
                // batch's.
                Err(e) if reduced.deletes.is_empty() => return Err(e),
                // Otherwise only the upserts fail (retried if that may
                // pass); the deletes still go.
                Err(e) if e.is_retryable() => vec![transient(&e); reduced.upserts.len()],
                Err(e) => vec![rejected(&e); reduced.upserts.len()],
            }
        };
        // 2. One delete: every object of each deleted file, and for each
        // file just written every object but its current chunks (what an
        // earlier, longer version left, or a copy under another id). Only after the new chunks are
        // in, so a file being updated is never absent from search; a kill
        // between the two leaves the batch unrecorded in the WAL, and the
        // next run writes and removes again.
        let written: Vec<usize> = (0..up.len()).filter(|&i| up[i].is_ok()).collect();
        let deleted: Vec<(&str, &str)> = reduced
            .deletes
            .iter()
            .map(|(_, repo, path)| (*repo, *path))
            .collect();
        let written_docs: Vec<&Document> = written.iter().map(|&i| reduced.upserts[i]).collect();
        let filters = wire::delete_filters(&deleted, &written_docs);
        let del_outcome = match self.delete_where(filters).await {
            Ok(failure) => delete_outcome(failure),
            Err(e) if e.is_fatal() || e.retry_after().is_some() => return Err(e),
            // Nothing was written and the delete was all there was to do.
            Err(e) if written.is_empty() && up.iter().all(|o| o.is_ok()) => return Err(e),
            Err(e) if e.is_retryable() => transient(&e),
            Err(e) => rejected(&e),
        };
        if !del_outcome.is_ok() {
            for &i in &written {
                up[i] = del_outcome.clone();
            }
        }
        let by_id: HashMap<Uuid, OpOutcome> = reduced
            .upserts
            .iter()
            .map(|d| d.id)
            .zip(up)
            .chain(
                reduced
                    .deletes
                    .iter()
                    .map(|(id, _, _)| (*id, del_outcome.clone())),
            )
            .collect();
        Ok(ops
            .iter()
            .map(|op| {
                by_id.get(&op.id()).cloned().unwrap_or(OpOutcome::Failed {
                    retryable: true,
                    message: "no outcome for this op".to_string(),
                })
            })
            .collect())
    }
}

/// A file's outcome from its chunks' (in chunk order): the first permanent
/// failure, else the first that may pass, named by chunk and lines.
fn file_outcome(d: &Document, chunks: impl Iterator<Item = OpOutcome>) -> OpOutcome {
    let mut worst: Option<OpOutcome> = None;
    for (c, outcome) in d.chunks.iter().zip(chunks) {
        if let OpOutcome::Failed { retryable, message } = outcome {
            let named = OpOutcome::Failed {
                retryable,
                message: if d.chunks.len() == 1 {
                    message
                } else {
                    format!(
                        "chunk {} of {} (lines {}-{}): {message}",
                        c.chunk, c.chunk_count, c.start_line, c.end_line
                    )
                },
            };
            let permanent = !retryable;
            match &worst {
                None => worst = Some(named),
                Some(OpOutcome::Failed {
                    retryable: true, ..
                }) if permanent => worst = Some(named),
                _ => {}
            }
        }
    }
    worst.unwrap_or(OpOutcome::Ok)
}

/// The outcome of the ops of one delete request.
fn delete_outcome(failure: Option<String>) -> OpOutcome {
    match failure {
        None => OpOutcome::Ok,
        Some(message) => OpOutcome::Failed {
            retryable: classify::is_retryable_message(&message),
            message,
        },
    }
}

/// The outcome of an op whose request failed in a way a later attempt may
/// fix.
fn transient(e: &Error) -> OpOutcome {
    OpOutcome::Failed {
        retryable: true,
        message: e.to_string(),
    }
}

fn rejected(e: &Error) -> OpOutcome {
    OpOutcome::Failed {
        retryable: false,
        message: e.to_string(),
    }
}

impl Target for WeaviateTarget {
    fn describe(&self) -> String {
        format!("{} (collection {})", self.target_name(), self.class)
    }

    // The one way out of the target: every message is redacted here.

    fn prepare(&self) -> Result<(), Error> {
        let r = self.rt.handle().block_on(self.prepare_async());
        self.redactor.result(r, |_, v| v)
    }

    fn apply(&self, ops: &[Op]) -> Result<Vec<OpOutcome>, Error> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let r = self.rt.handle().block_on(self.apply_async(ops));
        self.redactor.result(r, Redactor::outcomes)
    }

    fn is_empty(&self) -> Result<Option<bool>, Error> {
        let r = self.rt.handle().block_on(self.is_empty_async());
        self.redactor.result(r, |_, v| v)
    }

    fn list_repo(&self, repo: &str) -> Result<Vec<String>, Error> {
        let r = self.rt.handle().block_on(self.list_repo_async(repo));
        self.redactor.result(r, |_, v| v)
    }

    fn scan(&self, content: bool, each: &mut dyn FnMut(Exported)) -> Result<(), Error> {
        let r = self.rt.handle().block_on(self.scan_async(content, each));
        self.redactor.result(r, |_, v| v)
    }

    fn export(&self, content: bool) -> Result<Vec<Exported>, Error> {
        let r = self.rt.handle().block_on(self.list_all_async(content));
        self.redactor.result(r, |_, v| v)
    }

    fn max_in_flight(&self) -> usize {
        self.concurrency
    }
}

/// A schema write that succeeded, or was refused with 422 because what it
/// creates is already there.
fn created_or_exists(ex: &Exchange) -> bool {
    match ex {
        Exchange::Http { status, .. } if status.is_success() => true,
        Exchange::Http { status, body, .. } => {
            status.as_u16() == 422 && String::from_utf8_lossy(body).contains("already exists")
        }
        _ => false,
    }
}
