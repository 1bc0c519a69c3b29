//! Where changes go: the embedded local index (default) or Weaviate.
//!
//! A target receives a batch of [`Op`]s in manifest order and applies them.
//! `apply` returns `Ok` only once the effect is durable on the target: the sync
//! loop writes the batch to the WAL as done right after, so a target that
//! acknowledged early could lose work the WAL claims was applied.
//!
//! Every op is idempotent (upsert by deterministic id, delete of an absent
//! object succeeds), which is what makes a redone batch harmless.

pub mod local;
pub mod search;

use std::time::Duration;

pub mod weaviate;
use uuid::Uuid;

/// The namespace of object ids (RFC 4122 URL namespace), fixed by SPEC.md.
pub const ID_NAMESPACE: Uuid = Uuid::NAMESPACE_URL;

/// The object id of a file: UUIDv5(URL, `elysiactl://<repo>/<path>`).
pub fn object_id(repo: &str, path: &str) -> Uuid {
    let name = format!("elysiactl://{repo}/{path}");
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// One indexed file as both targets store it: its chunks (see
/// [`crate::object`]).
pub use crate::object::Document;

/// One object as `index export` prints it (either target). An object from
/// before chunked objects reads as the one chunk of its file: chunk 0 of 1,
/// bytes `[0, size)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exported {
    pub id: String,
    pub repo: String,
    pub path: String,
    pub chunk: u64,
    pub chunk_count: u64,
    pub byte_start: u64,
    pub byte_end: u64,
    pub start_line: u64,
    pub end_line: u64,
    pub size: u64,
    pub content_sha256: String,
    /// The chunk's text, when asked for (`index export --content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One change to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Make the file's objects exactly `doc.chunks`: write every chunk, then
    /// remove the file's chunks numbered `doc.chunks.len()` and up (an
    /// earlier, longer version's). `Ok` only once both are done.
    Upsert(Document),
    /// Remove every object of `repo`/`path` (all its chunks) if present;
    /// `id` is the file's key (its chunk 0 id).
    Delete {
        id: Uuid,
        repo: String,
        path: String,
    },
}

impl Op {
    pub fn id(&self) -> Uuid {
        match self {
            Op::Upsert(d) => d.id,
            Op::Delete { id, .. } => *id,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Op::Upsert(d) => &d.path,
            Op::Delete { path, .. } => path,
        }
    }
}

/// What happened to one op of a batch that the target accepted as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    Ok,
    Failed {
        /// A later attempt may succeed (rate limit, deadline): retried up to
        /// `--max-retries` whatever `--on-error` says.
        retryable: bool,
        message: String,
    },
}

impl OpOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, OpOutcome::Ok)
    }
}

/// A failure of a whole batch (or of the target itself).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target cannot be reached at all (connection refused, DNS, not
    /// ready). Retried; if it persists the run ends with exit 3, state saved.
    #[error("{target} unreachable: {message}")]
    Unreachable {
        target: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request failed in a way a later attempt may fix (timeout, 429,
    /// 5xx, dropped connection).
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request was refused for good (validation, auth, usage limit).
    /// Every op of the batch fails with this message.
    #[error("{message}")]
    Rejected { message: String },
    /// The target is broken (local index I/O error, full disk, bad schema):
    /// the run stops with exit 3, state saved.
    #[error("{message}")]
    Fatal { message: String },
}

impl Error {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Transient { .. })
    }

    /// Whether the run must stop (exit 3) once retries are exhausted.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Fatal { .. })
    }

    /// The server's Retry-After, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unreachable { retry_after, .. } | Error::Transient { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// A place changes are written to.
///
/// `Sync` because with `max_in_flight() > 1` several worker threads call
/// `apply` at once, each with its own batch.
pub trait Target: Send + Sync {
    /// Short name for messages ("local index", "Weaviate at URL").
    fn describe(&self) -> String;

    /// Make sure the target is reachable and ready (create the collection,
    /// open the index). Called once before the first batch.
    fn prepare(&self) -> Result<(), Error>;

    /// Apply `ops` in order and return one outcome per op. `Ok` means every
    /// op reported `OpOutcome::Ok` is durable.
    fn apply(&self, ops: &[Op]) -> Result<Vec<OpOutcome>, Error>;

    /// Paths (repo-relative) of every object the target holds for `repo`, so
    /// a `prune` line can remove objects whose files are gone.
    fn list_repo(&self, repo: &str) -> Result<Vec<String>, Error>;

    /// Every object the target holds (for `index export`), sorted by repo,
    /// path and id; with each chunk's text when `content`.
    fn export(&self, content: bool) -> Result<Vec<Exported>, Error>;

    /// Every object the target holds, one at a time and in no set order,
    /// with its text when `content`: what `index verify` reads, holding one
    /// page at a time rather than the whole index.
    fn scan(&self, content: bool, each: &mut dyn FnMut(Exported)) -> Result<(), Error> {
        self.export(content)?.into_iter().for_each(each);
        Ok(())
    }

    /// Whether the target holds no object at all (`None`: cannot tell
    /// cheaply). A sync whose WAL records applied work checks it at start,
    /// to notice an index deleted or reset behind its back.
    fn is_empty(&self) -> Result<Option<bool>, Error> {
        Ok(None)
    }

    /// How many batches may be in flight at once.
    fn max_in_flight(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_is_uuid_v5_of_the_spec_name() {
        let id = object_id("ServiceA", "src/main.py");
        assert_eq!(id.get_version_num(), 5);
        let expected = Uuid::new_v5(
            &Uuid::parse_str("6ba7b811-9dad-11d1-80b4-00c04fd430c8").unwrap(),
            b"elysiactl://ServiceA/src/main.py",
        );
        assert_eq!(id, expected);
        // Python: uuid.uuid5(uuid.NAMESPACE_URL, "elysiactl://ServiceA/src/main.py")
        assert_eq!(id.to_string(), "850e44aa-fe73-571b-a991-2a849c0a5c11");
        assert_ne!(id, object_id("ServiceA", "src/main.rs"));
    }
}
