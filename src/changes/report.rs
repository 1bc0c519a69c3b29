//! What a `changes` run did: counts for the summary line and the
//! repositories that failed. Per-repository failures are not errors of the
//! run: the others are still processed, and the CLI exits 1 at the end.

/// One repository that could not be (fully) processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFailure {
    pub repo: String,
    pub reason: String,
}

/// What a run did, for the log and the exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangesReport {
    /// Repositories found under the roots.
    pub repos_scanned: usize,
    /// Repositories whose HEAD moved or that had file lines.
    pub repos_changed: usize,
    /// Repositories listed in full (first seen, or base object gone).
    pub full_snapshots: usize,
    /// Repositories with a base that are no longer under any root.
    pub repos_missing: usize,
    /// Submodule entries (gitlinks) skipped.
    pub submodules_skipped: usize,
    /// Paths skipped because they are not valid UTF-8.
    pub paths_skipped_non_utf8: usize,
    /// add / update / delete / rename / prune lines written.
    pub file_lines: u64,
    /// Every line written, `new_changeset` included.
    pub lines_written: u64,
    /// Repositories that failed (pull or diff); the others were processed.
    pub failures: Vec<RepoFailure>,
}

impl ChangesReport {
    pub fn repos_failed(&self) -> usize {
        self.failures.len()
    }

    /// Whether any repository failed: the CLI then exits 1, after writing
    /// what it could.
    pub fn any_failed(&self) -> bool {
        !self.failures.is_empty()
    }
}
