//! `index verify`: compare, print, keep the result in the state dir, and with
//! `--repair` apply the differences as a manifest through the sync (so a
//! repair killed at any instant resumes), then compare again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::args::VerifyArgs;
use super::target::TargetArgsError;
use crate::exit::Exit;
use crate::object::ChunkSize;
use crate::sync::{self, Input, LogFormat, OnError};
use crate::verify::{self, Report};
use crate::wal::{self, TargetIdentity};

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Usage(#[from] TargetArgsError),
    #[error("{0}")]
    Verify(#[from] verify::Error),
    #[error("cannot open the index: {0}")]
    Open(crate::target::Error),
    #[error("repair: {0}")]
    Repair(#[from] sync::Error),
    #[error("repair: cannot write its manifest: {0}")]
    Spool(#[from] crate::manifest::Error),
}

pub fn run(args: VerifyArgs) -> Exit {
    let mut stderr = std::io::stderr();
    match execute(args, &mut stderr) {
        Ok(exit) => exit,
        Err(e) => {
            let _ = writeln!(stderr, "elysiactl: index verify: {e}");
            match e {
                Failure::Usage(_) | Failure::Verify(verify::Error::Roots(_)) => Exit::Usage,
                Failure::Repair(e) => Exit::from_code(e.exit_code()),
                _ => Exit::Fatal,
            }
        }
    }
}

/// The chunk size to expect: the flag, else the state dir's, else 4096.
fn chunk_size(args: &VerifyArgs, state_dir: &Path) -> ChunkSize {
    if let Some(c) = args.chunk_size {
        return c;
    }
    wal::replay(state_dir)
        .ok()
        .and_then(|r| r.state.target)
        .and_then(|t| ChunkSize::new(usize::try_from(t.chunk_size).ok()?).ok())
        .unwrap_or_default()
}

fn execute(args: VerifyArgs, log: &mut dyn Write) -> Result<Exit, Failure> {
    let state_dir = super::state_dir(args.state_dir.clone());
    let roots = if args.root.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.root.clone()
    };
    let chunk = chunk_size(&args, &state_dir);
    let opts = verify::Options {
        roots: roots.clone(),
        repos: args.repo.clone(),
        max_file_size: args.max_file_size,
        chunk_size: chunk,
    };
    let compare = || -> Result<Report, Failure> {
        let open = args
            .target
            .opener(state_dir.clone(), ChunkSize::WHOLE_FILE)?;
        let target = open().map_err(Failure::Open)?;
        Ok(verify::verify(target.as_ref(), &opts)?)
    };
    let report = match compare() {
        // A repair of an index that cannot be listed because it is gone (a
        // Weaviate collection deleted behind the tool's back): the sync's
        // own prepare creates it again, empty, as the repair's sync would,
        // and the comparison is made against that.
        Err(Failure::Verify(verify::Error::Index(e))) if args.repair && !args.dry_run => {
            let _ = writeln!(
                log,
                "[REPAIR] cannot list the index ({e}): preparing it as a sync does, then comparing again"
            );
            let open = args.target.opener(state_dir.clone(), chunk)?;
            open().and_then(|t| t.prepare()).map_err(Failure::Open)?;
            compare()?
        }
        r => r?,
    };
    print(&args, &report, log);
    keep(&state_dir, &args, &report, log);
    if report.is_clean() || !args.repair {
        return Ok(exit_of(&report));
    }
    let manifest = report.repair_manifest();
    let unnamed = report.unrepairable();
    if unnamed > 0 {
        let _ = writeln!(
            log,
            "[WARN] {unnamed} objects name no repo or path (written by another client): no manifest line can remove them; delete them by id (`index export` lists them)"
        );
    }
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&manifest);
        let _ = writeln!(
            log,
            "[REPAIR] --dry-run: these {} lines would be applied; nothing changed",
            manifest.iter().filter(|&&b| b == b'\n').count()
        );
        return Ok(Exit::Partial);
    }
    crate::util::create_private_dir(&state_dir).map_err(|e| {
        Failure::Spool(crate::manifest::Error::Spool {
            path: state_dir.clone(),
            source: e,
        })
    })?;
    let path = crate::manifest::spool(&manifest[..], &state_dir)?;
    let _ = writeln!(
        log,
        "[REPAIR] applying {} lines from {} (resumable: a killed repair is finished by the next index sync or verify --repair)",
        manifest.iter().filter(|&&b| b == b'\n').count(),
        path.display()
    );
    let options = repair_options(&args, &state_dir, roots, chunk, path);
    let open = args.target.opener(state_dir.clone(), chunk)?;
    let ran = sync::run(&options, open.as_ref(), log)?;
    if ran.exit_code == Exit::Fatal.code() {
        return Ok(Exit::Fatal);
    }
    let after = compare()?;
    print(&args, &after, log);
    keep(&state_dir, &args, &after, log);
    Ok(exit_of(&after))
}

fn exit_of(r: &Report) -> Exit {
    if r.is_clean() {
        Exit::Ok
    } else {
        Exit::Partial
    }
}

/// The sync that applies a repair manifest: the verify's target, roots and
/// chunking, the defaults of `index sync` otherwise.
fn repair_options(
    args: &VerifyArgs,
    state_dir: &Path,
    roots: Vec<PathBuf>,
    chunk: ChunkSize,
    manifest: PathBuf,
) -> sync::Options {
    sync::Options {
        input: Some(Input::File(manifest)),
        state_dir: state_dir.to_owned(),
        batch_size: 100,
        on_error: OnError::Continue,
        max_retries: 3,
        rate_limit_patience: Duration::from_secs(600),
        from_line: None,
        roots,
        dry_run: false,
        max_file_size: args.max_file_size,
        chunk_size: chunk,
        rechunk: false,
        abandon_pending: false,
        backoff: sync::Backoff {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
        },
        progress: !args.quiet,
        target_name: args.target.name().into(),
        target: TargetIdentity {
            chunk_size: chunk.get() as u64,
            ..args.target.identity()
        },
        metrics_file: None,
        retry_failed: false,
        log_format: LogFormat::Text,
        progress_bar: false,
    }
}

fn print(args: &VerifyArgs, r: &Report, log: &mut dyn Write) {
    if args.json {
        let doc = serde_json::json!({
            "equal": r.is_clean(),
            "total": r.total,
            "repos": r.repos,
            "unreadable": r.unreadable.iter().map(|(repo, path, why)| {
                serde_json::json!({"repo": repo, "path": path, "error": why})
            }).collect::<Vec<_>>(),
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{doc}");
        return;
    }
    for (repo, rr) in &r.repos {
        let c = &rr.counts;
        let gone = if rr.gone {
            " (no directory under any root)"
        } else {
            ""
        };
        let _ = writeln!(
            log,
            "[VERIFY] {repo}{gone}: {} files, {} objects: {} missing, {} extra, {} stale",
            c.files, c.objects, c.missing, c.extra, c.stale
        );
        for d in &rr.first {
            let _ = writeln!(
                log,
                "  {} {}/{}: {}",
                d.kind.as_str(),
                d.repo,
                d.path,
                d.why
            );
        }
        let listed = rr.first.len() as u64;
        if c.drift() > listed {
            let _ = writeln!(log, "  … and {} more", c.drift() - listed);
        }
    }
    for (repo, path, why) in &r.unreadable {
        let _ = writeln!(log, "[VERIFY] {repo}/{path}: cannot read: {why}");
    }
    let c = &r.total;
    let verdict = if r.is_clean() {
        "the index equals the disk".to_string()
    } else {
        "the index differs from the disk: `elysiactl index verify --repair` makes them equal"
            .to_string()
    };
    let _ = writeln!(
        log,
        "[VERIFY] total: {} files, {} objects: {} missing, {} extra, {} stale: {verdict}",
        c.files, c.objects, c.missing, c.extra, c.stale
    );
}

/// Keep the result in the state dir (for `--status`) and in the metrics
/// file. A state dir that cannot take it is said, not fatal.
fn keep(state_dir: &Path, args: &VerifyArgs, r: &Report, log: &mut dyn Write) {
    let now = crate::util::now_ms();
    let doc = serde_json::json!({
        "finished_ms": now,
        "equal": r.is_clean(),
        "total": r.total,
        "repos": args.repo,
    });
    if r.is_clean() && args.repo.is_empty() {
        // The whole index equals the disk: a lost index is found again.
        let _ = std::fs::remove_file(crate::sync::index_lost_marker(state_dir));
    }
    if state_dir.is_dir() {
        if let Err(e) = write_atomic(
            &verify::last_path(state_dir),
            doc.to_string().as_bytes(),
            0o600,
        ) {
            let _ = writeln!(
                log,
                "[WARN] cannot keep the verify result in the state dir: {e}"
            );
        }
    }
    if let Some(m) = &args.metrics_file {
        let c = &r.total;
        let text = format!(
            "# HELP elysiactl_index_drift_objects Files whose objects differ from the disk, by kind, at the last verify.\n\
             # TYPE elysiactl_index_drift_objects gauge\n\
             elysiactl_index_drift_objects{{kind=\"missing\"}} {}\n\
             elysiactl_index_drift_objects{{kind=\"extra\"}} {}\n\
             elysiactl_index_drift_objects{{kind=\"stale\"}} {}\n\
             # HELP elysiactl_index_last_verify_timestamp Unix time of the last index verify.\n\
             # TYPE elysiactl_index_last_verify_timestamp gauge\n\
             elysiactl_index_last_verify_timestamp {}\n",
            c.missing,
            c.extra,
            c.stale,
            now / 1000
        );
        if let Err(e) = write_atomic(m, text.as_bytes(), 0o644) {
            let _ = writeln!(
                log,
                "[WARN] cannot write the metrics file {}: {e}",
                m.display()
            );
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut p = crate::publish::Pending::create(path, crate::publish::Mode::Exact(mode))?;
    p.file().write_all(bytes)?;
    p.commit()
}
