//! Which manifests a run does, in order: earlier manifests with lines never
//! applied, then (with `--retry-failed`) other manifests with failed lines
//! still present, then the one given now; with `--abandon-pending`, the
//! unfinished or failed ones that are gone are dropped instead. Pure over
//! the replayed state: opening a manifest is the caller's function.

use super::*;

/// Something that can be queued: an opened manifest (or a test's stand-in).
pub(super) trait Queued {
    fn id(&self) -> &ManifestId;
}

impl Queued for Manifest {
    fn id(&self) -> &ManifestId {
        &self.id
    }
}

/// What a run will do.
pub(super) struct Queue<M> {
    /// In order; the manifest given now, if any, last.
    pub(super) run: Vec<M>,
    /// Dropped (`--abandon-pending`), with their progress.
    pub(super) abandon: Vec<ManifestProgress>,
    /// Manifests whose failed lines cannot be retried (gone or changed).
    pub(super) unretriable: Vec<SyncEvent>,
}

/// The flags that choose.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Choice {
    pub(super) abandon_pending: bool,
    pub(super) retry_failed: bool,
    pub(super) from_line: bool,
}

/// Choose the manifests; `open` gives a manifest as it is on disk now, if it
/// is still there with the same content.
pub(super) fn plan_queue<M: Queued>(
    state: &State,
    current: Option<M>,
    choice: Choice,
    open: &dyn Fn(&ManifestProgress) -> Option<M>,
) -> Result<Queue<M>, Error> {
    let mut run: Vec<M> = Vec::new();
    let mut abandon: Vec<ManifestProgress> = Vec::new();
    let mut unretriable = Vec::new();
    let is_current = |id: &ManifestId| current.as_ref().is_some_and(|c| c.id().same_content(id));
    for m in state.unfinished() {
        if is_current(&m.id) {
            continue;
        }
        match open(m) {
            Some(old) => run.push(old),
            None if choice.abandon_pending => abandon.push(m.clone()),
            None => {
                let (off, line) = m.resume_point();
                return Err(Error::PendingGone {
                    path: m.id.path.clone(),
                    applied_line: line.saturating_sub(1),
                    offset: off,
                    size: m.id.size,
                });
            }
        }
    }
    if choice.from_line && !run.is_empty() {
        return Err(Error::FromLineWithPending);
    }
    // Every other manifest with failed lines: retried with --retry-failed
    // while it is still there as it was; dropped with --abandon-pending
    // once it is gone or changed (its failures can never be retried).
    if choice.retry_failed || choice.abandon_pending {
        for m in &state.manifests {
            let queued = run.iter().any(|q| q.id().same_content(&m.id))
                || is_current(&m.id)
                || abandon.iter().any(|a| a.id.same_content(&m.id));
            if queued || m.abandoned || m.failed.is_empty() {
                continue;
            }
            match open(m) {
                Some(old) => {
                    if choice.retry_failed {
                        run.push(old);
                    }
                }
                None if choice.abandon_pending => abandon.push(m.clone()),
                None => unretriable.push(SyncEvent::FailuresUnretriable {
                    manifest: m.id.path.clone(),
                    failed: m.failed.len(),
                }),
            }
        }
    }
    run.extend(current);
    Ok(Queue {
        run,
        abandon,
        unretriable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(ManifestId);

    impl Queued for Fake {
        fn id(&self) -> &ManifestId {
            &self.0
        }
    }

    fn id(n: u8) -> ManifestId {
        ManifestId {
            path: format!("/m{n}.jsonl"),
            size: 100,
            fingerprint: [n; 32],
            spooled: false,
        }
    }

    /// A state with manifests 1 (unfinished), 2 (done, one failed line) and
    /// 3 (done, clean).
    fn state() -> State {
        let mut s = State::default();
        s.apply(&Record::RunStarted(RunStarted {
            run_id: 1,
            started_ms: 0,
            pid: 1,
            version: String::new(),
            target: "local".into(),
            batch_size: 1,
            on_error: "continue".into(),
            max_retries: 0,
        }));
        for n in 1..=3u8 {
            s.apply(&Record::ManifestStarted(ManifestStarted {
                run_id: 1,
                manifest: id(n),
                total_lines: 2,
                from: None,
            }));
            if n == 2 {
                s.apply(&Record::ItemFailed(ItemFailed {
                    run_id: 1,
                    fingerprint: [n; 32],
                    line: 1,
                    offset: 0,
                    end: 50,
                    repo: "R".into(),
                    path: "a".into(),
                    kind: FailureKind::Source,
                    reason: "x".into(),
                    attempts: 1,
                }));
            }
            let end = if n == 1 { 50 } else { 100 };
            s.apply(&Record::BatchDone(BatchDone {
                run_id: 1,
                fingerprint: [n; 32],
                seq: u64::from(n),
                spans: vec![Span {
                    start: 0,
                    end,
                    first_line: 1,
                    next_line: if n == 1 { 2 } else { 3 },
                }],
                counts: Counts::default(),
            }));
        }
        s
    }

    fn names<M: Queued>(q: &Queue<M>) -> Vec<u8> {
        q.run.iter().map(|m| m.id().fingerprint[0]).collect()
    }

    #[test]
    fn the_queue_is_unfinished_first_then_retries_then_the_current_one() {
        let st = state();
        let present = |m: &ManifestProgress| Some(Fake(m.id.clone()));
        let gone = |_: &ManifestProgress| None::<Fake>;
        let cur = || Some(Fake(id(9)));
        let plain = Choice::default();
        let q = plan_queue(&st, cur(), plain, &present).unwrap();
        assert_eq!(names(&q), vec![1, 9]);
        let retry = Choice {
            retry_failed: true,
            ..plain
        };
        let q = plan_queue(&st, cur(), retry, &present).unwrap();
        assert_eq!(names(&q), vec![1, 2, 9]);
        // The current manifest is never queued twice.
        let q = plan_queue(&st, Some(Fake(id(1))), plain, &present).unwrap();
        assert_eq!(names(&q), vec![1]);
        // An unfinished manifest that is gone: refused, or dropped.
        assert!(matches!(
            plan_queue(&st, cur(), plain, &gone),
            Err(Error::PendingGone { .. })
        ));
        let abandon = Choice {
            abandon_pending: true,
            ..plain
        };
        let q = plan_queue(&st, cur(), abandon, &gone).unwrap();
        assert_eq!(names(&q), vec![9]);
        let dropped: Vec<u8> = q.abandon.iter().map(|m| m.id.fingerprint[0]).collect();
        assert_eq!(dropped, vec![1, 2], "failed lines of a gone manifest too");
        // Failed lines of a gone manifest under --retry-failed: reported.
        let only_first =
            |m: &ManifestProgress| (m.id.fingerprint[0] == 1).then(|| Fake(m.id.clone()));
        let q = plan_queue(&st, None, retry, &only_first).unwrap();
        assert_eq!(names(&q), vec![1]);
        assert_eq!(q.unretriable.len(), 1);
        // --from-line with an unfinished earlier manifest.
        let from = Choice {
            from_line: true,
            ..plain
        };
        assert!(matches!(
            plan_queue(&st, cur(), from, &present),
            Err(Error::FromLineWithPending)
        ));
    }
}
