//! The sync loop: manifest → batches → target, every batch outcome appended
//! to the WAL before the next is acknowledged.
//!
//! Resume: the WAL's replay gives, per manifest, the applied byte ranges and
//! the failed lines. A run first retries the failed lines, then reads on
//! from the end of the contiguous applied prefix, skipping ranges already
//! applied out of order (with several batches in flight). Every line is
//! idempotent (its effect is "make the index match the disk"), so a batch
//! redone after a crash changes nothing.

mod dry_run;
mod events;
pub mod failed_run;
mod feed;
mod lock;
pub mod metrics;
pub mod pace;
mod permits;
mod pipeline;
pub mod plan;
mod queue;
pub mod retry;
mod session;
mod settle;
mod start;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::exit::Exit;
use crate::manifest::{self, LineParser, Manifest};
use crate::object::ChunkSize;
use crate::source::Roots;
use crate::target::{self, Op, OpOutcome, Target};
use crate::wal::{self, *};

use dry_run::*;
use permits::*;
use pipeline::*;
use queue::*;
use session::*;
use start::*;

pub use crate::report::LogFormat;
pub use events::{emit_fatal, Reporter, SyncEvent, Throttled};
pub use lock::{holder as lock_holder, LockError};
pub use plan::Planned;
pub use retry::Backoff;
pub use wal::AppliedChangeset;

/// Compact the log at the end of a run once it is larger than this.
pub const COMPACT_THRESHOLD: u64 = 256 << 10;

/// `--on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Continue,
    Stop,
    Retry,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Continue => "continue",
            OnError::Stop => "stop",
            OnError::Retry => "retry",
        }
    }
}

/// Where the manifest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

/// A validated `index sync` configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// The manifest; `None` with `retry_failed` retries earlier failures only.
    pub input: Option<Input>,
    pub state_dir: PathBuf,
    pub batch_size: usize,
    pub on_error: OnError,
    pub max_retries: u32,
    /// How long a batch may be throttled (objects refused for a rate limit)
    /// without a break before those objects fail; zero makes rate limits
    /// ordinary transient failures under `max_retries`.
    pub rate_limit_patience: std::time::Duration,
    pub from_line: Option<u64>,
    pub roots: Vec<PathBuf>,
    pub dry_run: bool,
    pub max_file_size: u64,
    /// How files are cut into objects; recorded in `target.chunk_size` too.
    pub chunk_size: ChunkSize,
    /// Re-chunk every file the index holds before the manifest.
    pub rechunk: bool,
    pub abandon_pending: bool,
    pub backoff: Backoff,
    /// Print a line per batch.
    pub progress: bool,
    /// Name of the target, for the WAL and status ("local", "weaviate").
    pub target_name: String,
    /// The index this run writes to; a state dir belongs to one.
    pub target: TargetIdentity,
    /// Prometheus textfile written at the end of the run.
    pub metrics_file: Option<PathBuf>,
    /// Retry every outstanding failed line of every known manifest that is
    /// still present, dead letters included.
    pub retry_failed: bool,
    pub log_format: LogFormat,
    /// Draw a progress bar (stderr is a terminal) instead of per-batch lines.
    pub progress_bar: bool,
}

/// A failed line is retried by this many runs of its manifest, then kept as
/// a dead letter (listed, not retried) until `--retry-failed`.
pub const MAX_ATTEMPTS: u32 = 5;

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    Locked(#[from] LockError),
    #[error("{0}")]
    Wal(#[from] wal::Error),
    #[error("{0}")]
    Manifest(#[from] manifest::Error),
    #[error("{0}")]
    Target(#[from] target::Error),
    #[error("--batch-size must be at least 1")]
    BatchSizeZero,
    #[error("--input FILE|- is required")]
    InputRequired,
    #[error(
        "--dry-run reads a file; it does not spool stdin (write the manifest to a file first)"
    )]
    DryRunStdin,
    #[error("--dry-run needs --input FILE")]
    DryRunNeedsInput,
    #[error("cannot create state dir {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Roots(std::io::Error),
    #[error("--from-line {line}: {} has only {lines} lines", path.display())]
    FromLinePastEnd {
        line: u64,
        path: PathBuf,
        lines: u64,
    },
    #[error("--from-line applies to one manifest, but an earlier manifest is unfinished; finish it first (run without --from-line)")]
    FromLineWithPending,
    #[error("an earlier manifest is unfinished and is no longer readable as it was: {path} (applied up to line {applied_line}, byte {offset} of {size}); restore it, or rerun with --abandon-pending to drop its remaining lines (recorded in the WAL)")]
    PendingGone {
        path: String,
        applied_line: u64,
        offset: u64,
        size: u64,
    },
    #[error("the state dir {} belongs to {recorded}, but this run writes to {this}; a state dir keeps the progress of one index: give each index its own --state-dir (or run against {recorded})", dir.display())]
    OtherIndex {
        dir: PathBuf,
        recorded: String,
        this: String,
    },
    #[error("the index of {} was built with {}, and this run asks for {}: one index never mixes two chunkings. Run with --chunk-size {recorded} to go on as it is, or add --rechunk to re-write every file it holds at --chunk-size {this} (resumable: a killed re-chunk goes on at the next run)", dir.display(), chunking(*recorded), chunking(*this))]
    OtherChunkSize {
        dir: PathBuf,
        recorded: u64,
        this: u64,
    },
    #[error("cannot list the index for --rechunk: {0}")]
    RechunkList(String),
}

/// A chunk size as people read it.
fn chunking(size: u64) -> String {
    if size == 0 {
        "--chunk-size 0 (one object per file)".to_string()
    } else {
        format!("--chunk-size {size}")
    }
}

impl Error {
    /// The process exit code for this error (SPEC.md).
    pub fn exit(&self) -> Exit {
        match self {
            Error::BatchSizeZero
            | Error::InputRequired
            | Error::DryRunStdin
            | Error::DryRunNeedsInput
            | Error::StateDir { .. }
            | Error::Roots(_)
            | Error::FromLinePastEnd { .. }
            | Error::FromLineWithPending
            | Error::PendingGone { .. }
            | Error::OtherIndex { .. }
            | Error::OtherChunkSize { .. } => Exit::Usage,
            Error::Manifest(manifest::Error::Open { .. }) => Exit::Usage,
            Error::Manifest(manifest::Error::Changed { .. }) => Exit::Usage,
            _ => Exit::Fatal,
        }
    }

    /// What a fatal error was, for the failed-run file's hints; `kind` is
    /// the target's (`local`, `weaviate`).
    pub fn cause(&self, kind: &str) -> failed_run::Cause {
        use failed_run::Cause;
        match self {
            Error::Wal(e) if e.is_corrupt() => Cause::WalCorrupt,
            Error::Wal(_) => Cause::StateNotSaved,
            Error::Manifest(e) if e.is_no_space() => Cause::StateNotSaved,
            Error::Target(e) => target_cause(e, kind),
            _ => Cause::Other,
        }
    }

    /// [`Error::exit`] as the process's code.
    pub fn exit_code(&self) -> u8 {
        self.exit().code()
    }
}

/// What a fatal target error means for the hints: unreachable, refused
/// for good, or (the local index) not writable.
fn target_cause(e: &target::Error, kind: &str) -> failed_run::Cause {
    use failed_run::Cause;
    match e {
        target::Error::Unreachable { .. } => Cause::TargetUnreachable,
        _ if kind == "local" => Cause::LocalIndex,
        _ => Cause::TargetRefused,
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Report {
    pub exit_code: u8,
    pub status: Option<RunStatus>,
    pub counts: Counts,
    /// The WAL could not be written; state was kept in memory.
    pub degraded: bool,
    pub message: Option<String>,
    /// Why a fatal run was fatal (for the failed-run file's hints).
    pub cause: Option<failed_run::Cause>,
    /// What `--metrics-file` gets.
    pub metrics: Option<metrics::RunMetrics>,
}

use crate::util::now_ms;

/// Present while the last run that wrote to this state dir could not write
/// its WAL (cleared by the next run that could).
pub fn degraded_marker(state_dir: &Path) -> PathBuf {
    state_dir.join("degraded")
}

/// Present once a sync found its index empty while the WAL records applied
/// work (deleted or reset behind elysiactl's back); every run then ends
/// `partially_complete` until a clean `index verify` removes it.
pub fn index_lost_marker(state_dir: &Path) -> PathBuf {
    state_dir.join("index-lost.json")
}

/// The commits whose changes a sync has fully applied, per repo.
pub fn applied_changesets(state_dir: &Path) -> Result<BTreeMap<String, AppliedChangeset>, Error> {
    Ok(wal::replay(state_dir)?.state.repos)
}

/// Open the target once the state dir is locked.
pub type OpenTarget<'a> = &'a dyn Fn() -> Result<Box<dyn Target>, target::Error>;

/// Run `index sync`.
pub fn run(
    opts: &Options,
    open_target: OpenTarget<'_>,
    log: &mut dyn Write,
) -> Result<Report, Error> {
    let started = std::time::Instant::now();
    let res = run_inner(opts, open_target, log);
    if !opts.dry_run {
        use failed_run::Cause;
        let fatal = match &res {
            Ok(r) if r.degraded => Some((r.message.clone(), Cause::StateNotSaved)),
            Ok(r) if r.status == Some(RunStatus::Fatal) => {
                Some((r.message.clone(), r.cause.unwrap_or(Cause::Other)))
            }
            Err(Error::Locked(_)) => None,
            Err(e) if e.exit() == Exit::Fatal => {
                Some((Some(e.to_string()), e.cause(&opts.target.kind)))
            }
            _ => None,
        };
        if let Some((reason, cause)) = fatal {
            let reason = reason.unwrap_or_else(|| "fatal".into());
            let e = match failed_run::write(&opts.state_dir, &reason, cause) {
                Ok(p) => SyncEvent::FailedRunWritten {
                    failed_run_file: p.display().to_string(),
                },
                Err(e) => SyncEvent::FailedRunNotWritten {
                    error: e.to_string(),
                },
            };
            crate::report::write(log, opts.log_format, &e);
        }
    }
    if let (Some(path), false) = (&opts.metrics_file, opts.dry_run) {
        let m = match &res {
            Ok(r) => r.metrics.clone(),
            // Another run owns the state dir (and the metrics file).
            Err(Error::Locked(_)) => None,
            Err(_) => Some(metrics::RunMetrics {
                status: Some(RunStatus::Fatal),
                finished_unix: now_ms() / 1000,
                duration_secs: started.elapsed().as_secs_f64(),
                ..metrics::RunMetrics::default()
            }),
        };
        if let Some(m) = m {
            if let Err(e) = metrics::write(path, &m) {
                let e = SyncEvent::MetricsNotWritten {
                    metrics_file: path.display().to_string(),
                    error: e.to_string(),
                };
                crate::report::write(log, opts.log_format, &e);
            }
        }
    }
    res
}
