//! `index failures`: the outstanding failed lines of a state dir, one per
//! line, as text or as the JSON objects `--status` shows.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::args::FailuresArgs;
use crate::exit::Exit;
use crate::sync::status::{self, FailureRow};
use crate::wal;

#[derive(Debug, thiserror::Error)]
enum Failure {
    /// A state dir that does not exist is a mistyped path, not "no failures".
    #[error("state dir {} does not exist: pass the --state-dir of your syncs", .0.display())]
    Missing(PathBuf),
    #[error("state dir {} is not a directory", .0.display())]
    NotADir(PathBuf),
    #[error("state dir {}: {source}", path.display())]
    Stat { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Wal(#[from] wal::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// stdout is gone (a closed pipe): nothing more to say, and nowhere to say it.
    #[error("{0}")]
    Stdout(io::Error),
}

pub fn run(args: FailuresArgs) -> Exit {
    let outcome = execute(&super::state_dir(args.state_dir), args.json);
    if let Err(e) = &outcome {
        if !matches!(e, Failure::Stdout(_)) {
            eprintln!("elysiactl: {e}");
        }
    }
    exit(&outcome)
}

fn execute(sd: &Path, json: bool) -> Result<(), Failure> {
    let rows = rows(sd)?;
    let mut stdout = io::stdout().lock();
    for row in &rows {
        let line = if json {
            // Through a `Value`, as `--status` renders its `failures`: the
            // same object, keys in the same order.
            serde_json::to_value(row)?.to_string()
        } else {
            text(row)
        };
        writeln!(stdout, "{line}").map_err(Failure::Stdout)?;
    }
    if !json && rows.is_empty() {
        let _ = writeln!(stdout, "no failed lines");
    }
    Ok(())
}

/// The one place `index failures` decides its exit.
fn exit(outcome: &Result<(), Failure>) -> Exit {
    match outcome {
        Ok(()) => Exit::Ok,
        Err(Failure::Missing(_) | Failure::NotADir(_)) => Exit::Usage,
        Err(Failure::Stat { .. } | Failure::Wal(_) | Failure::Json(_) | Failure::Stdout(_)) => {
            Exit::Fatal
        }
    }
}

fn rows(sd: &Path) -> Result<Vec<FailureRow>, Failure> {
    match std::fs::metadata(sd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Failure::NotADir(sd.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure::Missing(sd.to_owned()))
        }
        Err(source) => {
            return Err(Failure::Stat {
                path: sd.to_owned(),
                source,
            })
        }
    }
    Ok(status::failures(sd)?)
}

/// `MANIFEST:LINE (byte OFFSET) REPO/PATH [KIND; N attempt(s)[, dead letter]] REASON`
pub fn text(f: &FailureRow) -> String {
    format!(
        "{}:{} (byte {}) {}/{} [{}; {} attempt(s){}] {}",
        f.manifest,
        f.line,
        f.offset,
        f.repo,
        f.path,
        f.kind.as_str(),
        f.attempts,
        if f.dead_letter { ", dead letter" } else { "" },
        f.reason,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dead_letter: bool) -> FailureRow {
        FailureRow {
            manifest: "/m.jsonl".into(),
            line: 3,
            offset: 77,
            repo: "R".into(),
            path: "src/a.rs".into(),
            kind: wal::FailureKind::Source,
            reason: "permission denied".into(),
            attempts: if dead_letter { 5 } else { 2 },
            dead_letter,
        }
    }

    #[test]
    fn failure_text_row_names_position_file_kind_attempts_and_reason() {
        assert_eq!(
            text(&row(false)),
            "/m.jsonl:3 (byte 77) R/src/a.rs [file_unreadable; 2 attempt(s)] permission denied"
        );
        assert_eq!(
            text(&row(true)),
            "/m.jsonl:3 (byte 77) R/src/a.rs [file_unreadable; 5 attempt(s), dead letter] \
             permission denied"
        );
    }

    #[test]
    fn failure_json_row_has_exactly_the_documented_keys() {
        let v = serde_json::to_value(row(true)).expect("a row serializes");
        assert_eq!(
            v,
            serde_json::json!({
                "manifest": "/m.jsonl", "line": 3, "offset": 77, "repo": "R",
                "path": "src/a.rs", "kind": "file_unreadable", "reason": "permission denied",
                "attempts": 5, "dead_letter": true,
            })
        );
    }
}
