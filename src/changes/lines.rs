//! The manifest lines `changes` writes, in SPEC.md's shape, and [`Lines`],
//! the writer that counts them. A write error is fatal to the run
//! ([`Error::Output`]): nothing after it could be trusted.

use std::io::{self, Write};

use serde::Serialize;

use super::Error;

/// One manifest line, in SPEC.md's shape.
#[derive(Debug, Serialize)]
pub(super) struct FileLine<'a> {
    pub(super) op: &'a str,
    pub(super) repo: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) from: Option<&'a str>,
    pub(super) path: &'a str,
}

#[derive(Debug, Serialize)]
struct PruneLine<'a> {
    op: &'static str,
    repo: &'a str,
}

#[derive(Debug, Serialize)]
pub(super) struct ChangesetLine<'a> {
    pub(super) repo: &'a str,
    pub(super) new_changeset: &'a Changeset,
}

/// The `new_changeset` of a repository. An empty `commit` means the
/// repository is gone: nothing of it is applied any more (see
/// [`GONE`](super::GONE)).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(super) struct Changeset {
    pub(super) commit: String,
    pub(super) parent: Option<String>,
    pub(super) branch: Option<String>,
}

/// Counts lines and turns I/O errors into the fatal [`Error::Output`].
pub(super) struct Lines<'w> {
    pub(super) out: &'w mut dyn Write,
    pub(super) file_lines: u64,
    pub(super) all_lines: u64,
}

impl Lines<'_> {
    /// A `prune` line for `repo` (it counts as a file line).
    pub(super) fn prune(&mut self, repo: &str) -> Result<(), Error> {
        self.write(&PruneLine { op: "prune", repo }, true)
    }

    pub(super) fn write<T: Serialize>(
        &mut self,
        value: &T,
        is_file_line: bool,
    ) -> Result<(), Error> {
        let mut buf = serde_json::to_vec(value).map_err(|e| Error::Output(io::Error::other(e)))?;
        buf.push(b'\n');
        self.out.write_all(&buf).map_err(Error::Output)?;
        self.all_lines += 1;
        if is_file_line {
            self.file_lines += 1;
        }
        Ok(())
    }
}
