//! The sync loop: manifest → batches → target, every batch outcome appended
//! to the WAL before the next is acknowledged.
//!
//! Resume: the WAL's replay gives, per manifest, the applied byte ranges and
//! the failed lines. A run first retries the failed lines, then reads on
//! from the end of the contiguous applied prefix, skipping ranges already
//! applied out of order (with several batches in flight). Every line is
//! idempotent (its effect is "make the index match the disk"), so a batch
//! redone after a crash changes nothing.

pub mod failed_run;
mod lock;
pub mod metrics;
pub mod plan;
pub mod retry;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::manifest::{self, LineParser, Manifest};
use crate::source::Roots;
use crate::target::{self, Op, OpOutcome, Target};
use crate::wal::{self, *};

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
    pub from_line: Option<u64>,
    pub roots: Vec<PathBuf>,
    pub dry_run: bool,
    pub max_file_size: u64,
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

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// A failed line is retried by this many runs of its manifest, then kept as
/// a dead letter (listed, not retried) until `--retry-failed`.
pub const MAX_ATTEMPTS: u32 = 5;

/// Write one event: `[TAG] message` as text, or a JSON object.
pub fn emit(
    log: &mut dyn Write,
    format: LogFormat,
    tag: &str,
    message: &str,
    fields: serde_json::Value,
) {
    match format {
        LogFormat::Text => {
            let _ = writeln!(log, "[{tag}] {message}");
        }
        LogFormat::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("ts_ms".into(), now_ms().into());
            obj.insert("event".into(), tag.to_ascii_lowercase().into());
            obj.insert("message".into(), message.into());
            if let serde_json::Value::Object(extra) = fields {
                obj.extend(extra);
            }
            let _ = writeln!(log, "{}", serde_json::Value::Object(obj));
        }
    }
}

/// The one line a run that ends in an error prints: `elysiactl: …` as
/// text, a `fatal` event under `--log-format json` (every stderr line is
/// then JSON).
pub fn emit_fatal(log: &mut dyn Write, format: LogFormat, message: &str, exit_code: u8) {
    match format {
        LogFormat::Text => {
            let _ = writeln!(log, "elysiactl: {message}");
        }
        LogFormat::Json => emit(
            log,
            format,
            "FATAL",
            message,
            serde_json::json!({"exit_code": exit_code}),
        ),
    }
}

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
    Usage(String),
    #[error("{0}")]
    Target(#[from] target::Error),
}

impl Error {
    /// The process exit code for this error (SPEC.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Manifest(manifest::Error::Open { .. }) => 2,
            Error::Manifest(manifest::Error::Changed { .. }) => 2,
            _ => 3,
        }
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
    /// What `--metrics-file` gets.
    pub metrics: Option<metrics::RunMetrics>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Present while the last run that wrote to this state dir could not write
/// its WAL (cleared by the next run that could).
pub fn degraded_marker(state_dir: &Path) -> PathBuf {
    state_dir.join("degraded")
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
        let fatal = match &res {
            Ok(r) if r.status == Some(RunStatus::Fatal) || r.degraded => {
                Some(r.message.clone().unwrap_or_else(|| "fatal".into()))
            }
            Err(Error::Locked(_)) | Err(Error::Usage(_)) => None,
            Err(e) if e.exit_code() == 3 => Some(e.to_string()),
            _ => None,
        };
        if let Some(reason) = fatal {
            match failed_run::write(&opts.state_dir, &reason) {
                Ok(p) => emit(
                    log,
                    opts.log_format,
                    "FATAL",
                    &format!("state saved; details and hints in {}", p.display()),
                    serde_json::json!({"failed_run_file": p.display().to_string()}),
                ),
                Err(e) => emit(
                    log,
                    opts.log_format,
                    "WARNING",
                    &format!("cannot write the failed-run file: {e}"),
                    serde_json::Value::Null,
                ),
            }
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
                emit(
                    log,
                    opts.log_format,
                    "WARNING",
                    &format!("cannot write metrics file {}: {e}", path.display()),
                    serde_json::json!({"metrics_file": path.display().to_string()}),
                );
            }
        }
    }
    res
}

fn run_inner(
    opts: &Options,
    open_target: OpenTarget<'_>,
    log: &mut dyn Write,
) -> Result<Report, Error> {
    if opts.batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    if opts.dry_run {
        return dry_run(opts, log);
    }
    wal::create_private_dir(&opts.state_dir).map_err(|e| {
        Error::Usage(format!(
            "cannot create state dir {}: {e}",
            opts.state_dir.display()
        ))
    })?;
    let _lock = lock::acquire(&opts.state_dir)?;
    let (wal, replay) = Wal::open(&opts.state_dir)?;
    if let Some(t) = &replay.torn {
        emit(
            log,
            opts.log_format,
            "RECOVERED",
            &format!(
                "dropped a torn WAL record at {} byte {} ({} bytes: {}); the batch it described will be redone",
                t.segment.display(),
                t.offset,
                t.dropped_bytes,
                t.reason
            ),
            serde_json::json!({"segment": t.segment.display().to_string(), "offset": t.offset}),
        );
    }
    manifest::clean_spool_temps(&opts.state_dir);
    let current = match &opts.input {
        Some(Input::File(p)) => Some(Manifest::open(p, false)?),
        Some(Input::Stdin) => {
            let p = manifest::spool(std::io::stdin().lock(), &opts.state_dir)?;
            Some(Manifest::open(&p, true)?)
        }
        None if opts.retry_failed => None,
        None => return Err(Error::Usage("--input FILE|- is required".into())),
    };
    let roots =
        Roots::new(&opts.roots, opts.max_file_size).map_err(|e| Error::Usage(e.to_string()))?;

    // Earlier manifests with lines never applied come first.
    let mut queue: Vec<Manifest> = Vec::new();
    let mut abandon: Vec<ManifestProgress> = Vec::new();
    let is_current = |id: &ManifestId| current.as_ref().is_some_and(|c| c.id.same_content(id));
    for m in replay.state.unfinished() {
        if is_current(&m.id) {
            continue;
        }
        match Manifest::open(&manifest::path_of_stored(&m.id.path), m.id.spooled) {
            Ok(old) if old.id.same_content(&m.id) => queue.push(old),
            _ if opts.abandon_pending => abandon.push(m.clone()),
            _ => {
                let (off, line) = m.resume_point();
                return Err(Error::Usage(format!(
                    "an earlier manifest is unfinished and is no longer readable as it was: {} (applied up to line {}, byte {} of {}); restore it, or rerun with --abandon-pending to drop its remaining lines (recorded in the WAL)",
                    m.id.path, line.saturating_sub(1), off, m.id.size
                )));
            }
        }
    }
    if opts.from_line.is_some() && !queue.is_empty() {
        return Err(Error::Usage(
            "--from-line applies to one manifest, but an earlier manifest is unfinished; finish it first (run without --from-line)".into(),
        ));
    }
    // Every other manifest with failed lines: retried with --retry-failed
    // while it is still there as it was; dropped with --abandon-pending
    // once it is gone or changed (its failures can never be retried).
    if opts.retry_failed || opts.abandon_pending {
        for m in &replay.state.manifests {
            let queued = queue.iter().any(|q| q.id.same_content(&m.id))
                || is_current(&m.id)
                || abandon.iter().any(|a| a.id.same_content(&m.id));
            if queued || m.abandoned || m.failed.is_empty() {
                continue;
            }
            match Manifest::open(&manifest::path_of_stored(&m.id.path), m.id.spooled) {
                Ok(old) if old.id.same_content(&m.id) => {
                    if opts.retry_failed {
                        queue.push(old);
                    }
                }
                _ if opts.abandon_pending => abandon.push(m.clone()),
                _ => emit(
                    log,
                    opts.log_format,
                    "WARNING",
                    &format!(
                        "{} has {} failed line(s) but is gone or changed, so they cannot be retried; they stay outstanding until a later line applies their files (--abandon-pending drops them)",
                        m.id.path,
                        m.failed.len()
                    ),
                    serde_json::json!({"manifest": m.id.path, "failed": m.failed.len()}),
                ),
            }
        }
    }
    if let Some(c) = current {
        queue.push(c);
    }
    if queue.is_empty() {
        emit(
            log,
            opts.log_format,
            "DONE",
            "no failed lines to retry",
            serde_json::Value::Null,
        );
    }

    // One state dir, one index (kind, server, collection, chunking).
    let bind = check_target(&replay.state, &opts.target, &opts.state_dir)?;

    // The run is in the log before the target is opened, so a run that
    // cannot reach its index shows as failed in `--status`, not never_run.
    let mut wal = wal;
    let mut state = replay.state;
    let run_id = state.next_run_id.max(1);
    let mut start_degraded = None;
    let mut journal = |records: Vec<Record>, state: &mut State| {
        if start_degraded.is_none() {
            if let Err(e) = wal.append(&records) {
                start_degraded = Some(e);
            }
        }
        for r in &records {
            state.apply(r);
        }
    };
    journal(
        vec![Record::RunStarted(RunStarted {
            run_id,
            started_ms: now_ms(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            target: opts.target_name.clone(),
            batch_size: opts.batch_size as u32,
            on_error: opts.on_error.as_str().into(),
            max_retries: opts.max_retries,
        })],
        &mut state,
    );
    if bind {
        journal(vec![Record::TargetBound(opts.target.clone())], &mut state);
    }
    let target = match open_target().and_then(|t| t.prepare().map(|()| t)) {
        Ok(t) => t,
        Err(e) => {
            journal(
                vec![Record::RunFinished(RunFinished {
                    run_id,
                    finished_ms: now_ms(),
                    status: RunStatus::Fatal,
                    counts: Counts::default(),
                    message: Some(e.to_string()),
                })],
                &mut state,
            );
            return Err(e.into());
        }
    };

    let mut s = Syncer {
        opts,
        wal,
        state,
        degraded: None,
        log,
        run_id,
        counts: Counts::default(),
        stopped: false,
        fatal: None,
        target: target.as_ref(),
        roots: &roots,
        manifest_error: None,
        halt: Arc::new(AtomicBool::new(false)),
        seq: 0,
        started: std::time::Instant::now(),
        failure_kinds: BTreeMap::new(),
        last_metrics: std::time::Instant::now(),
        bar: None,
        group: Vec::new(),
        group_msgs: Vec::new(),
        failed_paths: HashMap::new(),
    };
    for (m, f) in s.state.outstanding_failures() {
        if !f.path.is_empty() {
            s.failed_paths
                .entry((f.repo.clone(), f.path.clone()))
                .or_default()
                .push((m.id.fingerprint, f.offset));
        }
    }
    if let Some(e) = start_degraded {
        s.enter_degraded(e);
    }
    for m in abandon {
        let remaining = m.total_lines.saturating_sub(m.lines_done());
        s.say(
            "ABANDONED",
            format!(
                "{}: {} lines never applied and {} failed line(s) are dropped (--abandon-pending)",
                m.id.path,
                remaining,
                m.failed.len()
            ),
            serde_json::json!({"manifest": m.id.path, "remaining_lines": remaining, "failed_lines": m.failed.len()}),
        );
        s.record(vec![Record::ManifestAbandoned(ManifestAbandoned {
            run_id: s.run_id,
            fingerprint: m.id.fingerprint,
            path: m.id.path.clone(),
            remaining_lines: remaining,
        })]);
    }
    let last = queue.len().saturating_sub(1);
    if opts.progress_bar {
        let total: u64 = queue
            .iter()
            .map(|m| {
                s.state
                    .manifest_for(&m.id)
                    .map(|p| p.total_lines.saturating_sub(p.lines_done()))
                    .unwrap_or_else(|| m.count_lines())
            })
            .sum();
        s.bar = Some(progress_bar(total));
    }
    for (i, m) in queue.iter().enumerate() {
        let from = if i == last { opts.from_line } else { None };
        if let Err(e) = s.process(m, from) {
            // Input errors (a manifest changed while read, --from-line past
            // its end) end the run too: `--status` says so, not interrupted.
            s.end_with_error(&e);
            return Err(e);
        }
        if s.stopped || s.fatal.is_some() {
            break;
        }
    }
    Ok(s.finish())
}

/// How people read a target identity.
fn describe_target(t: &TargetIdentity) -> String {
    let mut s = match t.kind.as_str() {
        "local" => "the local index".to_string(),
        _ => format!("{} at {}, collection {}", t.kind, t.server, t.collection),
    };
    if t.chunk_size != 0 {
        s.push_str(&format!(", --chunk-size {}", t.chunk_size));
    }
    s
}

/// Refuse a run against another index than the one the state dir belongs
/// to. True when the identity is to be recorded (a new state dir, or one
/// from before identities were recorded, whose runs wrote to the same kind).
fn check_target(state: &State, this: &TargetIdentity, dir: &Path) -> Result<bool, Error> {
    let recorded = match &state.target {
        Some(t) => t.clone(),
        None => match &state.last_run {
            Some(run) if run.target != this.kind => TargetIdentity {
                kind: run.target.clone(),
                server: String::new(),
                collection: String::new(),
                chunk_size: 0,
            },
            _ => return Ok(true),
        },
    };
    if recorded == *this {
        return Ok(false);
    }
    Err(Error::Usage(format!(
        "the state dir {} belongs to {}, but this run writes to {}; a state dir keeps the progress of one index: give each index its own --state-dir (or run against {})",
        dir.display(),
        describe_target(&recorded),
        describe_target(this),
        describe_target(&recorded),
    )))
}

/// Where a failed line is: its manifest's fingerprint and its byte offset.
type FailedAt = ([u8; 32], u64);

/// One batch on its way to the target.
struct Batch {
    seq: u64,
    fingerprint: [u8; 32],
    spans: Vec<Span>,
    items: Vec<Item>,
    retry_pass: bool,
}

struct Item {
    line: u64,
    offset: u64,
    end: u64,
    planned: Planned,
    /// Index range of this item's ops in the batch's op list.
    ops: std::ops::Range<usize>,
}

struct Syncer<'a> {
    opts: &'a Options,
    wal: Wal,
    state: State,
    degraded: Option<String>,
    log: &'a mut dyn Write,
    run_id: u64,
    counts: Counts,
    stopped: bool,
    fatal: Option<String>,
    target: &'a dyn Target,
    roots: &'a Roots,
    /// The manifest changed while a worker read a batch from it.
    manifest_error: Option<manifest::Error>,
    /// Shared with the workers: set once the run must apply nothing more.
    halt: Arc<AtomicBool>,
    seq: u64,
    started: std::time::Instant,
    failure_kinds: BTreeMap<&'static str, (FailureKind, u64)>,
    last_metrics: std::time::Instant,
    bar: Option<indicatif::ProgressBar>,
    /// Records of finished batches not yet appended (group commit).
    group: Vec<Record>,
    /// Outstanding failed lines by file (repo, path): where a later line
    /// applying the file finds the failures it supersedes.
    failed_paths: HashMap<(String, String), Vec<FailedAt>>,
    group_msgs: Vec<(&'static str, String, serde_json::Value)>,
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} lines ({per_sec}, ETA {eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

impl<'a> Syncer<'a> {
    /// One event on the log (above the progress bar when there is one).
    fn say(&mut self, tag: &str, message: String, fields: serde_json::Value) {
        let (log, format) = (&mut *self.log, self.opts.log_format);
        match &self.bar {
            Some(bar) => bar.suspend(|| emit(log, format, tag, &message, fields)),
            None => emit(log, format, tag, &message, fields),
        }
    }

    /// Append records (durably) and apply them to the in-memory state. When
    /// the WAL cannot be written the run goes on in memory, loudly.
    fn record(&mut self, records: Vec<Record>) {
        if self.degraded.is_none() {
            if let Err(e) = self.wal.append(&records) {
                self.enter_degraded(e);
            }
        }
        for r in &records {
            self.state.apply(r);
        }
    }

    /// The WAL could not be written: go on with in-memory state, loudly, or
    /// stop if the device failed a flush.
    fn enter_degraded(&mut self, e: wal::Error) {
        self.say(
            "WARNING",
            format!("STATE NOT SAVED: {e}. Continuing with in-memory state; this run will exit 3 and the next run redoes the unsaved batches (index writes are idempotent)"),
            serde_json::json!({"degraded": true}),
        );
        self.degraded = Some(e.to_string());
        // An empty file needs no data block, so this usually works even on
        // a full disk; `--status` reports it.
        let _ = std::fs::File::create(degraded_marker(&self.opts.state_dir));
        if e.is_fsync() {
            // Never retried, and no point going on: the device failed a
            // flush. Stop with what is durable.
            self.say(
                "FATAL",
                format!("the WAL could not be flushed to disk ({e}); the flush is not retried and the run stops here, state saved up to the last durable batch"),
                serde_json::json!({"fsync_failed": true}),
            );
            self.fatal.get_or_insert_with(|| e.to_string());
        }
    }

    /// Record the end of a run that stopped on an error (before `finish`).
    fn end_with_error(&mut self, e: &Error) {
        self.flush_group();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.record(vec![Record::RunFinished(RunFinished {
            run_id: self.run_id,
            finished_ms: now_ms(),
            status: RunStatus::Fatal,
            counts: self.counts,
            message: Some(e.to_string()),
        })]);
    }

    fn process(&mut self, m: &Manifest, from_line: Option<u64>) -> Result<(), Error> {
        let known = self.state.manifest_for(&m.id).map(|p| p.total_lines);
        let total_lines = known.unwrap_or_else(|| m.count_lines());
        let from = match from_line {
            None => None,
            Some(n) => match m.offset_of_line(n) {
                Some(off) => Some((off, n)),
                None => {
                    return Err(Error::Usage(format!(
                        "--from-line {n}: {} has only {total_lines} lines",
                        m.path().display()
                    )))
                }
            },
        };
        self.record(vec![Record::ManifestStarted(ManifestStarted {
            run_id: self.run_id,
            manifest: m.id.clone(),
            total_lines,
            from,
        })]);
        let Some(mut progress) = self.state.manifest_for(&m.id).cloned() else {
            return Ok(());
        };
        if from.is_none() && progress.complete() {
            // Given again after it was applied: producers that list files
            // (find, mgit) repeat the same bytes while the files change, so
            // every line is checked against the disk again. (One with
            // failed lines, dead letters included, is not complete: it
            // resumes, retrying what is still retried.)
            self.say(
                "RESTART",
                format!(
                    "{} ({} lines) was applied before; applying it again from line 1 (every line re-checked against the disk)",
                    m.path().display(),
                    total_lines
                ),
                serde_json::json!({"manifest": m.path().display().to_string(), "lines": total_lines}),
            );
            self.record(vec![Record::ManifestRestarted(ManifestRestarted {
                run_id: self.run_id,
                fingerprint: m.id.fingerprint,
            })]);
            let Some(p) = self.state.manifest_for(&m.id).cloned() else {
                return Ok(());
            };
            progress = p;
        }
        let (resume_off, resume_line) = progress.resume_point();
        let dead = progress
            .failed
            .values()
            .filter(|f| f.attempts >= MAX_ATTEMPTS)
            .count();
        let retrying = if self.opts.retry_failed {
            progress.failed.len()
        } else {
            progress.failed.len() - dead
        };
        if resume_off > 0 || !progress.failed.is_empty() {
            let dead_note = if dead > 0 && !self.opts.retry_failed {
                format!(", {dead} dead letter(s) after {MAX_ATTEMPTS} attempts kept (--retry-failed retries them)")
            } else {
                String::new()
            };
            self.say(
                "RESUME",
                format!(
                    "{}: from line {} (byte {}), {} failed line(s) to retry{}",
                    m.path().display(),
                    resume_line,
                    resume_off,
                    retrying,
                    dead_note
                ),
                serde_json::json!({"manifest": m.path().display().to_string(), "offset": resume_off, "line": resume_line, "retrying": retrying, "dead_letters": dead}),
            );
        }

        let in_flight = self.target.max_in_flight().max(1);
        // Workers plan a batch (parse, read, hash, build documents), then
        // take one of `in_flight` permits to apply it. The extra workers
        // plan the next batches while the target works, so neither the
        // reading nor the target waits for the other, and planning runs on
        // every core instead of the feed thread alone.
        let planners = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 8);
        let workers = in_flight + planners;
        let permits = Permits::new(in_flight);
        let halt = Arc::new(AtomicBool::new(false));
        self.halt = Arc::clone(&halt);
        let ctx = WorkerCtx {
            manifest: m,
            roots: self.roots,
            target: self.target,
            run_id: self.run_id,
            max_retries: self.opts.max_retries,
            backoff: self.opts.backoff,
            permits: &permits,
            halt: &halt,
            on_error: self.opts.on_error,
        };
        std::thread::scope(|scope| -> Result<(), Error> {
            let (job_tx, job_rx) = mpsc::channel::<Job<'_>>();
            let job_rx = Arc::new(Mutex::new(job_rx));
            let (done_tx, done_rx) = mpsc::channel::<Msg>();
            for _ in 0..workers {
                let rx = Arc::clone(&job_rx);
                let tx = done_tx.clone();
                let ctx = &ctx;
                scope.spawn(move || {
                    let mut parser = LineParser::new();
                    loop {
                        let job = match rx.lock() {
                            Ok(g) => g.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if !ctx.run(&mut parser, job, &tx) {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            let mut pipe = Pipe {
                job_tx: Some(job_tx),
                done_rx,
                waiting: HashMap::new(),
                limit: workers,
                sent: 0,
            };
            let res = self.feed(m, &progress, &mut pipe);
            pipe.job_tx = None;
            while !pipe.waiting.is_empty() {
                self.collect_one(&mut pipe);
            }
            match self.manifest_error.take() {
                Some(e) => res.and(Err(e.into())),
                None => res,
            }
        })
    }

    /// Produce the manifest's batches: failed lines first, then the rest.
    fn feed<'m>(
        &mut self,
        m: &'m Manifest,
        progress: &ManifestProgress,
        pipe: &mut Pipe<'m>,
    ) -> Result<(), Error> {
        let fp = m.id.fingerprint;
        // 1. Lines that failed in earlier runs.
        let failed: Vec<FailedEntry> = progress
            .failed
            .values()
            .filter(|f| self.opts.retry_failed || f.attempts < MAX_ATTEMPTS)
            .cloned()
            .collect();
        for chunk in failed.chunks(self.opts.batch_size) {
            if self.should_stop() {
                return Ok(());
            }
            m.check_unchanged()?;
            let mut lines = Vec::new();
            let mut spans = Vec::new();
            for f in chunk {
                let body = m.line_at(f.offset, f.end);
                lines.push(RawLine {
                    line: f.line,
                    offset: f.offset,
                    end: f.end,
                    body,
                });
                spans.push(Span {
                    start: f.offset,
                    end: f.end,
                    first_line: f.line,
                    next_line: f.line + 1,
                });
            }
            self.submit(pipe, fp, spans, lines, true);
        }
        // 2. Everything not yet applied.
        let (start, line) = progress.resume_point();
        let mut lines = m.lines_from(start, line).peekable();
        loop {
            if self.should_stop() {
                return Ok(());
            }
            m.check_unchanged()?;
            let mut batch_lines = Vec::new();
            let mut spans: Vec<Span> = Vec::new();
            let mut nonblank = 0;
            while nonblank < self.opts.batch_size {
                let Some(raw) = lines.next() else { break };
                if progress.is_done(raw.offset) {
                    continue;
                }
                match spans.last_mut() {
                    Some(s) if s.end == raw.offset => {
                        s.end = raw.end;
                        s.next_line = raw.line + 1;
                    }
                    _ => spans.push(Span {
                        start: raw.offset,
                        end: raw.end,
                        first_line: raw.line,
                        next_line: raw.line + 1,
                    }),
                }
                if raw.bytes.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                nonblank += 1;
                batch_lines.push(RawLine {
                    line: raw.line,
                    offset: raw.offset,
                    end: raw.end,
                    body: raw.bytes,
                });
            }
            if spans.is_empty() {
                break;
            }
            // Trailing blank lines belong to this batch too.
            while let Some(next) = lines.peek() {
                if progress.is_done(next.offset)
                    || !next.bytes.iter().all(|b| b.is_ascii_whitespace())
                {
                    break;
                }
                let raw = *next;
                lines.next();
                if let Some(s) = spans.last_mut().filter(|s| s.end == raw.offset) {
                    s.end = raw.end;
                    s.next_line = raw.line + 1;
                }
            }
            self.submit(pipe, fp, spans, batch_lines, false);
            // Pages before every batch still being planned are not read
            // again (a dropped page is only read back from the file if
            // touched, so this is about memory, not correctness).
            let oldest = pipe
                .waiting
                .values()
                .filter_map(|b| b.spans.first().map(|s| s.start))
                .min();
            if let Some(release_to) = oldest {
                m.release_before(release_to);
            }
        }
        Ok(())
    }

    fn should_stop(&self) -> bool {
        self.stopped || self.fatal.is_some()
    }

    fn submit<'m>(
        &mut self,
        pipe: &mut Pipe<'m>,
        fp: [u8; 32],
        spans: Vec<Span>,
        lines: Vec<RawLine<'m>>,
        retry_pass: bool,
    ) {
        while pipe.waiting.len() >= pipe.limit {
            self.collect_one(pipe);
        }
        if self.should_stop() {
            // `--on-error stop` or a fatal error came back while this batch
            // was being read: it is not applied, and the next run starts here.
            return;
        }
        // Numbered only once sent: batches settle in `seq` order, so there
        // is no gap to wait for.
        let seq = self.seq + 1;
        let job = Job {
            seq,
            ticket: pipe.sent,
            fingerprint: fp,
            lines,
        };
        let sent = pipe
            .job_tx
            .as_ref()
            .map(|tx| tx.send(job).is_ok())
            .unwrap_or(false);
        if sent {
            self.seq = seq;
            pipe.sent += 1;
            pipe.waiting.insert(
                seq,
                Batch {
                    seq,
                    fingerprint: fp,
                    spans,
                    items: Vec::new(),
                    retry_pass,
                },
            );
        } else {
            self.fatal = Some("worker threads ended unexpectedly".into());
        }
    }

    /// Wait for one batch to come back and record it.
    ///
    /// Group commit: every other batch that has finished meanwhile is
    /// recorded too, with the same single WAL write and fdatasync. Each
    /// `BatchDone` names its own byte ranges, so their order in the log does
    /// not matter, and nothing is reported done before that fsync returns.
    /// Two batches that write one object come back in the order they were
    /// read (see [`Permits`]), so a failure is always recorded before the
    /// later line that supersedes it.
    fn collect_one(&mut self, pipe: &mut Pipe<'_>) {
        loop {
            let Ok(msg) = pipe.done_rx.recv() else {
                pipe.waiting.clear();
                return;
            };
            if self.take(pipe, msg) {
                break;
            }
        }
        while let Ok(msg) = pipe.done_rx.try_recv() {
            self.take(pipe, msg);
        }
        self.flush_group();
        if self.should_stop() {
            // A failed WAL flush, a fatal target error or `--on-error stop`:
            // batches planned ahead are not applied.
            self.halt.store(true, Ordering::SeqCst);
        }
    }

    /// Handle one message from a worker; true when it finished a batch.
    fn take(&mut self, pipe: &mut Pipe<'_>, msg: Msg) -> bool {
        match msg {
            Msg::Done(done) => {
                self.handle(pipe, done);
                true
            }
            Msg::Retry {
                first_line,
                last_line,
                attempt,
                failed,
                error,
                wait,
            } => {
                self.say(
                "RETRY",
                format!(
                    "lines {first_line}-{last_line}: {failed} item(s) refused by the index ({error}); retrying the batch in {:.1}s (attempt {attempt}, --on-error retry)",
                    wait.as_secs_f64()
                ),
                serde_json::json!({"first_line": first_line, "last_line": last_line, "attempt": attempt, "failed": failed, "error": error, "wait_secs": wait.as_secs_f64()}),
                );
                false
            }
        }
    }

    /// Record what the batches handled since the last flush produced: one
    /// append, then their progress lines.
    fn flush_group(&mut self) {
        if self.group.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.group);
        self.record(records);
        for (tag, msg, fields) in std::mem::take(&mut self.group_msgs) {
            self.say(tag, msg, fields);
        }
        self.maybe_write_metrics();
    }

    fn handle(&mut self, pipe: &mut Pipe<'_>, done: Done) {
        let Some(mut batch) = pipe.waiting.remove(&done.seq) else {
            return;
        };
        batch.items = done.items;
        let applied = match done.outcome {
            Outcome::Applied(a) => a,
            Outcome::Skipped => return,
            Outcome::ManifestChanged(e) => {
                // What was read from the changed manifest is not applied,
                // and the run stops (exit 2).
                self.manifest_error.get_or_insert(e);
                self.stopped = true;
                return;
            }
        };
        let outcomes = match applied {
            retry::Applied::Done(o) => o,
            retry::Applied::Fatal(e) => {
                let first = batch.spans.first().map(|s| s.first_line).unwrap_or(0);
                let last = batch.spans.last().map(|s| s.next_line - 1).unwrap_or(0);
                let what = self.target.describe();
                self.say(
                    "FATAL",
                    format!(
                        "{what}: {e}; lines {first}-{last} not applied, the next run resumes there"
                    ),
                    serde_json::json!({"first_line": first, "last_line": last}),
                );
                self.fatal = Some(format!("{what}: {e}"));
                return;
            }
        };
        self.finish_batch(batch, &outcomes);
    }

    fn finish_batch(&mut self, batch: Batch, outcomes: &[OpOutcome]) {
        let mut records = Vec::new();
        let mut counts = Counts::default();
        let mut failed_lines = Vec::new();
        // Failed lines of this batch, and earlier failures that a line of
        // it supersedes by applying the same file (SPEC: the latest
        // applied line wins; such a failure is no longer outstanding).
        let mut failures: Vec<ItemFailed> = Vec::new();
        let mut resolved: Vec<FailedAt> = Vec::new();
        for it in &batch.items {
            let op_failure = outcomes
                .get(it.ops.clone())
                .unwrap_or_default()
                .iter()
                .find_map(|o| match o {
                    OpOutcome::Failed { message, .. } => Some(message.clone()),
                    OpOutcome::Ok => None,
                });
            let (repo, path, kind, reason, c) = match (&it.planned, op_failure) {
                (
                    Planned::Ops {
                        repo, path, counts, ..
                    },
                    Some(msg),
                ) => {
                    // The index refused the line: it counts as failed, not
                    // as indexed or removed (its retry counts those).
                    let c = Counts {
                        upserted: 0,
                        deleted: 0,
                        reconciled: 0,
                        skipped: 0,
                        failed: counts.failed + 1,
                        ..*counts
                    };
                    (
                        repo.clone(),
                        path.clone(),
                        Some(FailureKind::Target),
                        msg,
                        c,
                    )
                }
                (
                    Planned::Ops {
                        repo, path, counts, ..
                    },
                    None,
                ) => {
                    if !path.is_empty() {
                        failures.retain(|f| !(f.repo == *repo && f.path == *path));
                        if let Some(earlier) =
                            self.failed_paths.remove(&(repo.clone(), path.clone()))
                        {
                            resolved.extend(earlier);
                        }
                    }
                    (String::new(), String::new(), None, String::new(), *counts)
                }
                (Planned::Changeset(cs), _) => {
                    records.push(Record::ChangesetSeen(cs.clone()));
                    let c = Counts {
                        lines: 1,
                        changeset: 1,
                        ..Counts::default()
                    };
                    (String::new(), String::new(), None, String::new(), c)
                }
                (
                    Planned::Failed {
                        repo,
                        path,
                        kind,
                        reason,
                        counts,
                    },
                    _,
                ) => (
                    repo.clone(),
                    path.clone(),
                    Some(*kind),
                    reason.clone(),
                    *counts,
                ),
            };
            counts.add_all(&c);
            if let Some(kind) = kind {
                self.failure_kinds
                    .entry(kind.as_str())
                    .or_insert((kind, 0))
                    .1 += 1;
                let attempts = self
                    .state
                    .manifest(&batch.fingerprint)
                    .and_then(|m| m.failed.get(&it.offset))
                    .map(|f| f.attempts)
                    .unwrap_or(0)
                    + 1;
                // A malformed line reads the same in every run of its
                // manifest: it is a dead letter at once (listed and
                // outstanding, retried only by --retry-failed).
                let attempts = if kind == FailureKind::Malformed {
                    attempts.max(MAX_ATTEMPTS)
                } else {
                    attempts
                };
                failed_lines.push((
                    format!(
                        "line {} (byte {}){}: {}",
                        it.line,
                        it.offset,
                        if path.is_empty() {
                            String::new()
                        } else {
                            format!(" {repo}/{path}")
                        },
                        reason
                    ),
                    serde_json::json!({"line": it.line, "offset": it.offset, "repo": repo, "path": path, "reason": reason, "kind": kind.as_str()}),
                ));
                failures.push(ItemFailed {
                    run_id: self.run_id,
                    fingerprint: batch.fingerprint,
                    line: it.line,
                    offset: it.offset,
                    end: it.end,
                    repo,
                    path,
                    kind,
                    reason,
                    attempts,
                });
            }
        }
        for f in &failures {
            if !f.path.is_empty() {
                self.failed_paths
                    .entry((f.repo.clone(), f.path.clone()))
                    .or_default()
                    .push((f.fingerprint, f.offset));
            }
        }
        records.extend(failures.into_iter().map(Record::ItemFailed));
        records.push(Record::BatchDone(BatchDone {
            run_id: self.run_id,
            fingerprint: batch.fingerprint,
            seq: batch.seq,
            spans: batch.spans.clone(),
            counts,
        }));
        if !resolved.is_empty() {
            records.push(Record::FailuresResolved(FailuresResolved {
                run_id: self.run_id,
                entries: resolved,
            }));
        }
        self.group.append(&mut records);
        self.counts.add_all(&counts);
        let first = batch.spans.first().map(|s| s.first_line).unwrap_or(0);
        let last = batch.spans.last().map(|s| s.next_line - 1).unwrap_or(0);
        if let Some(bar) = &self.bar {
            bar.inc(batch.spans.iter().map(|s| s.next_line - s.first_line).sum());
            if self.counts.failed > 0 {
                bar.set_message(format!("{} failed", self.counts.failed));
            }
        } else if self.opts.progress {
            let ok = batch.items.len() as u64 - counts.failed;
            let tag = if batch.retry_pass {
                "RETRIED"
            } else {
                "PROCESSED"
            };
            let tail = if counts.failed == 0 {
                String::new()
            } else {
                match self.opts.on_error {
                    OnError::Stop => format!(", {} failed (stopping)", counts.failed),
                    _ => format!(", {} failed (will retry)", counts.failed),
                }
            };
            self.group_msgs.push((
                tag,
                format!("Line {first}-{last}: {ok} success{tail}"),
                serde_json::json!({"first_line": first, "last_line": last, "success": ok, "failed": counts.failed}),
            ));
        }
        for (msg, fields) in failed_lines {
            self.group_msgs.push(("FAILED", msg, fields));
        }
        if counts.failed > 0 && self.opts.on_error == OnError::Stop {
            self.stopped = true;
        }
    }

    /// During long runs the metrics file is refreshed every 30 s (with the
    /// status label `running`), so a stuck sync shows up before it ends.
    fn maybe_write_metrics(&mut self) {
        let Some(path) = &self.opts.metrics_file else {
            return;
        };
        if self.last_metrics.elapsed() < Duration::from_secs(30) {
            return;
        }
        self.last_metrics = std::time::Instant::now();
        let m = metrics::RunMetrics {
            status: None,
            running: true,
            finished_unix: now_ms() / 1000,
            duration_secs: self.started.elapsed().as_secs_f64(),
            counts: self.counts,
            failures: self.failure_kinds.values().copied().collect(),
            resume_offset: 0,
            degraded: self.degraded.is_some(),
            outstanding_failures: self.state.outstanding_failures().count() as u64,
            dead_letters: self.dead_letters(),
        };
        let _ = metrics::write(path, &m);
    }

    fn finish(mut self) -> Report {
        self.flush_group();
        // Complete means nothing is outstanding: failed lines of this run or
        // earlier ones, dead letters included, that no later line applied.
        let outstanding = self.state.outstanding_failures().count() as u64;
        let status = if self.fatal.is_some() {
            RunStatus::Fatal
        } else if self.stopped {
            RunStatus::Stopped
        } else if outstanding > 0 {
            RunStatus::Failures
        } else {
            RunStatus::Complete
        };
        let message = self.fatal.clone().or_else(|| self.degraded.clone());
        self.record(vec![Record::RunFinished(RunFinished {
            run_id: self.run_id,
            finished_ms: now_ms(),
            status,
            counts: self.counts,
            message: message.clone(),
        })]);
        if self.degraded.is_none() && self.wal.total_len() > COMPACT_THRESHOLD {
            if let Err(e) = self.wal.compact(&self.state) {
                self.say("WARNING", format!("WAL compaction failed ({e}); the log is intact and will be compacted next time"), serde_json::Value::Null);
            }
        }
        self.clean_spool();
        if self.degraded.is_none() {
            let _ = std::fs::remove_file(degraded_marker(&self.opts.state_dir));
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let c = self.counts;
        let dead = self.dead_letters();
        let tail = if outstanding == 0 {
            String::new()
        } else {
            format!(
                "; {outstanding} failed line(s) outstanding ({dead} dead letter(s)): elysiactl index failures lists them"
            )
        };
        self.say(
            "SUMMARY",
            format!(
                "{}: {} lines, {} indexed, {} removed, {} reconciled, {} skipped, {} failed{tail}",
                status.as_str(),
                c.lines,
                c.upserted,
                c.deleted,
                c.reconciled,
                c.skipped,
                c.failed
            ),
            serde_json::json!({"status": status.as_str(), "counts": status::counts_json(&c), "outstanding_failures": outstanding, "dead_letters": dead, "duration_secs": self.started.elapsed().as_secs_f64()}),
        );
        let degraded = self.degraded.is_some();
        if degraded {
            self.say("WARNING", "the WAL could not be written during this run: progress since then is lost and will be redone next run; exiting 3".into(), serde_json::json!({"degraded": true}));
        }
        let exit_code = match status {
            _ if degraded => 3,
            RunStatus::Fatal => 3,
            RunStatus::Complete => 0,
            RunStatus::Failures | RunStatus::Stopped => 1,
        };
        let resume_offset = self
            .state
            .last_run
            .as_ref()
            .and_then(|r| r.manifest.as_ref())
            .and_then(|fp| self.state.manifest(fp))
            .map(|m| m.resume_point().0)
            .unwrap_or(0);
        Report {
            exit_code,
            status: Some(status),
            counts: self.counts,
            degraded,
            message,
            metrics: Some(metrics::RunMetrics {
                status: Some(status),
                running: false,
                finished_unix: now_ms() / 1000,
                duration_secs: self.started.elapsed().as_secs_f64(),
                counts: self.counts,
                failures: self.failure_kinds.values().copied().collect(),
                resume_offset,
                degraded,
                outstanding_failures: outstanding,
                dead_letters: dead,
            }),
        }
    }

    fn dead_letters(&self) -> u64 {
        self.state
            .outstanding_failures()
            .filter(|(_, f)| f.attempts >= MAX_ATTEMPTS)
            .count() as u64
    }

    /// Spooled stdin manifests are deleted once nothing refers to them.
    fn clean_spool(&self) {
        if self.degraded.is_some() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.opts.state_dir.join("spool")) else {
            return;
        };
        // Matched by file name: spool names are unique (the content's
        // fingerprint), and the state dir may have been named differently
        // (relative, `./`, a symlink) by the run that spooled it.
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            let needed = self.state.manifests.iter().any(|m| {
                m.id.spooled
                    && !m.complete()
                    && !m.abandoned
                    && manifest::path_of_stored(&m.id.path).file_name() == Some(name.as_os_str())
            });
            if !needed {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

struct Pipe<'m> {
    job_tx: Option<mpsc::Sender<Job<'m>>>,
    done_rx: mpsc::Receiver<Msg>,
    waiting: HashMap<u64, Batch>,
    limit: usize,
    /// Jobs sent so far: the next job's ticket.
    sent: u64,
}

/// One manifest line handed to a worker.
struct RawLine<'m> {
    line: u64,
    offset: u64,
    end: u64,
    /// The line without its terminator.
    body: &'m [u8],
}

/// A batch's lines, to plan and apply on a worker thread.
struct Job<'m> {
    seq: u64,
    /// Order in which the batch may take a permit (0, 1, 2, … per manifest).
    ticket: u64,
    fingerprint: [u8; 32],
    lines: Vec<RawLine<'m>>,
}

/// What workers tell the feed thread.
enum Msg {
    Done(Done),
    /// `--on-error retry` is about to retry a batch.
    Retry {
        first_line: u64,
        last_line: u64,
        attempt: u32,
        failed: usize,
        error: String,
        wait: Duration,
    },
}

/// A worker's answer: the planned lines and what the target
/// said (or that the manifest changed while the lines were read).
struct Done {
    seq: u64,
    items: Vec<Item>,
    outcome: Outcome,
}

enum Outcome {
    Applied(retry::Applied),
    /// Not sent to the target: an earlier batch failed under
    /// `--on-error stop`, or was fatal. The next run starts at or before it.
    Skipped,
    /// The manifest changed while the lines were read: nothing is applied.
    ManifestChanged(manifest::Error),
}

/// What every worker shares.
struct WorkerCtx<'a> {
    manifest: &'a Manifest,
    roots: &'a Roots,
    target: &'a dyn Target,
    run_id: u64,
    max_retries: u32,
    backoff: Backoff,
    permits: &'a Permits,
    /// Set by a worker whose batch ends the run (fatal, a changed manifest,
    /// or a failure under `--on-error stop`): later batches are not applied.
    halt: &'a AtomicBool,
    on_error: OnError,
}

/// The first failure among the target's outcomes for planned items, and
/// how many items failed at the target.
fn target_failures(items: &[Item], outcomes: &[OpOutcome]) -> (usize, Option<String>) {
    let mut n = 0;
    let mut first = None;
    for it in items {
        let failed = outcomes
            .get(it.ops.clone())
            .unwrap_or_default()
            .iter()
            .find_map(|o| match o {
                OpOutcome::Failed { message, .. } => Some(message),
                OpOutcome::Ok => None,
            });
        if let Some(m) = failed {
            n += 1;
            first.get_or_insert_with(|| m.clone());
        }
    }
    (n, first)
}

impl WorkerCtx<'_> {
    /// Plan every line of a batch: parse, look at the disk, build the ops.
    fn plan(&self, parser: &mut LineParser, job: &Job<'_>) -> (Vec<Item>, Vec<Op>) {
        let mut items = Vec::with_capacity(job.lines.len());
        let mut ops = Vec::new();
        for raw in &job.lines {
            let parsed = parser
                .parse(raw.body)
                .and_then(|c| c.ok_or(manifest::LineError::Json("blank line".into())));
            let mut planned = plan::plan(
                parsed,
                self.roots,
                Some(self.target),
                job.fingerprint,
                self.run_id,
                raw.line,
            );
            let start = ops.len();
            if let Planned::Ops { ops: o, .. } = &mut planned {
                ops.append(o);
            }
            items.push(Item {
                line: raw.line,
                offset: raw.offset,
                end: raw.end,
                planned,
                ops: start..ops.len(),
            });
        }
        (items, ops)
    }

    /// Plan a job, apply its ops under a permit, and send the outcome
    /// before giving the permit back. False once nobody listens.
    fn run(&self, parser: &mut LineParser, job: Job<'_>, tell: &mpsc::Sender<Msg>) -> bool {
        let (mut items, mut ops) = self.plan(parser, &job);
        // Batches reach the target in the order they were read: with one
        // batch at a time the index is always a prefix of the manifest, and
        // with several they start in order, and a batch that writes an
        // object an earlier batch still in flight writes waits for it (so a
        // retried write never lands after a later line's write).
        let ids: Vec<uuid::Uuid> = if self.permits.total > 1 {
            // A line that failed to plan names its object too: its failure
            // must be recorded before a later line for the same file.
            let failed = items.iter().filter_map(|it| match &it.planned {
                Planned::Failed { repo, path, .. } if !path.is_empty() => {
                    Some(crate::target::object_id(repo, path))
                }
                _ => None,
            });
            let mut ids: Vec<_> = ops.iter().map(Op::id).chain(failed).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        } else {
            Vec::new()
        };
        let permit = self.permits.acquire(job.ticket, ids);
        // Nothing read from a manifest that changed meanwhile is applied
        // (a truncated mapping reads as zeros; see manifest::sigbus).
        let outcome = if let Err(e) = self.manifest.check_unchanged() {
            self.halt.store(true, Ordering::SeqCst);
            Outcome::ManifestChanged(e)
        } else if self.halt.load(Ordering::SeqCst) {
            // Checked under the permit: a batch that failed sets `halt`
            // before giving its permit back, so with one batch at a time
            // `--on-error stop` applies nothing after the failing batch.
            Outcome::Skipped
        } else {
            let mut applied =
                retry::apply_with_retries(self.target, &ops, self.max_retries, self.backoff);
            if self.on_error == OnError::Retry {
                applied =
                    self.retry_until_applied(parser, &job, &mut items, &mut ops, applied, tell);
            }
            let halts = match &applied {
                retry::Applied::Fatal(_) => true,
                retry::Applied::Done(outcomes) => {
                    self.on_error == OnError::Stop
                        && (outcomes.iter().any(|o| !o.is_ok())
                            || items
                                .iter()
                                .any(|it| matches!(it.planned, Planned::Failed { .. })))
                }
            };
            if halts {
                self.halt.store(true, Ordering::SeqCst);
            }
            Outcome::Applied(applied)
        };
        // Sent under the permit: a later batch writing one of these objects
        // cannot start, let alone come back, before this answer is queued.
        let sent = tell
            .send(Msg::Done(Done {
                seq: job.seq,
                items,
                outcome,
            }))
            .is_ok();
        drop(permit);
        sent
    }

    /// `--on-error retry`: while the target refuses some of the batch's
    /// writes, wait (capped full-jitter backoff) and apply the batch again,
    /// planned afresh from the disk, under the same permit. Lines that are
    /// malformed or unreadable do not get better by retrying the write: they
    /// are recorded as failed, as with `continue`. A fatal error (the target
    /// refuses for good, or is unreachable) ends the retries and the run, as
    /// does another batch ending the run.
    fn retry_until_applied(
        &self,
        parser: &mut LineParser,
        job: &Job<'_>,
        items: &mut Vec<Item>,
        ops: &mut Vec<Op>,
        mut applied: retry::Applied,
        tell: &mpsc::Sender<Msg>,
    ) -> retry::Applied {
        let cap = Backoff {
            base: self.backoff.base,
            cap: self.backoff.cap.max(Duration::from_secs(1)),
        };
        let mut jitter = retry::Jitter::new();
        let mut attempt = 0u32;
        loop {
            let (failed, error) = match &applied {
                retry::Applied::Fatal(_) => return applied,
                retry::Applied::Done(outcomes) => target_failures(items, outcomes),
            };
            if failed == 0 || self.halt.load(Ordering::SeqCst) {
                return applied;
            }
            let wait = cap.delay(attempt, None, &mut jitter);
            let _ = tell.send(Msg::Retry {
                first_line: job.lines.first().map(|l| l.line).unwrap_or(0),
                last_line: job.lines.last().map(|l| l.line).unwrap_or(0),
                attempt: attempt.saturating_add(1),
                failed,
                error: error.unwrap_or_default(),
                wait,
            });
            std::thread::sleep(wait);
            attempt = attempt.saturating_add(1);
            if self.halt.load(Ordering::SeqCst) {
                return applied;
            }
            (*items, *ops) = self.plan(parser, job);
            applied = retry::apply_with_retries(self.target, ops, self.max_retries, self.backoff);
        }
    }
}

/// A counting semaphore handed out in ticket order: at most `n` batches are
/// at the target at once, batch `k` (its ticket, in the order the feed sent
/// them) starts only after every batch before it has started, and never
/// while an earlier batch that writes one of its objects is still in flight
/// (so a retried write never lands after a later line's write, and the
/// earlier batch's outcome is queued for recording first).
///
/// No deadlock: the feed sends jobs in ticket order and workers take them
/// from one queue, so the lowest outstanding ticket is always held by a
/// worker, which gets the next free permit; a batch only ever waits for
/// batches before it.
struct Permits {
    total: usize,
    state: Mutex<PermitState>,
    changed: Condvar,
}

struct PermitState {
    free: usize,
    /// The next ticket to serve.
    next: u64,
    /// Object ids (sorted) of the batches at the target, by ticket.
    in_flight: Vec<(u64, Vec<uuid::Uuid>)>,
}

impl PermitState {
    fn conflicts(&self, ids: &[uuid::Uuid]) -> bool {
        self.in_flight
            .iter()
            .any(|(_, theirs)| ids.iter().any(|id| theirs.binary_search(id).is_ok()))
    }
}

struct Permit<'a> {
    permits: &'a Permits,
    ticket: u64,
}

impl Permits {
    fn new(n: usize) -> Permits {
        Permits {
            total: n,
            state: Mutex::new(PermitState {
                free: n,
                next: 0,
                in_flight: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }

    /// Wait for ticket `ticket`'s turn; `ids` are the sorted object ids the
    /// batch writes.
    fn acquire(&self, ticket: u64, ids: Vec<uuid::Uuid>) -> Permit<'_> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.free == 0 || st.next != ticket || st.conflicts(&ids) {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.free -= 1;
        st.next += 1;
        if !ids.is_empty() {
            st.in_flight.push((ticket, ids));
        }
        self.changed.notify_all();
        Permit {
            permits: self,
            ticket,
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut st = self.permits.state.lock().unwrap_or_else(|p| p.into_inner());
        st.free += 1;
        let ticket = self.ticket;
        st.in_flight.retain(|(t, _)| *t != ticket);
        self.permits.changed.notify_all();
    }
}

/// `--dry-run`: parse every line and check its path rules; touch neither the
/// index, the WAL nor the files.
fn dry_run(opts: &Options, log: &mut dyn Write) -> Result<Report, Error> {
    let path = match &opts.input {
        Some(Input::File(p)) => p.clone(),
        Some(Input::Stdin) => return Err(Error::Usage(
            "--dry-run reads a file; it does not spool stdin (write the manifest to a file first)"
                .into(),
        )),
        None => return Err(Error::Usage("--dry-run needs --input FILE".into())),
    };
    let m = Manifest::open(&path, false)?;
    let roots =
        Roots::new(&opts.roots, opts.max_file_size).map_err(|e| Error::Usage(e.to_string()))?;
    let state = wal::replay(&opts.state_dir)
        .map(|r| r.state)
        .unwrap_or_default();
    let (start, line) = match opts.from_line {
        Some(n) => (
            m.offset_of_line(n).ok_or_else(|| {
                Error::Usage(format!(
                    "--from-line {n}: past the end of {}",
                    path.display()
                ))
            })?,
            n,
        ),
        None => state
            .manifest_for(&m.id)
            .map(|p| p.resume_point())
            .unwrap_or((0, 1)),
    };
    let mut parser = LineParser::new();
    let mut counts = Counts::default();
    let mut since_release = 0u64;
    for raw in m.lines_from(start, line) {
        let parsed = match parser.parse(raw.bytes) {
            Ok(None) => continue,
            Ok(Some(c)) => Ok(c),
            Err(e) => Err(e),
        };
        match plan::plan(parsed, &roots, None, m.id.fingerprint, 0, raw.line) {
            Planned::Ops { counts: c, .. } => counts.add_all(&c),
            Planned::Changeset(_) => {
                counts.lines += 1;
                counts.changeset += 1;
            }
            Planned::Failed {
                counts: c, reason, ..
            } => {
                counts.add_all(&c);
                emit(
                    log,
                    opts.log_format,
                    "INVALID",
                    &format!("line {} (byte {}): {reason}", raw.line, raw.offset),
                    serde_json::json!({"line": raw.line, "offset": raw.offset, "reason": reason}),
                );
            }
        }
        since_release += raw.end - raw.offset;
        if since_release > 64 << 20 {
            m.release_before(raw.offset);
            since_release = 0;
        }
    }
    emit(
        log,
        opts.log_format,
        "DRY-RUN",
        &format!(
            "from line {line} (byte {start}): {} lines: {} add, {} update, {} delete, {} rename, {} changeset, {} prune, {} invalid; nothing written",
            counts.lines, counts.add, counts.update, counts.delete, counts.rename, counts.changeset, counts.prune, counts.failed
        ),
        serde_json::json!({"from_line": line, "offset": start, "counts": status::counts_json(&counts)}),
    );
    Ok(Report {
        exit_code: if counts.failed > 0 { 1 } else { 0 },
        status: None,
        counts,
        degraded: false,
        message: None,
        metrics: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    #[test]
    fn permits_are_served_in_ticket_order() {
        let permits = Permits::new(2);
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            // Spawned in reverse: each still starts in ticket order.
            for t in (0..6u64).rev() {
                let (permits, order) = (&permits, &order);
                s.spawn(move || {
                    let _p = permits.acquire(t, Vec::new());
                    order.lock().unwrap().push(t);
                });
            }
        });
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_batch_waits_for_an_earlier_one_writing_the_same_object() {
        let permits = Permits::new(4);
        let first = permits.acquire(0, vec![id(1), id(2)]);
        let started = AtomicU64::new(0);
        std::thread::scope(|s| {
            let (permits, started) = (&permits, &started);
            // Ticket 1 shares object 2 with ticket 0: it waits.
            s.spawn(move || {
                let _p = permits.acquire(1, vec![id(2), id(3)]);
                started.fetch_add(1, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(
                started.load(Ordering::SeqCst),
                0,
                "ticket 1 ran beside ticket 0"
            );
            drop(first);
        });
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // Disjoint objects share the target.
        let a = permits.acquire(2, vec![id(7)]);
        let b = permits.acquire(3, vec![id(8)]);
        drop((a, b));
    }
}
