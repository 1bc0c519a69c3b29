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

mod git;
pub use crate::manifest::mgit;
pub mod output;
mod pull;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use git::{parse_ls_tree_entry, Git, Kind, RawDecoder};
pub use git::{redact_url_credentials, GitError};

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

/// One manifest line, in SPEC.md's shape.
#[derive(Debug, Serialize)]
struct FileLine<'a> {
    op: &'a str,
    repo: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    path: &'a str,
}

#[derive(Debug, Serialize)]
struct PruneLine<'a> {
    op: &'static str,
    repo: &'a str,
}

#[derive(Debug, Serialize)]
struct ChangesetLine<'a> {
    repo: &'a str,
    new_changeset: &'a Changeset,
}

/// The `new_changeset` of a repository. An empty `commit` means the
/// repository is gone: nothing of it is applied any more (see [`GONE`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
struct Changeset {
    commit: String,
    parent: Option<String>,
    branch: Option<String>,
}

/// Counts lines and turns I/O errors into the fatal [`Error::Output`].
struct Lines<'w> {
    out: &'w mut dyn Write,
    file_lines: u64,
    all_lines: u64,
}

impl Lines<'_> {
    /// A `prune` line for `repo` (it counts as a file line).
    fn prune(&mut self, repo: &str) -> Result<(), Error> {
        self.write(&PruneLine { op: "prune", repo }, true)
    }

    fn write<T: Serialize>(&mut self, value: &T, is_file_line: bool) -> Result<(), Error> {
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

/// The base recorded for a repository that vanished and was pruned: no
/// commit is applied. `changes` treats it like no base at all (a repository
/// that comes back is listed in full) and does not prune it again.
pub const GONE: &str = "";

/// A repository directory found under a root.
#[derive(Debug, Clone)]
struct RepoDir {
    name: String,
    dir: PathBuf,
    root: PathBuf,
}

impl RepoDir {
    fn git(&self, program: &OsString) -> Git {
        Git::new(program.clone(), &self.dir, &self.root)
    }
}

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

fn shown_roots(roots: &[PathBuf]) -> String {
    roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

enum RepoError {
    Git(GitError),
    Output(Error),
}

impl From<GitError> for RepoError {
    fn from(e: GitError) -> Self {
        RepoError::Git(e)
    }
}

impl From<Error> for RepoError {
    fn from(e: Error) -> Self {
        RepoError::Output(e)
    }
}

/// Every directory directly under a root that has a `.git` entry. Names
/// that are not UTF-8 or that an earlier root already provides are reported
/// as failures. A root that holds none is refused when it is itself a
/// repository (the usual slip: `--root` given the repository), else logged.
fn discover(
    roots: &[PathBuf],
    report: &mut ChangesReport,
    log: &mut dyn Write,
) -> Result<Vec<RepoDir>, Error> {
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut repos = Vec::new();
    for root in roots {
        let meta = std::fs::metadata(root).map_err(|source| Error::Root {
            path: root.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::RootNotDir { path: root.clone() });
        }
        let root_abs = std::fs::canonicalize(root).map_err(|source| Error::Root {
            path: root.clone(),
            source,
        })?;
        let entries = std::fs::read_dir(&root_abs).map_err(|source| Error::Root {
            path: root.clone(),
            source,
        })?;
        let mut found: Vec<(OsString, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Root {
                path: root.clone(),
                source,
            })?;
            let dir = entry.path();
            if dir.is_dir() && dir.join(".git").exists() {
                found.push((entry.file_name(), dir));
            }
        }
        if found.is_empty() {
            if root_abs.join(".git").exists() {
                return Err(Error::RootIsRepository {
                    path: root.clone(),
                    parent: root_abs
                        .parent()
                        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
                });
            }
            let _ = writeln!(
                log,
                "[EMPTY-ROOT] {}: no git repository directly under it",
                root.display()
            );
        }
        found.sort();
        for (name, dir) in found {
            let Some(name) = name.to_str().map(str::to_owned) else {
                let shown = name.as_encoded_bytes().escape_ascii().to_string();
                let _ = writeln!(log, "[FAILED] {shown}: repository name is not UTF-8");
                report.failures.push(RepoFailure {
                    repo: shown,
                    reason: "repository name is not valid UTF-8".into(),
                });
                continue;
            };
            if let Some(first) = seen.get(&name) {
                let reason = format!(
                    "also under {}; the first root wins and this one is ignored",
                    first.display()
                );
                let _ = writeln!(log, "[FAILED] {name} in {}: {reason}", root.display());
                report.failures.push(RepoFailure { repo: name, reason });
                continue;
            }
            seen.insert(name.clone(), root_abs.clone());
            repos.push(RepoDir {
                name,
                dir,
                root: root_abs.clone(),
            });
        }
    }
    Ok(repos)
}

fn to_hex(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?.trim();
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_owned())
}

/// HEAD's commit, `None` when the branch is unborn (an empty repository).
fn head_commit(git: &Git) -> Result<Option<String>, GitError> {
    let (status, stdout, _) =
        git.output_status(&["rev-parse", "--verify", "-q", "HEAD^{commit}"])?;
    if status.success() {
        return to_hex(&stdout).map(Some).ok_or_else(|| GitError::Parse {
            command: "rev-parse HEAD".into(),
            detail: String::from_utf8_lossy(&stdout).into_owned(),
        });
    }
    // Unborn if HEAD names a branch that does not exist yet; anything else
    // (a dangling detached HEAD, a broken ref) is corruption.
    let target = git.output(&["symbolic-ref", "-q", "HEAD"])?;
    let target = String::from_utf8_lossy(&target).trim().to_owned();
    // rev-parse on the ref name reads the ref without needing its object.
    let (exists, value, _) = git.output_status(&["rev-parse", "-q", "--verify", &target])?;
    if exists.success() {
        Err(GitError::Parse {
            command: "rev-parse HEAD".into(),
            detail: format!(
                "{target} points at {} which is not a readable commit (corrupt repository?)",
                String::from_utf8_lossy(&value).trim()
            ),
        })
    } else {
        Ok(None)
    }
}

fn current_branch(git: &Git) -> Result<Option<String>, GitError> {
    let (status, stdout, _) = git.output_status(&["symbolic-ref", "-q", "--short", "HEAD"])?;
    Ok(status
        .success()
        .then(|| String::from_utf8_lossy(&stdout).trim().to_owned())
        .filter(|s| !s.is_empty()))
}

fn head_changeset(
    opts: &ChangesOptions,
    repo: &RepoDir,
    base: Option<&str>,
) -> Result<Option<Changeset>, GitError> {
    let git = repo.git(&opts.git);
    let Some(commit) = head_commit(&git)? else {
        return Ok(None);
    };
    Ok(Some(Changeset {
        commit,
        parent: base.map(str::to_owned),
        branch: current_branch(&git)?,
    }))
}

/// Make sure git sees `repo.dir` itself as the top of a work tree (not an
/// enclosing repository, not a bare one).
fn check_toplevel(git: &Git, repo: &RepoDir) -> Result<(), GitError> {
    let top = git.output(&["rev-parse", "--show-toplevel"])?;
    let top = String::from_utf8_lossy(&top).trim().to_owned();
    let same = match (
        std::fs::canonicalize(&top),
        std::fs::canonicalize(&repo.dir),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(GitError::Parse {
            command: "rev-parse --show-toplevel".into(),
            detail: format!("work tree is {top:?}, not {}", repo.dir.display()),
        })
    }
}

/// Write one repository's file lines; `Ok(Some(changeset))` unless it is an
/// empty repository that nothing is known about.
fn scan_repo(
    opts: &ChangesOptions,
    repo: &RepoDir,
    base: Option<&str>,
    lines: &mut Lines<'_>,
    report: &mut ChangesReport,
    log: &mut dyn Write,
) -> Result<Option<Changeset>, RepoError> {
    let git = repo.git(&opts.git);
    check_toplevel(&git, repo)?;
    let branch = current_branch(&git)?;
    let Some(head) = head_commit(&git)? else {
        // Unborn branch: no commit, no tracked files.
        if base.is_some() {
            let _ = writeln!(
                log,
                "[EMPTY] {}: no commit on HEAD; its objects are pruned",
                repo.name
            );
            lines.prune(&repo.name)?;
            // Recorded once the prune is applied: not pruned again next run.
            return Ok(Some(Changeset {
                commit: GONE.to_owned(),
                parent: base.map(str::to_owned),
                branch,
            }));
        }
        return Ok(None);
    };
    let changeset = Changeset {
        commit: head.clone(),
        parent: base.map(str::to_owned),
        branch,
    };

    let usable_base = match base {
        None => None,
        Some(b) => {
            let spec = format!("{b}^{{tree}}");
            let (status, _, _) = git.output_status(&["rev-parse", "--verify", "-q", &spec])?;
            if status.success() {
                Some(b)
            } else {
                let _ = writeln!(
                    log,
                    "[REWRITTEN] {}: base {b} no longer exists (history rewritten and collected?); \
                     listing every file and pruning the rest",
                    repo.name
                );
                None
            }
        }
    };

    match usable_base {
        Some(b) if b == head => {}
        Some(b) => diff_trees(&git, repo, b, &head, lines, report, log)?,
        None => {
            report.full_snapshots += 1;
            snapshot(&git, repo, &head, lines, report, log)?;
            lines.prune(&repo.name)?;
        }
    }
    Ok(Some(changeset))
}

/// Repository-relative path as UTF-8, or a warning and a count.
fn utf8_path<'p>(
    repo: &str,
    path: &'p [u8],
    report: &mut ChangesReport,
    log: &mut dyn Write,
) -> Option<&'p str> {
    match std::str::from_utf8(path) {
        Ok(s) => Some(s),
        Err(_) => {
            report.paths_skipped_non_utf8 += 1;
            let _ = writeln!(
                log,
                "[SKIPPED] {repo}: path is not valid UTF-8 and cannot be indexed: \"{}\"",
                path.escape_ascii()
            );
            None
        }
    }
}

fn diff_trees(
    git: &Git,
    repo: &RepoDir,
    base: &str,
    head: &str,
    lines: &mut Lines<'_>,
    report: &mut ChangesReport,
    log: &mut dyn Write,
) -> Result<(), RepoError> {
    let args = [
        "diff-tree",
        "-r",
        "-z",
        "--raw",
        "--no-abbrev",
        "-M",
        base,
        head,
    ];
    let mut decoder = RawDecoder::default();
    let streamed = git.stream_z(&args, |token| -> Result<(), RepoError> {
        let change = decoder.push(token).map_err(|detail| GitError::Parse {
            command: "diff-tree".into(),
            detail,
        })?;
        match change {
            Some(c) => emit_change(&repo.name, &c, lines, report, log),
            None => Ok(()),
        }
    })?;
    streamed?;
    decoder.finish().map_err(|detail| GitError::Parse {
        command: "diff-tree".into(),
        detail,
    })?;
    Ok(())
}

/// Map one raw diff record to manifest lines. Gitlinks (submodules) are
/// skipped; a type change to or from a gitlink is a delete or an add.
fn emit_change(
    repo: &str,
    c: &git::RawChange,
    lines: &mut Lines<'_>,
    report: &mut ChangesReport,
    log: &mut dyn Write,
) -> Result<(), RepoError> {
    let src_is_blob = matches!(c.src_kind, Kind::File | Kind::Symlink);
    let dst_is_blob = matches!(c.dst_kind, Kind::File | Kind::Symlink);
    if !src_is_blob && !dst_is_blob {
        if c.src_kind == Kind::Gitlink || c.dst_kind == Kind::Gitlink {
            report.submodules_skipped += 1;
            let _ = writeln!(
                log,
                "[SUBMODULE] {repo}: skipping submodule \"{}\"",
                c.path.escape_ascii()
            );
        }
        return Ok(());
    }
    let mut line = |op: &str, from: Option<&str>, path: &str| {
        lines.write(
            &FileLine {
                op,
                repo,
                from,
                path,
            },
            true,
        )
    };
    match c.status {
        b'R' => {
            let from = c
                .from
                .as_deref()
                .and_then(|f| utf8_path(repo, f, report, log));
            let to = utf8_path(repo, &c.path, report, log);
            match (from, to) {
                (Some(f), Some(t)) => line("rename", Some(f), t)?,
                (Some(f), None) => line("delete", None, f)?,
                (None, Some(t)) => line("add", None, t)?,
                (None, None) => {}
            }
        }
        b'A' | b'C' => {
            if let Some(p) = utf8_path(repo, &c.path, report, log) {
                line("add", None, p)?;
            }
        }
        b'D' => {
            if let Some(p) = utf8_path(repo, &c.path, report, log) {
                line("delete", None, p)?;
            }
        }
        b'M' | b'T' => {
            if let Some(p) = utf8_path(repo, &c.path, report, log) {
                if !dst_is_blob {
                    report.submodules_skipped += 1;
                    line("delete", None, p)?;
                } else {
                    line("update", None, p)?;
                }
            }
        }
        other => {
            return Err(RepoError::Git(GitError::Parse {
                command: "diff-tree".into(),
                detail: format!("unexpected status {:?}", other as char),
            }))
        }
    }
    Ok(())
}

/// Every tracked file of `head` as an `add`.
fn snapshot(
    git: &Git,
    repo: &RepoDir,
    head: &str,
    lines: &mut Lines<'_>,
    report: &mut ChangesReport,
    log: &mut dyn Write,
) -> Result<(), RepoError> {
    each_tree_entry(git, head, |entry| match entry.kind {
        Kind::File | Kind::Symlink => match utf8_path(&repo.name, &entry.path, report, log) {
            Some(p) => lines
                .write(
                    &FileLine {
                        op: "add",
                        repo: &repo.name,
                        from: None,
                        path: p,
                    },
                    true,
                )
                .map_err(RepoError::Output),
            None => Ok(()),
        },
        Kind::Gitlink => {
            report.submodules_skipped += 1;
            let _ = writeln!(
                log,
                "[SUBMODULE] {}: skipping submodule \"{}\"",
                repo.name,
                entry.path.escape_ascii()
            );
            Ok(())
        }
        _ => Ok(()),
    })
}

fn each_tree_entry(
    git: &Git,
    commit: &str,
    mut each: impl FnMut(git::TreeEntry) -> Result<(), RepoError>,
) -> Result<(), RepoError> {
    git.stream_z(&["ls-tree", "-r", "-z", "--full-tree", commit], |token| {
        let entry = parse_ls_tree_entry(&token).map_err(|detail| GitError::Parse {
            command: "ls-tree".into(),
            detail,
        })?;
        each(entry)
    })?
}

/// An `update` for every symlink in the repository's HEAD.
fn refresh_symlinks(
    opts: &ChangesOptions,
    repo: &RepoDir,
    lines: &mut Lines<'_>,
) -> Result<(), RepoError> {
    let git = repo.git(&opts.git);
    let Some(head) = head_commit(&git)? else {
        return Ok(());
    };
    each_tree_entry(&git, &head, |entry| {
        if entry.kind != Kind::Symlink {
            return Ok(());
        }
        // Non-UTF-8 symlink names were already reported when listed.
        let Ok(p) = std::str::from_utf8(&entry.path) else {
            return Ok(());
        };
        lines
            .write(
                &FileLine {
                    op: "update",
                    repo: &repo.name,
                    from: None,
                    path: p,
                },
                true,
            )
            .map_err(RepoError::Output)
    })
}

/// Where `run` finds repositories: used by `pull`.
fn repo_dirs(repos: &[RepoDir]) -> impl Iterator<Item = (&str, &Path, &Path)> {
    repos
        .iter()
        .map(|r| (r.name.as_str(), r.dir.as_path(), r.root.as_path()))
}
