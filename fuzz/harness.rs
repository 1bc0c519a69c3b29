//! The properties behind the fuzz targets. The same file is compiled into
//! each `fuzz_targets/*.rs` (libFuzzer, nightly) and into
//! `tests/fuzz_corpora.rs` (stable `cargo test`), so a committed corpus file
//! proves exactly what the fuzzer checked.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use elysiactl::manifest::{Change, LineParser};
use elysiactl::source::Roots;
use elysiactl::wal::{self, format, Record, State};

const SEGMENT: &str = "fuzz.wal";

type Decoded = Result<(Vec<wal::Located>, Option<wal::TornTail>, u64), wal::Error>;

/// What decoding `data` as a segment may allocate at its peak: linear in the
/// input, plus a constant for serde's capped preallocation of sequences
/// (at most 1 MiB per sequence being decoded, a few nested).
pub fn wal_decode_alloc_bound(len: usize) -> usize {
    64 * len + (8 << 20)
}

/// `wal_decode`: arbitrary bytes, as a segment (with and without a valid
/// header in front) and as one record payload.
pub fn wal_decode(data: &[u8]) {
    let path = Path::new(SEGMENT);
    for last in [true, false] {
        check_decoded(data, wal::decode_segment(path, data, last), last);
    }
    let mut framed = format::segment_header().to_vec();
    framed.extend_from_slice(data);
    for last in [true, false] {
        check_decoded(&framed, wal::decode_segment(path, &framed, last), last);
    }
    if let Some((&kind, payload)) = data.split_first() {
        // Replay reads batch records in place: it must accept exactly the
        // payloads the decoder accepts, with the same values.
        if let Some(view) = wal::BatchDoneView::parse_record(kind, payload) {
            assert_eq!(
                Record::decode(kind, payload).ok(),
                Some(Record::BatchDone(view.to_owned()))
            );
        } else if kind == 3 {
            assert!(Record::decode(kind, payload).is_err());
        }
        if let Ok(r) = Record::decode(kind, payload) {
            // The payload codec is canonical: what decodes re-encodes to the
            // same bytes, so `wal inspect` shows exactly what is on disk.
            let mut out = Vec::new();
            r.encode(&mut out);
            assert_eq!(&out[format::RECORD_HEADER_LEN..], payload);
        }
    }
}

/// Whatever the bytes, a decode result describes them consistently.
fn check_decoded(data: &[u8], res: Decoded, last: bool) {
    match res {
        Ok((recs, torn, end)) => {
            let end = end as usize;
            assert!(end <= data.len(), "end {end} past {} bytes", data.len());
            let mut at = format::SEGMENT_HEADER_LEN;
            for l in &recs {
                assert_eq!(l.offset as usize, at, "records are contiguous");
                let stop = at + l.len as usize;
                assert!(stop <= data.len());
                let mut again = Vec::new();
                l.record.encode(&mut again);
                assert_eq!(
                    &data[at..stop],
                    &again[..],
                    "record re-encodes to its bytes"
                );
                at = stop;
            }
            match torn {
                Some(t) => {
                    assert!(last, "a torn tail is only accepted in the newest segment");
                    assert_eq!(t.offset as usize, end);
                    assert_eq!((t.offset + t.dropped_bytes) as usize, data.len());
                    assert!(end == at || (end == 0 && recs.is_empty()));
                }
                None => {
                    assert_eq!(end, at);
                    assert!(
                        data[end..].iter().all(|&b| b == 0),
                        "a clean end has only zero fill after it"
                    );
                }
            }
        }
        Err(e) => match &e {
            wal::Error::Corrupt {
                segment, offset, ..
            } => {
                assert_eq!(*segment, PathBuf::from(SEGMENT));
                let offset = *offset;
                assert!(offset as usize <= data.len());
                assert!(e.to_string().contains(SEGMENT));
            }
            other => panic!("decoding bytes gave a non-corruption error: {other}"),
        },
    }
}

/// A tiny reader of fuzz bytes that never runs out (zeros past the end).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for _ in 0..8 {
            v = (v << 8) | self.u8() as u64;
        }
        v
    }
    fn text(&mut self) -> String {
        let n = (self.u8() % 24) as usize;
        let take = n.min(self.0.len());
        let (s, rest) = self.0.split_at(take);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }
    fn fingerprint(&mut self) -> [u8; 32] {
        let mut f = [0u8; 32];
        f[0] = self.u8();
        f[31] = self.u8();
        f
    }
}

fn record(inp: &mut Input<'_>, state: &State) -> Record {
    use wal::*;
    let run_id = inp.u64() % 1000;
    // Bytes 0xf0.. pick the records added later, so the older corpus keeps
    // (nearly all of) its meaning.
    let pick = inp.u8();
    if pick >= 0xf0 {
        return match pick % 4 {
            0 => Record::ManifestRestarted(ManifestRestarted {
                run_id,
                fingerprint: inp.fingerprint(),
            }),
            1 => Record::TargetBound(TargetIdentity {
                kind: inp.text(),
                server: inp.text(),
                collection: inp.text(),
                chunk_size: inp.u64(),
            }),
            2 => Record::FailuresResolved(FailuresResolved {
                run_id,
                entries: (0..inp.u8() % 4)
                    .map(|_| (inp.fingerprint(), inp.u64() % 10_000))
                    .collect(),
            }),
            _ => Record::SnapshotV2(Box::new(state.compacted())),
        };
    }
    match pick % 6 {
        0 => Record::RunStarted(RunStarted {
            run_id,
            started_ms: inp.u64(),
            pid: inp.u8() as u32,
            version: inp.text(),
            target: inp.text(),
            batch_size: inp.u8() as u32,
            on_error: inp.text(),
            max_retries: inp.u8() as u32,
        }),
        1 => Record::ManifestStarted(ManifestStarted {
            run_id,
            manifest: ManifestId {
                path: inp.text(),
                size: inp.u64() % 10_000,
                fingerprint: inp.fingerprint(),
                spooled: inp.u8() & 1 == 1,
            },
            total_lines: inp.u64() % 1000,
            from: None,
        }),
        2 => {
            let spans = (0..inp.u8() % 4)
                .map(|i| {
                    let start = inp.u64() % 10_000;
                    Span {
                        start,
                        end: start + 1 + inp.u8() as u64,
                        first_line: i as u64 + 1,
                        next_line: i as u64 + 2,
                    }
                })
                .collect();
            Record::BatchDone(BatchDone {
                run_id,
                fingerprint: inp.fingerprint(),
                seq: inp.u64(),
                spans,
                counts: Counts {
                    lines: inp.u8() as u64,
                    failed: inp.u8() as u64,
                    ..Counts::default()
                },
            })
        }
        3 => Record::ItemFailed(ItemFailed {
            run_id,
            fingerprint: inp.fingerprint(),
            line: inp.u64(),
            offset: inp.u64(),
            end: inp.u64(),
            repo: inp.text(),
            path: inp.text(),
            kind: FailureKind::Source,
            reason: inp.text(),
            attempts: inp.u8() as u32,
        }),
        4 => Record::RunFinished(RunFinished {
            run_id,
            finished_ms: inp.u64(),
            status: RunStatus::Failures,
            counts: Counts::default(),
            message: (inp.u8() & 1 == 1).then(|| inp.text()),
        }),
        _ => Record::Snapshot(Box::new(state.compacted())),
    }
}

/// Where `bytes` of an encoded segment holding `records` were damaged.
enum Damage {
    None,
    Cut(usize),
    Flip(usize, u8),
    Zero(usize, usize),
    Garbage(Vec<u8>),
}

/// `wal_roundtrip`: records → encode → damage → recover. Recovery yields a
/// prefix of what was written; a torn tail loses only the damaged record;
/// damage before the tail is an error at the damaged record's offset.
pub fn wal_roundtrip(data: &[u8]) {
    let mut inp = Input(data);
    let n = 1 + (inp.u8() % 10) as usize;
    let mut state = State::default();
    let mut records = Vec::new();
    for _ in 0..n {
        let r = record(&mut inp, &state);
        state.apply(&r);
        records.push(r);
    }
    let mut bytes = format::segment_header().to_vec();
    let mut starts = Vec::new();
    for r in &records {
        starts.push(bytes.len());
        r.encode(&mut bytes);
    }
    let total = bytes.len();
    let ends: Vec<usize> = starts[1..].iter().copied().chain([total]).collect();
    let damage = match inp.u8() % 5 {
        0 => Damage::None,
        1 => Damage::Cut(inp.u64() as usize % (total + 1)),
        2 => Damage::Flip(inp.u64() as usize % total, inp.u8() % 8),
        3 => {
            let at = inp.u64() as usize % total;
            Damage::Zero(at, (at + 1 + inp.u8() as usize).min(total))
        }
        _ => Damage::Garbage(inp.0.to_vec()),
    };
    match &damage {
        Damage::None => {}
        Damage::Cut(at) => bytes.truncate(*at),
        Damage::Flip(at, bit) => bytes[*at] ^= 1 << bit,
        Damage::Zero(a, b) => bytes[*a..*b].fill(0),
        Damage::Garbage(g) => bytes.extend_from_slice(g),
    }
    // The record a byte belongs to (None: the segment header).
    let owner = |at: usize| starts.iter().rposition(|&s| s <= at);
    let res = wal::decode_segment(Path::new(SEGMENT), &bytes, true);
    check_decoded(&bytes, clone_decoded(&res), true);
    check_state_replay(&bytes, &res);
    let got: Vec<Record> = match &res {
        Ok((recs, _, _)) => recs.iter().map(|l| l.record.clone()).collect(),
        Err(_) => Vec::new(),
    };
    let is_prefix = |k: usize| got.len() == k && got[..] == records[..k];
    match (damage, &res) {
        (Damage::None, Ok((_, torn, _))) => assert!(is_prefix(n) && torn.is_none()),
        // A snapshot opening the only segment cannot be torn (compaction
        // deletes what it summarises only once it is durable): a cut that
        // leaves its header whole and its payload short is corruption there.
        (Damage::Cut(at), Err(e))
            if records[0].is_snapshot()
                && at >= starts[0] + format::RECORD_HEADER_LEN
                && at < ends[0] =>
        {
            assert_eq!(corrupt_at(e), Some(starts[0] as u64), "cut at {at}: {e}")
        }
        (Damage::Cut(at), Ok((_, torn, _))) => {
            let whole = ends.iter().filter(|&&e| e <= at).count();
            assert!(
                is_prefix(whole),
                "cut at {at}: {} of {whole} records",
                got.len()
            );
            let boundary = at == format::SEGMENT_HEADER_LEN || ends.contains(&at);
            assert_eq!(torn.is_some(), !boundary, "cut at {at}");
            assert!(
                !(records[0].is_snapshot()
                    && at >= starts[0] + format::RECORD_HEADER_LEN
                    && at < ends[0]),
                "cut at {at}: a snapshot opening the only segment was called torn"
            );
        }
        (Damage::Flip(at, _), r) => match owner(at) {
            None => assert!(matches!(r, Err(e) if corrupt_at(e) == Some(0))),
            // The last record: torn (its payload fails its CRC with nothing
            // after it) or, when its header is hit while its payload is
            // intact, refused at its offset; the records before it stay.
            Some(i) if i + 1 == n => match r {
                Ok((_, Some(t), _)) => {
                    assert!(is_prefix(i), "flip in the last record keeps the others");
                    assert_eq!(t.offset as usize, starts[i]);
                }
                Err(e) => assert_eq!(corrupt_at(e), Some(starts[i] as u64)),
                Ok(_) => panic!("flip at {at} went unnoticed"),
            },
            Some(i) => assert!(
                matches!(r, Err(e) if corrupt_at(e) == Some(starts[i] as u64)),
                "flip in record {i} of {n} must be corruption at its offset: {r:?}"
            ),
        },
        (Damage::Zero(a, _), r) => {
            let before = ends.iter().filter(|&&e| e <= a).count();
            match r {
                Ok(_) => assert!(got.len() >= before && is_prefix(got.len())),
                Err(e) => {
                    let off = corrupt_at(e).expect("corruption");
                    let first = owner(a).map(|i| starts[i]).unwrap_or(0) as u64;
                    assert!(off >= first, "error at {off} before the damage at {a}");
                }
            }
        }
        (Damage::Garbage(_), r) => match r {
            Ok(_) => assert!(got.len() >= n && got[..n] == records[..]),
            Err(e) => assert!(corrupt_at(e).expect("corruption") >= total as u64),
        },
        (_, r) => panic!("undamaged-prefix recovery failed: {r:?}"),
    }
}

/// Recovery's replay (state only, batch records applied in place) of the
/// same bytes as a one-segment log agrees with applying what
/// `decode_segment` returned: same state and torn tail, or the same error.
fn check_state_replay(bytes: &[u8], decoded: &Decoded) {
    use wal::storage::{mem::MemStorage, Storage};
    let disk = MemStorage::new();
    let dir = Path::new("/wal");
    let seg = dir.join("00000000000000000001.wal");
    disk.create(&seg).expect("create in memory");
    disk.set_contents(&seg, bytes.to_vec());
    let replayed = wal::replay_in(&disk, dir, wal::Keep::State);
    match (decoded, &replayed) {
        (Ok((recs, torn, _)), Ok(rep)) => {
            let mut state = State::default();
            for l in recs {
                state.apply(&l.record);
            }
            assert_eq!(rep.state, state);
            assert_eq!(
                rep.torn.as_ref().map(|t| t.offset),
                torn.as_ref().map(|t| t.offset)
            );
            assert!(rep.records.is_none());
        }
        (
            Err(wal::Error::Corrupt { offset, reason, .. }),
            Err(wal::Error::Corrupt {
                segment,
                offset: o2,
                reason: r2,
            }),
        ) => assert_eq!((&seg, offset, reason), (segment, o2, r2)),
        _ => panic!("state-only replay disagrees with decoding: {replayed:?}"),
    }
}

fn corrupt_at(e: &wal::Error) -> Option<u64> {
    match e {
        wal::Error::Corrupt { offset, .. } => Some(*offset),
        _ => None,
    }
}

fn clone_decoded(r: &Decoded) -> Decoded {
    match r {
        Ok((recs, torn, end)) => Ok((recs.clone(), torn.clone(), *end)),
        Err(wal::Error::Corrupt {
            segment,
            offset,
            reason,
        }) => Err(wal::Error::Corrupt {
            segment: segment.clone(),
            offset: *offset,
            reason: reason.clone(),
        }),
        Err(e) => panic!("decoding bytes gave a non-corruption error: {e}"),
    }
}

fn fuzz_roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        Roots::new(&[std::env::temp_dir()], 1 << 20).expect("the temp dir is a valid root")
    })
}

/// A resolved location never escapes: repo-relative, no `.`/`..`/empty parts.
fn check_resolves_inside(repo: Option<&str>, path: &str) {
    if let Ok(loc) = fuzz_roots().resolve(repo, path) {
        assert!(
            !loc.repo.is_empty() && loc.repo != "." && loc.repo != ".." && !loc.repo.contains('/'),
            "bad repo {:?} from {repo:?} {path:?}",
            loc.repo
        );
        assert!(
            loc.path
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != ".."),
            "bad path {:?} from {repo:?} {path:?}",
            loc.path
        );
    }
}

/// `manifest_line`: arbitrary bytes as one line, and as a whole manifest
/// split the way the sync splits it.
pub fn manifest_line(data: &[u8]) {
    let mut p = LineParser::new();
    let first = p.parse(data);
    // The parser's reused buffers leave no trace between lines.
    assert_eq!(first, p.parse(data));
    check_change(&first);
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let r = p.parse(line);
        check_change(&r);
    }
}

fn check_change(r: &Result<Option<Change>, elysiactl::manifest::LineError>) {
    if let Ok(Some(Change::File(f))) = r {
        assert!(!f.path.is_empty() && !f.path.contains('\0'));
        check_resolves_inside(f.repo.as_deref(), &f.path);
        if let Some(from) = &f.from {
            assert!(!from.is_empty() && !from.contains('\0'));
            check_resolves_inside(f.repo.as_deref(), from);
        }
    }
}

/// `chunk`: arbitrary bytes as a file, the first two choosing the chunk
/// size (0, or 16 up to 4,096 bytes) and the third the file's kind (its
/// extension picks the splitter's rules): the objects pass every invariant
/// of `object::check` (each chunk within the bound, characters never cut,
/// ranges contiguous and covering the file, line numbers right), their
/// contents concatenate to the file, and the same input gives the same
/// objects.
pub fn chunk(data: &[u8]) {
    use elysiactl::object::{check, objects, ChunkSize};
    const PATHS: [&str; 8] = [
        "src/a.rs",
        "a.py",
        "a.go",
        "a.ts",
        "a.c",
        "README.md",
        "Makefile",
        "a.txt",
    ];
    let (Some(&a), Some(&b), Some(&k)) = (data.first(), data.get(1), data.get(2)) else {
        return;
    };
    let bytes = &data[3..];
    let n = usize::from(u16::from_le_bytes([a, b])) % 4097;
    let bound = if n == 0 { 0 } else { n.max(ChunkSize::MIN) };
    let size = ChunkSize::new(bound).expect("0 or at least MIN");
    let path = PATHS[usize::from(k) % PATHS.len()];
    let objs = objects("R", path, bytes, size);
    assert_eq!(check(bytes, size, &objs), Ok(()), "{path} at {bound}");
    let joined: String = objs.iter().map(|o| o.content.as_str()).collect();
    assert_eq!(joined, String::from_utf8_lossy(bytes), "{path} at {bound}");
    assert_eq!(objects("R", path, bytes, size), objs);
}

/// Peak-allocation accounting for the `wal_decode` target (single-threaded
/// under libFuzzer).
pub mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    static CURRENT: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    static BASE: AtomicUsize = AtomicUsize::new(0);

    pub struct Counting;

    // SAFETY: forwards to the system allocator unchanged; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let now = CURRENT.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
            System.alloc(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            CURRENT.fetch_sub(l.size(), Relaxed);
            System.dealloc(p, l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            if new > l.size() {
                let now = CURRENT.fetch_add(new - l.size(), Relaxed) + new - l.size();
                PEAK.fetch_max(now, Relaxed);
            } else {
                CURRENT.fetch_sub(l.size() - new, Relaxed);
            }
            System.realloc(p, l, new)
        }
    }

    pub fn reset() {
        let now = CURRENT.load(Relaxed);
        BASE.store(now, Relaxed);
        PEAK.store(now, Relaxed);
    }

    pub fn peak() -> usize {
        PEAK.load(Relaxed).saturating_sub(BASE.load(Relaxed))
    }
}
