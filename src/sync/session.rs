//! One run's session: the state it keeps, how it records to the WAL
//! (degraded mode included), each manifest's pass, and the end of the run.

use super::*;

/// Where a failed line is: its manifest's fingerprint and its byte offset.
pub(super) type FailedAt = ([u8; 32], u64);

/// Why a run stops before the end of its manifests. One reason, not one
/// flag each: the workers see it as `halt`.
#[derive(Debug)]
pub(super) enum StopReason {
    /// `--on-error stop` and a line failed (exit 1).
    OnErrorStop,
    /// The manifest changed while it was read (exit 2).
    ManifestChanged(manifest::Error),
    /// The target or the WAL cannot go on (exit 3).
    Fatal(String, failed_run::Cause),
}

impl StopReason {
    fn rank(&self) -> u8 {
        match self {
            StopReason::OnErrorStop => 1,
            StopReason::ManifestChanged(_) => 2,
            StopReason::Fatal(..) => 3,
        }
    }
}

/// One batch on its way to the target.
pub(super) struct Batch {
    pub(super) seq: u64,
    pub(super) fingerprint: [u8; 32],
    pub(super) spans: Vec<Span>,
    pub(super) items: Vec<Item>,
    pub(super) retry_pass: bool,
}

pub(super) struct Item {
    pub(super) line: u64,
    pub(super) offset: u64,
    pub(super) end: u64,
    pub(super) planned: Planned,
    /// Index range of this item's ops in the batch's op list.
    pub(super) ops: std::ops::Range<usize>,
}

pub(super) struct Syncer<'a> {
    pub(super) opts: &'a Options,
    pub(super) wal: Wal,
    pub(super) state: State,
    pub(super) degraded: Option<String>,
    pub(super) reporter: Reporter<'a>,
    pub(super) run_id: u64,
    pub(super) counts: Counts,
    /// Why the run stops early, if it does.
    pub(super) stop: Option<StopReason>,
    pub(super) target: &'a dyn Target,
    pub(super) roots: &'a Roots,
    /// The manifest changed while a worker read a batch from it.
    /// Shared with the workers: set once the run must apply nothing more.
    pub(super) halt: Arc<AtomicBool>,
    /// Rate limits waited out by the workers (metrics).
    pub(super) throttle: Arc<super::retry::Throttle>,
    pub(super) seq: u64,
    pub(super) started: std::time::Instant,
    pub(super) failure_kinds: BTreeMap<&'static str, (FailureKind, u64)>,
    pub(super) last_metrics: std::time::Instant,
    /// Records of finished batches not yet appended (group commit).
    pub(super) group: Vec<Record>,
    /// Outstanding failed lines by file (repo, path): where a later line
    /// applying the file finds the failures it supersedes.
    pub(super) failed_paths: HashMap<(String, String), Vec<FailedAt>>,
    /// The index was found lost ([`index_lost_marker`]): the run cannot end
    /// complete.
    pub(super) index_lost: bool,
    pub(super) group_msgs: Vec<SyncEvent>,
    /// The throttling the last progress line reported up to.
    pub(super) throttle_seen: super::retry::ThrottleReading,
}

impl<'a> Syncer<'a> {
    /// How the run was throttled since the previous progress line.
    pub(super) fn throttled_since_last_line(&mut self) -> Option<Throttled> {
        let now = self.throttle.reading();
        let t = Throttled::between(
            &self.throttle_seen,
            &now,
            self.target.max_in_flight().max(1) as u64,
        );
        self.throttle_seen = now;
        t
    }

    /// One event on the log (above the progress bar when there is one).
    pub(super) fn report(&mut self, e: SyncEvent) {
        self.reporter.report(&e);
    }

    /// Append records (durably) and apply them to the in-memory state. When
    /// the WAL cannot be written the run goes on in memory, loudly.
    pub(super) fn record(&mut self, records: Vec<Record>) {
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
    pub(super) fn enter_degraded(&mut self, e: wal::Error) {
        self.report(SyncEvent::StateNotSaved {
            error: e.to_string(),
            degraded: true,
        });
        self.degraded = Some(e.to_string());
        // An empty file needs no data block, so this usually works even on
        // a full disk; `--status` reports it.
        let _ = std::fs::File::create(degraded_marker(&self.opts.state_dir));
        if e.is_fsync() {
            // Never retried, and no point going on: the device failed a
            // flush. Stop with what is durable.
            self.report(SyncEvent::FsyncFailed {
                error: e.to_string(),
                fsync_failed: true,
            });
            self.stop_with(StopReason::Fatal(
                e.to_string(),
                failed_run::Cause::StateNotSaved,
            ));
        }
    }

    /// Record the end of a run that stopped on an error (before `finish`).
    pub(super) fn end_with_error(&mut self, e: &Error) {
        self.flush_group();
        self.reporter.finish_bar();
        self.record(vec![Record::RunFinished(RunFinished {
            run_id: self.run_id,
            finished_ms: now_ms(),
            status: RunStatus::Fatal,
            counts: self.counts,
            message: Some(e.to_string()),
        })]);
    }

    pub(super) fn process(&mut self, m: &Manifest, from_line: Option<u64>) -> Result<(), Error> {
        let known = self.state.manifest_for(&m.id).map(|p| p.total_lines);
        let total_lines = known.unwrap_or_else(|| m.count_lines());
        let from = match from_line {
            None => None,
            Some(n) => match m.offset_of_line(n) {
                Some(off) => Some((off, n)),
                None => {
                    return Err(Error::FromLinePastEnd {
                        line: n,
                        path: m.path().to_owned(),
                        lines: total_lines,
                    })
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
            self.report(SyncEvent::Restart {
                manifest: m.path().display().to_string(),
                lines: total_lines,
            });
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
            self.report(SyncEvent::Resume {
                manifest: m.path().display().to_string(),
                offset: resume_off,
                line: resume_line,
                retrying,
                dead_letters: dead,
                note_dead: !self.opts.retry_failed,
            });
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
        self.throttle.note_in_flight_limit(in_flight);
        let halt = Arc::new(AtomicBool::new(false));
        self.halt = Arc::clone(&halt);
        let throttle = Arc::clone(&self.throttle);
        let ctx = WorkerCtx {
            manifest: m,
            roots: self.roots,
            target: self.target,
            run_id: self.run_id,
            max_retries: self.opts.max_retries,
            rate_limit_patience: self.opts.rate_limit_patience,
            throttle: &throttle,
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
            match self.stop.take() {
                Some(StopReason::ManifestChanged(e)) => res.and(Err(e.into())),
                other => {
                    self.stop = other;
                    res
                }
            }
        })
    }

    pub(super) fn should_stop(&self) -> bool {
        self.stop.is_some()
    }

    /// Stop the run early; the gravest reason wins (fatal over a changed
    /// manifest over `--on-error stop`).
    pub(super) fn stop_with(&mut self, reason: StopReason) {
        if self.stop.as_ref().is_none_or(|s| s.rank() < reason.rank()) {
            self.stop = Some(reason);
        }
    }

    /// During long runs the metrics file is refreshed every 30 s (with the
    /// status label `running`), so a stuck sync shows up before it ends.
    pub(super) fn maybe_write_metrics(&mut self) {
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
            index_lost: self.index_lost,
            outstanding_failures: self.state.outstanding_failures().count() as u64,
            dead_letters: self.dead_letters(),
            throttle: self.throttle.reading(),
        };
        let _ = metrics::write(path, &m);
    }

    pub(super) fn finish(mut self) -> Report {
        self.flush_group();
        // Complete means nothing is outstanding: failed lines of this run or
        // earlier ones, dead letters included, that no later line applied.
        let outstanding = self.state.outstanding_failures().count() as u64;
        let (fatal, cause) = match &self.stop {
            Some(StopReason::Fatal(m, c)) => (Some(m.clone()), Some(*c)),
            _ => (None, None),
        };
        let status = if fatal.is_some() {
            RunStatus::Fatal
        } else if self.stop.is_some() {
            RunStatus::Stopped
        } else if outstanding > 0 || self.index_lost {
            RunStatus::Failures
        } else {
            RunStatus::Complete
        };
        let message = fatal.or_else(|| self.degraded.clone());
        self.record(vec![Record::RunFinished(RunFinished {
            run_id: self.run_id,
            finished_ms: now_ms(),
            status,
            counts: self.counts,
            message: message.clone(),
        })]);
        if self.degraded.is_none() && self.wal.total_len() > COMPACT_THRESHOLD {
            if let Err(e) = self.wal.compact(&self.state) {
                self.report(SyncEvent::CompactionFailed {
                    error: e.to_string(),
                });
            }
        }
        self.clean_spool();
        if self.degraded.is_none() {
            let _ = std::fs::remove_file(degraded_marker(&self.opts.state_dir));
        }
        self.reporter.finish_bar();
        let c = self.counts;
        let dead = self.dead_letters();
        self.report(SyncEvent::Summary {
            status: status.as_str(),
            counts: status::counts_json(&c),
            outstanding_failures: outstanding,
            dead_letters: dead,
            duration_secs: self.started.elapsed().as_secs_f64(),
            rate_limited_objects: self.throttle.rate_limited(),
            throttled_secs: self.throttle.throttled_secs(),
            c,
        });
        let earlier = outstanding.saturating_sub(c.failed);
        if earlier > 0 {
            self.report(SyncEvent::Outstanding {
                outstanding_failures: outstanding,
                dead_letters: dead,
                earlier,
            });
        }
        if self.index_lost {
            self.report(SyncEvent::IndexLost {
                target: self.target.describe(),
                since_ms: 0,
            });
        }
        let degraded = self.degraded.is_some();
        if degraded {
            self.report(SyncEvent::DegradedExit { degraded: true });
        }
        let exit_code = match status {
            _ if degraded => Exit::Fatal,
            RunStatus::Fatal => Exit::Fatal,
            RunStatus::Complete => Exit::Ok,
            RunStatus::Failures | RunStatus::Stopped => Exit::Partial,
        }
        .code();
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
            cause,
            metrics: Some(metrics::RunMetrics {
                status: Some(status),
                running: false,
                finished_unix: now_ms() / 1000,
                duration_secs: self.started.elapsed().as_secs_f64(),
                counts: self.counts,
                failures: self.failure_kinds.values().copied().collect(),
                resume_offset,
                degraded,
                index_lost: self.index_lost,
                outstanding_failures: outstanding,
                dead_letters: dead,
                throttle: self.throttle.reading(),
            }),
        }
    }

    pub(super) fn dead_letters(&self) -> u64 {
        self.state
            .outstanding_failures()
            .filter(|(_, f)| f.attempts >= MAX_ATTEMPTS)
            .count() as u64
    }

    /// Spooled stdin manifests are deleted once nothing refers to them.
    pub(super) fn clean_spool(&self) {
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
