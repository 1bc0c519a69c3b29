//! `wal inspect`: every record of the log, human-readable or as JSON, on the
//! same decoder recovery uses.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::args::InspectArgs;
use crate::exit::Exit;
use crate::sync::status::counts_json;
use crate::wal::{self, hex, LogRead, Place, Record, State};

/// What to show: a whole log as recovery reads it, or one segment file.
enum Shown {
    Log(LogRead),
    File {
        path: PathBuf,
        bytes: Vec<u8>,
        place: Place,
    },
}

impl Shown {
    /// The segments, oldest first, each with its bytes and its place.
    fn segments(&self) -> Vec<(&Path, &[u8], Place)> {
        match self {
            Shown::Log(log) => log.iter().collect(),
            Shown::File { path, bytes, place } => vec![(path.as_path(), bytes.as_slice(), *place)],
        }
    }
}

/// What to inspect: a state dir, a WAL directory, or one segment file. A
/// whole log is read as recovery reads it (from the newest snapshot on,
/// tolerating a compaction running under it). A segment file is judged by
/// its place among the segments of its directory.
fn shown(path: &Path) -> Result<Shown, wal::Error> {
    if path.is_file() {
        let bytes = std::fs::read(path).map_err(|e| wal::Error::Io {
            op: wal::IoOp::ReadSegment,
            path: path.to_owned(),
            source: e,
        })?;
        return Ok(Shown::File {
            path: path.to_owned(),
            bytes,
            place: place_of_file(path),
        });
    }
    let inner = wal::wal_dir(path);
    let dir = if inner.is_dir() {
        inner
    } else {
        path.to_owned()
    };
    wal::read_log(&dir).map(Shown::Log)
}

/// A segment file's place among the segments of its directory; a file not
/// named as a segment is read as a whole log.
fn place_of_file(path: &Path) -> Place {
    let (Some(dir), Some(_)) = (path.parent(), wal::segment_seq(path)) else {
        return Place::Only;
    };
    let listed = wal::list_segments(dir).unwrap_or_default();
    let name = path.file_name();
    match listed.iter().position(|p| p.file_name() == name) {
        Some(i) => Place::of(i, listed.len()),
        None => Place::Only,
    }
}

fn record_json(r: &Record) -> Value {
    match r {
        Record::RunStarted(r) => json!({
            "run_id": r.run_id, "started_ms": r.started_ms, "pid": r.pid, "version": r.version,
            "target": r.target, "batch_size": r.batch_size, "on_error": r.on_error, "max_retries": r.max_retries,
        }),
        Record::ManifestStarted(r) => json!({
            "run_id": r.run_id, "path": r.manifest.path, "size": r.manifest.size,
            "fingerprint": hex(&r.manifest.fingerprint), "spooled": r.manifest.spooled,
            "total_lines": r.total_lines, "from": r.from.map(|(o, l)| json!({"offset": o, "line": l})),
        }),
        Record::BatchDone(r) => json!({
            "run_id": r.run_id, "manifest": hex(&r.fingerprint[..6]), "seq": r.seq,
            "spans": r.spans.iter().map(|s| json!({"start": s.start, "end": s.end, "first_line": s.first_line, "next_line": s.next_line})).collect::<Vec<_>>(),
            "counts": counts_json(&r.counts),
        }),
        Record::ItemFailed(r) => json!({
            "run_id": r.run_id, "manifest": hex(&r.fingerprint[..6]), "line": r.line, "offset": r.offset,
            "end": r.end, "repo": r.repo, "path": r.path, "kind": r.kind.as_str(), "reason": r.reason, "attempts": r.attempts,
        }),
        Record::ChangesetSeen(r) => json!({
            "run_id": r.run_id, "manifest": hex(&r.fingerprint[..6]), "line": r.line, "repo": r.repo,
            "commit": r.commit, "branch": r.branch, "parent": r.parent,
        }),
        Record::RunFinished(r) => json!({
            "run_id": r.run_id, "finished_ms": r.finished_ms, "status": r.status.as_str(),
            "counts": counts_json(&r.counts), "message": r.message,
        }),
        Record::ManifestAbandoned(r) => json!({
            "run_id": r.run_id, "manifest": hex(&r.fingerprint[..6]), "path": r.path, "remaining_lines": r.remaining_lines,
        }),
        Record::Snapshot(s) => snapshot_json(s),
        Record::SnapshotV2(s) => {
            let mut v = snapshot_json(s);
            v["target"] = s.target.as_ref().map_or(Value::Null, target_json);
            v
        }
        Record::ManifestRestarted(r) => json!({
            "run_id": r.run_id, "manifest": hex(&r.fingerprint[..6]),
        }),
        Record::TargetBound(t) => target_json(t),
        Record::FailuresResolved(r) => json!({
            "run_id": r.run_id,
            "entries": r.entries.iter().map(|(fp, offset)| json!({"manifest": hex(&fp[..6]), "offset": offset})).collect::<Vec<_>>(),
        }),
    }
}

fn snapshot_json(s: &State) -> Value {
    json!({
        "next_run_id": s.next_run_id,
        "last_run": s.last_run.as_ref().map(|r| r.run_id),
        "manifests": s.manifests.iter().map(|m| json!({
            "path": m.id.path, "fingerprint": m.id.short(), "resume": m.resume_point().0,
            "size": m.id.size, "failed": m.failed.len(), "abandoned": m.abandoned,
        })).collect::<Vec<_>>(),
        "repos": s.repos.iter().map(|(k, v)| (k.clone(), json!(v.commit))).collect::<serde_json::Map<_, _>>(),
    })
}

fn target_json(t: &wal::TargetIdentity) -> Value {
    json!({
        "kind": t.kind, "server": t.server, "collection": t.collection, "chunk_size": t.chunk_size,
    })
}

fn one_line(v: &Value) -> String {
    match v {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s:?}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// What `wal inspect` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every record decodes (a torn tail is reported but is the normal
    /// trace of a crash).
    Clean,
    /// A record before the tail is damaged, or the log does not begin where
    /// replay begins.
    Corrupt,
    /// The log could not be read at all.
    Unreadable,
}

/// `wal inspect`: the state dir's log, or the segment file or WAL
/// directory given instead, on stdout.
pub fn run(args: InspectArgs) -> Exit {
    let path = args
        .file
        .unwrap_or_else(|| super::state_dir(args.state_dir));
    // A mistyped path is not an empty log: say so, exit 2.
    if std::fs::symlink_metadata(&path).is_err() {
        eprintln!(
            "elysiactl: no such state dir, WAL directory or segment file: {}",
            path.display()
        );
        return Exit::Usage;
    }
    let mut stdout = std::io::stdout().lock();
    exit(&inspect(&path, args.json, args.verify, &mut stdout))
}

/// The one place `wal inspect` decides its exit. stdout gone (a closed
/// pipe) is fatal, with nowhere to say so.
fn exit(outcome: &std::io::Result<Verdict>) -> Exit {
    match outcome {
        Ok(Verdict::Clean) => Exit::Ok,
        Ok(Verdict::Corrupt | Verdict::Unreadable) | Err(_) => Exit::Fatal,
    }
}

/// Dump the log, and judge it.
pub fn inspect(
    path: &Path,
    as_json: bool,
    verify: bool,
    out: &mut dyn Write,
) -> std::io::Result<Verdict> {
    let shown = match shown(path) {
        Ok(s) => s,
        Err(e) if e.is_corrupt() => {
            writeln!(out, "CORRUPT: {e}")?;
            return Ok(Verdict::Corrupt);
        }
        Err(e) => {
            writeln!(out, "error: {e}")?;
            return Ok(Verdict::Unreadable);
        }
    };
    let segments = shown.segments();
    if segments.is_empty() {
        writeln!(out, "no WAL segments under {}", path.display())?;
        return Ok(Verdict::Clean);
    }
    if let (Shown::Log(log), false) = (&shown, as_json) {
        for old in log.superseded() {
            writeln!(
                out,
                "superseded: {} (older than the snapshot recovery starts from; not read)",
                old.display()
            )?;
        }
    }
    let mut count = 0u64;
    for &(seg, bytes, place) in &segments {
        match wal::decode_segment_at(seg, bytes, place) {
            Ok((records, torn, _)) => {
                if !verify || as_json {
                    for l in &records {
                        count += 1;
                        if as_json {
                            if !verify {
                                let v = json!({
                                    "segment": seg.display().to_string(), "offset": l.offset,
                                    "len": l.len, "type": l.record.name(), "record": record_json(&l.record),
                                });
                                writeln!(out, "{v}")?;
                            }
                        } else {
                            writeln!(
                                out,
                                "{}@{:<8} {:<17} {}",
                                seg.file_name()
                                    .map(|n| n.to_string_lossy())
                                    .unwrap_or_default(),
                                l.offset,
                                l.record.name(),
                                one_line(&record_json(&l.record))
                            )?;
                        }
                    }
                } else {
                    count += records.len() as u64;
                }
                if let Some(t) = torn {
                    writeln!(
                        out,
                        "torn tail: {} at byte {} ({} bytes: {}); recovery drops it",
                        t.segment.display(),
                        t.offset,
                        t.dropped_bytes,
                        t.reason
                    )?;
                }
            }
            Err(e) => {
                writeln!(out, "CORRUPT: {e}")?;
                return Ok(Verdict::Corrupt);
            }
        }
    }
    if let Shown::Log(log) = &shown {
        if let Err(e) = log.check_beginning() {
            writeln!(out, "CORRUPT: {e}")?;
            return Ok(Verdict::Corrupt);
        }
    }
    if verify {
        writeln!(
            out,
            "ok: {count} records in {} segment(s) verified",
            segments.len()
        )?;
    }
    Ok(Verdict::Clean)
}
