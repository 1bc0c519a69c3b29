//! The write-ahead log: an append-only series of segment files under
//! `<state-dir>/wal/`, each record framed with its length and CRCs
//! ([`format`]), each payload a bincode-encoded [`Record`].
//!
//! Invariants:
//! - A record is acknowledged only after `fdatasync` of its segment; a new
//!   segment is made durable with an fsync of the directory.
//! - Recovery replays from the newest segment that opens with a snapshot. A
//!   torn final record is dropped (and truncated away before the next
//!   append); damage anywhere else is an error naming segment and offset.
//! - After a failed write or fsync the writer refuses further appends until
//!   reopened (an fsync is never retried: the kernel may have dropped the
//!   dirty pages it failed to write).

pub mod format;
pub mod record;
pub mod state;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use record::*;
pub use state::{AppliedChangeset, FailedEntry, ManifestProgress, RunSummary, State};

use format::{HeaderProblem, Step, SEGMENT_HEADER_LEN};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_TARGET_LEN: u64 = 64 << 20;

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
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("WAL refuses appends after an earlier write failure ({0}); state will be recovered from what is durable on the next run")]
    PreviousIo(String),
}

impl Error {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
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

    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}

/// One decoded record and where it was.
#[derive(Debug, Clone)]
pub struct Located {
    pub segment: PathBuf,
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

/// What reading the log found.
#[derive(Debug, Default)]
pub struct Replay {
    pub state: State,
    pub records: Vec<Located>,
    pub torn: Option<TornTail>,
    pub segments: Vec<PathBuf>,
    pub bytes: u64,
    /// Where the next record goes: (segment path, offset).
    end: Option<(PathBuf, u64)>,
}

/// The WAL directory inside a state dir.
pub fn wal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("wal")
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

fn segment_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files of a WAL directory, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read WAL directory", dir, e)),
    };
    let mut segs: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read WAL directory", dir, e))?;
        let path = entry.path();
        if let Some(seq) = segment_seq(&path) {
            segs.push((seq, path));
        }
    }
    segs.sort();
    Ok(segs.into_iter().map(|(_, p)| p).collect())
}

/// Decode every record of one segment's bytes. `last` says whether this is
/// the newest segment, the only place a torn tail is allowed.
pub fn decode_segment(
    path: &Path,
    bytes: &[u8],
    last: bool,
) -> Result<(Vec<Located>, Option<TornTail>, u64), Error> {
    let corrupt = |offset: u64, reason: String| Error::Corrupt {
        segment: path.to_owned(),
        offset,
        reason,
    };
    match format::check_segment_header(bytes) {
        Ok(()) => {}
        Err(HeaderProblem::Short | HeaderProblem::Damaged)
            if last && (bytes.len() < SEGMENT_HEADER_LEN || bytes.iter().all(|&b| b == 0)) =>
        {
            return Ok((
                Vec::new(),
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
    // A batch record is about 200 bytes: size the list once rather than
    // growing (and page-faulting) it through a dozen doublings.
    let mut out = Vec::with_capacity(bytes.len() / 256);
    loop {
        match format::decode_at(bytes, at) {
            Step::Record {
                kind,
                payload,
                next,
            } => {
                let record = Record::decode(kind, payload).map_err(|e| corrupt(at as u64, e.0))?;
                out.push(Located {
                    segment: path.to_owned(),
                    offset: at as u64,
                    len: (next - at) as u64,
                    record,
                });
                at = next;
            }
            Step::End => return Ok((out, None, at as u64)),
            Step::Torn { reason } if last => {
                return Ok((
                    out,
                    Some(TornTail {
                        segment: path.to_owned(),
                        offset: at as u64,
                        dropped_bytes: (bytes.len() - at) as u64,
                        reason: reason.into(),
                    }),
                    at as u64,
                ))
            }
            Step::Torn { reason } | Step::Corrupt { reason } => {
                return Err(corrupt(at as u64, reason.into()))
            }
        }
    }
}

/// Read and replay the whole log of a state dir without changing anything
/// (for `--status` and `wal inspect`; safe while a sync runs).
pub fn replay(state_dir: &Path) -> Result<Replay, Error> {
    replay_dir(&wal_dir(state_dir))
}

/// Replay the segments of a WAL directory.
pub fn replay_dir(dir: &Path) -> Result<Replay, Error> {
    let segments = list_segments(dir)?;
    replay_segments(&segments)
}

/// Replay the given segments (oldest first).
pub fn replay_segments(segments: &[PathBuf]) -> Result<Replay, Error> {
    let mut rep = Replay {
        segments: segments.to_vec(),
        ..Replay::default()
    };
    // Start at the newest segment that opens with a snapshot: compaction
    // writes one before deleting what it summarises, so anything older is
    // already folded into it.
    let mut decoded: Vec<(Vec<Located>, Option<TornTail>, u64)> = Vec::new();
    let mut start = 0;
    for (i, seg) in segments.iter().enumerate().rev() {
        let bytes = fs::read(seg).map_err(|e| Error::io("read WAL segment", seg, e))?;
        rep.bytes += bytes.len() as u64;
        let last = i + 1 == segments.len();
        let d = decode_segment(seg, &bytes, last)?;
        let opens_with_snapshot =
            matches!(d.0.first(), Some(l) if matches!(l.record, Record::Snapshot(_)));
        decoded.push(d);
        if opens_with_snapshot {
            start = i;
            break;
        }
    }
    decoded.reverse();
    rep.segments = segments[start..].to_vec();
    for (i, (records, torn, end)) in decoded.into_iter().enumerate() {
        for l in &records {
            rep.state.apply(&l.record);
        }
        // Move rather than copy the first (usually only) segment's records.
        if rep.records.is_empty() {
            rep.records = records;
        } else {
            rep.records.extend(records);
        }
        if torn.is_some() {
            rep.torn = torn;
        }
        rep.end = Some((segments[start + i].clone(), end));
    }
    Ok(rep)
}

/// Open options for files the state dir holds: owner-only.
fn create_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).mode(0o600);
    o
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Create a directory (and parents) owner-only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The appending side of the log. One per state dir, under its lock.
pub struct Wal {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    seq: u64,
    len: u64,
    poisoned: Option<String>,
    buf: Vec<u8>,
}

impl Wal {
    /// Recover the log of `state_dir` and open it for appending. A torn tail
    /// is truncated away (and the truncation made durable) first.
    pub fn open(state_dir: &Path) -> Result<(Wal, Replay), Error> {
        let dir = wal_dir(state_dir);
        create_private_dir(&dir).map_err(|e| Error::io("create WAL directory", &dir, e))?;
        let rep = replay_dir(&dir)?;
        let wal = match &rep.end {
            Some((path, end)) if *end >= SEGMENT_HEADER_LEN as u64 => {
                let file = create_options()
                    .open(path)
                    .map_err(|e| Error::io("open WAL segment", path, e))?;
                let len = file
                    .metadata()
                    .map_err(|e| Error::io("stat WAL segment", path, e))?
                    .len();
                if len != *end {
                    file.set_len(*end)
                        .map_err(|e| Error::io("truncate torn WAL tail", path, e))?;
                    file.sync_all()
                        .map_err(|e| Error::io("fsync WAL segment", path, e))?;
                }
                // Appends go after the last good record, never over the header.
                (&file)
                    .seek(SeekFrom::Start(*end))
                    .map_err(|e| Error::io("seek WAL segment", path, e))?;
                let seq = segment_seq(path).unwrap_or(1);
                Wal {
                    dir: dir.clone(),
                    file,
                    path: path.clone(),
                    seq,
                    len: *end,
                    poisoned: None,
                    buf: Vec::new(),
                }
            }
            Some((path, _)) => {
                // The newest segment's header itself was torn: start it over.
                let seq = segment_seq(path).unwrap_or(1);
                Self::create_segment(&dir, seq, true)?
            }
            None => Self::create_segment(&dir, 1, false)?,
        };
        Ok((wal, rep))
    }

    fn create_segment(dir: &Path, seq: u64, replace: bool) -> Result<Wal, Error> {
        let path = dir.join(segment_name(seq));
        let mut opts = create_options();
        if replace {
            opts.truncate(true);
        } else {
            opts.create_new(true);
        }
        let mut file = opts
            .open(&path)
            .map_err(|e| Error::io("create WAL segment", &path, e))?;
        file.write_all(&format::segment_header())
            .map_err(|e| Error::io("write WAL segment header", &path, e))?;
        file.sync_all()
            .map_err(|e| Error::io("fsync WAL segment", &path, e))?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_owned(),
            file,
            path,
            seq,
            len: SEGMENT_HEADER_LEN as u64,
            poisoned: None,
            buf: Vec::new(),
        })
    }

    /// The segment being appended to.
    pub fn segment(&self) -> &Path {
        &self.path
    }

    /// Whether an earlier failure stopped appends.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Append `records` in one write and make them durable (fdatasync).
    pub fn append(&mut self, records: &[Record]) -> Result<(), Error> {
        if let Some(why) = &self.poisoned {
            return Err(Error::PreviousIo(why.clone()));
        }
        if self.len >= SEGMENT_TARGET_LEN {
            self.rotate()?;
        }
        self.buf.clear();
        for r in records {
            r.encode(&mut self.buf);
        }
        let res = self
            .file
            .write_all(&self.buf)
            .map_err(|e| Error::io("append to WAL", &self.path, e))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|e| Error::io("fdatasync WAL", &self.path, e))
            });
        match res {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn rotate(&mut self) -> Result<(), Error> {
        match Self::create_segment(&self.dir, self.seq + 1, false) {
            Ok(w) => {
                *self = w;
                Ok(())
            }
            Err(e) => {
                self.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Replace the whole log by one snapshot of `state`: write it as the first
    /// record of a new segment, make that durable, then delete the older
    /// segments. A crash at any point leaves either the old log or the
    /// snapshot (recovery starts at the newest snapshot).
    pub fn compact(&mut self, state: &State) -> Result<(), Error> {
        if let Some(why) = &self.poisoned {
            return Err(Error::PreviousIo(why.clone()));
        }
        let old = list_segments(&self.dir)?;
        let mut next = Self::create_segment(&self.dir, self.seq + 1, false)?;
        next.append(&[Record::Snapshot(Box::new(state.compacted()))])?;
        for seg in old {
            if seg != next.path {
                fs::remove_file(&seg)
                    .map_err(|e| Error::io("remove compacted segment", &seg, e))?;
            }
        }
        sync_dir(&self.dir)?;
        *self = next;
        Ok(())
    }

    /// Bytes in all segments.
    pub fn total_len(&self) -> u64 {
        list_segments(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
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

    #[test]
    fn reopened_log_appends_after_its_last_record() {
        let d = tempfile::tempdir().unwrap();
        for run in 1..=3 {
            let (mut w, rep) = Wal::open(d.path()).unwrap();
            assert_eq!(rep.records.len() as u64, run - 1);
            w.append(&[started(run)]).unwrap();
        }
        let rep = replay(d.path()).unwrap();
        let ids: Vec<u64> = rep
            .records
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
        let full = fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(full - 5).unwrap();
        let (mut w, rep) = Wal::open(d.path()).unwrap();
        assert!(rep.torn.is_some());
        assert!(rep.records.is_empty());
        w.append(&[started(2)]).unwrap();
        let rep = replay(d.path()).unwrap();
        assert!(rep.torn.is_none());
        assert_eq!(rep.records.len(), 1);
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
        let rep = replay(d.path()).unwrap();
        assert_eq!(rep.segments.len(), 1);
        assert_eq!(rep.records.len(), 2, "snapshot + one record");
        assert_eq!(rep.state.next_run_id, 52);
        assert_eq!(list_segments(&wal_dir(d.path())).unwrap().len(), 1);
    }
}
