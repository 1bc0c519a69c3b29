//! A run from the top: lock the state dir, replay the WAL, check that it
//! belongs to this index, choose the manifests to do, open the target, and
//! hand over to the session.

use super::*;

pub(super) fn run_inner(
    opts: &Options,
    open_target: OpenTarget<'_>,
    log: &mut dyn Write,
) -> Result<Report, Error> {
    if opts.batch_size == 0 {
        return Err(Error::BatchSizeZero);
    }
    if opts.dry_run {
        return dry_run(opts, log);
    }
    let mut reporter = Reporter::new(log, opts.log_format, opts.progress);
    crate::util::create_private_dir(&opts.state_dir).map_err(|source| Error::StateDir {
        dir: opts.state_dir.clone(),
        source,
    })?;
    let _lock = lock::acquire(&opts.state_dir)?;
    let (wal, replay) = Wal::open(&opts.state_dir)?;
    if let Some(t) = &replay.torn {
        reporter.report(&SyncEvent::Recovered {
            segment: t.segment.display().to_string(),
            offset: t.offset,
            dropped_bytes: t.dropped_bytes,
            reason: t.reason.to_string(),
        });
    }
    manifest::clean_spool_temps(&opts.state_dir);
    let current = match &opts.input {
        Some(Input::File(p)) => Some(Manifest::open(p, false)?),
        Some(Input::Stdin) => {
            let p = manifest::spool(std::io::stdin().lock(), &opts.state_dir)?;
            Some(Manifest::open(&p, true)?)
        }
        None if opts.retry_failed => None,
        None => return Err(Error::InputRequired),
    };
    let roots = Roots::new(&opts.roots, opts.max_file_size).map_err(Error::Roots)?;

    let open = |m: &ManifestProgress| {
        Manifest::open(&manifest::path_of_stored(&m.id.path), m.id.spooled)
            .ok()
            .filter(|old| old.id.same_content(&m.id))
    };
    let choice = Choice {
        abandon_pending: opts.abandon_pending,
        retry_failed: opts.retry_failed,
        from_line: opts.from_line.is_some(),
    };
    let Queue {
        run: queue,
        abandon,
        unretriable,
    } = plan_queue(&replay.state, current, choice, &open)?;
    for e in &unretriable {
        reporter.report(e);
    }
    if queue.is_empty() {
        reporter.report(&SyncEvent::NothingToRetry);
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
    let target = match open_target().and_then(|t| t.prepare().map(|()| t)) {
        Ok(t) => {
            // Bound to the first index a run actually reached.
            if bind {
                journal(vec![Record::TargetBound(opts.target.clone())], &mut state);
            }
            t
        }
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
        reporter,
        run_id,
        counts: Counts::default(),
        stop: None,
        target: target.as_ref(),
        roots: &roots,
        halt: Arc::new(AtomicBool::new(false)),
        seq: 0,
        started: std::time::Instant::now(),
        failure_kinds: BTreeMap::new(),
        last_metrics: std::time::Instant::now(),
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
        s.report(SyncEvent::Abandoned {
            manifest: m.id.path.clone(),
            remaining_lines: remaining,
            failed_lines: m.failed.len(),
        });
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
        s.reporter.start_bar(total);
    }
    for (i, m) in queue.iter().enumerate() {
        let from = if i == last { opts.from_line } else { None };
        if let Err(e) = s.process(m, from) {
            // Input errors (a manifest changed while read, --from-line past
            // its end) end the run too: `--status` says so, not interrupted.
            s.end_with_error(&e);
            return Err(e);
        }
        if s.should_stop() {
            break;
        }
    }
    Ok(s.finish())
}

/// How people read a target identity.
pub(super) fn describe_target(t: &TargetIdentity) -> String {
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
pub(super) fn check_target(
    state: &State,
    this: &TargetIdentity,
    dir: &Path,
) -> Result<bool, Error> {
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
    Err(Error::OtherIndex {
        dir: dir.to_owned(),
        recorded: describe_target(&recorded),
        this: describe_target(this),
    })
}
