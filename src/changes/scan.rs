//! One repository's lines: its HEAD and branch, then the diff of the base
//! against HEAD (`diff-tree -M`), or every tracked file when there is no
//! usable base (followed by a `prune`), and the symlink refresh.
//!
//! Gitlinks (submodules) are skipped and counted; paths that are not UTF-8
//! are skipped with a warning. A git failure fails this repository only.

use std::io::Write;

use super::discover::RepoDir;
use super::git::{self, parse_ls_tree_entry, Git, Kind, RawDecoder};
use super::lines::{Changeset, FileLine, Lines};
use super::{ChangesOptions, ChangesReport, Error, GitError, GONE};

pub(super) enum RepoError {
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

pub(super) fn head_changeset(
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
pub(super) fn scan_repo(
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
pub(super) fn refresh_symlinks(
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
