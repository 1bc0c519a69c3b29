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
    let roots = Roots::new(&opts.roots, opts.max_file_size)
        .map_err(Error::Roots)?
        .with_chunk_size(opts.chunk_size);

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
    let bind = check_target(&replay.state, &opts.target, &opts.state_dir, opts.rechunk)?;
    // A local index of an older format (another tokenizer) is rebuilt from
    // the disk as a re-chunk at this run's chunk size does it: the same
    // resumable path, run unasked, so a scheduled sync goes on after an
    // upgrade.
    let rebuild = match opts.target.kind.as_str() {
        "local" => target::local::rebuild(&opts.state_dir, opts.target.chunk_size)
            .map_err(|e| Error::RechunkList(e.to_string()))?
            .reason(),
        _ => None,
    };
    let bind = if rebuild.is_some() {
        Bind::Rechunk
    } else {
        bind
    };
    // The local index is read before it is opened for writing: one from
    // before chunked objects opens for writing only at chunk size 0, and a
    // re-chunk rebuilds it.
    let local_listing = match (bind, opts.target.kind.as_str()) {
        (Bind::Rechunk, "local") => Some(match target::local::export(&opts.state_dir) {
            Ok(objects) => objects,
            Err(target::local::ReadError::NoIndex { .. }) => Vec::new(),
            Err(e) => return Err(Error::RechunkList(e.to_string())),
        }),
        _ => None,
    };

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
    // A local re-chunk: the list of files is in the state dir and the WAL
    // (the manifest registered before the new identity) before the old
    // index is removed, so a kill anywhere leaves the re-chunk to resume.
    let mut rechunk_queue = None;
    if let Some(objects) = &local_listing {
        rechunk_queue = register_rechunk(
            opts,
            objects,
            rebuild,
            run_id,
            &mut journal,
            &mut state,
            &mut reporter,
        )?;
        target::local::remove_index(&opts.state_dir).map_err(|e| {
            Error::Target(target::Error::Fatal {
                message: format!("local index: remove it for the re-chunk: {e}"),
            })
        })?;
    }
    let target = match open_target().and_then(|t| t.prepare().map(|()| t)) {
        Ok(t) => {
            // Bound to the first index a run actually reached.
            match bind {
                Bind::Same => {}
                Bind::Record => journal(vec![Record::TargetBound(opts.target.clone())], &mut state),
                Bind::Rechunk if local_listing.is_some() => {}
                Bind::Rechunk => {
                    let objects = t
                        .export(false)
                        .map_err(|e| Error::RechunkList(e.to_string()))?;
                    rechunk_queue = register_rechunk(
                        opts,
                        &objects,
                        None,
                        run_id,
                        &mut journal,
                        &mut state,
                        &mut reporter,
                    )?;
                }
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
        throttle: Arc::default(),
        throttle_seen: Default::default(),
        seq: 0,
        started: std::time::Instant::now(),
        failure_kinds: BTreeMap::new(),
        last_metrics: std::time::Instant::now(),
        group: Vec::new(),
        group_msgs: Vec::new(),
        failed_paths: HashMap::new(),
        index_lost: false,
    };
    s.index_lost = check_index_lost(opts, &s.state, target.as_ref());
    if s.index_lost {
        let since_ms = std::fs::read(index_lost_marker(&opts.state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["detected_ms"].as_u64())
            .unwrap_or(0);
        s.report(SyncEvent::IndexLost {
            target: target.describe(),
            since_ms,
        });
    }
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
    let mut queue = queue;
    if let Some(m) = rechunk_queue {
        queue.retain(|q| !q.id.same_content(&m.id));
        queue.insert(0, m);
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

/// Whether the index is lost: found so before (the marker is there), or
/// empty now while the WAL records lines applied (then the marker is
/// written). Not judged while a manifest is unfinished: a re-chunk of the
/// local index rebuilds it from empty, and an interrupted run's index may
/// rightly hold nothing yet. A target that cannot tell is taken at its word.
fn check_index_lost(opts: &Options, state: &State, target: &dyn Target) -> bool {
    let marker = index_lost_marker(&opts.state_dir);
    if marker.exists() {
        return true;
    }
    // Work that left objects in the index: lines applied that wrote files
    // (a state dir whose applied lines only deleted may well face an empty
    // index).
    let applied = state
        .manifests
        .iter()
        .any(|m| m.counts.upserted > 0 && m.lines_done() > m.failed.len() as u64);
    let unfinished = state.unfinished().next().is_some();
    if !applied || unfinished || !matches!(target.is_empty(), Ok(Some(true))) {
        return false;
    }
    let doc = serde_json::json!({"detected_ms": now_ms(), "target": target.describe()});
    // Written plainly: a marker lost to a crash is found again next run.
    let _ = std::fs::write(&marker, doc.to_string());
    true
}

/// Spool the re-chunk manifest of `objects` (a rebuild of an old-format
/// local index when `rebuild` says why) and record it started, then the
/// new identity, in one append: the new chunk size is never recorded without
/// the work that makes the index match it. `None` when the index is empty.
fn register_rechunk(
    opts: &Options,
    objects: &[target::Exported],
    rebuild: Option<&'static str>,
    run_id: u64,
    journal: &mut dyn FnMut(Vec<Record>, &mut State),
    state: &mut State,
    reporter: &mut Reporter<'_>,
) -> Result<Option<Manifest>, Error> {
    let bytes = rechunk_manifest(objects);
    reporter.report(&SyncEvent::Rechunk {
        files: bytes.iter().filter(|&&b| b == b'\n').count() as u64,
        from_chunk_size: state.target.as_ref().map(|t| t.chunk_size),
        chunk_size: opts.target.chunk_size,
        rebuild,
    });
    let mut records = Vec::new();
    let manifest = if bytes.is_empty() {
        None
    } else {
        let path = manifest::spool(&bytes[..], &opts.state_dir)?;
        let m = Manifest::open(&path, true)?;
        records.push(Record::ManifestStarted(ManifestStarted {
            run_id,
            manifest: m.id.clone(),
            total_lines: m.count_lines(),
            from: None,
        }));
        Some(m)
    };
    records.push(Record::TargetBound(opts.target.clone()));
    journal(records, state);
    Ok(manifest)
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

/// What a run does about the index identity the state dir records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bind {
    /// The same index: nothing to record.
    Same,
    /// A new state dir (or one from before identities were recorded, whose
    /// runs wrote to the same kind): record this identity once the target
    /// is reached.
    Record,
    /// `--rechunk`: re-write every file the index holds at this run's chunk
    /// size, then record it.
    Rechunk,
}

/// Refuse a run against another index than the one the state dir belongs
/// to, or at another chunk size without `--rechunk`.
pub(super) fn check_target(
    state: &State,
    this: &TargetIdentity,
    dir: &Path,
    rechunk: bool,
) -> Result<Bind, Error> {
    let recorded = match &state.target {
        Some(t) => t.clone(),
        None => match &state.last_run {
            Some(run) if run.target != this.kind => TargetIdentity {
                kind: run.target.clone(),
                server: String::new(),
                collection: String::new(),
                chunk_size: 0,
            },
            _ if rechunk => return Ok(Bind::Rechunk),
            // Runs from before identities (and chunks) were recorded wrote
            // whole-file objects: such a state dir, if they applied
            // anything, is at chunk size 0.
            Some(_) if this.chunk_size != 0 && !state.manifests.is_empty() => {
                return Err(Error::OtherChunkSize {
                    dir: dir.to_owned(),
                    recorded: 0,
                    this: this.chunk_size,
                })
            }
            _ => return Ok(Bind::Record),
        },
    };
    let same_index = TargetIdentity {
        chunk_size: this.chunk_size,
        ..recorded.clone()
    } == *this;
    if !same_index {
        return Err(Error::OtherIndex {
            dir: dir.to_owned(),
            recorded: describe_target(&recorded),
            this: describe_target(this),
        });
    }
    match (recorded.chunk_size == this.chunk_size, rechunk) {
        (_, true) => Ok(Bind::Rechunk),
        (true, false) => Ok(Bind::Same),
        (false, false) => Err(Error::OtherChunkSize {
            dir: dir.to_owned(),
            recorded: recorded.chunk_size,
            this: this.chunk_size,
        }),
    }
}

/// The manifest of a re-chunk: an `update` line for every file `objects`
/// (an export of the index) holds, each once, sorted. Applying it re-plans
/// each file from the disk at the run's chunk size, so it ends exact
/// whatever the index held: new chunks replace the old ones (chunk 0's id
/// is the whole-file id of before chunks), surplus chunks go, files gone
/// from the disk go.
pub(super) fn rechunk_manifest(objects: &[target::Exported]) -> Vec<u8> {
    let mut files: Vec<(&str, &str)> = objects
        .iter()
        .map(|o| (o.repo.as_str(), o.path.as_str()))
        .collect();
    files.sort_unstable();
    files.dedup();
    let mut out = Vec::with_capacity(files.len() * 64);
    for (repo, path) in files {
        let line = serde_json::json!({"op": "update", "repo": repo, "path": path});
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}
