//! The appending side of the log: [`Wal`] opens a recovered directory,
//! appends records in one write plus `fdatasync`, starts a new segment past
//! [`SEGMENT_TARGET_LEN`], and compacts the log into one snapshot.
//!
//! Invariants: space is reserved (`fallocate`) before any byte of a record is
//! written; appends after recovery go to a fresh segment; any failure poisons
//! the writer, and an fsync is never retried.

use std::path::{Path, PathBuf};

use super::error::{Error, IoOp, Poison};
use super::format::{self, SEGMENT_HEADER_LEN};
use super::read::{list_segments_in, replay_in, segment_name, segment_seq, wal_dir, Keep, Replay};
use super::record::Record;
use super::state::State;
use super::storage::{Fs, SegmentFile, Storage};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_TARGET_LEN: u64 = 64 << 20;

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
/// Generic over its file I/O ([`Storage`]) so tests can run it on
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
