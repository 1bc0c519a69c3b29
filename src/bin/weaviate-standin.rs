//! weaviate-standin: a fast, faithful Weaviate REST stand-in for tests and
//! benchmarks. Prints its base URL (`http://127.0.0.1:PORT`) as the first
//! line on stdout, then serves until killed. See docs/weaviate.md.

#[path = "../standin/mod.rs"]
mod standin;

use std::io::Write;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "A Weaviate REST stand-in with seeded fault injection")]
struct Args {
    /// Address to bind (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` (env STANDIN_API_KEY). Without it,
    /// any Authorization header gets a 401.
    #[arg(long, env = "STANDIN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Objects deleted per batch-delete call (QUERY_MAXIMUM_RESULTS).
    #[arg(long, default_value_t = 10_000)]
    delete_limit: usize,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fixed latency per faulted request, ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Random extra latency 0..=N ms (out-of-order completion).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Fraction of requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    p429: f64,
    /// Retry-After seconds sent with injected 429s.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Fraction answered 500 (not enough memory).
    #[arg(long, default_value_t = 0.0)]
    p500: f64,
    /// Fraction answered 503.
    #[arg(long, default_value_t = 0.0)]
    p503: f64,
    /// Fraction whose connection is dropped before processing.
    #[arg(long, default_value_t = 0.0)]
    p_drop: f64,
    /// Fraction applied, then dropped without a reply.
    #[arg(long, default_value_t = 0.0)]
    p_apply_drop: f64,
    /// Fraction of objects reported FAILED with a rate-limit message.
    #[arg(long, default_value_t = 0.0)]
    p_object_fail: f64,
    /// Fraction of objects reported FAILED with a permanent validation message.
    #[arg(long, default_value_t = 0.0)]
    p_object_reject: f64,
    /// Quote the request's headers (Authorization included) in every error
    /// body and per-object failure, as a leaky proxy would.
    #[arg(long)]
    echo_headers: bool,
    /// Fault every /v1 endpoint except readiness, not only /v1/batch/*.
    #[arg(long)]
    fault_all_endpoints: bool,
    /// Keep every request in memory (only useful in-process).
    #[arg(long)]
    record: bool,
    /// Log the object ids of every batch request (GET /__standin/batches).
    #[arg(long)]
    log_batches: bool,
    /// The vectorizer's input limit in tokens (0 = off): an object of a class
    /// with a vectorizer whose embedded text is estimated over N tokens is
    /// FAILED, not stored, with OpenAI's "maximum context length" message.
    #[arg(long, default_value_t = 0, value_name = "N")]
    vectorizer_max_tokens: usize,
    /// The vectorizer's quota in objects per second (0 = off): a token bucket
    /// of N objects refilled at N per second across batch upserts; the excess
    /// objects are FAILED, not stored, with OpenAI's rate-limit message.
    #[arg(long, default_value_t = 0, value_name = "N")]
    vectorizer_quota_per_sec: u32,
    /// A slow vectorizer: every batch upsert takes N microseconds per object
    /// before it is stored and answered (0 = off).
    #[arg(long, default_value_t = 0, value_name = "N")]
    vectorizer_us_per_object: u64,
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    for (name, p) in [
        ("--p429", a.p429),
        ("--p500", a.p500),
        ("--p503", a.p503),
        ("--p-drop", a.p_drop),
        ("--p-apply-drop", a.p_apply_drop),
        ("--p-object-fail", a.p_object_fail),
        ("--p-object-reject", a.p_object_reject),
    ] {
        if !(0.0..=1.0).contains(&p) {
            eprintln!("weaviate-standin: {name} must be between 0 and 1, got {p}");
            std::process::exit(2);
        }
    }
    let cfg = standin::Config {
        api_key: a.api_key,
        delete_limit: a.delete_limit.max(1),
        seed: a.seed,
        record: a.record,
        log_batches: a.log_batches,
        vectorizer_max_tokens: a.vectorizer_max_tokens,
        faults: standin::Faults {
            latency_ms: a.latency_ms,
            jitter_ms: a.jitter_ms,
            p429: a.p429,
            retry_after_secs: a.retry_after_secs,
            p500: a.p500,
            p503: a.p503,
            p_drop: a.p_drop,
            p_apply_drop: a.p_apply_drop,
            p_object_fail: a.p_object_fail,
            p_object_reject: a.p_object_reject,
            vectorizer_quota_per_sec: a.vectorizer_quota_per_sec,
            vectorizer_us_per_object: a.vectorizer_us_per_object,
            echo_headers: a.echo_headers,
            all_endpoints: a.fault_all_endpoints,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port)).await?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "http://{addr}")?;
        out.flush()?;
        drop(out);
        standin::serve(listener, cfg).await;
        Ok(())
    })
}
