//! Unit and property tests of the record codec: the zero-copy batch view
//! reads what was encoded, and refuses what the decoder refuses.

use super::*;
use proptest::prelude::*;

fn payload_of(r: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(&mut out);
    out.split_off(super::super::format::RECORD_HEADER_LEN)
}

/// The in-place reader and the decoder agree on `payload`: both accept it
/// with the same values, or both refuse it.
fn agree(payload: &[u8]) {
    let decoded = Record::decode(3, payload).ok();
    let viewed = BatchDoneView::parse(payload).map(|v| Record::BatchDone(v.to_owned()));
    assert_eq!(viewed, decoded);
}

fn span() -> impl Strategy<Value = Span> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c, d)| Span {
        start: a,
        end: b,
        first_line: c,
        next_line: d,
    })
}

fn batch_done() -> impl Strategy<Value = BatchDone> {
    (
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        proptest::collection::vec(span(), 0..5),
        any::<[u64; 12]>(),
    )
        .prop_map(|(run_id, fingerprint, seq, spans, c)| BatchDone {
            run_id,
            fingerprint,
            seq,
            spans,
            counts: Counts {
                lines: c[0],
                add: c[1],
                update: c[2],
                delete: c[3],
                rename: c[4],
                changeset: c[5],
                prune: c[6],
                upserted: c[7],
                deleted: c[8],
                reconciled: c[9],
                skipped: c[10],
                failed: c[11],
            },
        })
}

proptest! {
    #[test]
    fn batch_done_view_reads_what_was_encoded(b in batch_done()) {
        let r = Record::BatchDone(b.clone());
        let payload = payload_of(&r);
        let v = BatchDoneView::parse(&payload);
        prop_assert_eq!(v.map(|v| v.to_owned()), Some(b));
        prop_assert_eq!(BatchDoneView::parse_record(2, &payload), None);
        agree(&payload);
    }

    #[test]
    fn batch_done_view_refuses_what_the_decoder_refuses(
        b in batch_done(),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..40),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let payload = payload_of(&Record::BatchDone(b));
        agree(&payload[..cut.index(payload.len())]);
        let mut longer = payload.clone();
        longer.extend_from_slice(&extra);
        agree(&longer);
        // A damaged span count: too many or too few spans for the bytes.
        let mut flipped = payload.clone();
        let at = 48 + flip.index(8);
        flipped[at] ^= 1 << bit;
        agree(&flipped);
    }

    #[test]
    fn batch_done_view_agrees_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        agree(&bytes);
    }
}
