//! The WAL's error type, and what poisons a writer.
//!
//! An I/O failure carries its operation as an [`IoOp`], so whether it was an
//! fsync (never retried) is a `match`, never read back from a message. A
//! writer that saw any failure refuses further appends ([`Error::PreviousIo`])
//! until the log is reopened and recovered.

use std::io;
use std::path::{Path, PathBuf};

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
pub(super) struct Poison {
    pub(super) cause: String,
    op: Option<IoOp>,
}

impl Poison {
    pub(super) fn of(e: &Error) -> Poison {
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

    pub(super) fn refusal(&self) -> Error {
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
