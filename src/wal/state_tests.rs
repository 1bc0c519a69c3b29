//! Unit and property tests of replaying records into a [`State`]: resume
//! points, failures kept until covered, torn batches, extreme values, and
//! the span merge against a sort-and-merge model.

use super::*;
use proptest::prelude::*;

fn mid(size: u64) -> ManifestId {
    ManifestId {
        path: "/m.jsonl".into(),
        size,
        fingerprint: [7; 32],
        spooled: false,
    }
}

fn span(start: u64, end: u64, first: u64, next: u64) -> Span {
    Span {
        start,
        end,
        first_line: first,
        next_line: next,
    }
}

/// Batch `seq` of manifest [7; 32], done over `span`.
fn batch(seq: u64, span: Span) -> Record {
    Record::BatchDone(BatchDone {
        run_id: 1,
        fingerprint: [7; 32],
        seq,
        spans: vec![span],
        counts: Counts::default(),
    })
}

/// Apply [`batch`] `seq` over `span` to `s`; manifest [7; 32] after it.
fn after_batch(s: &mut State, seq: u64, span: Span) -> &ManifestProgress {
    s.apply(&batch(seq, span));
    s.manifest(&[7; 32]).unwrap()
}

/// Line 3 (bytes 20..30) of manifest [7; 32] failed to read.
fn failed_line_3() -> Record {
    Record::ItemFailed(ItemFailed {
        run_id: 1,
        fingerprint: [7; 32],
        line: 3,
        offset: 20,
        end: 30,
        repo: "r".into(),
        path: "p".into(),
        kind: FailureKind::Source,
        reason: "x".into(),
        attempts: 1,
    })
}

/// A run started (the writer tests' [`started`](crate::wal::tests::started))
/// and manifest [7; 32] of 300 bytes, 30 lines, started in it.
fn started() -> Vec<Record> {
    vec![
        crate::wal::tests::started(1),
        Record::ManifestStarted(ManifestStarted {
            run_id: 1,
            manifest: mid(300),
            total_lines: 30,
            from: None,
        }),
    ]
}

/// A state replayed from `records`.
fn replayed<'a>(records: impl IntoIterator<Item = &'a Record>) -> State {
    let mut s = State::default();
    for r in records {
        s.apply(r);
    }
    s
}

/// A crafted or damaged log that still frames and decodes (huge counts,
/// the largest run id, a span whose lines run backwards) is replayed
/// without an overflow panic.
#[test]
fn extreme_values_in_the_log_never_overflow() {
    let mut recs = started();
    if let Record::RunStarted(r) = &mut recs[0] {
        r.run_id = u64::MAX;
    }
    let mut s = replayed(&recs);
    let huge = Counts {
        lines: u64::MAX,
        failed: u64::MAX,
        ..Counts::default()
    };
    for seq in 0..2 {
        s.apply(&Record::BatchDone(BatchDone {
            run_id: 1,
            fingerprint: [7; 32],
            seq,
            spans: vec![span(0, 10, u64::MAX, 1), span(20, 30, 0, u64::MAX)],
            counts: huge,
        }));
    }
    let m = s.manifest(&[7; 32]).unwrap();
    assert_eq!(m.counts.lines, u64::MAX);
    assert_eq!(m.lines_done(), u64::MAX);
    assert_eq!(s.next_run_id, u64::MAX);
}

#[test]
fn resume_point_is_the_contiguous_prefix_only() {
    let mut s = replayed(&started());
    let m = after_batch(&mut s, 2, span(100, 200, 11, 21));
    assert_eq!(m.resume_point(), (0, 1));
    assert!(m.is_done(150) && !m.is_done(50) && !m.is_done(200));
    let m = after_batch(&mut s, 1, span(0, 100, 1, 11));
    assert_eq!(m.resume_point(), (200, 21));
    assert!(!m.complete());
    assert!(after_batch(&mut s, 3, span(200, 300, 21, 31)).complete());
}

#[test]
fn failures_are_kept_until_a_later_batch_covers_them() {
    let mut s = replayed(&[started(), vec![failed_line_3()]].concat());
    let m = after_batch(&mut s, 1, span(0, 300, 1, 31));
    assert_eq!(m.failed.len(), 1);
    assert!(m.all_lines_seen() && !m.complete());
    assert!(after_batch(&mut s, 2, span(20, 30, 3, 4)).complete());
}

#[test]
fn a_torn_batch_leaves_no_failures_behind() {
    // The BatchDone after the failure was torn away; the next run starts.
    let mut s = replayed(&[started(), vec![failed_line_3()], started()].concat());
    assert!(after_batch(&mut s, 1, span(0, 300, 1, 31)).complete());
}

/// `mark_done` as it was: push, sort, merge the whole list.
fn reference_mark_done(done: &mut Vec<Span>, span: Span) {
    if span.end <= span.start {
        return;
    }
    done.push(span);
    done.sort_by_key(|s| s.start);
    let mut merged: Vec<Span> = Vec::with_capacity(done.len());
    for s in done.drain(..) {
        match merged.last_mut() {
            Some(last) if s.start <= last.end => {
                if s.end > last.end {
                    last.end = s.end;
                    last.next_line = s.next_line;
                }
            }
            _ => merged.push(s),
        }
    }
    *done = merged;
}

fn small_span() -> impl Strategy<Value = Span> {
    (0u64..60, 0u64..20, 0u64..1000).prop_map(|(start, len, line)| {
        // Mostly forward spans, a few empty or inverted ones.
        let end = if len >= 18 {
            start.saturating_sub(len - 17)
        } else {
            start + len
        };
        span(start, end, line, line + len)
    })
}

proptest! {
    /// The in-place merge gives what sorting and merging the whole list
    /// gave, from any list: one built by marking (sorted and merged) or
    /// an arbitrary one (a snapshot could hold anything).
    #[test]
    fn mark_done_matches_sort_and_merge(
        first in proptest::collection::vec(small_span(), 0..8),
        raw in any::<bool>(),
        then in proptest::collection::vec(small_span(), 1..12),
    ) {
        let mut m = ManifestProgress::new(mid(100), 10, 1);
        let mut want = Vec::new();
        if raw {
            m.done = first.clone();
            want = first;
        } else {
            for s in first {
                m.mark_done(s);
                reference_mark_done(&mut want, s);
            }
        }
        prop_assert_eq!(&m.done, &want);
        for s in then {
            m.mark_done(s);
            reference_mark_done(&mut want, s);
            prop_assert_eq!(&m.done, &want);
        }
    }
}

#[test]
fn an_inverted_span_in_a_batch_is_ignored_not_a_panic() {
    let mut s = replayed(&[started(), vec![failed_line_3()]].concat());
    s.apply(&batch(1, span(0, 100, 1, 11)));
    let m = after_batch(&mut s, 2, span(200, 150, 21, 31));
    assert_eq!(m.done, vec![span(0, 100, 1, 11)]);
    assert_eq!(m.failed.keys().copied().collect::<Vec<_>>(), vec![20]);
}
