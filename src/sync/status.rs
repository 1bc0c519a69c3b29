//! `index sync --status`: the health document, read from the WAL without
//! taking the run lock (safe while a sync runs).

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::wal;

fn iso(ms: u64) -> String {
    // Civil-from-days (Howard Hinnant), UTC.
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Build the status document. Never fails: a state dir that cannot be read
/// is reported in the document itself.
pub fn status(state_dir: &Path) -> Value {
    let rep = match wal::replay(state_dir) {
        Ok(r) => r,
        Err(e) => {
            return json!({
                "status": "state_unreadable",
                "error": e.to_string(),
                "state_dir": state_dir.display().to_string(),
            })
        }
    };
    let st = &rep.state;
    let Some(run) = &st.last_run else {
        return json!({
            "status": "never_run",
            "last_run": null,
            "last_successful_run": null,
            "processed": 0,
            "total": 0,
            "errors": 0,
            "next_resume_position": null,
            "state_dir": state_dir.display().to_string(),
        });
    };
    let running = run.finished_ms.is_none() && super::lock_holder(state_dir).is_some();
    let status = match run.status {
        _ if running => "running",
        None => "interrupted",
        Some(s) => s.as_str(),
    };
    let current = run
        .manifest
        .as_ref()
        .and_then(|fp| st.manifest(fp))
        .or_else(|| st.manifests.last());
    let errors: usize = st.outstanding_failures().count();
    let dead_letters = st
        .outstanding_failures()
        .filter(|(_, f)| f.attempts >= super::MAX_ATTEMPTS)
        .count();
    let failures: Vec<FailureRow> = st
        .outstanding_failures()
        .take(50)
        .map(|(m, f)| FailureRow::new(m, f))
        .collect();
    let pending: Vec<Value> = st
        .unfinished()
        .map(|m| {
            let (off, line) = m.resume_point();
            json!({
                "path": m.id.path,
                "fingerprint": m.id.short(),
                "next_resume_position": off,
                "next_resume_line": line,
                "processed": m.lines_done(),
                "total": m.total_lines,
            })
        })
        .collect();
    let (processed, total, resume, resume_line, manifest) = match current {
        Some(m) => {
            let (off, line) = m.resume_point();
            let done = m.all_lines_seen();
            (
                m.lines_done(),
                m.total_lines,
                (!done).then_some(off),
                (!done).then_some(line),
                json!({"path": m.id.path, "size": m.id.size, "fingerprint": m.id.short(), "spooled": m.id.spooled}),
            )
        }
        None => (0, 0, None, None, Value::Null),
    };
    json!({
        "status": status,
        "last_run": iso(run.started_ms),
        "last_run_finished": run.finished_ms.map(iso),
        "last_successful_run": st.last_successful_run_ms.map(iso),
        "run_id": run.run_id,
        "pid": if running { Some(run.pid) } else { None },
        "target": run.target,
        "processed": processed,
        "total": total,
        "errors": errors,
        "dead_letters": dead_letters,
        "next_resume_position": resume,
        "next_resume_line": resume_line,
        "manifest": manifest,
        "pending_manifests": pending,
        "failures": failures,
        "last_run_counts": counts_json(&run.counts),
        // A run could not write its WAL (full disk): progress since then was
        // kept in memory only and is redone by the next run.
        "degraded": super::degraded_marker(state_dir).exists(),
        "index_lost": read_json(&super::index_lost_marker(state_dir)),
        "last_verify": read_json(&crate::verify::last_path(state_dir)),
        "message": run.message,
        "wal": {
            "segments": rep.segments.len(),
            "bytes": rep.bytes,
            "torn_tail": rep.torn.as_ref().map(|t| json!({"segment": t.segment.display().to_string(), "offset": t.offset})),
        },
        "state_dir": state_dir.display().to_string(),
    })
}

/// One outstanding failed line, as `index failures` lists it and `--status`
/// shows it (its JSON keys are the ones both have always printed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureRow {
    /// The manifest's path as the WAL records it.
    pub manifest: String,
    /// 1-based line number in the manifest.
    pub line: u64,
    /// Byte offset of the line in the manifest.
    pub offset: u64,
    pub repo: String,
    pub path: String,
    #[serde(serialize_with = "kind_str")]
    pub kind: wal::FailureKind,
    pub reason: String,
    /// Runs of its manifest that tried the line.
    pub attempts: u32,
    /// Tried [`super::MAX_ATTEMPTS`] times: no longer retried until `--retry-failed`.
    pub dead_letter: bool,
}

fn kind_str<S: serde::Serializer>(k: &wal::FailureKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

impl FailureRow {
    fn new(m: &wal::ManifestProgress, f: &wal::FailedEntry) -> FailureRow {
        FailureRow {
            manifest: m.id.path.clone(),
            line: f.line,
            offset: f.offset,
            repo: f.repo.clone(),
            path: f.path.clone(),
            kind: f.kind,
            reason: f.reason.clone(),
            attempts: f.attempts,
            dead_letter: f.attempts >= super::MAX_ATTEMPTS,
        }
    }
}

/// Every outstanding failed line, oldest manifest first.
pub fn failures(state_dir: &Path) -> Result<Vec<FailureRow>, wal::Error> {
    let rep = wal::replay(state_dir)?;
    Ok(rep
        .state
        .outstanding_failures()
        .map(|(m, f)| FailureRow::new(m, f))
        .collect())
}

pub fn counts_json(c: &wal::Counts) -> Value {
    json!({
        "lines": c.lines,
        "add": c.add, "update": c.update, "delete": c.delete, "rename": c.rename,
        "changeset": c.changeset, "prune": c.prune,
        "indexed": c.upserted, "removed": c.deleted, "reconciled": c.reconciled,
        "skipped": c.skipped, "failed": c.failed,
    })
}

/// A small JSON file of the state dir (`null` when absent or unreadable).
fn read_json(path: &Path) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::iso;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_735_727_400_000), "2025-01-01T10:30:00Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
