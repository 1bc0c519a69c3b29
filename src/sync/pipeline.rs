//! The pipeline: workers plan batches (parse, read, hash) and apply them
//! under a permit; the feed thread collects their answers and records them.

use super::*;

impl Syncer<'_> {
    /// Wait for one batch to come back and record it.
    ///
    /// Group commit: every other batch that has finished meanwhile is
    /// recorded too, with the same single WAL write and fdatasync. Each
    /// `BatchDone` names its own byte ranges, so their order in the log does
    /// not matter, and nothing is reported done before that fsync returns.
    /// Two batches that write one object come back in the order they were
    /// read (see [`Permits`]), so a failure is always recorded before the
    /// later line that supersedes it.
    pub(super) fn collect_one(&mut self, pipe: &mut Pipe<'_>) {
        loop {
            let Ok(msg) = pipe.done_rx.recv() else {
                pipe.waiting.clear();
                return;
            };
            if self.take(pipe, msg) {
                break;
            }
        }
        while let Ok(msg) = pipe.done_rx.try_recv() {
            self.take(pipe, msg);
        }
        self.flush_group();
        if self.should_stop() {
            // A failed WAL flush, a fatal target error or `--on-error stop`:
            // batches planned ahead are not applied.
            self.halt.store(true, Ordering::SeqCst);
        }
    }

    /// Handle one message from a worker; true when it finished a batch.
    pub(super) fn take(&mut self, pipe: &mut Pipe<'_>, msg: Msg) -> bool {
        match msg {
            Msg::Done(done) => {
                self.handle(pipe, done);
                true
            }
            Msg::Report(e) => {
                self.report(e);
                false
            }
        }
    }

    /// Record what the batches handled since the last flush produced: one
    /// append, then their progress lines.
    pub(super) fn flush_group(&mut self) {
        if self.group.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.group);
        self.record(records);
        for e in std::mem::take(&mut self.group_msgs) {
            self.report(e);
        }
        self.maybe_write_metrics();
    }

    pub(super) fn handle(&mut self, pipe: &mut Pipe<'_>, done: Done) {
        let Some(mut batch) = pipe.waiting.remove(&done.seq) else {
            return;
        };
        batch.items = done.items;
        let applied = match done.outcome {
            Outcome::Applied(a) => a,
            Outcome::Skipped => return,
            Outcome::ManifestChanged(e) => {
                // What was read from the changed manifest is not applied,
                // and the run stops (exit 2).
                self.stop_with(StopReason::ManifestChanged(e));
                return;
            }
        };
        let outcomes = match applied {
            retry::Applied::Done(o) => o,
            retry::Applied::Fatal(e) => {
                let first = batch.spans.first().map(|s| s.first_line).unwrap_or(0);
                let last = batch.spans.last().map(|s| s.next_line - 1).unwrap_or(0);
                let what = self.target.describe();
                self.report(SyncEvent::TargetFatal {
                    first_line: first,
                    last_line: last,
                    error: format!("{what}: {e}"),
                });
                let cause = target_cause(&e, &self.opts.target.kind);
                self.stop_with(StopReason::Fatal(format!("{what}: {e}"), cause));
                return;
            }
        };
        self.finish_batch(batch, &outcomes);
    }
}

pub(super) struct Pipe<'m> {
    pub(super) job_tx: Option<mpsc::Sender<Job<'m>>>,
    pub(super) done_rx: mpsc::Receiver<Msg>,
    pub(super) waiting: HashMap<u64, Batch>,
    pub(super) limit: usize,
    /// Jobs sent so far: the next job's ticket.
    pub(super) sent: u64,
}

/// One manifest line handed to a worker.
pub(super) struct RawLine<'m> {
    pub(super) line: u64,
    pub(super) offset: u64,
    pub(super) end: u64,
    /// The line without its terminator.
    pub(super) body: &'m [u8],
}

/// A batch's lines, to plan and apply on a worker thread.
pub(super) struct Job<'m> {
    pub(super) seq: u64,
    /// Order in which the batch may take a permit (0, 1, 2, … per manifest).
    pub(super) ticket: u64,
    pub(super) fingerprint: [u8; 32],
    pub(super) lines: Vec<RawLine<'m>>,
}

/// What workers tell the feed thread.
pub(super) enum Msg {
    Done(Done),
    /// An event to report now (`--on-error retry` retrying a batch).
    Report(SyncEvent),
}

/// A worker's answer: the planned lines and what the target
/// said (or that the manifest changed while the lines were read).
pub(super) struct Done {
    pub(super) seq: u64,
    pub(super) items: Vec<Item>,
    pub(super) outcome: Outcome,
}

pub(super) enum Outcome {
    Applied(retry::Applied),
    /// Not sent to the target: an earlier batch failed under
    /// `--on-error stop`, or was fatal. The next run starts at or before it.
    Skipped,
    /// The manifest changed while the lines were read: nothing is applied.
    ManifestChanged(manifest::Error),
}

/// What every worker shares.
pub(super) struct WorkerCtx<'a> {
    pub(super) manifest: &'a Manifest,
    pub(super) roots: &'a Roots,
    pub(super) target: &'a dyn Target,
    pub(super) run_id: u64,
    pub(super) max_retries: u32,
    pub(super) rate_limit_patience: Duration,
    pub(super) throttle: &'a retry::Throttle,
    pub(super) backoff: Backoff,
    pub(super) permits: &'a Permits,
    /// Set by a worker whose batch ends the run (fatal, a changed manifest,
    /// or a failure under `--on-error stop`): later batches are not applied.
    pub(super) halt: &'a AtomicBool,
    pub(super) on_error: OnError,
}

/// The first failure among the target's outcomes for planned items, and
/// how many items failed at the target.
pub(super) fn target_failures(items: &[Item], outcomes: &[OpOutcome]) -> (usize, Option<String>) {
    let mut n = 0;
    let mut first = None;
    for it in items {
        let failed = outcomes
            .get(it.ops.clone())
            .unwrap_or_default()
            .iter()
            .find_map(|o| match o {
                OpOutcome::Failed { message, .. } => Some(message),
                OpOutcome::Ok => None,
            });
        if let Some(m) = failed {
            n += 1;
            first.get_or_insert_with(|| m.clone());
        }
    }
    (n, first)
}

impl WorkerCtx<'_> {
    /// Plan every line of a batch: parse, look at the disk, build the ops.
    pub(super) fn plan(&self, parser: &mut LineParser, job: &Job<'_>) -> (Vec<Item>, Vec<Op>) {
        let mut items = Vec::with_capacity(job.lines.len());
        let mut ops = Vec::new();
        for raw in &job.lines {
            let parsed = parser
                .parse(raw.body)
                .and_then(|c| c.ok_or(manifest::LineError::Json("blank line".into())));
            let mut planned = plan::plan(
                parsed,
                self.roots,
                Some(self.target),
                job.fingerprint,
                self.run_id,
                raw.line,
            );
            let start = ops.len();
            if let Planned::Ops { ops: o, .. } = &mut planned {
                ops.append(o);
            }
            items.push(Item {
                line: raw.line,
                offset: raw.offset,
                end: raw.end,
                planned,
                ops: start..ops.len(),
            });
        }
        (items, ops)
    }

    /// Plan a job, apply its ops under a permit, and send the outcome
    /// before giving the permit back. False once nobody listens.
    pub(super) fn run(
        &self,
        parser: &mut LineParser,
        job: Job<'_>,
        tell: &mpsc::Sender<Msg>,
    ) -> bool {
        let (mut items, mut ops) = self.plan(parser, &job);
        // Batches reach the target in the order they were read: with one
        // batch at a time the index is always a prefix of the manifest, and
        // with several they start in order, and a batch that writes an
        // object an earlier batch still in flight writes waits for it (so a
        // retried write never lands after a later line's write).
        let ids: Vec<uuid::Uuid> = if self.permits.total > 1 {
            // A line that failed to plan names its object too: its failure
            // must be recorded before a later line for the same file.
            let failed = items.iter().filter_map(|it| match &it.planned {
                Planned::Failed { repo, path, .. } if !path.is_empty() => {
                    Some(crate::target::object_id(repo, path))
                }
                _ => None,
            });
            let mut ids: Vec<_> = ops.iter().map(Op::id).chain(failed).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        } else {
            Vec::new()
        };
        let permit = self.permits.acquire(job.ticket, ids);
        // Nothing read from a manifest that changed meanwhile is applied
        // (a truncated mapping reads as zeros; see manifest::sigbus).
        let outcome = if let Err(e) = self.manifest.check_unchanged() {
            self.halt.store(true, Ordering::SeqCst);
            Outcome::ManifestChanged(e)
        } else if self.halt.load(Ordering::SeqCst) {
            // Checked under the permit: a batch that failed sets `halt`
            // before giving its permit back, so with one batch at a time
            // `--on-error stop` applies nothing after the failing batch.
            Outcome::Skipped
        } else {
            // This batch's own rate limits tell the permits whether to send
            // fewer batches at once (AIMD); the run's totals are the metrics.
            let mine = self.throttle.for_batch();
            let mut applied = retry::apply_with_retries(
                self.target,
                &ops,
                self.max_retries,
                self.backoff,
                self.rate_limit_patience,
                &mine,
            );
            let limit = self.permits.signal(mine.rate_limited() > 0);
            self.throttle.note_in_flight_limit(limit);
            self.throttle.add(&mine);
            if self.on_error == OnError::Retry {
                applied =
                    self.retry_until_applied(parser, &job, &mut items, &mut ops, applied, tell);
            }
            let halts = match &applied {
                retry::Applied::Fatal(_) => true,
                retry::Applied::Done(outcomes) => {
                    self.on_error == OnError::Stop
                        && (outcomes.iter().any(|o| !o.is_ok())
                            || items
                                .iter()
                                .any(|it| matches!(it.planned, Planned::Failed { .. })))
                }
            };
            if halts {
                self.halt.store(true, Ordering::SeqCst);
            }
            Outcome::Applied(applied)
        };
        // Sent under the permit: a later batch writing one of these objects
        // cannot start, let alone come back, before this answer is queued.
        let sent = tell
            .send(Msg::Done(Done {
                seq: job.seq,
                items,
                outcome,
            }))
            .is_ok();
        drop(permit);
        sent
    }

    /// `--on-error retry`: while the target refuses some of the batch's
    /// writes, wait (capped full-jitter backoff) and apply the batch again,
    /// planned afresh from the disk, under the same permit. Lines that are
    /// malformed or unreadable do not get better by retrying the write: they
    /// are recorded as failed, as with `continue`. A fatal error (the target
    /// refuses for good, or is unreachable) ends the retries and the run, as
    /// does another batch ending the run.
    pub(super) fn retry_until_applied(
        &self,
        parser: &mut LineParser,
        job: &Job<'_>,
        items: &mut Vec<Item>,
        ops: &mut Vec<Op>,
        mut applied: retry::Applied,
        tell: &mpsc::Sender<Msg>,
    ) -> retry::Applied {
        let cap = Backoff {
            base: self.backoff.base,
            cap: self.backoff.cap.max(Duration::from_secs(1)),
        };
        let mut jitter = retry::Jitter::new();
        let mut attempt = 0u32;
        loop {
            let (failed, error) = match &applied {
                retry::Applied::Fatal(_) => return applied,
                retry::Applied::Done(outcomes) => target_failures(items, outcomes),
            };
            if failed == 0 || self.halt.load(Ordering::SeqCst) {
                return applied;
            }
            let wait = cap.delay(attempt, None, &mut jitter);
            let _ = tell.send(Msg::Report(SyncEvent::Retry {
                first_line: job.lines.first().map(|l| l.line).unwrap_or(0),
                last_line: job.lines.last().map(|l| l.line).unwrap_or(0),
                attempt: attempt.saturating_add(1),
                failed,
                error: error.unwrap_or_default(),
                wait_secs: wait.as_secs_f64(),
            }));
            std::thread::sleep(wait);
            attempt = attempt.saturating_add(1);
            if self.halt.load(Ordering::SeqCst) {
                return applied;
            }
            // Lines the index refused, planned afresh from the disk; the
            // lines it took stay taken (a line's ops are whole: resending
            // them changes nothing, skipping them loses nothing).
            let refused: Vec<bool> = match &applied {
                retry::Applied::Done(outcomes) => items
                    .iter()
                    .map(|it| {
                        outcomes
                            .get(it.ops.clone())
                            .unwrap_or_default()
                            .iter()
                            .any(|o| !o.is_ok())
                    })
                    .collect(),
                retry::Applied::Fatal(_) => return applied,
            };
            (*items, *ops) = self.plan(parser, job);
            let mut outcomes = vec![OpOutcome::Ok; ops.len()];
            let resend: Vec<usize> = items
                .iter()
                .zip(&refused)
                .filter(|(_, r)| **r)
                .flat_map(|(it, _)| it.ops.clone())
                .collect();
            let sub: Vec<Op> = resend.iter().filter_map(|&i| ops.get(i).cloned()).collect();
            applied = match retry::apply_with_retries(
                self.target,
                &sub,
                self.max_retries,
                self.backoff,
                self.rate_limit_patience,
                self.throttle,
            ) {
                retry::Applied::Done(got) => {
                    for (&i, o) in resend.iter().zip(got) {
                        if let Some(slot) = outcomes.get_mut(i) {
                            *slot = o;
                        }
                    }
                    retry::Applied::Done(outcomes)
                }
                fatal => fatal,
            };
        }
    }
}
