//! What the WAL records, and how each record's payload is encoded.
//!
//! Payloads are bincode 1.3.3 (fixed-width little-endian integers, u64 length
//! prefixes) of the structs below; the record type byte says which struct.
//! Adding a field changes the encoding, so any change to an existing record
//! bumps `format::VERSION` and `docs/wal-format.md`. A new record takes the
//! next type byte instead (older logs still decode); a new `State` field, a
//! new snapshot type (see [`Record::SnapshotV2`]).

use bincode::Options;
use serde::{Deserialize, Serialize};

use super::state::{State, StateV1};
/// Moved to [`crate::util`]; re-exported for the callers that still name it here.
pub use crate::util::hex;

/// Which manifest a record is about: its path when first seen, its size and a
/// SHA-256 fingerprint of its size, first MiB and last MiB. Progress is keyed
/// by `(size, fingerprint)`, so a manifest moved to another path is still
/// recognised, and a different file at the same path never is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestId {
    pub path: String,
    pub size: u64,
    pub fingerprint: [u8; 32],
    /// The manifest was read from stdin and spooled into the state dir.
    pub spooled: bool,
}

impl ManifestId {
    pub fn same_content(&self, other: &ManifestId) -> bool {
        self.size == other.size && self.fingerprint == other.fingerprint
    }

    /// First 12 hex digits of the fingerprint, for people.
    pub fn short(&self) -> String {
        hex(&self.fingerprint[..6])
    }
}

/// A byte range of the manifest, with the line numbers (1-based) of its first
/// line and of the line that starts right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    pub first_line: u64,
    pub next_line: u64,
}

/// Per-op and per-result counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub lines: u64,
    pub add: u64,
    pub update: u64,
    pub delete: u64,
    pub rename: u64,
    pub changeset: u64,
    pub prune: u64,
    /// Objects written (created or replaced).
    pub upserted: u64,
    /// Objects removed (or confirmed absent).
    pub deleted: u64,
    /// Lines whose op disagreed with the disk; the disk won.
    pub reconciled: u64,
    /// Files not indexed: binary, over the size limit, not a regular file,
    /// or a symlink leaving its root.
    pub skipped: u64,
    pub failed: u64,
}

impl Counts {
    /// Saturating: counts come from the log, which a damaged or crafted
    /// file may fill with anything, and replay never panics.
    pub fn add_all(&mut self, o: &Counts) {
        self.lines = self.lines.saturating_add(o.lines);
        self.add = self.add.saturating_add(o.add);
        self.update = self.update.saturating_add(o.update);
        self.delete = self.delete.saturating_add(o.delete);
        self.rename = self.rename.saturating_add(o.rename);
        self.changeset = self.changeset.saturating_add(o.changeset);
        self.prune = self.prune.saturating_add(o.prune);
        self.upserted = self.upserted.saturating_add(o.upserted);
        self.deleted = self.deleted.saturating_add(o.deleted);
        self.reconciled = self.reconciled.saturating_add(o.reconciled);
        self.skipped = self.skipped.saturating_add(o.skipped);
        self.failed = self.failed.saturating_add(o.failed);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStarted {
    pub run_id: u64,
    pub started_ms: u64,
    pub pid: u32,
    pub version: String,
    pub target: String,
    pub batch_size: u32,
    pub on_error: String,
    pub max_retries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestStarted {
    pub run_id: u64,
    pub manifest: ManifestId,
    pub total_lines: u64,
    /// `--from-line`: everything before this position counts as done and
    /// everything from it on is applied again.
    pub from: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchDone {
    pub run_id: u64,
    pub fingerprint: [u8; 32],
    pub seq: u64,
    pub spans: Vec<Span>,
    pub counts: Counts,
}

/// A `BatchDone` payload read in place, for replay: nothing is allocated,
/// the spans stay encoded in the payload. Its layout is bincode's for
/// [`BatchDone`] (see `docs/wal-format.md`); [`BatchDoneView::parse`] accepts
/// exactly the payloads [`Record::decode`] accepts for type 3, with the same
/// values (tests and the `wal_decode` fuzz target hold the two together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchDoneView<'a> {
    pub run_id: u64,
    pub fingerprint: &'a [u8; 32],
    pub seq: u64,
    spans: &'a [[u8; SPAN_LEN]],
    pub counts: Counts,
}

/// Bytes of one encoded [`Span`]: four u64.
const SPAN_LEN: usize = 32;

/// Reads the fixed-width little-endian fields bincode writes.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn array<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array::<8>().map(|b| u64::from_le_bytes(*b))
    }
}

fn le_u64(b: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*b)
}

fn span_of(b: &[u8; SPAN_LEN]) -> Span {
    let (w, _) = b.as_chunks::<8>();
    let word = |i: usize| w.get(i).map_or(0, le_u64);
    Span {
        start: word(0),
        end: word(1),
        first_line: word(2),
        next_line: word(3),
    }
}

impl<'a> BatchDoneView<'a> {
    /// Read a type-3 payload. `None` when it is not exactly one encoded
    /// `BatchDone` (then [`Record::decode`] says why).
    pub fn parse(payload: &'a [u8]) -> Option<Self> {
        let mut f = Fields(payload);
        let run_id = f.u64()?;
        let fingerprint = f.array::<32>()?;
        let seq = f.u64()?;
        let n = usize::try_from(f.u64()?).ok()?;
        let span_bytes = n.checked_mul(SPAN_LEN)?;
        if f.0.len() < span_bytes {
            return None;
        }
        let (spans, rest) = f.0.split_at(span_bytes);
        let (spans, _) = spans.as_chunks::<SPAN_LEN>();
        f.0 = rest;
        let counts = Counts {
            lines: f.u64()?,
            add: f.u64()?,
            update: f.u64()?,
            delete: f.u64()?,
            rename: f.u64()?,
            changeset: f.u64()?,
            prune: f.u64()?,
            upserted: f.u64()?,
            deleted: f.u64()?,
            reconciled: f.u64()?,
            skipped: f.u64()?,
            failed: f.u64()?,
        };
        // bincode refuses trailing bytes; so does this.
        if !f.0.is_empty() {
            return None;
        }
        Some(BatchDoneView {
            run_id,
            fingerprint,
            seq,
            spans,
            counts,
        })
    }

    /// [`BatchDoneView::parse`] for a record of type `kind`: `None` unless
    /// it is a `BatchDone` (type 3).
    pub fn parse_record(kind: u8, payload: &'a [u8]) -> Option<Self> {
        if kind == 3 {
            Self::parse(payload)
        } else {
            None
        }
    }

    /// The byte ranges the batch applied, in record order.
    pub fn spans(&self) -> impl ExactSizeIterator<Item = Span> + 'a {
        self.spans.iter().map(span_of)
    }

    /// The owned record.
    pub fn to_owned(&self) -> BatchDone {
        BatchDone {
            run_id: self.run_id,
            fingerprint: *self.fingerprint,
            seq: self.seq,
            spans: self.spans().collect(),
            counts: self.counts,
        }
    }
}

/// Why an item failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The line itself is bad (JSON, fields, path rules).
    Malformed,
    /// The file could not be read (permissions, I/O error).
    Source,
    /// The index refused or kept failing the write.
    Target,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Malformed => "malformed_line",
            FailureKind::Source => "file_unreadable",
            FailureKind::Target => "index_error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFailed {
    pub run_id: u64,
    pub fingerprint: [u8; 32],
    pub line: u64,
    pub offset: u64,
    pub end: u64,
    pub repo: String,
    pub path: String,
    pub kind: FailureKind,
    pub reason: String,
    /// How many runs have tried this line, this one included.
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesetSeen {
    pub run_id: u64,
    pub fingerprint: [u8; 32],
    pub line: u64,
    pub repo: String,
    pub commit: String,
    pub branch: Option<String>,
    pub parent: Option<String>,
    /// Written by `elysiactl changes` (it has a `parent` key): may become the
    /// repo's applied base. mgit's changesets are only recorded.
    pub base: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Every line applied.
    Complete,
    /// Finished; some items failed (exit 1).
    Failures,
    /// `--on-error stop` ended the run at a failed batch (exit 1).
    Stopped,
    /// The target or the state could not go on (exit 3).
    Fatal,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Complete => "complete",
            RunStatus::Failures => "partially_complete",
            RunStatus::Stopped => "stopped",
            RunStatus::Fatal => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFinished {
    pub run_id: u64,
    pub finished_ms: u64,
    pub status: RunStatus,
    pub counts: Counts,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestAbandoned {
    pub run_id: u64,
    pub fingerprint: [u8; 32],
    pub path: String,
    pub remaining_lines: u64,
}

/// A manifest that was completely applied, given again: it is applied again
/// from line 1. Its applied ranges are forgotten (so a run killed midway
/// resumes it); its failed lines stay, their attempts going on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRestarted {
    pub run_id: u64,
    pub fingerprint: [u8; 32],
}

/// The index a state dir belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetIdentity {
    /// `local` or `weaviate`.
    pub kind: String,
    /// The server's URL with any credentials removed; `""` for local.
    pub server: String,
    /// The collection; `""` for local.
    pub collection: String,
    /// Bytes per chunk; 0 is one object per file.
    pub chunk_size: u64,
}

/// Failed lines that are no longer outstanding because a later line
/// applied the same file: (manifest fingerprint, byte offset of the line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailuresResolved {
    pub run_id: u64,
    pub entries: Vec<([u8; 32], u64)>,
}

/// Every record the WAL holds. New records take new type bytes after the
/// existing ones, so every log an older build wrote still decodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    RunStarted(RunStarted),
    ManifestStarted(ManifestStarted),
    BatchDone(BatchDone),
    ItemFailed(ItemFailed),
    ChangesetSeen(ChangesetSeen),
    RunFinished(RunFinished),
    ManifestAbandoned(ManifestAbandoned),
    /// The whole recovered state as builds before [`State::target`] wrote
    /// it (type 8): it decodes with no target, and encodes without one.
    Snapshot(Box<State>),
    ManifestRestarted(ManifestRestarted),
    TargetBound(TargetIdentity),
    FailuresResolved(FailuresResolved),
    /// The whole recovered state, written first in a segment by compaction
    /// (type 12: type 8's fields, then the target).
    SnapshotV2(Box<State>),
}

/// The type bytes of snapshot records (what compaction writes first in a
/// segment, and where replay may start).
pub const SNAPSHOT_KINDS: [u8; 2] = [8, 12];

/// Whether `kind` is the type of a snapshot record.
pub fn is_snapshot_kind(kind: u8) -> bool {
    SNAPSHOT_KINDS.contains(&kind)
}

/// A payload that passed its checksum but does not decode: a bug or a
/// version mismatch, never a torn write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

impl Record {
    /// The record type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Record::RunStarted(_) => 1,
            Record::ManifestStarted(_) => 2,
            Record::BatchDone(_) => 3,
            Record::ItemFailed(_) => 4,
            Record::ChangesetSeen(_) => 5,
            Record::RunFinished(_) => 6,
            Record::ManifestAbandoned(_) => 7,
            Record::Snapshot(_) => 8,
            Record::ManifestRestarted(_) => 9,
            Record::TargetBound(_) => 10,
            Record::FailuresResolved(_) => 11,
            Record::SnapshotV2(_) => 12,
        }
    }

    /// A snapshot of the whole state (either layout).
    pub fn is_snapshot(&self) -> bool {
        matches!(self, Record::Snapshot(_) | Record::SnapshotV2(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Record::RunStarted(_) => "RunStarted",
            Record::ManifestStarted(_) => "ManifestStarted",
            Record::BatchDone(_) => "BatchDone",
            Record::ItemFailed(_) => "ItemFailed",
            Record::ChangesetSeen(_) => "ChangesetSeen",
            Record::RunFinished(_) => "RunFinished",
            Record::ManifestAbandoned(_) => "ManifestAbandoned",
            Record::Snapshot(_) => "Snapshot",
            Record::ManifestRestarted(_) => "ManifestRestarted",
            Record::TargetBound(_) => "TargetBound",
            Record::FailuresResolved(_) => "FailuresResolved",
            Record::SnapshotV2(_) => "SnapshotV2",
        }
    }

    /// Frame this record onto `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let c = codec();
        let payload = match self {
            Record::RunStarted(r) => c.serialize(r),
            Record::ManifestStarted(r) => c.serialize(r),
            Record::BatchDone(r) => c.serialize(r),
            Record::ItemFailed(r) => c.serialize(r),
            Record::ChangesetSeen(r) => c.serialize(r),
            Record::RunFinished(r) => c.serialize(r),
            Record::ManifestAbandoned(r) => c.serialize(r),
            Record::Snapshot(r) => c.serialize(&r.as_v1()),
            Record::ManifestRestarted(r) => c.serialize(r),
            Record::TargetBound(r) => c.serialize(r),
            Record::FailuresResolved(r) => c.serialize(r),
            Record::SnapshotV2(r) => c.serialize(r.as_ref()),
        };
        // Serializing plain structs into a Vec cannot fail.
        let payload = payload.unwrap_or_default();
        super::format::encode_record(out, self.kind(), &payload);
    }

    /// Decode a payload of type `kind`. Allocation is bounded by the payload's
    /// length, whatever its length prefixes claim.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Record, DecodeError> {
        let c = codec().with_limit(payload.len() as u64);
        let r = match kind {
            1 => c.deserialize(payload).map(Record::RunStarted),
            2 => c.deserialize(payload).map(Record::ManifestStarted),
            3 => c.deserialize(payload).map(Record::BatchDone),
            4 => c.deserialize(payload).map(Record::ItemFailed),
            5 => c.deserialize(payload).map(Record::ChangesetSeen),
            6 => c.deserialize(payload).map(Record::RunFinished),
            7 => c.deserialize(payload).map(Record::ManifestAbandoned),
            8 => c
                .deserialize::<StateV1>(payload)
                .map(|s| Record::Snapshot(Box::new(State::from_v1(s)))),
            9 => c.deserialize(payload).map(Record::ManifestRestarted),
            10 => c.deserialize(payload).map(Record::TargetBound),
            11 => c.deserialize(payload).map(Record::FailuresResolved),
            12 => c
                .deserialize::<State>(payload)
                .map(|s| Record::SnapshotV2(Box::new(s))),
            other => return Err(DecodeError(format!("unknown record type {other}"))),
        };
        r.map_err(|e| DecodeError(format!("record type {kind} does not decode: {e}")))
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
