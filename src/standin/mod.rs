//! weaviate-standin: a small, fast, faithful Weaviate REST server for tests
//! and benchmarks, with seeded fault injection.
//!
//! It answers the endpoints elysiactl uses with the status codes and bodies
//! of `shared/weaviate/CONTRACT.md` (auto-schema off, the duplicate-id rule,
//! the batch-delete limit, 401 on any Authorization header when no key is
//! configured …). Faults (latency, 429 + Retry-After, 500, 503, dropped
//! connections before or after applying, per-object rate-limit or validation
//! failures) apply to the batch endpoints, or to every `/v1` endpoint but
//! readiness with `fault_all`. `POST /v1/graphql` answers the `Get` shapes
//! `search` sends (`bm25`, `hybrid`, `nearText`, `where`), with the
//! stand-in ranking documented in `handlers/graphql.rs`. `echo_headers` plays a leaky proxy: every
//! error reply and per-object failure quotes the request's headers, the
//! `Authorization` header included.
//!
//! The module is compiled into `src/bin/weaviate-standin.rs` and into the
//! integration tests (`#[path]`), not into the library: the product build
//! carries no server.
//!
//! A test can also hold every batch delete ([`Standin::hold_deletes`]):
//! each `DELETE /v1/batch/objects` then waits, unanswered and unapplied,
//! until [`Standin::release_deletes`], which makes the window between a
//! sync's writes and its deletes as wide as the test needs.
//!
//! Test-only endpoints under `/__standin/`: `objects` (every stored object as
//! JSON Lines: class, id, repo, path, contentSha256), `faults` (GET, or PUT a
//! [`Faults`] JSON), `stats`, `batches` (with `log_batches`: which object ids
//! each batch request carried, and the fault it got), `reset`.

// Each crate that includes this module uses a different part of it.
#![allow(dead_code)]

mod collection;
pub mod faults;
mod filter;
mod handlers;
mod vectorizer;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use self::faults::{Faults, Rng};
// For the tests; the binary uses neither.
#[allow(unused_imports)]
pub use self::vectorizer::{estimate_tokens, too_long_message};

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// When set, requests need `Authorization: Bearer <key>`; when unset any
    /// Authorization header gets a 401 (as a server with no auth scheme).
    pub api_key: Option<String>,
    /// Objects deleted per `DELETE /v1/batch/objects` (`QUERY_MAXIMUM_RESULTS`).
    pub delete_limit: usize,
    pub seed: u64,
    pub faults: Faults,
    /// Keep every request (method, path, auth and X- headers, body) for tests.
    pub record: bool,
    /// Keep, per batch request, only the object ids it carried and the fault
    /// it got ([`BatchLogged`]): cheap enough for 10,000-line runs.
    pub log_batches: bool,
    /// The vectorizer's input limit in tokens, 0 = off. When on, an object
    /// of a class whose `vectorizer` is not `none` is refused (`FAILED`, not
    /// stored) by `POST /v1/batch/objects` when the text its vectorizer would
    /// embed is over this many tokens, with OpenAI's context-length message
    /// ([`too_long_message`]). What is embedded, and how tokens are
    /// estimated ([`estimate_tokens`]): see `vectorizer.rs`.
    pub vectorizer_max_tokens: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_key: None,
            delete_limit: 10_000,
            seed: 1,
            faults: Faults::default(),
            record: true,
            log_batches: false,
            vectorizer_max_tokens: 0,
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub authorization: Option<String>,
    /// Every header, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// One batch request as received: which objects it named. The ids of an
/// upsert are its objects' ids; those of a delete are the `id`/`_id` values
/// of its `where` filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchLogged {
    /// The request's number among all requests served (1-based), comparable
    /// with [`Standin::mark`].
    pub seq: u64,
    /// `POST` (upsert) or `DELETE`.
    pub method: String,
    pub ids: Vec<Uuid>,
    /// The injected fault (`none`, `drop`, `429`, `500`, `503`,
    /// `apply_then_drop`). `drop`, `429`, `500` and `503` applied nothing.
    pub fault: String,
    /// When the request's body had been read, in µs since the stand-in
    /// started ([`Standin::clock_us`]).
    pub received_us: u64,
    /// When the request was handled and its reply handed to the connection,
    /// in µs since the stand-in started ([`Standin::clock_us`]); `None` while
    /// in progress, or when no reply was sent (an injected drop).
    pub answered_us: Option<u64>,
}

/// One stored object, as the dump endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Dumped {
    pub class: String,
    pub id: Uuid,
    pub repo: Option<String>,
    pub path: Option<String>,
    #[serde(rename = "contentSha256")]
    pub content_sha256: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// Shared with the batch reply that echoes them, so storing a batch
    /// does not copy its contents.
    pub properties: Arc<serde_json::Map<String, Value>>,
    pub created: u64,
    pub updated: u64,
}

/// Counts of what happened, for tests and for the operator of a benchmark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub injected: BTreeMap<String, u64>,
    pub objects_written: u64,
    pub objects_deleted: u64,
}

pub(crate) struct State {
    /// Class name → the class as `GET /v1/schema/{c}` returns it.
    pub classes: BTreeMap<String, Value>,
    /// Class name → objects in UUID order (the order batch delete uses).
    pub objects: HashMap<String, collection::Collection>,
    pub faults: Faults,
    /// The vectorizer quota's bucket ([`Faults::vectorizer_quota_per_sec`]).
    pub quota: faults::Bucket,
    pub rng: Rng,
    pub requests: Vec<Recorded>,
    pub batches: Vec<BatchLogged>,
    pub stats: Stats,
    /// [`Standin::hold_deletes`]: batch deletes wait while this is set.
    pub hold_deletes: bool,
    /// Batch deletes waiting on the hold now.
    pub held_deletes: usize,
    /// How the waiting deletes end when the hold is lifted.
    pub release: Release,
}

/// How the batch deletes held by [`Standin::hold_deletes`] end when
/// [`Standin::release_deletes`] lifts the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Each is applied and answered, as if it had just arrived.
    Apply,
    /// Each is dropped: the connection closes with no reply and nothing is
    /// deleted (a server that lost the request when its client went away).
    Drop,
}

pub(crate) struct Shared {
    pub cfg: Config,
    pub state: Mutex<State>,
    pub started: std::time::Instant,
    /// Woken when the delete hold is lifted.
    pub released: tokio::sync::Notify,
}

impl Shared {
    pub fn new(cfg: Config) -> Arc<Self> {
        let state = State {
            classes: BTreeMap::new(),
            objects: HashMap::new(),
            faults: cfg.faults.clone(),
            quota: faults::Bucket::default(),
            rng: Rng::new(cfg.seed),
            requests: Vec::new(),
            batches: Vec::new(),
            stats: Stats::default(),
            hold_deletes: false,
            held_deletes: 0,
            release: Release::Apply,
        };
        Arc::new(Shared {
            cfg,
            state: Mutex::new(state),
            started: std::time::Instant::now(),
            released: tokio::sync::Notify::new(),
        })
    }

    /// µs from the start of the stand-in to `at` (0 if earlier).
    pub fn clock_us(&self, at: std::time::Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not wedge every later request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serve on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, cfg: Config) {
    serve_shared(listener, Shared::new(cfg)).await
}

async fn serve_shared(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { handlers::handle(shared, req).await }
            });
            // A handler error closes the connection without a reply: that is
            // how dropped connections are injected.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A stand-in running on its own runtime, for in-process tests. Stops on drop.
pub struct Standin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Standin {
    /// Bind 127.0.0.1 on a free port and serve.
    pub fn start(cfg: Config) -> std::io::Result<Standin> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("standin")
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Shared::new(cfg);
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        rt.spawn(serve_shared(listener, shared.clone()));
        Ok(Standin {
            addr,
            shared,
            rt: Some(rt),
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Every stored object, ordered by class then id.
    pub fn dump(&self) -> Vec<Dumped> {
        handlers::dump(&self.shared.lock())
    }

    /// The properties of one object, if stored.
    pub fn object(&self, class: &str, id: Uuid) -> Option<serde_json::Map<String, Value>> {
        let st = self.shared.lock();
        st.objects
            .get(class)
            .and_then(|m| m.get(&id))
            .map(|o| (*o.properties).clone())
    }

    /// The class definition, if it exists.
    pub fn class(&self, class: &str) -> Option<Value> {
        self.shared.lock().classes.get(class).cloned()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// The number of requests received so far: a run marker. Requests
    /// received later have a larger [`BatchLogged::seq`].
    pub fn mark(&self) -> u64 {
        self.shared.lock().stats.requests
    }

    /// `at` on the clock of [`BatchLogged::answered_us`].
    pub fn clock_us(&self, at: std::time::Instant) -> u64 {
        self.shared.clock_us(at)
    }

    /// From now on every `DELETE /v1/batch/objects` (that no injected fault
    /// refuses) waits after its body is read, neither applied nor answered,
    /// until [`Standin::release_deletes`]. It is in the batch log from its
    /// receipt, and counted by [`Standin::held_deletes`] while it waits.
    pub fn hold_deletes(&self) {
        self.shared.lock().hold_deletes = true;
    }

    /// How many batch deletes are waiting on the hold now.
    pub fn held_deletes(&self) -> usize {
        self.shared.lock().held_deletes
    }

    /// Lift the hold: the deletes waiting on it end as `how` says; later
    /// ones are served at once.
    pub fn release_deletes(&self, how: Release) {
        {
            let mut st = self.shared.lock();
            st.hold_deletes = false;
            st.release = how;
        }
        self.shared.released.notify_waiters();
    }

    /// The batch log (needs `log_batches`), in order of receipt.
    pub fn batches(&self) -> Vec<BatchLogged> {
        self.shared.lock().batches.clone()
    }

    /// The batch requests received after `mark`.
    pub fn batches_since(&self, mark: u64) -> Vec<BatchLogged> {
        let st = self.shared.lock();
        st.batches
            .iter()
            .filter(|b| b.seq > mark)
            .cloned()
            .collect()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
