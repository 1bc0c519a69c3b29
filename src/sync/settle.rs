//! Settling a batch: from what the target said about each line to WAL
//! records, counts and the lines to report.

use super::*;

/// What settling a batch produced.
#[derive(Debug, Default)]
pub(super) struct Settled {
    /// WAL records, in order: changesets and failures seen, the batch's
    /// `BatchDone`, and the failures it resolved.
    pub(super) records: Vec<Record>,
    pub(super) counts: Counts,
    /// One `[FAILED]` event per failed line.
    pub(super) failed_lines: Vec<SyncEvent>,
    /// The kind of each failed line.
    pub(super) kinds: Vec<FailureKind>,
}

/// Settle a batch: from the planned lines and the target's outcome for each
/// op to WAL records and counts. Pure: `prior_attempts` says how often a line
/// (manifest, offset) failed before, and `failed_paths` (outstanding failed
/// lines by file) is updated with the failures this batch records and loses
/// those a line of it supersedes by applying the same file (SPEC: the latest
/// applied line wins; such a failure is no longer outstanding).
pub(super) fn settle(
    batch: &Batch,
    outcomes: &[OpOutcome],
    run_id: u64,
    prior_attempts: &dyn Fn(&[u8; 32], u64) -> u32,
    failed_paths: &mut HashMap<(String, String), Vec<FailedAt>>,
) -> Settled {
    let mut records = Vec::new();
    let mut counts = Counts::default();
    let mut failed_lines = Vec::new();
    let mut kinds = Vec::new();
    // Failed lines of this batch, and earlier failures that a line of
    // it supersedes by applying the same file (SPEC: the latest
    // applied line wins; such a failure is no longer outstanding).
    let mut failures: Vec<ItemFailed> = Vec::new();
    let mut resolved: Vec<FailedAt> = Vec::new();
    for it in &batch.items {
        let op_failure = outcomes
            .get(it.ops.clone())
            .unwrap_or_default()
            .iter()
            .find_map(|o| match o {
                OpOutcome::Failed { message, .. } => Some(message.clone()),
                OpOutcome::Ok => None,
            });
        let (repo, path, kind, reason, c) = match (&it.planned, op_failure) {
            (
                Planned::Ops {
                    repo, path, counts, ..
                },
                Some(msg),
            ) => {
                // The index refused the line: it counts as failed, not
                // as indexed or removed (its retry counts those).
                let c = Counts {
                    upserted: 0,
                    deleted: 0,
                    reconciled: 0,
                    skipped: 0,
                    failed: counts.failed + 1,
                    ..*counts
                };
                (
                    repo.clone(),
                    path.clone(),
                    Some(FailureKind::Target),
                    msg,
                    c,
                )
            }
            (
                Planned::Ops {
                    repo, path, counts, ..
                },
                None,
            ) => {
                if !path.is_empty() {
                    failures.retain(|f| !(f.repo == *repo && f.path == *path));
                    if let Some(earlier) = failed_paths.remove(&(repo.clone(), path.clone())) {
                        resolved.extend(earlier);
                    }
                }
                (String::new(), String::new(), None, String::new(), *counts)
            }
            (Planned::Changeset(cs), _) => {
                records.push(Record::ChangesetSeen(cs.clone()));
                let c = Counts {
                    lines: 1,
                    changeset: 1,
                    ..Counts::default()
                };
                (String::new(), String::new(), None, String::new(), c)
            }
            (
                Planned::Failed {
                    repo,
                    path,
                    kind,
                    reason,
                    counts,
                },
                _,
            ) => (
                repo.clone(),
                path.clone(),
                Some(*kind),
                reason.clone(),
                *counts,
            ),
        };
        counts.add_all(&c);
        if let Some(kind) = kind {
            kinds.push(kind);
            let attempts = prior_attempts(&batch.fingerprint, it.offset) + 1;
            failed_lines.push(SyncEvent::Failed {
                line: it.line,
                offset: it.offset,
                repo: repo.clone(),
                path: path.clone(),
                reason: reason.clone(),
                kind: kind.as_str(),
            });
            failures.push(ItemFailed {
                run_id,
                fingerprint: batch.fingerprint,
                line: it.line,
                offset: it.offset,
                end: it.end,
                repo,
                path,
                kind,
                reason,
                attempts,
            });
        }
    }
    for f in &failures {
        if !f.path.is_empty() {
            failed_paths
                .entry((f.repo.clone(), f.path.clone()))
                .or_default()
                .push((f.fingerprint, f.offset));
        }
    }
    records.extend(failures.into_iter().map(Record::ItemFailed));
    records.push(Record::BatchDone(BatchDone {
        run_id,
        fingerprint: batch.fingerprint,
        seq: batch.seq,
        spans: batch.spans.clone(),
        counts,
    }));
    if !resolved.is_empty() {
        records.push(Record::FailuresResolved(FailuresResolved {
            run_id,
            entries: resolved,
        }));
    }
    Settled {
        records,
        counts,
        failed_lines,
        kinds,
    }
}

impl Syncer<'_> {
    /// Settle a batch and account for it: its records join the group commit,
    /// its counts the run's, its lines the progress report.
    pub(super) fn finish_batch(&mut self, batch: Batch, outcomes: &[OpOutcome]) {
        let state = &self.state;
        let prior = |fp: &[u8; 32], offset: u64| {
            state
                .manifest(fp)
                .and_then(|m| m.failed.get(&offset))
                .map(|f| f.attempts)
                .unwrap_or(0)
        };
        let Settled {
            mut records,
            counts,
            failed_lines,
            kinds,
        } = settle(
            &batch,
            outcomes,
            self.run_id,
            &prior,
            &mut self.failed_paths,
        );
        for kind in kinds {
            self.failure_kinds
                .entry(kind.as_str())
                .or_insert((kind, 0))
                .1 += 1;
        }
        self.group.append(&mut records);
        self.counts.add_all(&counts);
        let throttled = self.throttled_since_last_line();
        self.group_msgs.push(SyncEvent::Batch {
            retried: batch.retry_pass,
            lines: batch.spans.iter().map(|s| s.next_line - s.first_line).sum(),
            first_line: batch.spans.first().map(|s| s.first_line).unwrap_or(0),
            last_line: batch.spans.last().map(|s| s.next_line - 1).unwrap_or(0),
            success: batch.items.len() as u64 - counts.failed,
            failed: counts.failed,
            stopping: self.opts.on_error == OnError::Stop,
            throttled,
        });
        self.group_msgs.extend(failed_lines);
        if counts.failed > 0 && self.opts.on_error == OnError::Stop {
            self.stop_with(StopReason::OnErrorStop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: [u8; 32] = [7; 32];

    fn ops_item(line: u64, path: &str, ops: std::ops::Range<usize>) -> Item {
        Item {
            line,
            offset: line * 10,
            end: line * 10 + 10,
            planned: Planned::Ops {
                repo: "R".into(),
                path: path.into(),
                ops: Vec::new(),
                counts: Counts {
                    lines: 1,
                    add: 1,
                    upserted: 1,
                    ..Counts::default()
                },
            },
            ops,
        }
    }

    fn failed_item(line: u64, path: &str, kind: FailureKind) -> Item {
        Item {
            line,
            offset: line * 10,
            end: line * 10 + 10,
            planned: Planned::Failed {
                repo: "R".into(),
                path: path.into(),
                kind,
                reason: "why".into(),
                counts: Counts {
                    lines: 1,
                    failed: 1,
                    ..Counts::default()
                },
            },
            ops: 0..0,
        }
    }

    fn batch(items: Vec<Item>) -> Batch {
        let n = items.len() as u64;
        Batch {
            seq: 1,
            fingerprint: FP,
            spans: vec![Span {
                start: 10,
                end: 10 + 10 * n,
                first_line: 1,
                next_line: 1 + n,
            }],
            items,
            retry_pass: false,
        }
    }

    fn refused() -> OpOutcome {
        OpOutcome::Failed {
            retryable: false,
            message: "refused".into(),
        }
    }

    fn names(records: &[Record]) -> Vec<&'static str> {
        records.iter().map(Record::name).collect()
    }

    fn failures(s: &Settled) -> Vec<(u64, FailureKind, u32)> {
        s.records
            .iter()
            .filter_map(|r| match r {
                Record::ItemFailed(f) => Some((f.line, f.kind, f.attempts)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn settle_turns_outcomes_into_records_and_counts() {
        fn no_prior(_: &[u8; 32], _: u64) -> u32 {
            0
        }
        fn prior_two(_: &[u8; 32], _: u64) -> u32 {
            2
        }
        struct Case {
            what: &'static str,
            items: Vec<Item>,
            outcomes: Vec<OpOutcome>,
            prior: &'static dyn Fn(&[u8; 32], u64) -> u32,
            earlier: Vec<(&'static str, FailedAt)>,
            records: Vec<&'static str>,
            failed: Vec<(u64, FailureKind, u32)>,
            upserted: u64,
            failed_count: u64,
            resolved: Vec<FailedAt>,
        }
        // What a case does not say: one line applied, nothing earlier.
        let applied = || Case {
            what: "applied",
            items: vec![ops_item(1, "a", 0..1)],
            outcomes: vec![OpOutcome::Ok],
            prior: &no_prior,
            earlier: vec![],
            records: vec!["BatchDone"],
            failed: vec![],
            upserted: 1,
            failed_count: 0,
            resolved: vec![],
        };
        // A line failed, and nothing indexed.
        let one_failed = || Case {
            records: vec!["ItemFailed", "BatchDone"],
            upserted: 0,
            failed_count: 1,
            ..applied()
        };
        let cases = vec![
            applied(),
            Case {
                what: "refused by the index: failed, not indexed; attempts go on",
                outcomes: vec![refused()],
                prior: &prior_two,
                failed: vec![(1, FailureKind::Target, 3)],
                ..one_failed()
            },
            Case {
                what: "a malformed line is failed like any other",
                items: vec![failed_item(1, "", FailureKind::Malformed)],
                outcomes: vec![],
                failed: vec![(1, FailureKind::Malformed, 1)],
                ..one_failed()
            },
            Case {
                what: "a later line of the batch applying the file supersedes its failure",
                items: vec![
                    failed_item(1, "a", FailureKind::Source),
                    ops_item(2, "a", 0..1),
                ],
                failed_count: 1,
                ..applied()
            },
            Case {
                what: "an earlier line failing after the file was applied stays failed",
                items: vec![
                    ops_item(1, "a", 0..1),
                    failed_item(2, "a", FailureKind::Source),
                ],
                failed: vec![(2, FailureKind::Source, 1)],
                upserted: 1,
                ..one_failed()
            },
            Case {
                what: "failures of earlier batches or runs for the file are resolved",
                items: vec![ops_item(1, "a", 0..1), ops_item(2, "b", 1..2)],
                outcomes: vec![OpOutcome::Ok, refused()],
                earlier: vec![
                    ("a", ([1; 32], 5)),
                    ("a", ([2; 32], 9)),
                    ("b", ([1; 32], 7)),
                ],
                records: vec!["ItemFailed", "BatchDone", "FailuresResolved"],
                failed: vec![(2, FailureKind::Target, 1)],
                failed_count: 1,
                resolved: vec![([1; 32], 5), ([2; 32], 9)],
                ..applied()
            },
        ];
        for c in cases {
            let mut paths: HashMap<(String, String), Vec<FailedAt>> = HashMap::new();
            for (p, at) in &c.earlier {
                paths
                    .entry(("R".into(), (*p).into()))
                    .or_default()
                    .push(*at);
            }
            let s = settle(&batch(c.items), &c.outcomes, 4, c.prior, &mut paths);
            assert_eq!(names(&s.records), c.records, "{}", c.what);
            assert_eq!(failures(&s), c.failed, "{}", c.what);
            assert_eq!(s.counts.upserted, c.upserted, "{}", c.what);
            assert_eq!(s.counts.failed, c.failed_count, "{}", c.what);
            assert_eq!(s.failed_lines.len() as u64, c.failed_count, "{}", c.what);
            let resolved: Vec<FailedAt> = s
                .records
                .iter()
                .filter_map(|r| match r {
                    Record::FailuresResolved(f) => Some(f.entries.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(resolved, c.resolved, "{}", c.what);
            // The map loses what was resolved and learns the new failures.
            for at in &c.resolved {
                assert!(!paths.values().flatten().any(|x| x == at), "{}", c.what);
            }
            assert_eq!(
                paths.values().flatten().filter(|at| at.0 == FP).count(),
                c.failed
                    .iter()
                    .filter(|f| f.1 != FailureKind::Malformed)
                    .count(),
                "{}",
                c.what
            );
        }
    }

    #[test]
    fn a_changeset_line_is_recorded_as_seen() {
        let item = Item {
            line: 1,
            offset: 0,
            end: 10,
            planned: Planned::Changeset(ChangesetSeen {
                run_id: 4,
                fingerprint: FP,
                line: 1,
                repo: "R".into(),
                commit: "abc".into(),
                branch: None,
                parent: None,
                base: false,
            }),
            ops: 0..0,
        };
        let s = settle(&batch(vec![item]), &[], 4, &|_, _| 0, &mut HashMap::new());
        assert_eq!(names(&s.records), vec!["ChangesetSeen", "BatchDone"]);
        assert_eq!(s.counts.changeset, 1);
    }
}
