//! What a sync reports, as typed events ([`SyncEvent`]); the text line and
//! the JSON object of each come from the same value ([`crate::report`]).
//! The session reports through [`Reporter`], which also keeps the progress
//! bar on a terminal (lines are printed above it; batch lines advance it).

use std::fmt;

use serde::Serialize;

use super::*;
use crate::report::{self, Event};

/// Everything `index sync` says on stderr.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SyncEvent {
    /// Recovery dropped a torn final WAL record.
    Recovered {
        segment: String,
        offset: u64,
        #[serde(skip)]
        dropped_bytes: u64,
        #[serde(skip)]
        reason: String,
    },
    /// A manifest is resumed (or its failed lines retried).
    Resume {
        manifest: String,
        offset: u64,
        line: u64,
        retrying: usize,
        dead_letters: usize,
        #[serde(skip)]
        note_dead: bool,
    },
    /// A completely applied manifest, given again, is applied again.
    Restart { manifest: String, lines: u64 },
    /// The index is empty while the WAL records applied work.
    IndexLost { target: String, since_ms: u64 },
    /// `--rechunk`: every file the index holds is re-written at the new
    /// chunk size, from a manifest spooled in the state dir.
    Rechunk {
        files: u64,
        from_chunk_size: Option<u64>,
        chunk_size: u64,
        /// Why an old-format local index is rebuilt so (unasked).
        #[serde(skip_serializing_if = "Option::is_none")]
        rebuild: Option<&'static str>,
    },
    /// `--abandon-pending` dropped a manifest's remaining and failed lines.
    Abandoned {
        manifest: String,
        remaining_lines: u64,
        failed_lines: usize,
    },
    /// A batch was recorded (`retried`: of the failed-lines pass).
    Batch {
        #[serde(skip)]
        retried: bool,
        /// Manifest lines the batch covered (blank ones included): what
        /// the bar advances by.
        #[serde(skip)]
        lines: u64,
        first_line: u64,
        last_line: u64,
        success: u64,
        failed: u64,
        #[serde(skip)]
        stopping: bool,
        /// How the run was throttled since the previous progress line.
        #[serde(skip_serializing_if = "Option::is_none")]
        throttled: Option<Throttled>,
    },
    /// One line failed.
    Failed {
        line: u64,
        offset: u64,
        repo: String,
        path: String,
        reason: String,
        kind: &'static str,
    },
    /// `--on-error retry` retries a batch.
    Retry {
        first_line: u64,
        last_line: u64,
        attempt: u32,
        failed: usize,
        error: String,
        wait_secs: f64,
    },
    /// A batch the target refused for good: the run ends.
    TargetFatal {
        first_line: u64,
        last_line: u64,
        #[serde(skip)]
        error: String,
    },
    /// The WAL could not be written: the run goes on in memory.
    StateNotSaved {
        #[serde(skip)]
        error: String,
        degraded: bool,
    },
    /// A WAL flush failed: never retried, the run stops.
    FsyncFailed {
        #[serde(skip)]
        error: String,
        fsync_failed: bool,
    },
    /// The end of a degraded run.
    DegradedExit { degraded: bool },
    /// Failed lines of a manifest that is gone cannot be retried.
    FailuresUnretriable { manifest: String, failed: usize },
    /// Nothing to do with `--retry-failed`.
    NothingToRetry,
    /// Compaction failed; the log is intact.
    CompactionFailed {
        #[serde(skip)]
        error: String,
    },
    /// Where a fatal run left its hints.
    FailedRunWritten { failed_run_file: String },
    /// The failed-run file could not be written.
    FailedRunNotWritten {
        #[serde(skip)]
        error: String,
    },
    /// The metrics file could not be written.
    MetricsNotWritten {
        metrics_file: String,
        #[serde(skip)]
        error: String,
    },
    /// The run's last line.
    Summary {
        status: &'static str,
        counts: serde_json::Value,
        outstanding_failures: u64,
        dead_letters: u64,
        duration_secs: f64,
        /// Files refused for a rate limit (each refusal counts), and the
        /// seconds batches waited them out (summed over batches).
        rate_limited_objects: u64,
        throttled_secs: f64,
        #[serde(skip)]
        c: Counts,
    },
    /// Failed lines of earlier runs are still outstanding (after the
    /// summary; this run's own failures are in the summary already).
    Outstanding {
        outstanding_failures: u64,
        dead_letters: u64,
        earlier: u64,
    },
    /// A dry run found a malformed line.
    Invalid {
        line: u64,
        offset: u64,
        reason: String,
    },
    /// A dry run's total.
    DryRun {
        from_line: u64,
        offset: u64,
        counts: serde_json::Value,
        #[serde(skip)]
        c: Counts,
    },
    /// The run ends on an error (the process's last line).
    Fatal {
        #[serde(skip)]
        message: String,
        exit_code: u8,
    },
}

/// How hard a run was throttled since its previous progress line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throttled {
    /// Files refused for a rate limit (each refusal counts).
    pub rate_limited: u64,
    /// Seconds batches waited out rate limits and their paced turn, summed
    /// over the batches in flight.
    pub waited_secs: f64,
    /// The send rate learnt from the provider (`None`: not paced).
    pub paced_objects_per_sec: Option<f64>,
    /// Batches allowed at the target now, of `concurrency`.
    pub in_flight_limit: u64,
    pub concurrency: u64,
}

impl Throttled {
    /// What changed from `before` to `now`; `None` when nothing was
    /// throttled in between.
    pub fn between(
        before: &retry::ThrottleReading,
        now: &retry::ThrottleReading,
        concurrency: u64,
    ) -> Option<Throttled> {
        let rate_limited = now.rate_limited.saturating_sub(before.rate_limited);
        let waited_ms = now.throttled_ms.saturating_sub(before.throttled_ms);
        (rate_limited > 0 || waited_ms > 0).then(|| Throttled {
            rate_limited,
            waited_secs: waited_ms as f64 / 1000.0,
            paced_objects_per_sec: now.pace_per_sec.map(|r| (r * 10.0).round() / 10.0),
            in_flight_limit: now.in_flight_limit,
            concurrency,
        })
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "throttled: {} rate-limited, {:.1}s waited",
            self.rate_limited, self.waited_secs
        )?;
        if let Some(r) = self.paced_objects_per_sec {
            write!(f, ", paced at {r:.1} objects/s")?;
        }
        if self.in_flight_limit > 0 && self.in_flight_limit < self.concurrency {
            write!(
                f,
                ", {} of {} batches at a time",
                self.in_flight_limit, self.concurrency
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for SyncEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SyncEvent::*;
        match self {
            Recovered {
                segment,
                offset,
                dropped_bytes,
                reason,
            } => write!(f, "dropped a torn WAL record at {segment} byte {offset} ({dropped_bytes} bytes: {reason}); the batch it described will be redone"),
            Resume {
                manifest,
                offset,
                line,
                retrying,
                dead_letters,
                note_dead,
            } => {
                write!(f, "{manifest}: from line {line} (byte {offset}), {retrying} failed line(s) to retry")?;
                if *note_dead && *dead_letters > 0 {
                    write!(f, ", {dead_letters} dead letter(s) after {MAX_ATTEMPTS} attempts kept (--retry-failed retries them)")?;
                }
                Ok(())
            }
            IndexLost { target, .. } => write!(f, "{target} was found empty although this state dir's WAL records applied work: the index was deleted or reset behind elysiactl's back. Runs go on but end partially_complete until `elysiactl index verify --repair` (same --root and target flags) makes the index equal the disk again"),
            Rechunk {
                files,
                rebuild: Some(why),
                ..
            } => write!(f, "rebuilding the local index from the disk: {why}; re-writing the {files} files it holds before the manifest (resumable; searches meanwhile see only the files re-written so far)"),
            Rechunk {
                files,
                from_chunk_size,
                chunk_size,
                rebuild: None,
            } => {
                let from = match from_chunk_size {
                    Some(0) => " from one object per file".to_string(),
                    Some(n) => format!(" from --chunk-size {n}"),
                    None => String::new(),
                };
                write!(f, "re-chunking the {files} files the index holds{from} to --chunk-size {chunk_size}, before the manifest (resumable)")
            }
            Restart { manifest, lines } => write!(f, "{manifest} ({lines} lines) was applied before; applying it again from line 1 (every line re-checked against the disk)"),
            Abandoned {
                manifest,
                remaining_lines,
                failed_lines,
            } => write!(f, "{manifest}: {remaining_lines} lines never applied and {failed_lines} failed line(s) are dropped (--abandon-pending)"),
            Batch {
                first_line,
                last_line,
                success,
                failed,
                stopping,
                throttled,
                ..
            } => {
                write!(f, "Line {first_line}-{last_line}: {success} success")?;
                match (failed, stopping) {
                    (0, _) => {}
                    (n, true) => write!(f, ", {n} failed (stopping)")?,
                    (n, false) => write!(f, ", {n} failed (will retry)")?,
                }
                match throttled {
                    Some(t) => write!(f, "; {t}"),
                    None => Ok(()),
                }
            }
            Failed {
                line,
                offset,
                repo,
                path,
                reason,
                ..
            } => {
                write!(f, "line {line} (byte {offset})")?;
                if !path.is_empty() {
                    write!(f, " {repo}/{path}")?;
                }
                write!(f, ": {reason}")
            }
            Retry {
                first_line,
                last_line,
                attempt,
                failed,
                error,
                wait_secs,
            } => write!(f, "lines {first_line}-{last_line}: {failed} item(s) refused by the index ({error}); retrying the batch in {wait_secs:.1}s (attempt {attempt}, --on-error retry)"),
            TargetFatal {
                first_line,
                last_line,
                error,
            } => write!(f, "{error}; lines {first_line}-{last_line} not applied, the next run resumes there"),
            StateNotSaved { error, .. } => write!(f, "STATE NOT SAVED: {error}. Continuing with in-memory state; this run will exit 3 and the next run redoes the unsaved batches (index writes are idempotent)"),
            FsyncFailed { error, .. } => write!(f, "the WAL could not be flushed to disk ({error}); the flush is not retried and the run stops here, state saved up to the last durable batch"),
            DegradedExit { .. } => f.write_str("the WAL could not be written during this run: progress since then is lost and will be redone next run; exiting 3"),
            FailuresUnretriable { manifest, failed } => write!(f, "{manifest} has {failed} failed line(s) but is gone or changed, so they cannot be retried; they stay outstanding until a later line applies their files (--abandon-pending drops them)"),
            NothingToRetry => f.write_str("no failed lines to retry"),
            CompactionFailed { error } => write!(f, "WAL compaction failed ({error}); the log is intact and will be compacted next time"),
            FailedRunWritten { failed_run_file } => write!(f, "state saved; details and hints in {failed_run_file}"),
            FailedRunNotWritten { error } => write!(f, "cannot write the failed-run file: {error}"),
            MetricsNotWritten {
                metrics_file,
                error,
            } => write!(f, "cannot write metrics file {metrics_file}: {error}"),
            Summary {
                status,
                c,
                rate_limited_objects,
                throttled_secs,
                ..
            } => {
                write!(f, "{status}: {} lines, {} indexed, {} removed, {} reconciled, {} skipped, {} failed", c.lines, c.upserted, c.deleted, c.reconciled, c.skipped, c.failed)?;
                if *rate_limited_objects > 0 || *throttled_secs > 0.0 {
                    write!(f, "; throttled: {rate_limited_objects} rate-limited, {throttled_secs:.1}s waited")?;
                }
                Ok(())
            }
            Outstanding {
                outstanding_failures,
                dead_letters,
                earlier,
            } => write!(f, "{outstanding_failures} failed line(s) outstanding ({dead_letters} dead letter(s)), {earlier} of them from earlier runs: the index is not complete until they are applied; elysiactl index failures lists them"),
            Invalid {
                line,
                offset,
                reason,
            } => write!(f, "line {line} (byte {offset}): {reason}"),
            DryRun {
                from_line,
                offset,
                c,
                ..
            } => write!(f, "from line {from_line} (byte {offset}): {} lines: {} add, {} update, {} delete, {} rename, {} changeset, {} prune, {} invalid; nothing written", c.lines, c.add, c.update, c.delete, c.rename, c.changeset, c.prune, c.failed),
            Fatal { message, .. } => f.write_str(message),
        }
    }
}

impl Event for SyncEvent {
    fn tag(&self) -> &'static str {
        use SyncEvent::*;
        match self {
            Recovered { .. } => "RECOVERED",
            Resume { .. } => "RESUME",
            Restart { .. } => "RESTART",
            Rechunk {
                rebuild: Some(_), ..
            } => "REBUILD",
            Rechunk { .. } => "RECHUNK",
            IndexLost { .. } => "INDEX_LOST",
            Abandoned { .. } => "ABANDONED",
            Batch { retried: true, .. } => "RETRIED",
            Batch { retried: false, .. } => "PROCESSED",
            Failed { .. } => "FAILED",
            Retry { .. } => "RETRY",
            TargetFatal { .. } | FsyncFailed { .. } | FailedRunWritten { .. } | Fatal { .. } => {
                "FATAL"
            }
            StateNotSaved { .. }
            | DegradedExit { .. }
            | FailuresUnretriable { .. }
            | CompactionFailed { .. }
            | FailedRunNotWritten { .. }
            | MetricsNotWritten { .. } => "WARNING",
            NothingToRetry => "DONE",
            Summary { .. } => "SUMMARY",
            Outstanding { .. } => "OUTSTANDING",
            Invalid { .. } => "INVALID",
            DryRun { .. } => "DRY-RUN",
        }
    }

    fn fields(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Reports a run's events: text or JSON lines on the log, printed above the
/// progress bar when there is one; batch events advance the bar instead of
/// printing (and `--quiet` drops them).
pub struct Reporter<'a> {
    out: &'a mut dyn Write,
    format: LogFormat,
    /// Print a line per batch.
    batches: bool,
    bar: Option<indicatif::ProgressBar>,
    failed: u64,
    /// The bar's message names throttling (cleared once a batch is not).
    throttled_shown: bool,
}

impl<'a> Reporter<'a> {
    pub fn new(out: &'a mut dyn Write, format: LogFormat, batches: bool) -> Self {
        Reporter {
            out,
            format,
            batches,
            bar: None,
            failed: 0,
            throttled_shown: false,
        }
    }

    /// Draw a bar of `total` lines (a terminal): rate, ETA, failures.
    pub fn start_bar(&mut self, total: u64) {
        self.bar = Some(progress_bar(total));
    }

    pub fn finish_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    pub fn report(&mut self, e: &SyncEvent) {
        if let SyncEvent::Batch {
            lines,
            failed,
            throttled,
            ..
        } = e
        {
            self.failed += failed;
            if let Some(bar) = &self.bar {
                bar.inc(*lines);
                let mut msg = Vec::new();
                if self.failed > 0 {
                    msg.push(format!("{} failed", self.failed));
                }
                if let Some(t) = throttled {
                    msg.push(t.to_string());
                }
                if !msg.is_empty() || self.throttled_shown {
                    bar.set_message(msg.join("; "));
                }
                self.throttled_shown = throttled.is_some();
                return;
            }
            if !self.batches {
                return;
            }
        }
        let (out, format) = (&mut *self.out, self.format);
        match &self.bar {
            Some(bar) => bar.suspend(|| report::write(out, format, e)),
            None => report::write(out, format, e),
        }
    }
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

/// The one line a run that ends in an error prints: `elysiactl: …` as
/// text, a `fatal` event under `--log-format json` (every stderr line is
/// then JSON).
pub fn emit_fatal(log: &mut dyn Write, format: LogFormat, message: &str, exit_code: u8) {
    match format {
        LogFormat::Text => {
            let _ = writeln!(log, "elysiactl: {message}");
        }
        LogFormat::Json => report::write(
            log,
            format,
            &SyncEvent::Fatal {
                message: message.to_owned(),
                exit_code,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_not_throttled_says_nothing_of_throttling() {
        let r = retry::ThrottleReading {
            rate_limited: 5,
            throttled_ms: 100,
            pace_per_sec: Some(10.0),
            ..Default::default()
        };
        assert_eq!(Throttled::between(&r, &r, 4), None);
        let e = SyncEvent::Batch {
            retried: false,
            lines: 1,
            first_line: 1,
            last_line: 1,
            success: 1,
            failed: 0,
            stopping: false,
            throttled: None,
        };
        assert_eq!(report::text_line(&e), "[PROCESSED] Line 1-1: 1 success");
        assert!(report::json_value(&e, 1).get("throttled").is_none());
    }

    #[test]
    fn each_event_gives_its_text_line_and_the_same_json() {
        let c = Counts {
            lines: 3,
            upserted: 2,
            failed: 1,
            ..Counts::default()
        };
        let cases: Vec<(SyncEvent, &str, serde_json::Value)> = vec![
            (
                SyncEvent::Batch {
                    retried: false,
                    lines: 100,
                    first_line: 1,
                    last_line: 100,
                    success: 98,
                    failed: 2,
                    stopping: false,
                    throttled: None,
                },
                "[PROCESSED] Line 1-100: 98 success, 2 failed (will retry)",
                serde_json::json!({"event": "processed", "first_line": 1, "last_line": 100, "success": 98, "failed": 2}),
            ),
            (
                SyncEvent::Batch {
                    retried: true,
                    lines: 2,
                    first_line: 1,
                    last_line: 2,
                    success: 2,
                    failed: 0,
                    stopping: false,
                    throttled: None,
                },
                "[RETRIED] Line 1-2: 2 success",
                serde_json::json!({"event": "retried", "success": 2}),
            ),
            (
                SyncEvent::Failed {
                    line: 45,
                    offset: 4821,
                    repo: "A".into(),
                    path: "x.py".into(),
                    reason: "cannot read file".into(),
                    kind: "file_unreadable",
                },
                "[FAILED] line 45 (byte 4821) A/x.py: cannot read file",
                serde_json::json!({"event": "failed", "line": 45, "offset": 4821, "repo": "A", "path": "x.py", "kind": "file_unreadable"}),
            ),
            (
                SyncEvent::Summary {
                    status: "partially_complete",
                    counts: status::counts_json(&c),
                    outstanding_failures: 1,
                    dead_letters: 0,
                    duration_secs: 0.5,
                    rate_limited_objects: 0,
                    throttled_secs: 0.0,
                    c,
                },
                "[SUMMARY] partially_complete: 3 lines, 2 indexed, 0 removed, 0 reconciled, 0 skipped, 1 failed",
                serde_json::json!({"event": "summary", "status": "partially_complete", "outstanding_failures": 1}),
            ),
            (
                SyncEvent::Batch {
                    retried: false,
                    lines: 20,
                    first_line: 21,
                    last_line: 40,
                    success: 20,
                    failed: 0,
                    stopping: false,
                    throttled: Throttled::between(
                        &retry::ThrottleReading {
                            rate_limited: 10,
                            throttled_ms: 500,
                            ..Default::default()
                        },
                        &retry::ThrottleReading {
                            rate_limited: 50,
                            throttled_ms: 3700,
                            pace_per_sec: Some(181.8181),
                            in_flight_limit: 2,
                            ..Default::default()
                        },
                        8,
                    ),
                },
                "[PROCESSED] Line 21-40: 20 success; throttled: 40 rate-limited, 3.2s waited, paced at 181.8 objects/s, 2 of 8 batches at a time",
                serde_json::json!({"event": "processed", "throttled": {"rate_limited": 40, "waited_secs": 3.2, "paced_objects_per_sec": 181.8, "in_flight_limit": 2, "concurrency": 8}}),
            ),
            (
                SyncEvent::Summary {
                    status: "complete",
                    counts: status::counts_json(&c),
                    outstanding_failures: 0,
                    dead_letters: 0,
                    duration_secs: 9.0,
                    rate_limited_objects: 3512,
                    throttled_secs: 52.14,
                    c,
                },
                "[SUMMARY] complete: 3 lines, 2 indexed, 0 removed, 0 reconciled, 0 skipped, 1 failed; throttled: 3512 rate-limited, 52.1s waited",
                serde_json::json!({"event": "summary", "rate_limited_objects": 3512, "throttled_secs": 52.14}),
            ),
            (
                SyncEvent::Fatal {
                    message: "boom".into(),
                    exit_code: 3,
                },
                "[FATAL] boom",
                serde_json::json!({"event": "fatal", "message": "boom", "exit_code": 3}),
            ),
        ];
        for (e, text, json) in cases {
            assert_eq!(report::text_line(&e), text);
            let v = report::json_value(&e, 1);
            let message = text.split_once("] ").map(|(_, m)| m).unwrap_or("");
            assert_eq!(v["message"], message, "{text}");
            for (k, want) in json.as_object().unwrap() {
                assert_eq!(&v[k], want, "{text}: {k}");
            }
        }
    }
}
