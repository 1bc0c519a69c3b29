//! The WAL's byte format: segment header and record framing.
//!
//! Pure functions over `&[u8]`; no file I/O here, so recovery, `wal inspect`
//! and the fuzz targets share one decoder. The layout is documented in
//! `docs/wal-format.md`; `tests/wal_golden.rs` holds the two together.
//!
//! ```text
//! segment:  [ header 16 B ][ record ][ record ] ... [ zero fill / EOF ]
//! header:   magic "ELYSIWAL" (8) | version u32 LE (4) | crc32(bytes 0..12) u32 LE (4)
//! record:   len u32 LE | type u8 | 0 0 0 | crc32(payload) u32 LE | crc32(bytes 0..12) u32 LE | payload (len B)
//! ```

/// First bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"ELYSIWAL";
/// Format version written in the segment header.
pub const VERSION: u32 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 16;
/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// Largest payload a record may carry. A header that claims more is corrupt
/// (the writer never produces one), so a damaged length cannot make the
/// reader allocate or skip gigabytes.
pub const MAX_PAYLOAD_LEN: usize = 64 << 20;

/// The segment header bytes.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Fewer than 16 bytes: a segment whose creation was cut short.
    Short,
    /// Wrong magic or checksum.
    Damaged,
    /// A version this build does not read.
    Version(u32),
}

/// Check a segment's header.
pub fn check_segment_header(bytes: &[u8]) -> Result<(), HeaderProblem> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(HeaderProblem::Short);
    }
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if bytes[..8] != MAGIC || crc32fast::hash(&bytes[..12]) != crc {
        return Err(HeaderProblem::Damaged);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(HeaderProblem::Version(version));
    }
    Ok(())
}

/// Append one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_LEN);
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let hcrc = crc32fast::hash(&out[start..start + 12]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// One step of decoding a segment body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'a> {
    /// A whole, checksummed record; the next one starts at `next`.
    Record {
        kind: u8,
        payload: &'a [u8],
        next: usize,
    },
    /// Nothing more: end of the bytes, or only zero fill from here on.
    End,
    /// A record that fails its checks and is followed by nothing but zero
    /// bytes: what a write cut short by a crash or a full disk leaves.
    /// `kind` is its type when its header is intact (only its payload is
    /// short or fails its checksum), `None` when the header itself is
    /// damaged or cut short.
    Torn {
        reason: &'static str,
        kind: Option<u8>,
    },
    /// A record that fails its checks while real data follows it: damage
    /// that is not explained by an interrupted append.
    Corrupt { reason: &'static str },
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Decode the record starting at `at` in a segment's bytes.
///
/// The rule that tells a torn tail from corruption: a record that fails any
/// check is *torn* when everything after the damaged part is zero or absent,
/// and *corrupt* otherwise. "The damaged part" is the record's header when the
/// header itself is bad (its length cannot be trusted), else the whole record.
pub fn decode_at(bytes: &[u8], at: usize) -> Step<'_> {
    let rest = match bytes.get(at..) {
        Some(r) => r,
        None => return Step::End,
    };
    if all_zero(rest) {
        return Step::End;
    }
    if rest.len() < RECORD_HEADER_LEN {
        return Step::Torn {
            reason: "record header cut short",
            kind: None,
        };
    }
    let h = &rest[..RECORD_HEADER_LEN];
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let kind = h[4];
    let pcrc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let hcrc = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    let after_header = &rest[RECORD_HEADER_LEN..];
    if crc32fast::hash(&h[..12]) != hcrc || h[5..8] != [0, 0, 0] || kind == 0 {
        return if all_zero(after_header) {
            Step::Torn {
                reason: "record header damaged at the end of the log",
                kind: None,
            }
        } else {
            Step::Corrupt {
                reason: "record header checksum mismatch",
            }
        };
    }
    if len > MAX_PAYLOAD_LEN {
        return Step::Corrupt {
            reason: "record length over the format's limit",
        };
    }
    if after_header.len() < len {
        // The header is intact, so the length is what the writer meant: the
        // payload was cut short.
        return Step::Torn {
            reason: "record payload cut short",
            kind: Some(kind),
        };
    }
    let payload = &after_header[..len];
    if crc32fast::hash(payload) != pcrc {
        return if all_zero(&after_header[len..]) {
            Step::Torn {
                reason: "last record's payload checksum mismatch",
                kind: Some(kind),
            }
        } else {
            Step::Corrupt {
                reason: "record payload checksum mismatch",
            }
        };
    }
    Step::Record {
        kind,
        payload,
        next: at + RECORD_HEADER_LEN + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = segment_header().to_vec();
        for (k, p) in records {
            encode_record(&mut out, *k, p);
        }
        out
    }

    fn decode_all(bytes: &[u8]) -> (Vec<(u8, Vec<u8>)>, Step<'_>) {
        let mut at = SEGMENT_HEADER_LEN;
        let mut recs = Vec::new();
        loop {
            match decode_at(bytes, at) {
                Step::Record {
                    kind,
                    payload,
                    next,
                } => {
                    recs.push((kind, payload.to_vec()));
                    at = next;
                }
                other => return (recs, other),
            }
        }
    }

    #[test]
    fn records_round_trip_and_end_cleanly() {
        let seg = segment(&[(1, b"hello"), (2, b""), (3, &[7u8; 300])]);
        assert_eq!(check_segment_header(&seg), Ok(()));
        let (recs, end) = decode_all(&seg);
        assert_eq!(end, Step::End);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0], (1, b"hello".to_vec()));
        assert_eq!(recs[2].1.len(), 300);
    }

    #[test]
    fn zero_fill_after_records_is_a_clean_end() {
        let mut seg = segment(&[(1, b"abc")]);
        seg.extend_from_slice(&[0u8; 4096]);
        let (recs, end) = decode_all(&seg);
        assert_eq!(recs.len(), 1);
        assert_eq!(end, Step::End);
    }

    #[test]
    fn torn_tail_is_reported_at_every_cut_of_the_last_record() {
        let full = segment(&[(1, b"first"), (2, b"second record payload")]);
        let last_start = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 5;
        for cut in last_start + 1..full.len() {
            let (recs, end) = decode_all(&full[..cut]);
            assert_eq!(recs.len(), 1, "cut at {cut}");
            assert!(matches!(end, Step::Torn { .. }), "cut at {cut}: {end:?}");
        }
    }

    #[test]
    fn flipped_bit_before_the_tail_is_corruption() {
        let full = segment(&[(1, b"first"), (2, b"second"), (3, b"third")]);
        let second = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 5;
        let second_end = second + RECORD_HEADER_LEN + 6;
        for byte in second..second_end {
            for bit in 0..8 {
                let mut bad = full.clone();
                bad[byte] ^= 1 << bit;
                let (recs, end) = decode_all(&bad);
                assert_eq!(recs.len(), 1, "byte {byte} bit {bit}");
                assert!(
                    matches!(end, Step::Corrupt { .. }),
                    "byte {byte} bit {bit}: {end:?}"
                );
            }
        }
    }

    #[test]
    fn header_damage_is_detected() {
        let mut seg = segment(&[]);
        assert_eq!(check_segment_header(&seg[..10]), Err(HeaderProblem::Short));
        seg[3] ^= 1;
        assert_eq!(check_segment_header(&seg), Err(HeaderProblem::Damaged));
    }
}
