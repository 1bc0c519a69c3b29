//! Prometheus textfile metrics (for node_exporter's textfile collector),
//! written atomically ([`crate::publish`]): an exclusive temporary file in
//! the same directory (never written through a planted symlink), fsync,
//! rename, directory fsync; leftovers of killed runs are cleaned. The file
//! is 0644 whatever the umask: node_exporter usually runs as another user,
//! and the metrics are not secret. Names follow the seed design.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::publish::{Mode, Pending};
use crate::wal::{Counts, FailureKind, RunStatus};

/// What one run reports.
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    pub status: Option<RunStatus>,
    /// A refresh during a long run (status label `running`).
    pub running: bool,
    pub finished_unix: u64,
    pub duration_secs: f64,
    pub counts: Counts,
    pub failures: Vec<(FailureKind, u64)>,
    pub resume_offset: u64,
    pub degraded: bool,
    /// The index was found lost (see `index_lost_marker`).
    pub index_lost: bool,
    /// Failed lines not yet applied, of this run or earlier ones.
    pub outstanding_failures: u64,
    /// Of those, the dead letters (no longer retried automatically).
    pub dead_letters: u64,
    /// Rate limits: files refused and waited out (or failed past
    /// `--rate-limit-patience`), milliseconds waited (summed over batches),
    /// the send rate and the batches allowed at once.
    pub throttle: super::retry::ThrottleReading,
}

/// The `status` label: the words of `--status` (complete,
/// partially_complete, stopped, failed), so alerts and the health document
/// speak one vocabulary.
fn status_label(s: Option<RunStatus>) -> &'static str {
    s.unwrap_or(RunStatus::Fatal).as_str()
}

/// Render the textfile.
pub fn render(m: &RunMetrics) -> String {
    let mut s = String::new();
    let c = &m.counts;
    let _ = writeln!(s, "# HELP elysiactl_sync_last_run_timestamp Unix time the last sync run ended, labelled with how it ended.");
    let _ = writeln!(s, "# TYPE elysiactl_sync_last_run_timestamp gauge");
    let _ = writeln!(
        s,
        "elysiactl_sync_last_run_timestamp{{status=\"{}\"}} {}",
        if m.running {
            "running"
        } else {
            status_label(m.status)
        },
        m.finished_unix
    );
    let _ = writeln!(s, "# HELP elysiactl_sync_files_processed_total Manifest lines processed by the last run, by operation.");
    let _ = writeln!(s, "# TYPE elysiactl_sync_files_processed_total gauge");
    for (op, n) in [
        ("add", c.add),
        ("update", c.update),
        ("delete", c.delete),
        ("rename", c.rename),
        ("changeset", c.changeset),
        ("prune", c.prune),
    ] {
        let _ = writeln!(
            s,
            "elysiactl_sync_files_processed_total{{operation=\"{op}\"}} {n}"
        );
    }
    let _ = writeln!(
        s,
        "# HELP elysiactl_sync_failures_total Items that failed in the last run, by reason."
    );
    let _ = writeln!(s, "# TYPE elysiactl_sync_failures_total gauge");
    for kind in [
        FailureKind::Malformed,
        FailureKind::Source,
        FailureKind::Target,
    ] {
        let n = m
            .failures
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n)
            .sum::<u64>();
        let _ = writeln!(
            s,
            "elysiactl_sync_failures_total{{reason=\"{}\"}} {n}",
            kind.as_str()
        );
    }
    let _ = writeln!(
        s,
        "# HELP elysiactl_sync_duration_seconds Wall time of the last run."
    );
    let _ = writeln!(s, "# TYPE elysiactl_sync_duration_seconds gauge");
    let _ = writeln!(s, "elysiactl_sync_duration_seconds {:.3}", m.duration_secs);
    let _ = writeln!(
        s,
        "# HELP elysiactl_sync_lines_processed Lines the last run applied or failed."
    );
    let _ = writeln!(s, "# TYPE elysiactl_sync_lines_processed gauge");
    let _ = writeln!(s, "elysiactl_sync_lines_processed {}", c.lines);
    let _ = writeln!(
        s,
        "# HELP elysiactl_sync_objects Objects the last run wrote, by result."
    );
    let _ = writeln!(s, "# TYPE elysiactl_sync_objects gauge");
    for (r, n) in [
        ("indexed", c.upserted),
        ("removed", c.deleted),
        ("reconciled", c.reconciled),
        ("skipped", c.skipped),
    ] {
        let _ = writeln!(s, "elysiactl_sync_objects{{result=\"{r}\"}} {n}");
    }
    let _ = writeln!(s, "# HELP elysiactl_sync_outstanding_failures Failed lines not yet applied (of any run), by kind: retried, or dead letters kept until --retry-failed. Nonzero means the index is not complete.");
    let _ = writeln!(s, "# TYPE elysiactl_sync_outstanding_failures gauge");
    let _ = writeln!(
        s,
        "elysiactl_sync_outstanding_failures{{kind=\"retrying\"}} {}",
        m.outstanding_failures.saturating_sub(m.dead_letters)
    );
    let _ = writeln!(
        s,
        "elysiactl_sync_outstanding_failures{{kind=\"dead_letter\"}} {}",
        m.dead_letters
    );
    let _ = writeln!(s, "# HELP elysiactl_sync_rate_limited_objects_total Objects the last run had refused for a rate limit (each refusal counts; waited out, or failed past --rate-limit-patience).");
    let _ = writeln!(s, "# TYPE elysiactl_sync_rate_limited_objects_total gauge");
    let _ = writeln!(
        s,
        "elysiactl_sync_rate_limited_objects_total {}",
        m.throttle.rate_limited
    );
    let _ = writeln!(s, "# HELP elysiactl_sync_throttled_seconds_total Seconds the last run's batches waited out rate limits, summed over the batches in flight.");
    let _ = writeln!(s, "# TYPE elysiactl_sync_throttled_seconds_total gauge");
    let _ = writeln!(
        s,
        "elysiactl_sync_throttled_seconds_total {:.3}",
        m.throttle.throttled_ms as f64 / 1000.0
    );
    let t = &m.throttle;
    let gauges: [(&str, &str, f64); 4] = [
        ("in_flight_limit", "Batches allowed at the target at once when the metrics were written (AIMD under rate limits, at most --concurrency; 0 before the first batch).", t.in_flight_limit as f64),
        ("in_flight_limit_lowest", "The fewest batches allowed at the target at once during the last run.", t.lowest_in_flight_limit as f64),
        ("paced_objects_per_second", "The send rate learnt from the provider's rate limits when the metrics were written, objects per second (0: not paced).", t.pace_per_sec.unwrap_or(0.0)),
        ("paced_objects_per_second_lowest", "The lowest send rate of the last run, objects per second (0: never paced).", t.lowest_pace_per_sec.unwrap_or(0.0)),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(s, "# HELP elysiactl_sync_{name} {help}");
        let _ = writeln!(s, "# TYPE elysiactl_sync_{name} gauge");
        let _ = writeln!(s, "elysiactl_sync_{name} {v:.1}");
    }
    let _ = writeln!(s, "# HELP elysiactl_sync_resume_offset Byte offset the next run of the current manifest resumes at.");
    let _ = writeln!(s, "# TYPE elysiactl_sync_resume_offset gauge");
    let _ = writeln!(s, "elysiactl_sync_resume_offset {}", m.resume_offset);
    let _ = writeln!(
        s,
        "# HELP elysiactl_sync_state_degraded 1 when the last run could not write its WAL."
    );
    let _ = writeln!(s, "# TYPE elysiactl_sync_state_degraded gauge");
    let _ = writeln!(s, "elysiactl_sync_state_degraded {}", u8::from(m.degraded));
    let _ = writeln!(
        s,
        "# HELP elysiactl_index_lost 1 when a sync found its index empty while the WAL records applied work, until a clean index verify."
    );
    let _ = writeln!(s, "# TYPE elysiactl_index_lost gauge");
    let _ = writeln!(s, "elysiactl_index_lost {}", u8::from(m.index_lost));
    s
}

/// Write the textfile atomically. A path that exists and is not a regular
/// file (a FIFO, `/dev/full`, …) is written in place: renaming over it would
/// replace the device node.
pub fn write(path: &Path, m: &RunMetrics) -> io::Result<()> {
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.write_all(render(m).as_bytes())?;
            return f.flush();
        }
    }
    let mut pending = Pending::create(path, Mode::Exact(0o644))?;
    pending.clean_leftovers(run_started(m));
    pending.write_all(render(m).as_bytes())?;
    pending.commit()
}

/// When the run `m` describes started (the epoch when unknown, which cleans
/// nothing).
fn run_started(m: &RunMetrics) -> SystemTime {
    let ended = UNIX_EPOCH + Duration::from_secs(m.finished_unix);
    let took = Duration::try_from_secs_f64(m.duration_secs).unwrap_or(Duration::ZERO);
    if m.finished_unix == 0 {
        UNIX_EPOCH
    } else {
        ended.checked_sub(took).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textfile_has_the_design_metric_names() {
        let m = RunMetrics {
            status: Some(RunStatus::Complete),
            finished_unix: 1735650600,
            duration_secs: 4320.0,
            counts: Counts {
                add: 1523,
                update: 8934,
                delete: 234,
                ..Counts::default()
            },
            failures: vec![(FailureKind::Source, 12), (FailureKind::Target, 3)],
            ..RunMetrics::default()
        };
        let t = render(&m);
        for want in [
            "elysiactl_sync_last_run_timestamp{status=\"complete\"} 1735650600",
            "elysiactl_sync_files_processed_total{operation=\"add\"} 1523",
            "elysiactl_sync_files_processed_total{operation=\"update\"} 8934",
            "elysiactl_sync_files_processed_total{operation=\"delete\"} 234",
            "elysiactl_sync_failures_total{reason=\"file_unreadable\"} 12",
            "elysiactl_sync_failures_total{reason=\"index_error\"} 3",
            "elysiactl_sync_duration_seconds 4320.000",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("elysiactl.prom");
        write(&p, &m).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), t);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
