//! `elysiactl changes`: the manifest producer, from git history.
//!
//! For every git repository directly under each root, diff the commit whose
//! changes the sync last applied (the *base*, read from the sync's state by the
//! caller) against HEAD, and write SPEC.md manifest lines: one per changed
//! file, then one `new_changeset` per repository. Producing a manifest never
//! advances a base; only the sync does, once it has applied every earlier line
//! of that repository. So a killed or failed sync just means the next run
//! covers the same ground again, and applying a line twice changes nothing.
//!
//! Layout of a manifest, in this order:
//! 1. per repository (roots in order, names sorted): its file lines, and a
//!    `prune` line after a full snapshot;
//! 2. `prune` lines for repositories that vanished from the roots;
//! 3. when anything changed, an `update` for every symlink of every repository
//!    (a symlink's content is its target's, which may live elsewhere);
//! 4. one `new_changeset` per repository with lines or a new HEAD.
//!
//! Per-repository failures (pull, corrupt repository, git error) are
//! reported and do not stop the others; the caller exits non-zero at the end.
//! docs/changes.md is the user-facing description of all this.
//!
//! Rooms: this file (options, the run-wide [`Error`], [`run`] tying the
//! steps together), `discover` (which repositories the roots hold), `scan`
//! (one repository: HEAD, diff or full listing, symlinks), `lines` (the
//! manifest lines and their counting writer), `report` (what a run did),
//! `pull` (`--pull`), `git` (running git and decoding its output).

mod discover;
mod git;
mod lines;
pub use crate::manifest::mgit;
pub mod output;
mod pull;
mod report;
mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;

use discover::{discover, shown_roots, RepoDir};
pub use git::{redact_url_credentials, GitError};
use lines::{Changeset, ChangesetLine, Lines};
pub use report::{ChangesReport, RepoFailure};
use scan::{head_changeset, refresh_symlinks, scan_repo, RepoError};

/// What to scan and from where.
#[derive(Debug, Clone)]
pub struct ChangesOptions {
    /// Directories whose direct children are repositories.
    pub roots: Vec<PathBuf>,
    /// Repository name → commit whose changes were fully applied (from
    /// `sync::applied_changesets`). A repository absent here is new: every
    /// tracked file is listed as `add`.
    pub bases: BTreeMap<String, String>,
    /// Fast-forward every repository from its upstream before diffing.
    pub pull: bool,
    /// Pulls in flight at once (at least 1).
    pub jobs: usize,
    /// Emit `prune` for a repository that has a base but is no longer under
    /// any root. Off when a run deliberately covers only some of the roots
    /// that share the state dir.
    pub prune_missing: bool,
    /// The git program (default `git`, found on PATH).
    pub git: OsString,
}

impl ChangesOptions {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        ChangesOptions {
            roots,
            bases: BTreeMap::new(),
            pull: false,
            jobs: 4,
            prune_missing: true,
            git: OsString::from("git"),
        }
    }
}

/// Where [`write_manifest`] puts the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    /// Replaced atomically ([`output::AtomicFile`]), so the sync never reads
    /// half a manifest.
    File(PathBuf),
}

/// A failure of the whole run. Per-repository problems are not errors: they
/// are in [`ChangesReport::failures`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("root {}: {source}", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("root {} is not a directory", path.display())]
    RootNotDir { path: PathBuf },
    #[error("no root given (use --root DIR)")]
    NoRoot,
    /// A root that is itself a repository (and holds none): `--root` was
    /// given the repository instead of the directory that holds it.
    #[error(
        "{} is itself a git repository; --root takes the directory that holds the \
         repositories, e.g. --root {}",
        path.display(),
        parent.display()
    )]
    RootIsRepository { path: PathBuf, parent: PathBuf },
    /// No repository under any root and none known from earlier runs: a
    /// wrong or unmounted root, not an empty manifest to publish.
    #[error(
        "no git repository under {roots}: a repository is a directory directly under a root \
         with a .git entry; --root takes the directory that holds the repositories \
         (e.g. /srv/repos for /srv/repos/ServiceA)"
    )]
    NoRepositories { roots: String },
    /// git itself cannot be run.
    #[error("{0}")]
    GitUnavailable(GitError),
    /// Writing the manifest failed: nothing written can be trusted.
    #[error("writing the manifest: {0}")]
    Output(#[source] io::Error),
    /// Every repository with a base is gone and none is left: almost always
    /// an unmounted or emptied root, so nothing is pruned.
    #[error(
        "none of the {known} repositories the index knows is under {roots}; refusing to prune \
         them all (an unmounted or emptied root?). Pass --keep-missing to skip pruning"
    )]
    EverythingMissing { known: usize, roots: String },
}

impl Error {
    /// Whether the user can fix it by changing the command line or the roots
    /// (exit 2) rather than it being an environment failure (exit 3).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Root { .. }
                | Error::RootNotDir { .. }
                | Error::NoRoot
                | Error::RootIsRepository { .. }
                | Error::NoRepositories { .. }
                | Error::EverythingMissing { .. }
        )
    }
}

/// The base recorded for a repository that vanished and was pruned: no
/// commit is applied. `changes` treats it like no base at all (a repository
/// that comes back is listed in full) and does not prune it again.
pub const GONE: &str = "";

/// [`run`], writing the manifest to `output`. A file is published even when
/// some repositories failed (their lines are simply absent or incomplete,
/// and their bases do not advance); it is not published when the run fails
/// as a whole.
pub fn write_manifest(
    opts: &ChangesOptions,
    output: &Output,
    log: &mut dyn Write,
) -> Result<ChangesReport, Error> {
    match output {
        Output::Stdout => {
            let stdout = io::stdout();
            let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let report = run(opts, &mut out, log)?;
            out.flush().map_err(Error::Output)?;
            Ok(report)
        }
        Output::File(path) => {
            let mut file = output::AtomicFile::create(path).map_err(Error::Output)?;
            let report = run(opts, &mut file, log)?;
            file.commit().map_err(Error::Output)?;
            Ok(report)
        }
    }
}

/// Scan the roots and write the manifest to `out`; human-readable progress,
/// warnings and failures go to `log`.
pub fn run(
    opts: &ChangesOptions,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<ChangesReport, Error> {
    if opts.roots.is_empty() {
        return Err(Error::NoRoot);
    }
    // An empty base (GONE) means nothing applied: same as no base.
    let bases: BTreeMap<&str, &str> = opts
        .bases
        .iter()
        .filter(|(_, c)| c.as_str() != GONE)
        .map(|(r, c)| (r.as_str(), c.as_str()))
        .collect();
    let mut report = ChangesReport::default();
    let repos = discover(&opts.roots, &mut report, log)?;
    report.repos_scanned = repos.len();
    if repos.is_empty() && report.failures.is_empty() && bases.is_empty() {
        return Err(Error::NoRepositories {
            roots: shown_roots(&opts.roots),
        });
    }

    if opts.pull {
        for failure in pull::pull_all(&opts.git, &repos, opts.jobs.max(1), log)? {
            report.failures.push(failure);
        }
    }

    let mut lines = Lines {
        out,
        file_lines: 0,
        all_lines: 0,
    };
    let mut changesets: Vec<(String, Changeset)> = Vec::new();
    let mut processed: Vec<&RepoDir> = Vec::new();
    for repo in &repos {
        let base = bases.get(repo.name.as_str()).copied();
        let before = lines.file_lines;
        match scan_repo(opts, repo, base, &mut lines, &mut report, log) {
            Ok(Some(cs)) => {
                let had_lines = lines.file_lines > before;
                if had_lines || Some(cs.commit.as_str()) != base {
                    report.repos_changed += 1;
                    changesets.push((repo.name.clone(), cs));
                }
                processed.push(repo);
            }
            Ok(None) => processed.push(repo),
            Err(RepoError::Output(e)) => return Err(e),
            Err(RepoError::Git(e)) if e.is_spawn() => return Err(Error::GitUnavailable(e)),
            Err(RepoError::Git(e)) => {
                let _ = writeln!(log, "[FAILED] {}: {e}", repo.name);
                report.failures.push(RepoFailure {
                    repo: repo.name.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }

    // Repositories the index knows that are no longer under any root.
    let present: BTreeSet<&str> = repos.iter().map(|r| r.name.as_str()).collect();
    let failed: BTreeSet<String> = report.failures.iter().map(|f| f.repo.clone()).collect();
    let missing: Vec<(&str, &str)> = bases
        .iter()
        .filter(|(name, _)| !present.contains(*name) && !failed.contains(**name))
        .map(|(n, c)| (*n, *c))
        .collect();
    if opts.prune_missing && !missing.is_empty() {
        if repos.is_empty() {
            return Err(Error::EverythingMissing {
                known: bases.len(),
                roots: shown_roots(&opts.roots),
            });
        }
        for (name, base) in &missing {
            let _ = writeln!(
                log,
                "[MISSING] {name}: no longer under any root; its objects are pruned"
            );
            lines.prune(name)?;
            report.repos_missing += 1;
            changesets.push((
                (*name).to_owned(),
                Changeset {
                    commit: GONE.to_owned(),
                    parent: Some((*base).to_owned()),
                    branch: None,
                },
            ));
        }
    } else if !missing.is_empty() {
        for (name, _) in &missing {
            let _ = writeln!(
                log,
                "[MISSING] {name}: not under any root; kept (--keep-missing)"
            );
        }
    }

    // A symlink's content is its target's, and the target may have changed in
    // this or another repository: refresh them all whenever anything moved.
    if lines.file_lines > 0 {
        for repo in &processed {
            let before = lines.file_lines;
            match refresh_symlinks(opts, repo, &mut lines) {
                Ok(()) => {}
                Err(RepoError::Output(e)) => return Err(e),
                Err(RepoError::Git(e)) => {
                    let _ = writeln!(log, "[FAILED] {}: listing symlinks: {e}", repo.name);
                    report.failures.push(RepoFailure {
                        repo: repo.name.clone(),
                        reason: format!("listing symlinks: {e}"),
                    });
                    changesets.retain(|(n, _)| n != &repo.name);
                    continue;
                }
            }
            if lines.file_lines > before && !changesets.iter().any(|(n, _)| n == &repo.name) {
                // Its commit did not move, but it now has lines: the sync may
                // record the (unchanged) commit once they are applied.
                if let Ok(Some(cs)) =
                    head_changeset(opts, repo, bases.get(repo.name.as_str()).copied())
                {
                    changesets.push((repo.name.clone(), cs));
                }
            }
        }
    }

    for (repo, cs) in &changesets {
        lines.write(
            &ChangesetLine {
                repo,
                new_changeset: cs,
            },
            false,
        )?;
    }
    lines.out.flush().map_err(Error::Output)?;

    report.file_lines = lines.file_lines;
    report.lines_written = lines.all_lines;
    let _ = writeln!(
        log,
        "[CHANGES] {} repositories scanned, {} changed, {} listed in full, {} missing, {} failed; \
         {} file lines, {} submodules skipped, {} non-UTF-8 paths skipped",
        report.repos_scanned,
        report.repos_changed,
        report.full_snapshots,
        report.repos_missing,
        report.repos_failed(),
        report.file_lines,
        report.submodules_skipped,
        report.paths_skipped_non_utf8,
    );
    Ok(report)
}
