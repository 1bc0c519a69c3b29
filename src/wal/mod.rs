//! The write-ahead log: an append-only series of segment files under
//! `<state-dir>/wal/`, each record framed with its length and CRCs
//! ([`format`](mod@format)), each payload a bincode-encoded [`Record`].
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
//!
//! Rooms: [`format`](mod@format) (framing, no I/O), [`record`] (payloads),
//! [`state`] (what replaying records builds), [`read`] (recovery and
//! replay), `writer` ([`Wal`], the appending side), `error` ([`Error`] and
//! [`IoOp`]), [`storage`] (the file I/O trait and its fault model).

mod error;
pub mod format;
pub mod read;
pub mod record;
pub mod state;
pub mod storage;
mod writer;

pub use error::{Error, IoOp};
pub use read::{
    decode_segment, decode_segment_at, list_segments, read_log, read_log_in, read_segments_in,
    replay, replay_dir, replay_in, replay_read, replay_records, replay_segments, segment_seq,
    wal_dir, Keep, Located, LogRead, Place, Replay, TornTail, VANISHED_RETRIES,
};
pub use record::{
    is_snapshot_kind, BatchDone, BatchDoneView, ChangesetSeen, Counts, DecodeError, FailureKind,
    FailuresResolved, ItemFailed, ManifestAbandoned, ManifestId, ManifestRestarted,
    ManifestStarted, Record, RunFinished, RunStarted, RunStatus, Span, TargetIdentity,
    SNAPSHOT_KINDS,
};
pub use state::{AppliedChangeset, FailedEntry, ManifestProgress, RunSummary, State};
pub use writer::{Wal, PREALLOC_MAX_STEP, SEGMENT_TARGET_LEN};

/// Moved to [`crate::util`]; re-exported for the callers that still name it here.
pub use crate::util::{create_private_dir, hex};

#[cfg(test)]
mod tests;
