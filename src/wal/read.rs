//! Reading the log: which segments a replay reads, what damage in each can
//! be a torn write, and the replay itself.
//!
//! The rule (SPEC.md): only the last record of the last segment can be
//! torn. Damage anywhere else is corruption: in an older segment (recovery
//! truncates a torn tail away before it starts the next segment, so an
//! older segment never ends torn), before valid data, or in a compaction
//! snapshot whose earlier segments are gone (compaction deletes them only
//! once the snapshot is durable). A crash *during* compaction leaves the
//! earlier segments, and then a torn snapshot is dropped like any tail.
//!
//! Readers that hold no lock (`--status`, `wal inspect`) may race a sync's
//! compaction: a segment listed and then deleted before it is opened means
//! a newer snapshot exists, so the listing is taken again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{self, HeaderProblem, Step, SEGMENT_HEADER_LEN};
use super::record::{is_snapshot_kind, BatchDoneView, DecodeError, Record};
use super::state::State;
use super::storage::{Fs, Storage};
use super::{Error, IoOp};

/// One decoded record and where it was. The records of one segment share
/// its path.
#[derive(Debug, Clone)]
pub struct Located {
    pub segment: Arc<Path>,
    pub offset: u64,
    pub len: u64,
    pub record: Record,
}

/// A torn tail found (and, for a writer, cut off) during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    pub offset: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// Whether a replay keeps every record it decodes, or only the state they
/// build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Only [`Replay::state`]: what recovery, `--status` and resume need.
    /// Batch records are applied in place, without being materialised.
    State,
    /// Also every record, in log order, in [`Replay::records`] (tests, and
    /// whoever wants the log itself).
    Records,
}

/// What reading the log found.
#[derive(Debug, Default)]
pub struct Replay {
    pub state: State,
    /// Every record replayed, in log order, when asked for with
    /// [`Keep::Records`]; `None` otherwise.
    pub records: Option<Vec<Located>>,
    pub torn: Option<TornTail>,
    pub segments: Vec<PathBuf>,
    pub bytes: u64,
    /// Where the next record goes: (segment path, offset).
    pub(super) end: Option<(PathBuf, u64)>,
}

/// Where a segment sits in the log being read. It decides which damage in
/// the segment is the trace of an interrupted write (a torn tail, dropped)
/// and which is corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Newer segments follow it: nothing in it can be torn.
    Older,
    /// The newest segment, after older ones: its last record can be torn,
    /// a snapshot opening it included (a compaction cut short leaves the
    /// segments the snapshot summarises).
    Newest,
    /// The newest and only segment: its last record can be torn, except a
    /// snapshot opening it (nothing older is left, so the snapshot was
    /// durable and its damage is corruption).
    Only,
}

impl Place {
    /// The place of segment `index` of `count` listed, oldest first.
    pub fn of(index: usize, count: usize) -> Place {
        if index + 1 < count {
            Place::Older
        } else if index == 0 {
            Place::Only
        } else {
            Place::Newest
        }
    }
}

/// The WAL directory inside a state dir.
pub fn wal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("wal")
}

pub(super) fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// The sequence number in a segment's file name (`None`: not a segment).
pub fn segment_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files of a WAL directory, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    list_segments_in(&Fs, dir)
}

pub(super) fn list_segments_in<S: Storage>(storage: &S, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = storage
        .list(dir)
        .map_err(|e| Error::io(IoOp::ReadDir, dir, e))?;
    let mut segs: Vec<(u64, PathBuf)> = entries
        .into_iter()
        .filter_map(|p| segment_seq(&p).map(|seq| (seq, p)))
        .collect();
    segs.sort();
    Ok(segs.into_iter().map(|(_, p)| p).collect())
}

/// Decode every record of one segment's bytes: with `last`, as a log of
/// this one segment ([`Place::Only`]), else as an older segment
/// ([`Place::Older`]). See [`decode_segment_at`].
pub fn decode_segment(
    path: &Path,
    bytes: &[u8],
    last: bool,
) -> Result<(Vec<Located>, Option<TornTail>, u64), Error> {
    let place = if last { Place::Only } else { Place::Older };
    decode_segment_at(path, bytes, place)
}

/// Decode every record of one segment's bytes, judging damage by the
/// segment's `place` in its log. Returns the records, the torn tail if
/// any, and where the records end.
pub fn decode_segment_at(
    path: &Path,
    bytes: &[u8],
    place: Place,
) -> Result<(Vec<Located>, Option<TornTail>, u64), Error> {
    let segment: Arc<Path> = Arc::from(path);
    // A batch record is about 200 bytes: size the list once rather than
    // growing (and page-faulting) it through a dozen doublings.
    let mut out = Vec::with_capacity(bytes.len() / 256);
    let (torn, end) = walk_segment(path, bytes, place, |offset, len, kind, payload| {
        out.push(Located {
            segment: Arc::clone(&segment),
            offset,
            len,
            record: Record::decode(kind, payload)?,
        });
        Ok(())
    })?;
    Ok((out, torn, end))
}

/// Check one segment's header and framing, and hand each whole record to
/// `each` (offset, length, type, payload) in order; a [`DecodeError`] from
/// `each` is corruption at that record. Returns the torn tail, if any, and
/// where the records end.
fn walk_segment(
    path: &Path,
    bytes: &[u8],
    place: Place,
    mut each: impl FnMut(u64, u64, u8, &[u8]) -> Result<(), DecodeError>,
) -> Result<(Option<TornTail>, u64), Error> {
    let corrupt = |offset: u64, reason: String| Error::Corrupt {
        segment: path.to_owned(),
        offset,
        reason,
    };
    let newest = place != Place::Older;
    match format::check_segment_header(bytes) {
        Ok(()) => {}
        Err(HeaderProblem::Short | HeaderProblem::Damaged)
            // A segment's creation cut short: a header write that did not
            // finish, followed by nothing but zeros (preallocated space).
            if newest
                && bytes
                    .get(SEGMENT_HEADER_LEN..)
                    .is_none_or(|rest| rest.iter().all(|&b| b == 0)) =>
        {
            return Ok((
                Some(TornTail {
                    segment: path.to_owned(),
                    offset: 0,
                    dropped_bytes: bytes.len() as u64,
                    reason: "segment header cut short".into(),
                }),
                0,
            ));
        }
        Err(HeaderProblem::Short) => return Err(corrupt(0, "segment header cut short".into())),
        Err(HeaderProblem::Damaged) => {
            return Err(corrupt(
                0,
                "segment header damaged (bad magic or checksum)".into(),
            ))
        }
        Err(HeaderProblem::Version(v)) => {
            return Err(corrupt(
                0,
                format!(
                    "segment format version {v}, this build reads version {}",
                    format::VERSION
                ),
            ))
        }
    }
    let mut at = SEGMENT_HEADER_LEN;
    loop {
        match format::decode_at(bytes, at) {
            Step::Record {
                kind,
                payload,
                next,
            } => {
                each(at as u64, (next - at) as u64, kind, payload)
                    .map_err(|e| corrupt(at as u64, e.0))?;
                at = next;
            }
            Step::End => return Ok((None, at as u64)),
            Step::Torn { reason, kind }
                if place == Place::Only
                    && at == SEGMENT_HEADER_LEN
                    && kind.is_some_and(is_snapshot_kind) =>
            {
                return Err(corrupt(
                    at as u64,
                    format!("compaction snapshot damaged ({reason}); no older segment is left, so it was durable: damage, not a torn write"),
                ))
            }
            Step::Torn { reason, .. } if newest => {
                return Ok((
                    Some(TornTail {
                        segment: path.to_owned(),
                        offset: at as u64,
                        dropped_bytes: (bytes.len() - at) as u64,
                        reason: reason.into(),
                    }),
                    at as u64,
                ))
            }
            Step::Torn { reason, .. } | Step::Corrupt { reason } => {
                return Err(corrupt(at as u64, reason.into()))
            }
        }
    }
}

/// Whether a segment's first record is a whole snapshot record (not yet
/// whether it decodes: replay finds that out).
fn starts_with_snapshot(bytes: &[u8]) -> bool {
    format::check_segment_header(bytes).is_ok()
        && matches!(
            format::decode_at(bytes, SEGMENT_HEADER_LEN),
            Step::Record { kind, .. } if is_snapshot_kind(kind)
        )
}

/// The part of a log that replay reads, as one listing of its directory
/// saw it: from the newest segment that opens with a whole snapshot (else
/// the oldest) to the newest. Compaction writes a snapshot before deleting
/// what it summarises, so anything older is already folded into it.
#[derive(Debug, Clone)]
pub struct LogRead {
    /// Every segment listed, oldest first.
    listed: Vec<PathBuf>,
    /// Index in `listed` of the first segment read.
    start: usize,
    /// The bytes of `listed[start..]`.
    bytes: Vec<Vec<u8>>,
}

impl LogRead {
    /// The segments read, oldest first.
    pub fn segments(&self) -> &[PathBuf] {
        self.listed.get(self.start..).unwrap_or_default()
    }

    /// Segments older than the snapshot the read starts from: left by a
    /// compaction interrupted while deleting them; never read.
    pub fn superseded(&self) -> &[PathBuf] {
        self.listed.get(..self.start).unwrap_or_default()
    }

    /// Each segment read, oldest first, with its bytes and its place.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Path, &[u8], Place)> {
        let count = self.listed.len();
        self.segments()
            .iter()
            .zip(&self.bytes)
            .enumerate()
            .map(move |(i, (p, b))| (p.as_path(), b.as_slice(), Place::of(self.start + i, count)))
    }

    /// Bytes read.
    pub fn len_bytes(&self) -> u64 {
        self.bytes.iter().map(|b| b.len() as u64).sum()
    }

    /// The error a newest-first decode of what was read meets first, if any.
    fn first_error(&self) -> Option<Error> {
        self.iter()
            .rev()
            .find_map(|(p, b, place)| decode_segment_at(p, b, place).err())
    }

    /// The read must begin the log: the first segment read opens with a
    /// whole snapshot, or it is segment 1. A later segment without one means
    /// the segments before it are gone, which compaction does only once its
    /// snapshot is durable: the snapshot is damaged (or the files were
    /// removed by hand), and replaying the rest would silently forget them.
    pub fn check_beginning(&self) -> Result<(), Error> {
        let (Some(seg), Some(bytes)) = (self.segments().first(), self.bytes.first()) else {
            return Ok(());
        };
        if starts_with_snapshot(bytes) || segment_seq(seg).is_none_or(|s| s <= 1) {
            return Ok(());
        }
        let (offset, what) = match format::check_segment_header(bytes) {
            Err(_) => (0, "its header is damaged or cut short".to_owned()),
            Ok(()) => (
                SEGMENT_HEADER_LEN as u64,
                match format::decode_at(bytes, SEGMENT_HEADER_LEN) {
                    Step::Record { kind, .. } => {
                        format!("its first record (type {kind}) is not a snapshot")
                    }
                    Step::End => "it holds no record".to_owned(),
                    Step::Torn { reason, .. } | Step::Corrupt { reason } => {
                        format!("its first record is damaged ({reason})")
                    }
                },
            ),
        };
        Err(Error::Corrupt {
            segment: seg.clone(),
            offset,
            reason: format!(
                "the log starts here but the segments before it are gone (compaction deletes them only once its snapshot is durable), and {what}: damage, not a torn write"
            ),
        })
    }
}

/// Why reading a listing failed, and whether a listed segment vanished.
struct ReadFailure {
    error: Error,
    vanished: bool,
}

/// How many times a reader lists the log again when segments it listed
/// vanish under it (each time, a compaction finished in between).
pub const VANISHED_RETRIES: usize = 64;

/// Read the log of a WAL directory (see [`LogRead`]). When a listed segment
/// is deleted before it is read (a concurrent compaction), the directory
/// is listed again, at most [`VANISHED_RETRIES`] times, and only while the
/// listing changes.
pub fn read_log(dir: &Path) -> Result<LogRead, Error> {
    read_log_in(&Fs, dir)
}

/// [`read_log`] on `storage`.
pub fn read_log_in<S: Storage>(storage: &S, dir: &Path) -> Result<LogRead, Error> {
    let mut listed = list_segments_in(storage, dir)?;
    let mut retries = 0;
    loop {
        match read_listed(storage, &listed) {
            Ok(r) => return Ok(r),
            Err(f) if f.vanished && retries < VANISHED_RETRIES => {
                let again = list_segments_in(storage, dir)?;
                if again == listed {
                    return Err(f.error);
                }
                listed = again;
                retries += 1;
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// Read the given segments (oldest first) as a log.
pub fn read_segments_in<S: Storage>(storage: &S, segments: &[PathBuf]) -> Result<LogRead, Error> {
    read_listed(storage, segments).map_err(|f| f.error)
}

/// Read `listed` newest first, back to the newest segment that opens with a
/// snapshot.
fn read_listed<S: Storage>(storage: &S, listed: &[PathBuf]) -> Result<LogRead, ReadFailure> {
    let mut read: Vec<Vec<u8>> = Vec::new();
    let mut start = 0;
    for (i, seg) in listed.iter().enumerate().rev() {
        let bytes = match storage.read(seg) {
            Ok(b) => b,
            Err(e) => {
                let vanished = e.kind() == io::ErrorKind::NotFound;
                // Damage already met in newer segments is what a
                // newest-first decode reports.
                read.reverse();
                let newer = LogRead {
                    listed: listed.to_vec(),
                    start: i + 1,
                    bytes: read,
                };
                let error = newer
                    .first_error()
                    .unwrap_or_else(|| Error::io(IoOp::ReadSegment, seg, e));
                return Err(ReadFailure { error, vanished });
            }
        };
        let snapshot = starts_with_snapshot(&bytes);
        read.push(bytes);
        if snapshot {
            start = i;
            break;
        }
    }
    read.reverse();
    Ok(LogRead {
        listed: listed.to_vec(),
        start,
        bytes: read,
    })
}

/// Replay one segment's records into `state` (and `records`, when kept).
fn replay_segment(
    path: &Path,
    bytes: &[u8],
    place: Place,
    state: &mut State,
    records: Option<&mut Vec<Located>>,
) -> Result<(Option<TornTail>, u64), Error> {
    let Some(records) = records else {
        // Batch records, nearly all of a log, are applied in place; the
        // rest decode as usual.
        return walk_segment(path, bytes, place, |_, _, kind, payload| {
            match BatchDoneView::parse_record(kind, payload) {
                Some(b) => state.apply_batch_done(&b),
                None => state.apply_owned(Record::decode(kind, payload)?),
            }
            Ok(())
        });
    };
    let segment: Arc<Path> = Arc::from(path);
    records.reserve(bytes.len() / 256);
    walk_segment(path, bytes, place, |offset, len, kind, payload| {
        let record = Record::decode(kind, payload)?;
        state.apply(&record);
        records.push(Located {
            segment: Arc::clone(&segment),
            offset,
            len,
            record,
        });
        Ok(())
    })
}

/// Read and replay the whole log of a state dir into its [`State`] without
/// changing anything (for `--status`; safe while a sync runs).
pub fn replay(state_dir: &Path) -> Result<Replay, Error> {
    replay_in(&Fs, &wal_dir(state_dir), Keep::State)
}

/// [`replay`], also keeping every record ([`Keep::Records`]).
pub fn replay_records(state_dir: &Path) -> Result<Replay, Error> {
    replay_in(&Fs, &wal_dir(state_dir), Keep::Records)
}

/// Replay the segments of a WAL directory into its state.
pub fn replay_dir(dir: &Path) -> Result<Replay, Error> {
    replay_in(&Fs, dir, Keep::State)
}

/// Replay the WAL directory `dir` of `storage`.
///
/// A reader (`--status`, `wal inspect`) runs beside a writer that may be
/// compacting: between reading one segment and the next, a snapshot can
/// land and the older segments go, and the bytes read then no longer form
/// one log. So when what was read looks corrupt *and* the log changed
/// meanwhile (segments added, removed or grown), it is read again, a few
/// times; a log that stood still while it read corrupt is reported at once.
pub fn replay_in<S: Storage>(storage: &S, dir: &Path, keep: Keep) -> Result<Replay, Error> {
    const RACE_RETRIES: u32 = 3;
    let shape = |storage: &S| -> Vec<(PathBuf, u64)> {
        list_segments_in(storage, dir)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let len = storage.file_len(&p).unwrap_or(u64::MAX);
                (p, len)
            })
            .collect()
    };
    let mut attempt = 0;
    loop {
        let before = shape(storage);
        let res = read_log_in(storage, dir).and_then(|read| replay_read(&read, keep));
        match res {
            Err(e) if e.is_corrupt() && attempt < RACE_RETRIES && shape(storage) != before => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(5 << attempt));
            }
            r => return r,
        }
    }
}

/// Replay the given segments (oldest first) into their state.
pub fn replay_segments(segments: &[PathBuf]) -> Result<Replay, Error> {
    replay_read(&read_segments_in(&Fs, segments)?, Keep::State)
}

/// Decode and apply what was read, oldest first, in one pass. Which error a
/// damaged log reports is the one a newest-first decode meets first; a log
/// whose beginning is missing is reported after that.
pub fn replay_read(read: &LogRead, keep: Keep) -> Result<Replay, Error> {
    let mut rep = Replay {
        segments: read.segments().to_vec(),
        bytes: read.len_bytes(),
        records: (keep == Keep::Records).then(Vec::new),
        ..Replay::default()
    };
    for (seg, bytes, place) in read.iter() {
        match replay_segment(seg, bytes, place, &mut rep.state, rep.records.as_mut()) {
            Ok((torn, end)) => {
                if torn.is_some() {
                    rep.torn = torn;
                }
                rep.end = Some((seg.to_owned(), end));
            }
            Err(e) => return Err(read.first_error().unwrap_or(e)),
        }
    }
    read.check_beginning()?;
    Ok(rep)
}
