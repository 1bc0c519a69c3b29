//! `failed-run-<id>.json`: what a fatal run leaves in the state dir for the
//! operator — why it stopped, where the next run resumes, and what to try.
//! The newest few are kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

/// How many failed-run files are kept.
pub const KEEP: usize = 10;

/// Why a run was fatal, as far as the hints go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The index could not be reached.
    TargetUnreachable,
    /// The remote index refused for good (auth, a collection gone).
    TargetRefused,
    /// The embedded local index could not be written.
    LocalIndex,
    /// The WAL is damaged before its tail.
    WalCorrupt,
    /// The WAL (or the spool) could not be written: full disk, I/O error.
    StateNotSaved,
    Other,
}

fn hints(cause: Cause) -> Vec<&'static str> {
    let mut h = Vec::new();
    match cause {
        Cause::TargetUnreachable => {
            h.push("check that the index is up: curl -fsS $ELYSIACTL_WEAVIATE_URL/v1/.well-known/ready");
            h.push("check --weaviate-url and WEAVIATE_API_KEY; the next run resumes where this one stopped");
        }
        Cause::TargetRefused => {
            h.push("check WEAVIATE_API_KEY and that the collection exists (elysiactl creates it at the start of a run)");
            h.push("the next run resumes where this one stopped");
        }
        Cause::LocalIndex => h.push("the embedded index under <state-dir>/index could not be written: check disk space and permissions"),
        Cause::WalCorrupt => {
            h.push("inspect the log: elysiactl wal inspect --verify --state-dir <dir>");
            h.push("to start over, move the state dir aside; the next run re-applies its manifest (idempotent)");
        }
        Cause::StateNotSaved => h.push("free space on the state dir's filesystem (df -h); unsaved batches are redone next run"),
        Cause::Other => {}
    }
    h.push("elysiactl index sync --status shows the resume position and failed items");
    h
}

/// Write the file (atomically) and prune old ones. Returns its path.
pub fn write(state_dir: &Path, reason: &str, cause: Cause) -> std::io::Result<PathBuf> {
    let rep = crate::wal::replay(state_dir).ok();
    let state = rep.as_ref().map(|r| &r.state);
    let run = state.and_then(|s| s.last_run.clone());
    let manifest = state.and_then(|s| {
        run.as_ref()
            .and_then(|r| r.manifest.as_ref())
            .and_then(|fp| s.manifest(fp))
    });
    let now = crate::util::now_ms();
    let id = match &run {
        Some(r) => format!("{}", r.run_id),
        None => format!("t{now}"),
    };
    let doc = json!({
        "run_id": run.as_ref().map(|r| r.run_id),
        "failed_at_ms": now,
        "reason": reason,
        "manifest": manifest.map(|m| m.id.path.clone()),
        "next_resume_position": manifest.map(|m| m.resume_point().0),
        "next_resume_line": manifest.map(|m| m.resume_point().1),
        "failed_items": manifest.map(|m| m.failed.len()),
        "hints": hints(cause),
    });
    let path = state_dir.join(format!("failed-run-{id}.json"));
    let tmp = state_dir.join(format!(".failed-run-{id}.json.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(
            serde_json::to_string_pretty(&doc)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    prune(state_dir);
    Ok(path)
}

/// Keep the newest `KEEP` files.
fn prune(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("failed-run-") && n.ends_with(".json")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(KEEP);
    for (_, p) in files.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_follow_the_cause_not_the_message() {
        let has = |c, w: &str| hints(c).iter().any(|h| h.contains(w));
        assert!(has(Cause::TargetUnreachable, "curl"));
        assert!(has(Cause::WalCorrupt, "wal inspect --verify"));
        assert!(has(Cause::StateNotSaved, "df -h"));
        assert!(has(Cause::LocalIndex, "<state-dir>/index"));
        assert!(has(Cause::TargetRefused, "WEAVIATE_API_KEY"));
        assert!(!has(Cause::LocalIndex, "curl"));
        for c in [Cause::Other, Cause::WalCorrupt] {
            assert!(has(c, "--status"));
        }
    }
}
