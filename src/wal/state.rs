//! The state the WAL describes: replaying records into a [`State`] is how
//! recovery finds the resume point, and a compacted log starts from a
//! snapshot of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::*;

/// How many fully applied manifests (without failures) are remembered, so
/// running one of them again is a no-op. Older ones are forgotten by
/// compaction; running such an old manifest again re-applies it, which is
/// harmless (every line is idempotent).
pub const REMEMBERED_COMPLETE_MANIFESTS: usize = 32;

/// A line that failed and is not yet applied: its `ItemFailed` record, as
/// the last run that tried it wrote it.
pub type FailedEntry = ItemFailed;

/// The commit whose changes a sync has fully applied, per repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedChangeset {
    pub commit: String,
    pub branch: Option<String>,
    pub parent: Option<String>,
}

/// Progress through one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestProgress {
    pub id: ManifestId,
    pub total_lines: u64,
    /// Byte ranges applied, sorted and merged.
    pub done: Vec<Span>,
    /// Failed lines by byte offset.
    pub failed: BTreeMap<u64, FailedEntry>,
    /// `new_changeset` lines seen, waiting for their repo to be fully applied.
    pub changesets: Vec<ChangesetSeen>,
    pub counts: Counts,
    pub abandoned: bool,
    pub last_run_id: u64,
}

impl ManifestProgress {
    fn new(id: ManifestId, total_lines: u64, run_id: u64) -> Self {
        ManifestProgress {
            id,
            total_lines,
            done: Vec::new(),
            failed: BTreeMap::new(),
            changesets: Vec::new(),
            counts: Counts::default(),
            abandoned: false,
            last_run_id: run_id,
        }
    }

    /// Where a plain resume starts: the end of the contiguous applied prefix.
    pub fn resume_point(&self) -> (u64, u64) {
        match self.done.first() {
            Some(s) if s.start == 0 => (s.end, s.next_line),
            _ => (0, 1),
        }
    }

    /// Every byte has been through a batch (failed lines included).
    pub fn all_lines_seen(&self) -> bool {
        self.resume_point().0 >= self.id.size
    }

    /// Every line applied: nothing left to do.
    pub fn complete(&self) -> bool {
        self.all_lines_seen() && self.failed.is_empty()
    }

    /// Lines applied or given up on so far.
    pub fn lines_done(&self) -> u64 {
        self.done
            .iter()
            .map(|s| s.next_line.saturating_sub(s.first_line))
            .fold(0u64, u64::saturating_add)
    }

    /// Whether the byte at `offset` lies in an applied range.
    pub fn is_done(&self, offset: u64) -> bool {
        let i = self.done.partition_point(|s| s.end <= offset);
        self.done.get(i).is_some_and(|s| s.start <= offset)
    }

    /// The first applied range starting at or after `offset`.
    pub fn next_done_after(&self, offset: u64) -> Option<Span> {
        let i = self.done.partition_point(|s| s.end <= offset);
        self.done.get(i).copied()
    }

    fn mark_done(&mut self, span: Span) {
        if span.end <= span.start {
            return;
        }
        if !is_merged(&self.done) {
            // Only a snapshot written by something else than this code could
            // hold such a list: sort and merge it whole, as always.
            self.done.push(span);
            self.done.sort_by_key(|s| s.start);
            let mut merged: Vec<Span> = Vec::with_capacity(self.done.len());
            for s in self.done.drain(..) {
                merge_into(&mut merged, s);
            }
            self.done = merged;
            return;
        }
        // The list is sorted and merged: the new span goes after every range
        // starting at or before it (where a stable sort would put it), joins
        // the range before it if they touch, and swallows the ranges after it
        // that it reaches. Same result as sorting and merging the whole list,
        // without allocating.
        let i = self.done.partition_point(|s| s.start <= span.start);
        let at = match i
            .checked_sub(1)
            .and_then(|p| Some((p, self.done.get_mut(p)?)))
        {
            Some((p, prev)) if span.start <= prev.end => {
                extend(prev, &span);
                p
            }
            _ => {
                self.done.insert(i, span);
                i
            }
        };
        let mut upto = at + 1;
        while let Some(&next) = self.done.get(upto) {
            let Some(cur) = self.done.get_mut(at) else {
                break;
            };
            if next.start > cur.end {
                break;
            }
            extend(cur, &next);
            upto += 1;
        }
        self.done.drain(at + 1..upto);
    }

    fn failed_repos(&self) -> impl Iterator<Item = &str> {
        self.failed.values().map(|f| f.repo.as_str())
    }
}

/// Sorted by start, and no range reaches the next: what sorting and merging
/// leaves.
fn is_merged(done: &[Span]) -> bool {
    done.windows(2)
        .all(|w| w[0].start <= w[1].start && w[0].end < w[1].start)
}

/// Grow `last` over `s` (which starts inside or right after it).
fn extend(last: &mut Span, s: &Span) {
    if s.end > last.end {
        last.end = s.end;
        last.next_line = s.next_line;
    }
}

/// One step of merging a list sorted by start.
fn merge_into(merged: &mut Vec<Span>, s: Span) {
    match merged.last_mut() {
        Some(last) if s.start <= last.end => extend(last, &s),
        _ => merged.push(s),
    }
}

/// A run, as the status document shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: u64,
    pub started_ms: u64,
    pub pid: u32,
    pub target: String,
    pub finished_ms: Option<u64>,
    pub status: Option<RunStatus>,
    pub counts: Counts,
    pub message: Option<String>,
    /// Fingerprint of the manifest it last worked on.
    pub manifest: Option<[u8; 32]>,
}

/// Everything recovery knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub next_run_id: u64,
    pub last_run: Option<RunSummary>,
    pub last_successful_run_ms: Option<u64>,
    pub manifests: Vec<ManifestProgress>,
    pub repos: BTreeMap<String, AppliedChangeset>,
    /// Failures of the batch being replayed, until its `BatchDone`.
    #[serde(skip)]
    pending_failures: Vec<ItemFailed>,
    #[serde(skip)]
    pending_changesets: Vec<ChangesetSeen>,
    /// The index this state dir belongs to: the last `TargetBound`.
    /// Encoded last, and only in a `SnapshotV2` (type 12).
    pub target: Option<TargetIdentity>,
}

/// [`State`] as a type-8 snapshot holds it: every field but `target`, in
/// the same order. Only decoded.
#[derive(Deserialize)]
pub(crate) struct StateV1 {
    next_run_id: u64,
    last_run: Option<RunSummary>,
    last_successful_run_ms: Option<u64>,
    manifests: Vec<ManifestProgress>,
    repos: BTreeMap<String, AppliedChangeset>,
}

/// [`StateV1`]'s layout, borrowed from a [`State`]: what a type-8 snapshot
/// encodes. (A slice encodes as a `Vec` does.)
#[derive(Serialize)]
pub(crate) struct StateV1Ref<'a> {
    next_run_id: u64,
    last_run: &'a Option<RunSummary>,
    last_successful_run_ms: &'a Option<u64>,
    manifests: &'a [ManifestProgress],
    repos: &'a BTreeMap<String, AppliedChangeset>,
}

impl State {
    /// A type-8 snapshot's state: no target recorded.
    pub(crate) fn from_v1(v: StateV1) -> State {
        State {
            next_run_id: v.next_run_id,
            last_run: v.last_run,
            last_successful_run_ms: v.last_successful_run_ms,
            manifests: v.manifests,
            repos: v.repos,
            ..State::default()
        }
    }

    /// What a type-8 snapshot of this state encodes (the target is left out).
    pub(crate) fn as_v1(&self) -> StateV1Ref<'_> {
        StateV1Ref {
            next_run_id: self.next_run_id,
            last_run: &self.last_run,
            last_successful_run_ms: &self.last_successful_run_ms,
            manifests: &self.manifests,
            repos: &self.repos,
        }
    }

    pub fn manifest(&self, fingerprint: &[u8; 32]) -> Option<&ManifestProgress> {
        self.manifests
            .iter()
            .find(|m| &m.id.fingerprint == fingerprint)
    }

    pub fn manifest_for(&self, id: &ManifestId) -> Option<&ManifestProgress> {
        self.manifests.iter().find(|m| m.id.same_content(id))
    }

    fn manifest_mut(&mut self, fingerprint: &[u8; 32]) -> Option<&mut ManifestProgress> {
        self.manifests
            .iter_mut()
            .find(|m| &m.id.fingerprint == fingerprint)
    }

    /// Manifests with lines never applied, that were not abandoned.
    pub fn unfinished(&self) -> impl Iterator<Item = &ManifestProgress> {
        self.manifests
            .iter()
            .filter(|m| !m.abandoned && !m.all_lines_seen())
    }

    /// All failed items still outstanding, oldest manifest first.
    pub fn outstanding_failures(&self) -> impl Iterator<Item = (&ManifestProgress, &FailedEntry)> {
        self.manifests
            .iter()
            .filter(|m| !m.abandoned)
            .flat_map(|m| m.failed.values().map(move |f| (m, f)))
    }

    /// How many failed lines are outstanding (dead letters included), in
    /// manifests not abandoned: what keeps a run from being `complete`.
    pub fn outstanding_count(&self) -> u64 {
        self.manifests
            .iter()
            .filter(|m| !m.abandoned)
            .map(|m| m.failed.len() as u64)
            .fold(0, u64::saturating_add)
    }

    /// Apply one record. Records that name an unknown manifest are ignored
    /// (they can only follow a compaction that dropped it).
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::RunStarted(r) => {
                self.pending_failures.clear();
                self.pending_changesets.clear();
                self.next_run_id = self.next_run_id.max(r.run_id.saturating_add(1));
                self.last_run = Some(RunSummary {
                    run_id: r.run_id,
                    started_ms: r.started_ms,
                    pid: r.pid,
                    target: r.target.clone(),
                    finished_ms: None,
                    status: None,
                    counts: Counts::default(),
                    message: None,
                    manifest: None,
                });
            }
            Record::ManifestStarted(r) => {
                if let Some(run) = self.last_run.as_mut() {
                    run.manifest = Some(r.manifest.fingerprint);
                }
                let m = match self
                    .manifests
                    .iter()
                    .position(|m| m.id.same_content(&r.manifest))
                {
                    Some(i) => {
                        let mut m = self.manifests.remove(i);
                        m.id.path = r.manifest.path.clone();
                        m.last_run_id = r.run_id;
                        m.abandoned = false;
                        m
                    }
                    None => ManifestProgress::new(r.manifest.clone(), r.total_lines, r.run_id),
                };
                // Most recently used last.
                self.manifests.push(m);
                if let Some((offset, line)) = r.from {
                    if let Some(m) = self.manifests.last_mut() {
                        m.done.clear();
                        m.failed.retain(|&o, _| o < offset);
                        m.mark_done(Span {
                            start: 0,
                            end: offset,
                            first_line: 1,
                            next_line: line,
                        });
                    }
                }
            }
            Record::ItemFailed(r) => self.pending_failures.push(r.clone()),
            Record::ChangesetSeen(r) => self.pending_changesets.push(r.clone()),
            Record::BatchDone(r) => {
                self.batch_done(&r.fingerprint, r.spans.iter().copied(), &r.counts)
            }
            Record::RunFinished(r) => {
                if let Some(run) = self.last_run.as_mut() {
                    if run.run_id == r.run_id {
                        run.finished_ms = Some(r.finished_ms);
                        run.status = Some(r.status);
                        run.counts = r.counts;
                        run.message = r.message.clone();
                    }
                }
                if r.status == RunStatus::Complete {
                    self.last_successful_run_ms = Some(r.finished_ms);
                }
            }
            Record::ManifestAbandoned(r) => {
                if let Some(m) = self.manifest_mut(&r.fingerprint) {
                    m.abandoned = true;
                }
            }
            Record::Snapshot(s) | Record::SnapshotV2(s) => {
                *self = (**s).clone();
            }
            Record::ManifestRestarted(r) => {
                if let Some(m) = self.manifest_mut(&r.fingerprint) {
                    // Applied again from line 1: nothing counts as done (so a
                    // kill midway resumes it), the pass's counters start over,
                    // and its failed lines stay outstanding.
                    m.done.clear();
                    m.counts = Counts::default();
                }
            }
            Record::TargetBound(t) => self.target = Some(t.clone()),
            Record::FailuresResolved(r) => self.resolve_failures(&r.entries),
        }
    }

    /// Forget failed lines a later line made good; unknown ones are ignored.
    /// A repo's changeset waiting on one of them may become applied.
    fn resolve_failures(&mut self, entries: &[([u8; 32], u64)]) {
        let mut touched: Vec<[u8; 32]> = Vec::new();
        for (fingerprint, offset) in entries {
            let Some(m) = self.manifest_mut(fingerprint) else {
                continue;
            };
            if m.failed.remove(offset).is_some() && !touched.contains(fingerprint) {
                touched.push(*fingerprint);
            }
        }
        for fingerprint in &touched {
            self.promote_changesets(fingerprint);
        }
    }

    /// Apply one record, taking it: what [`State::apply`] does, without
    /// copying the failures, changesets or snapshot it carries.
    pub fn apply_owned(&mut self, record: Record) {
        match record {
            Record::ItemFailed(r) => self.pending_failures.push(r),
            Record::ChangesetSeen(r) => self.pending_changesets.push(r),
            Record::Snapshot(s) | Record::SnapshotV2(s) => *self = *s,
            other => self.apply(&other),
        }
    }

    /// Apply a `BatchDone` read in place (replay's path; see
    /// [`BatchDoneView`]). Same effect as applying the decoded record.
    pub fn apply_batch_done(&mut self, r: &BatchDoneView<'_>) {
        self.batch_done(r.fingerprint, r.spans(), &r.counts);
    }

    fn batch_done(
        &mut self,
        fingerprint: &[u8; 32],
        spans: impl Iterator<Item = Span>,
        counts: &Counts,
    ) {
        let failures = std::mem::take(&mut self.pending_failures);
        let changesets = std::mem::take(&mut self.pending_changesets);
        if let Some(run) = self.last_run.as_mut() {
            run.counts.add_all(counts);
        }
        let Some(m) = self.manifest_mut(fingerprint) else {
            return;
        };
        for span in spans {
            // An empty or inverted span marks nothing (and must not reach
            // `BTreeMap::range`, which panics on an inverted range).
            if span.end <= span.start {
                continue;
            }
            if !m.failed.is_empty() {
                let gone: Vec<u64> = m
                    .failed
                    .range(span.start..span.end)
                    .map(|(&o, _)| o)
                    .collect();
                for o in gone {
                    m.failed.remove(&o);
                }
            }
            m.mark_done(span);
        }
        for f in failures {
            m.failed.insert(f.offset, f);
        }
        for c in changesets {
            if !m.changesets.iter().any(|x| x.line == c.line) {
                m.changesets.push(c);
            }
        }
        m.counts.add_all(counts);
        self.promote_changesets(fingerprint);
    }

    /// A repo's `new_changeset` counts as applied once every line of its
    /// manifest has been through a batch and none of that repo's lines is
    /// still failed.
    fn promote_changesets(&mut self, fingerprint: &[u8; 32]) {
        let Some(m) = self.manifest(fingerprint) else {
            return;
        };
        if !m.all_lines_seen() || m.changesets.is_empty() {
            return;
        }
        let failed: Vec<String> = m.failed_repos().map(str::to_owned).collect();
        let (ready, waiting): (Vec<_>, Vec<_>) = m
            .changesets
            .iter()
            .cloned()
            .partition(|c| !failed.contains(&c.repo));
        for c in ready.into_iter().filter(|c| c.base) {
            self.repos.insert(
                c.repo.clone(),
                AppliedChangeset {
                    commit: c.commit,
                    branch: c.branch,
                    parent: c.parent,
                },
            );
        }
        if let Some(m) = self.manifest_mut(fingerprint) {
            m.changesets = waiting;
        }
    }

    /// The state to snapshot at compaction: completed manifests beyond the
    /// most recent few are dropped, as are abandoned ones.
    pub fn compacted(&self) -> State {
        let mut s = self.clone();
        s.pending_failures.clear();
        s.pending_changesets.clear();
        let mut complete_seen = 0;
        let mut keep = vec![true; s.manifests.len()];
        for (i, m) in s.manifests.iter().enumerate().rev() {
            if m.abandoned && m.failed.is_empty() {
                keep[i] = false;
            } else if m.complete() {
                complete_seen += 1;
                keep[i] = complete_seen <= REMEMBERED_COMPLETE_MANIFESTS;
            }
        }
        let mut it = keep.into_iter();
        s.manifests.retain(|_| it.next().unwrap_or(true));
        for m in &mut s.manifests {
            if m.complete() {
                m.counts = Counts::default();
            }
        }
        s
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
