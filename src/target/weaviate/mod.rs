//! The Weaviate target: batches of ops become one `POST /v1/batch/objects`
//! (upserts) and one `DELETE /v1/batch/objects` (deletes by id), each tried
//! once per [`Target::apply`] call; the sync loop owns retries.
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

pub mod classify;
pub mod client;
pub mod redact;
pub mod schema;
pub mod wire;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use self::classify::{classify_delete, classify_upsert, status_error, transport_error, Reply};
use self::client::{Client, Exchange};
use self::redact::Redactor;
use crate::target::{Error, Op, OpOutcome, Target};

/// The default collection name.
pub const DEFAULT_COLLECTION: &str = "SRC_ENTERPRISE__";
/// The default per-request timeout: well under Weaviate's 60 s write timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default number of batches in flight.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Environment variables holding vectorizer provider keys and the header each
/// is sent as (Weaviate's own module variable names).
pub const PROVIDER_ENV_HEADERS: &[(&str, &str)] = &[
    ("OPENAI_APIKEY", "X-OpenAI-Api-Key"),
    ("OPENAI_ORGANIZATION", "X-OpenAI-Organization"),
    ("AZURE_APIKEY", "X-Azure-Api-Key"),
    ("COHERE_APIKEY", "X-Cohere-Api-Key"),
    ("HUGGINGFACE_APIKEY", "X-HuggingFace-Api-Key"),
    ("VOYAGEAI_APIKEY", "X-VoyageAI-Api-Key"),
    ("JINAAI_APIKEY", "X-JinaAI-Api-Key"),
    ("MISTRAL_APIKEY", "X-Mistral-Api-Key"),
    ("NVIDIA_APIKEY", "X-Nvidia-Api-Key"),
    ("GOOGLE_APIKEY", "X-Goog-Api-Key"),
    ("AWS_ACCESS_KEY", "X-Aws-Access-Key"),
    ("AWS_SECRET_KEY", "X-Aws-Secret-Key"),
    ("ANTHROPIC_APIKEY", "X-Anthropic-Api-Key"),
];

/// The environment variable holding the Weaviate API key (never a flag).
pub const API_KEY_ENV: &str = "WEAVIATE_API_KEY";

/// Objects fetched per page by [`Target::list_repo`].
const LIST_PAGE: usize = 1000;

#[derive(Clone)]
pub struct WeaviateConfig {
    /// e.g. `http://127.0.0.1:8080` (no trailing `/v1`).
    pub url: String,
    pub collection: String,
    /// From `WEAVIATE_API_KEY` only; `Authorization: Bearer` is sent only when set.
    pub api_key: Option<String>,
    /// Vectorizer provider keys, e.g. `("X-OpenAI-Api-Key", value)`.
    pub headers: Vec<(String, String)>,
    /// Vectorizer module for a collection we create; `None` → `"none"`.
    pub vectorizer: Option<String>,
    pub timeout: Duration,
    pub concurrency: usize,
}

impl fmt::Debug for WeaviateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, _)| format!("{n}: <redacted>"))
            .collect();
        f.debug_struct("WeaviateConfig")
            .field("url", &client::redact_url(&self.url))
            .field("collection", &self.collection)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("headers", &headers)
            .field("vectorizer", &self.vectorizer)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl WeaviateConfig {
    /// Reads `WEAVIATE_API_KEY` and the provider keys of
    /// [`PROVIDER_ENV_HEADERS`] from the environment. Empty values count as unset.
    pub fn from_env(
        url: String,
        collection: String,
        vectorizer: Option<String>,
        timeout: Duration,
        concurrency: usize,
    ) -> Self {
        Self::from_lookup(url, collection, vectorizer, timeout, concurrency, |k| {
            std::env::var(k).ok()
        })
    }

    /// [`Self::from_env`] over any variable lookup (for tests).
    pub fn from_lookup(
        url: String,
        collection: String,
        vectorizer: Option<String>,
        timeout: Duration,
        concurrency: usize,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let headers = PROVIDER_ENV_HEADERS
            .iter()
            .filter_map(|(var, header)| get(var).map(|v| (header.to_string(), v)))
            .collect();
        WeaviateConfig {
            url,
            collection,
            api_key: get(API_KEY_ENV),
            headers,
            vectorizer: vectorizer.filter(|v| !v.is_empty() && v != "none"),
            timeout,
            concurrency: concurrency.max(1),
        }
    }

    /// Whether the URL and the collection name can work, checked before
    /// anything is written: the error names the flag, the value (without
    /// credentials) and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_url(&self.url)?;
        if schema::normalize_class(&self.collection).is_err() {
            return Err(ConfigError::Collection {
                name: self.collection.clone(),
                suggestion: suggest_class(&self.collection),
            });
        }
        Ok(())
    }
}

/// A configuration value that cannot work; each message names the flag, the
/// value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "--weaviate-url (or ELYSIACTL_WEAVIATE_URL) {shown:?} needs an http:// or https:// scheme: \
         give e.g. {suggestion}"
    )]
    UrlScheme { shown: String, suggestion: String },
    #[error(
        "--weaviate-url (or ELYSIACTL_WEAVIATE_URL) {shown:?} ends in /v1: drop the /v1 \
         (elysiactl adds it), i.e. {suggestion}"
    )]
    UrlV1 { shown: String, suggestion: String },
    #[error(
        "--weaviate-url (or ELYSIACTL_WEAVIATE_URL) {shown:?} {reason}: give the server's root, \
         e.g. http://localhost:8080"
    )]
    UrlInvalid { shown: String, reason: String },
    #[error(
        "--collection {name:?} is not a Weaviate collection name (a letter, then letters, digits \
         or _, at most 255; the server uppercases the first letter): use e.g. {suggestion}"
    )]
    Collection { name: String, suggestion: String },
}

fn validate_url(url: &str) -> Result<(), ConfigError> {
    let shown = client::redact_url(url.trim());
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        let rest = shown.split_once("://").map_or(shown.as_str(), |(_, r)| r);
        return Err(ConfigError::UrlScheme {
            suggestion: format!("http://{}", rest.trim_start_matches('/')),
            shown,
        });
    }
    let invalid = |reason: &str| ConfigError::UrlInvalid {
        shown: shown.clone(),
        reason: reason.to_string(),
    };
    if url.trim() != url || url.chars().any(char::is_whitespace) {
        return Err(invalid("contains whitespace"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&format!("is not a URL ({e})")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("has a query or fragment"));
    }
    let path = parsed.path().trim_end_matches('/');
    if path == "/v1" || path.ends_with("/v1") {
        let base = shown.trim_end_matches('/');
        return Err(ConfigError::UrlV1 {
            suggestion: base.strip_suffix("/v1").unwrap_or(base).to_string(),
            shown,
        });
    }
    Ok(())
}

/// A valid class name close to `name`: other characters become `_`, leading
/// characters that cannot start a name are dropped, the first letter is
/// uppercased.
fn suggest_class(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .skip_while(|c| !c.is_ascii_alphabetic())
        .take(255)
        .collect();
    let mut chars = mapped.chars();
    match chars.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + chars.as_str(),
        None => DEFAULT_COLLECTION.to_string(),
    }
}

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

    async fn upsert(&self, docs: &[&crate::target::Document]) -> Result<Vec<OpOutcome>, Error> {
        let body = wire::BatchObjects {
            objects: docs
                .iter()
                .map(|d| wire::WireObject::new(&self.class, d))
                .collect(),
        };
        // Sized once for the contents plus room for escapes and the other
        // properties, so a batch body of megabytes is not grown by doubling.
        let guess: usize = docs
            .iter()
            .map(|d| d.content.len() + d.content.len() / 8 + d.path.len() * 2 + 256)
            .sum();
        let mut bytes = Vec::with_capacity(guess + 64);
        serde_json::to_writer(&mut bytes, &body).map_err(|e| Error::Fatal {
            message: format!("cannot encode the batch: {e}"),
        })?;
        let ex = self
            .send(Method::POST, "/v1/batch/objects", Some(bytes))
            .await;
        let ids: Vec<Uuid> = docs.iter().map(|d| d.id).collect();
        classify_upsert(&self.target_name(), ex.reply(), &ids)
    }

    /// Delete `ids`, repeating while the server matched more than its limit
    /// let it delete in one call.
    async fn delete(&self, ids: &[Uuid]) -> Result<Vec<OpOutcome>, Error> {
        let body = wire::batch_delete(&self.class, ids);
        let mut failures: HashMap<Uuid, String> = HashMap::new();
        // Each productive round deletes at least one object.
        for _ in 0..=ids.len() {
            let ex = self
                .send_json(Method::DELETE, "/v1/batch/objects", &body)
                .await;
            let round = classify_delete(&self.target_name(), ex.reply())?;
            let more = round.more_to_delete();
            let progressed = round.successful > 0;
            failures.extend(round.failures);
            if !more {
                break;
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
        }
        Ok(ids
            .iter()
            .map(|id| match failures.remove(id) {
                None => OpOutcome::Ok,
                Some(message) => OpOutcome::Failed {
                    retryable: classify::is_retryable_message(&message),
                    message,
                },
            })
            .collect())
    }

    async fn apply_async(&self, ops: &[Op]) -> Result<Vec<OpOutcome>, Error> {
        let reduced = wire::reduce(ops);
        let (up, del) = tokio::join!(
            async {
                if reduced.upserts.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.upsert(&reduced.upserts).await
                }
            },
            async {
                if reduced.deletes.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.delete(&reduced.deletes).await
                }
            }
        );
        let up_ids = reduced.upserts.iter().map(|d| d.id);
        let (up, del) = match (up, del) {
            (Ok(u), Ok(d)) => (u, d),
            // A failure that may pass (or that stops the run) retries the
            // whole batch: redoing the other half is harmless.
            (Err(a), Err(b)) => return Err(worse(a, b)),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) if e.is_retryable() || e.is_fatal() => return Err(e),
            // The whole batch was one request: its refusal is the batch's.
            (Err(e), Ok(_)) if reduced.deletes.is_empty() => return Err(e),
            (Ok(_), Err(e)) if reduced.upserts.is_empty() => return Err(e),
            (Err(e), Ok(d)) => (vec![rejected(&e); reduced.upserts.len()], d),
            (Ok(u), Err(e)) => (u, vec![rejected(&e); reduced.deletes.len()]),
        };
        let by_id: HashMap<Uuid, OpOutcome> = up_ids
            .zip(up)
            .chain(reduced.deletes.iter().copied().zip(del))
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

    /// Every object of the collection (id, repo, path, contentSha256),
    /// paged with the `after` cursor.
    async fn list_all_async(&self) -> Result<Vec<crate::target::local::Exported>, Error> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/objects?class={}&limit={LIST_PAGE}", self.class);
            if let Some(a) = &after {
                path.push_str("&after=");
                path.push_str(a);
            }
            let page = self.list_page(&path).await?;
            let objects = page
                .get("objects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for o in &objects {
                let props = o.get("properties");
                let field = |k: &str| {
                    props
                        .and_then(|p| p.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                out.push(crate::target::local::Exported {
                    id: o
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    repo: field("repo"),
                    path: field("path"),
                    content_sha256: field("contentSha256"),
                });
            }
            let last = objects
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str);
            match last {
                Some(id) if objects.len() >= LIST_PAGE => after = Some(id.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| (&a.repo, &a.path, &a.id).cmp(&(&b.repo, &b.path, &b.id)));
        Ok(out)
    }

    async fn list_repo_async(&self, repo: &str) -> Result<Vec<String>, Error> {
        let mut paths: Vec<String> = self
            .list_all_async()
            .await?
            .into_iter()
            .filter(|o| o.repo == repo)
            .map(|o| o.path)
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// One page of the object listing. A listing is long and cheap to resume
    /// per page, so transient failures get a few quick local retries.
    async fn list_page(&self, path: &str) -> Result<Value, Error> {
        let what = "GET /v1/objects";
        let mut attempt = 0u32;
        loop {
            let ex = self.send(Method::GET, path, None).await;
            let err = match &ex {
                Exchange::Http { status, body, .. } if status.is_success() => {
                    match serde_json::from_slice::<Value>(body) {
                        Ok(v) => return Ok(v),
                        Err(_) => Error::Transient {
                            message: format!("{what}: the reply is not JSON"),
                            retry_after: None,
                        },
                    }
                }
                _ => self.reply_error(what, ex.reply()),
            };
            attempt += 1;
            if !matches!(err, Error::Transient { .. }) || attempt >= 4 {
                return Err(err);
            }
            let wait = err
                .retry_after()
                .unwrap_or(Duration::from_millis(100 << attempt))
                .min(Duration::from_secs(5));
            tokio::time::sleep(wait).await;
        }
    }
}

fn rejected(e: &Error) -> OpOutcome {
    OpOutcome::Failed {
        retryable: false,
        message: e.to_string(),
    }
}

/// The more serious of two batch errors (Fatal > Unreachable > Transient > Rejected).
fn worse(a: Error, b: Error) -> Error {
    let rank = |e: &Error| match e {
        Error::Fatal { .. } => 3,
        Error::Unreachable { .. } => 2,
        Error::Transient { .. } => 1,
        _ => 0,
    };
    if rank(&b) > rank(&a) {
        b
    } else {
        a
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

    fn list_repo(&self, repo: &str) -> Result<Vec<String>, Error> {
        let r = self.rt.handle().block_on(self.list_repo_async(repo));
        self.redactor.result(r, |_, v| v)
    }

    fn export(&self) -> Result<Vec<crate::target::local::Exported>, Error> {
        let r = self.rt.handle().block_on(self.list_all_async());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_keys_map_to_headers_and_debug_hides_them() {
        let env: HashMap<&str, &str> = [
            ("WEAVIATE_API_KEY", "wk-SECRET1"),
            ("OPENAI_APIKEY", "sk-SECRET2"),
            ("COHERE_APIKEY", ""),
        ]
        .into_iter()
        .collect();
        let cfg = WeaviateConfig::from_lookup(
            "http://u:pw-SECRET3@127.0.0.1:1".into(),
            DEFAULT_COLLECTION.into(),
            Some("none".into()),
            DEFAULT_TIMEOUT,
            0,
            |k| env.get(k).map(|v| v.to_string()),
        );
        assert_eq!(cfg.api_key.as_deref(), Some("wk-SECRET1"));
        assert_eq!(
            cfg.headers,
            vec![("X-OpenAI-Api-Key".to_string(), "sk-SECRET2".to_string())]
        );
        assert_eq!(cfg.vectorizer, None);
        assert_eq!(cfg.concurrency, 1);
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
        assert!(dbg.contains("X-OpenAI-Api-Key"));
        let t = WeaviateTarget::new(cfg).unwrap();
        assert!(!format!("{t:?} {}", t.describe()).contains("SECRET"));
    }

    #[test]
    fn config_errors_name_the_flag_the_value_and_the_fix() {
        let check = |url: &str, coll: &str| {
            WeaviateConfig::from_lookup(url.into(), coll.into(), None, DEFAULT_TIMEOUT, 1, |_| None)
                .validate()
                .map_err(|e| e.to_string())
        };
        let e = check("http://h:8080/v1/", DEFAULT_COLLECTION).unwrap_err();
        assert!(
            e.contains("--weaviate-url") && e.contains("drop the /v1"),
            "{e}"
        );
        assert!(
            e.contains("http://h:8080/v1") && e.ends_with("http://h:8080"),
            "{e}"
        );
        let e = check("localhost:8080", DEFAULT_COLLECTION).unwrap_err();
        assert!(
            e.contains("scheme") && e.ends_with("http://localhost:8080"),
            "{e}"
        );
        let e = check("http://u:pw-SECRET@h:1/v1", DEFAULT_COLLECTION).unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        let e = check("http://h:1", "bad-name").unwrap_err();
        assert!(
            e.contains("--collection \"bad-name\"") && e.ends_with("Bad_name"),
            "{e}"
        );
        assert!(check("http://h:1", "9-x").unwrap_err().ends_with("X"));
        assert!(check("https://h.example/weaviate", "codeChunk").is_ok());
        assert!(check("HTTP://h:1", DEFAULT_COLLECTION).is_ok());
        for bad in ["http://", "http://h:1/?a=b", "http://h :1"] {
            assert!(check(bad, DEFAULT_COLLECTION).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_urls_and_names_are_refused_up_front() {
        let mk = |url: &str, coll: &str| {
            WeaviateTarget::new(WeaviateConfig::from_lookup(
                url.into(),
                coll.into(),
                None,
                DEFAULT_TIMEOUT,
                1,
                |_| None,
            ))
        };
        assert!(mk("127.0.0.1:8080", "C").is_err());
        assert!(mk("http://h:8080/v1", "C").is_err());
        assert!(mk("http://h:8080", "bad-name").is_err());
        assert_eq!(
            mk("http://h:8080/", "codeChunk").unwrap().class(),
            "CodeChunk"
        );
    }
}
