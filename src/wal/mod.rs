//! The write-ahead log: an append-only series of segment files under
//! `<state-dir>/wal/`, each record framed with its length and CRCs
//! ([`format`]), each payload a bincode-encoded [`Record`].
//!
//! Invariants:
//! - A record is acknowledged only after `fdatasync` of its segment; a new
//!   segment is made durable with an fsync of the directory. File I/O goes
//!   through [`storage::Storage`], so tests can break it on purpose.
//! - Segments are preallocated ahead of the writer (`fallocate`), so a full
//!   disk fails the reservation before any byte of a record is written; the
//!   zero fill after the last record is a clean end, and appends go after the
//!   last record, not at the end of the file.
//! - Recovery replays from the newest segment that opens with a snapshot
//!   ([`read`]). Only the last record of the last segment can be torn: it is
//!   dropped (and truncated away before the next append); damage anywhere
//!   else, a snapshot whose earlier segments are gone included, is an error
//!   naming segment and offset. After recovery, appends go to a fresh
//!   segment (see [`Wal::open_in`]).
//! - After a failed write, reservation or fsync the writer refuses further
//!   appends until reopened (an fsync is never retried: the kernel may have
//!   dropped the dirty pages it failed to write).

pub mod format;
pub mod read;
pub mod record;
pub mod state;
pub mod storage;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use read::*;
pub use record::*;
pub use state::{AppliedChangeset, FailedEntry, ManifestProgress, RunSummary, State};

use format::SEGMENT_HEADER_LEN;
use storage::{Fs, SegmentFile, Storage};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_TARGET_LEN: u64 = 64 << 20;

/// What the WAL was doing when an I/O call failed: carried as a kind, so
/// whether it was an fsync is never read back from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoOp {
    CreateDir,
    ReadDir,
    ReadSegment,
    CreateSegment,
    OpenSegment,
    WriteHeader,
    PreallocateSegment,
    PreallocateSpace,
    Append,
    /// `fdatasync` of the segment after an append.
    FdatasyncAppend,
    /// `fsync` of a segment (its header, or what recovery read).
    FsyncSegment,
    /// `fsync` of the WAL directory (new or removed segments).
    FsyncDir,
    TruncateEmpty,
    TruncateTorn,
    RemoveCompacted,
}

impl IoOp {
    /// The operation, as messages name it ("cannot {op} {path}").
    pub fn as_str(self) -> &'static str {
        match self {
            IoOp::CreateDir => "create WAL directory",
            IoOp::ReadDir => "read WAL directory",
            IoOp::ReadSegment => "read WAL segment",
            IoOp::CreateSegment => "create WAL segment",
            IoOp::OpenSegment => "open WAL segment",
            IoOp::WriteHeader => "write WAL segment header",
            IoOp::PreallocateSegment => "preallocate WAL segment",
            IoOp::PreallocateSpace => "preallocate WAL space",
            IoOp::Append => "append to WAL",
            IoOp::FdatasyncAppend => "fdatasync WAL",
            IoOp::FsyncSegment => "fsync WAL segment",
            IoOp::FsyncDir => "fsync directory",
            IoOp::TruncateEmpty => "truncate empty WAL segment",
            IoOp::TruncateTorn => "truncate torn WAL tail",
            IoOp::RemoveCompacted => "remove compacted segment",
        }
    }

    /// An fsync or fdatasync, of a segment or of the directory.
    pub fn is_fsync(self) -> bool {
        matches!(
            self,
            IoOp::FdatasyncAppend | IoOp::FsyncSegment | IoOp::FsyncDir
        )
    }
}

impl std::fmt::Display for IoOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("WAL corrupt: {segment} at byte {offset}: {reason}. The log is refused rather than guessed at; inspect it with `elysiactl wal inspect --verify`, or move the state dir aside to start over (already indexed objects stay; the next run re-applies its manifest)")]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: IoOp,
        path: PathBuf,
        source: io::Error,
    },
    /// Refused: an earlier failure poisoned the writer. `op` is that
    /// failure's operation, when it was an I/O call.
    #[error("WAL refuses appends after an earlier write failure ({cause}); state will be recovered from what is durable on the next run")]
    PreviousIo { cause: String, op: Option<IoOp> },
}

/// Why a writer refuses appends: the failure that poisoned it.
#[derive(Debug, Clone)]
struct Poison {
    cause: String,
    op: Option<IoOp>,
}

impl Poison {
    fn of(e: &Error) -> Poison {
        let op = match e {
            Error::Io { op, .. } => Some(*op),
            Error::PreviousIo { op, .. } => *op,
            Error::Corrupt { .. } => None,
        };
        Poison {
            cause: e.to_string(),
            op,
        }
    }

    fn refusal(&self) -> Error {
        Error::PreviousIo {
            cause: self.cause.clone(),
            op: self.op,
        }
    }
}

impl Error {
    pub(crate) fn io(op: IoOp, path: &Path, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// The disk is full (ENOSPC or EDQUOT).
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT)
            ),
            _ => false,
        }
    }

    /// An fsync (of a segment or of the WAL directory) failed, or appends
    /// are refused because one did. It is never retried: the kernel may have
    /// dropped the dirty pages it could not write, so a retry could report
    /// success for data that is gone.
    pub fn is_fsync(&self) -> bool {
        match self {
            Error::Io { op, .. } => op.is_fsync(),
            Error::PreviousIo { op, .. } => op.is_some_and(IoOp::is_fsync),
            Error::Corrupt { .. } => false,
        }
    }

    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}

/// Create a directory (and parents) owner-only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Space reserved ahead of the writer grows with the segment (doubling),
/// from one page up to this much at a time.
pub const PREALLOC_MAX_STEP: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// How far to preallocate so that `need` bytes fit, given what is reserved.
fn prealloc_target(need: u64, allocated: u64) -> u64 {
    let target = need
        .max(allocated.saturating_mul(2))
        .min(need + PREALLOC_MAX_STEP);
    target.div_ceil(PAGE) * PAGE
}

/// The appending side of the log. One per state dir, under its lock.
///
/// Generic over its file I/O ([`storage::Storage`]) so tests can run it on
/// a disk model that loses unsynced bytes and fails on purpose.
pub struct Wal<S: Storage = Fs> {
    storage: S,
    dir: PathBuf,
    /// `None` when no segment could be made ready at open (then poisoned).
    file: Option<S::File>,
    path: PathBuf,
    seq: u64,
    /// Where the next record goes: the end of the last record, not the end
    /// of the file (which may hold preallocated zeros).
    len: u64,
    /// Bytes of the segment reserved on disk (`u64::MAX` once the
    /// filesystem said it cannot preallocate).
    allocated: u64,
    poisoned: Option<Poison>,
    buf: Vec<u8>,
}

impl Wal<Fs> {
    /// Recover the log of `state_dir` and open it for appending (see
    /// [`Wal::open_in`]).
    pub fn open(state_dir: &Path) -> Result<(Wal, Replay), Error> {
        Wal::open_in(Fs, &wal_dir(state_dir))
    }
}

/// A segment made ready for appends: its file, reserved size, path, seq.
struct Ready<F> {
    file: F,
    allocated: u64,
    path: PathBuf,
    seq: u64,
}

impl<S: Storage> Wal<S> {
    /// Recover the WAL directory `dir` and open it for appending.
    ///
    /// A torn tail is truncated away (durably) first. Appends then go to a
    /// fresh segment, never after records an earlier process wrote: if that
    /// process saw an fsync fail, its last records may still be readable
    /// from the page cache yet missing on disk, and writing after them could
    /// leave a hole in the middle of the log. In a segment of its own that
    /// loss is a clean end instead. (A newest segment holding no record is
    /// reused.)
    ///
    /// If the fresh segment cannot be created (a full disk) the log still
    /// opens, poisoned: replay stands, every append is refused, and the caller
    /// goes on with in-memory state.
    ///
    /// The replay holds the state only ([`Keep::State`]).
    pub fn open_in(storage: S, dir: &Path) -> Result<(Wal<S>, Replay), Error> {
        Wal::open_in_keeping(storage, dir, Keep::State)
    }

    /// [`Wal::open_in`], with the replay keeping what `keep` says.
    pub fn open_in_keeping(storage: S, dir: &Path, keep: Keep) -> Result<(Wal<S>, Replay), Error> {
        storage
            .create_dir_all(dir)
            .map_err(|e| Error::io(IoOp::CreateDir, dir, e))?;
        let rep = replay_in(&storage, dir, keep)?;
        let ready = prepare(&storage, dir, &rep);
        let mut wal = Wal {
            storage,
            dir: dir.to_owned(),
            file: None,
            path: dir.join(segment_name(1)),
            seq: 1,
            len: SEGMENT_HEADER_LEN as u64,
            allocated: SEGMENT_HEADER_LEN as u64,
            poisoned: None,
            buf: Vec::new(),
        };
        match ready {
            Ok(r) => wal.install(r),
            Err(e) => wal.poisoned = Some(Poison::of(&e)),
        }
        Ok((wal, rep))
    }

    fn install(&mut self, r: Ready<S::File>) {
        self.file = Some(r.file);
        self.allocated = r.allocated;
        self.path = r.path;
        self.seq = r.seq;
        self.len = SEGMENT_HEADER_LEN as u64;
    }

    /// The segment being appended to.
    pub fn segment(&self) -> &Path {
        &self.path
    }

    /// Whether an earlier failure stopped appends.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Why appends are refused, if they are.
    pub fn poisoned_by(&self) -> Option<&str> {
        self.poisoned.as_ref().map(|p| p.cause.as_str())
    }

    /// The storage the log lives on.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Append `records` in one write and make them durable (fdatasync).
    ///
    /// Space for them is preallocated first where the filesystem allows, so
    /// a full disk fails the append before any byte of a record is written.
    /// Any failure poisons the writer: a failed fsync is never retried.
    pub fn append(&mut self, records: &[Record]) -> Result<(), Error> {
        if let Some(p) = &self.poisoned {
            return Err(p.refusal());
        }
        if self.len >= SEGMENT_TARGET_LEN {
            match new_segment(&self.storage, &self.dir, self.seq + 1) {
                Ok(r) => self.install(r),
                Err(e) => {
                    self.poisoned = Some(Poison::of(&e));
                    return Err(e);
                }
            }
        }
        self.buf.clear();
        for r in records {
            r.encode(&mut self.buf);
        }
        match self.write_buf() {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.poisoned = Some(Poison::of(&e));
                Err(e)
            }
        }
    }

    fn write_buf(&mut self) -> Result<(), Error> {
        let path = &self.path;
        let Some(file) = self.file.as_mut() else {
            return Err(Error::PreviousIo {
                cause: "no WAL segment is open".into(),
                op: None,
            });
        };
        let need = self.len + self.buf.len() as u64;
        if need > self.allocated {
            let target = prealloc_target(need, self.allocated);
            match file.allocate(self.allocated, target - self.allocated) {
                Ok(true) => self.allocated = target,
                Ok(false) => self.allocated = u64::MAX,
                Err(e) => return Err(Error::io(IoOp::PreallocateSpace, path, e)),
            }
        }
        file.write_all_at(&self.buf, self.len)
            .map_err(|e| Error::io(IoOp::Append, path, e))?;
        file.sync_data()
            .map_err(|e| Error::io(IoOp::FdatasyncAppend, path, e))
    }

    /// Replace the whole log by one snapshot of `state`: write it as the first
    /// record of a new segment, make that durable, then delete the older
    /// segments. A crash at any point leaves either the old log or the
    /// snapshot (recovery starts at the newest snapshot). A failure poisons
    /// the writer (the log itself stays readable).
    pub fn compact(&mut self, state: &State) -> Result<(), Error> {
        if let Some(p) = &self.poisoned {
            return Err(p.refusal());
        }
        let res = self.compact_inner(state);
        if let Err(e) = &res {
            self.poisoned = Some(Poison::of(e));
        }
        res
    }

    fn compact_inner(&mut self, state: &State) -> Result<(), Error> {
        let old = list_segments_in(&self.storage, &self.dir)?;
        let next = new_segment(&self.storage, &self.dir, self.seq + 1)?;
        self.install(next);
        self.append(&[Record::SnapshotV2(Box::new(state.compacted()))])?;
        for seg in old {
            if seg != self.path {
                self.storage
                    .remove(&seg)
                    .map_err(|e| Error::io(IoOp::RemoveCompacted, &seg, e))?;
            }
        }
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(IoOp::FsyncDir, &self.dir, e))
    }

    /// Bytes in all segments, preallocated space included.
    pub fn total_len(&self) -> u64 {
        list_segments_in(&self.storage, &self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| self.storage.file_len(p).ok())
            .sum()
    }
}

/// Make a segment ready for appends after recovery (see [`Wal::open_in`]).
fn prepare<S: Storage>(storage: &S, dir: &Path, rep: &Replay) -> Result<Ready<S::File>, Error> {
    let Some((path, end)) = &rep.end else {
        return new_segment(storage, dir, 1);
    };
    let (path, end) = (path.clone(), *end);
    let seq = segment_seq(&path).unwrap_or(1);
    let mut file = storage
        .open(&path)
        .map_err(|e| Error::io(IoOp::OpenSegment, &path, e))?;
    if end <= SEGMENT_HEADER_LEN as u64 {
        // No record in the newest segment (or its header itself was torn):
        // write it over. Its header is rewritten rather than trusted: the
        // creator may have failed to sync it, or to sync its directory entry.
        file.set_len(0)
            .map_err(|e| Error::io(IoOp::TruncateEmpty, &path, e))?;
        let allocated = write_header(storage, dir, &path, &mut file)?;
        return Ok(Ready {
            file,
            allocated,
            path,
            seq,
        });
    }
    if rep.torn.is_some() {
        file.set_len(end)
            .map_err(|e| Error::io(IoOp::TruncateTorn, &path, e))?;
    }
    // Whatever recovery read, and the truncation, durable before going on:
    // a record an earlier writer left unsynced is either persisted now or
    // (if its write-back already failed) confined to this segment's end,
    // which the next segment leaves a clean end.
    file.sync_data()
        .map_err(|e| Error::io(IoOp::FsyncSegment, &path, e))?;
    drop(file);
    new_segment(storage, dir, seq + 1)
}

/// Write a segment header into an empty file and make it durable, with the
/// directory entry. Returns the bytes reserved.
fn write_header<S: Storage>(
    storage: &S,
    dir: &Path,
    path: &Path,
    file: &mut S::File,
) -> Result<u64, Error> {
    let allocated = match file.allocate(0, PAGE) {
        Ok(true) => PAGE,
        Ok(false) => u64::MAX,
        Err(e) => return Err(Error::io(IoOp::PreallocateSegment, path, e)),
    };
    file.write_all_at(&format::segment_header(), 0)
        .map_err(|e| Error::io(IoOp::WriteHeader, path, e))?;
    file.sync_data()
        .map_err(|e| Error::io(IoOp::FsyncSegment, path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io(IoOp::FsyncDir, dir, e))?;
    Ok(allocated)
}

/// Create segment `seq` in `dir` with its header, durably.
fn new_segment<S: Storage>(storage: &S, dir: &Path, seq: u64) -> Result<Ready<S::File>, Error> {
    let path = dir.join(segment_name(seq));
    let mut file = storage
        .create(&path)
        .map_err(|e| Error::io(IoOp::CreateSegment, &path, e))?;
    let allocated = write_header(storage, dir, &path, &mut file)?;
    Ok(Ready {
        file,
        allocated,
        path,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(run_id: u64) -> Record {
        Record::RunStarted(RunStarted {
            run_id,
            started_ms: 1,
            pid: 2,
            version: "t".into(),
            target: "local".into(),
            batch_size: 1,
            on_error: "continue".into(),
            max_retries: 0,
        })
    }

    fn kept(rep: &Replay) -> &[Located] {
        rep.records.as_deref().expect("records kept")
    }

    #[test]
    fn reopened_log_appends_after_its_last_record() {
        let d = tempfile::tempdir().unwrap();
        for run in 1..=3 {
            let (mut w, rep) = Wal::open_in_keeping(Fs, &wal_dir(d.path()), Keep::Records).unwrap();
            assert_eq!(kept(&rep).len() as u64, run - 1);
            w.append(&[started(run)]).unwrap();
        }
        let rep = replay_records(d.path()).unwrap();
        let ids: Vec<u64> = kept(&rep)
            .iter()
            .map(|l| match &l.record {
                Record::RunStarted(r) => r.run_id,
                _ => 0,
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(rep.torn.is_none());
    }

    #[test]
    fn torn_tail_is_truncated_before_the_next_append() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(d.path()).unwrap();
        w.append(&[started(1)]).unwrap();
        let seg = w.segment().to_owned();
        drop(w);
        // The file is longer than its records (preallocated zeros).
        let rep = replay_records(d.path()).unwrap();
        let end = kept(&rep).last().map(|l| l.offset + l.len).unwrap();
        assert!(fs::metadata(&seg).unwrap().len() > end);
        let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(end - 5).unwrap();
        let (mut w, rep) = Wal::open(d.path()).unwrap();
        assert!(rep.torn.is_some());
        assert!(rep.records.is_none());
        assert_eq!(rep.state, State::default());
        w.append(&[started(2)]).unwrap();
        let rep = replay_records(d.path()).unwrap();
        assert!(rep.torn.is_none());
        assert_eq!(kept(&rep).len(), 1);
    }

    #[test]
    fn compaction_keeps_the_state_and_drops_old_segments() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(d.path()).unwrap();
        for run in 1..=50 {
            w.append(&[started(run)]).unwrap();
        }
        let before = replay(d.path()).unwrap().state;
        w.compact(&before).unwrap();
        w.append(&[started(51)]).unwrap();
        let rep = replay_records(d.path()).unwrap();
        assert_eq!(rep.segments.len(), 1);
        assert_eq!(kept(&rep).len(), 2, "snapshot + one record");
        assert_eq!(rep.state.next_run_id, 52);
        assert_eq!(list_segments(&wal_dir(d.path())).unwrap().len(), 1);
    }

    /// Write a segment file holding `records`; `flip` damages the payload of
    /// the record at that index (with more records after it: corruption).
    fn write_segment(dir: &Path, seq: u64, records: &[Record], flip: Option<usize>) -> u64 {
        let mut bytes = format::segment_header().to_vec();
        let mut damaged_at = 0;
        for (i, r) in records.iter().enumerate() {
            if Some(i) == flip {
                damaged_at = bytes.len();
            }
            r.encode(&mut bytes);
        }
        if flip.is_some() {
            bytes[damaged_at + format::RECORD_HEADER_LEN] ^= 1;
        }
        fs::write(dir.join(segment_name(seq)), &bytes).unwrap();
        damaged_at as u64
    }

    fn corrupt_in(e: Error) -> (String, u64) {
        match e {
            Error::Corrupt {
                segment, offset, ..
            } => (
                segment.file_name().unwrap().to_string_lossy().into_owned(),
                offset,
            ),
            other => panic!("not corruption: {other}"),
        }
    }

    #[test]
    fn replay_starts_at_the_newest_snapshot_and_reports_the_newest_damage() {
        let d = tempfile::tempdir().unwrap();
        let dir = wal_dir(d.path());
        create_private_dir(&dir).unwrap();
        let mut snap = State::default();
        snap.apply(&started(7));
        let snapshot = Record::Snapshot(Box::new(snap));
        // Damage older than the newest snapshot is never read.
        write_segment(&dir, 1, &[started(1), started(2)], Some(0));
        write_segment(&dir, 2, &[snapshot.clone(), started(8), started(9)], None);
        write_segment(&dir, 3, &[started(10), started(11)], None);
        for keep in [Keep::State, Keep::Records] {
            let rep = replay_in(&Fs, &dir, keep).unwrap();
            assert_eq!(rep.segments.len(), 2);
            assert_eq!(rep.state.next_run_id, 12);
            assert_eq!(
                rep.records.map(|r| r.len()),
                (keep == Keep::Records).then_some(5)
            );
        }
        // Damage in both replayed segments: the newest one is reported, as a
        // newest-first decode meets it first.
        let at2 = write_segment(
            &dir,
            2,
            &[snapshot.clone(), started(8), started(9)],
            Some(1),
        );
        let at3 = write_segment(&dir, 3, &[started(10), started(11)], Some(0));
        for keep in [Keep::State, Keep::Records] {
            let e = replay_in(&Fs, &dir, keep).unwrap_err();
            assert_eq!(corrupt_in(e), (segment_name(3), at3));
        }
        write_segment(&dir, 3, &[started(10), started(11)], None);
        for keep in [Keep::State, Keep::Records] {
            let e = replay_in(&Fs, &dir, keep).unwrap_err();
            assert_eq!(corrupt_in(e), (segment_name(2), at2));
        }
        // A damaged snapshot record does not start the replay: the error is
        // its own, not one from an older segment.
        let at2 = write_segment(&dir, 2, &[snapshot, started(8)], Some(0));
        for keep in [Keep::State, Keep::Records] {
            let e = replay_in(&Fs, &dir, keep).unwrap_err();
            assert_eq!(corrupt_in(e), (segment_name(2), at2));
        }
    }
}
