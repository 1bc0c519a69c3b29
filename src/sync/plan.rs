//! From a parsed line to index ops, by asking the disk (the disk wins over
//! the line's `op`; see SPEC.md, "What a line does").

use crate::manifest::{Change, FileChange, LineError, Op as LineOp};
use crate::source::{Absent, DirState, FileState, Location, PathError, Roots};
use crate::target::{Op, Target};
use crate::wal::{ChangesetSeen, Counts, FailureKind};

/// What one manifest line turned into.
#[derive(Debug)]
pub enum Planned {
    /// Index ops to apply (possibly none); `counts` says what they mean.
    Ops {
        repo: String,
        path: String,
        ops: Vec<Op>,
        counts: Counts,
    },
    Changeset(ChangesetSeen),
    /// The line cannot be applied now.
    Failed {
        repo: String,
        path: String,
        kind: FailureKind,
        reason: String,
        counts: Counts,
    },
}

#[derive(Debug, thiserror::Error)]
enum Why {
    #[error("{0}")]
    Line(#[from] LineError),
    #[error("{0}")]
    Path(#[from] PathError),
}

fn count_op(c: &mut Counts, op: LineOp) {
    match op {
        LineOp::Add => c.add += 1,
        LineOp::Update => c.update += 1,
        LineOp::Delete => c.delete += 1,
        LineOp::Rename => c.rename += 1,
    }
}

/// Plan one line. `parsed` is the parser's result for it.
pub fn plan(
    parsed: Result<Change, LineError>,
    roots: &Roots,
    target: Option<&dyn Target>,
    fingerprint: [u8; 32],
    run_id: u64,
    line: u64,
) -> Planned {
    let mut counts = Counts {
        lines: 1,
        ..Counts::default()
    };
    let change = match parsed {
        Ok(c) => c,
        Err(e) => return malformed(counts, "", "", Why::Line(e)),
    };
    match change {
        Change::Changeset(c) => Planned::Changeset(ChangesetSeen {
            run_id,
            fingerprint,
            line,
            repo: c.repo,
            commit: c.commit,
            branch: c.branch,
            parent: c.parent,
            base: c.base,
        }),
        Change::Prune { repo } => {
            counts.prune += 1;
            plan_prune(repo, roots, target, counts)
        }
        Change::File(f) => plan_file(f, roots, target.is_some(), counts),
        Change::UntrackedDir { repo, dir } => {
            counts.add += 1;
            plan_dir(repo, dir, roots, target.is_some(), counts)
        }
    }
}

fn no_ops(loc: Location, counts: Counts) -> Planned {
    Planned::Ops {
        repo: loc.repo,
        path: loc.path,
        ops: Vec::new(),
        counts,
    }
}

fn delete_op(loc: &Location) -> Op {
    Op::Delete {
        id: crate::target::object_id(&loc.repo, &loc.path),
        repo: loc.repo.clone(),
        path: loc.path.clone(),
    }
}

fn malformed(counts: Counts, repo: &str, path: &str, why: Why) -> Planned {
    let mut counts = counts;
    counts.failed += 1;
    Planned::Failed {
        repo: repo.to_owned(),
        path: path.to_owned(),
        kind: FailureKind::Malformed,
        reason: why.to_string(),
        counts,
    }
}

fn plan_file(f: FileChange, roots: &Roots, read_disk: bool, mut counts: Counts) -> Planned {
    count_op(&mut counts, f.op);
    let shown_repo = f.repo.clone().unwrap_or_default();
    let loc = match roots.resolve(f.repo.as_deref(), &f.path) {
        Ok(l) => l,
        Err(e) => return malformed(counts, &shown_repo, &f.path, Why::Path(e)),
    };
    let from = match &f.from {
        Some(from) if f.op == LineOp::Rename => match roots.resolve(f.repo.as_deref(), from) {
            Ok(l) => Some(l),
            Err(e) => return malformed(counts, &loc.repo, &f.path, Why::Path(e)),
        },
        _ => None,
    };
    if !read_disk {
        // Dry run: the line is valid; the disk is not consulted.
        return no_ops(loc, counts);
    }
    let mut ops = Vec::with_capacity(2);
    if let Some(from) = &from {
        if from != &loc {
            match read_in_repo(roots, from) {
                Ok(state) => push_state(&mut ops, &mut counts, from, state, false),
                Err(failure) => return failure.planned(counts, roots, from),
            }
        }
    }
    let state = match f.content {
        Some(bytes) => roots.inline(&loc, bytes),
        None => match read_in_repo(roots, &loc) {
            Ok(s) => s,
            Err(failure) => return failure.planned(counts, roots, &loc),
        },
    };
    let wants_file = f.op != LineOp::Delete;
    push_state(&mut ops, &mut counts, &loc, state, wants_file);
    Planned::Ops {
        repo: loc.repo,
        path: loc.path,
        ops,
        counts,
    }
}

/// Turn the disk's verdict into an op. `wants_file`: the line expects the
/// file to exist (add, update, a rename's new path) rather than to be gone
/// (delete, a rename's old path); where the disk disagrees the line counts
/// as reconciled.
fn push_state(
    ops: &mut Vec<Op>,
    counts: &mut Counts,
    loc: &Location,
    state: FileState,
    wants_file: bool,
) {
    match state {
        FileState::Eligible(doc) => {
            counts.upserted += 1;
            if !wants_file {
                counts.reconciled += 1;
            }
            ops.push(Op::Upsert(doc));
        }
        FileState::Absent(why) => {
            counts.deleted += 1;
            if why == Absent::Missing && wants_file {
                counts.reconciled += 1;
            } else if why.is_skip() {
                counts.skipped += 1;
            }
            ops.push(delete_op(loc));
        }
    }
}

/// Why the disk gave no verdict on a file.
enum NoVerdict {
    Io(std::io::Error),
    /// The file is missing because its whole repo is: never a deletion
    /// (SPEC.md: only `prune` removes the objects of a repo that is gone).
    NoRepo,
}

impl NoVerdict {
    fn planned(self, counts: Counts, roots: &Roots, loc: &Location) -> Planned {
        match self {
            NoVerdict::Io(e) => source_failed(counts, loc, e),
            NoVerdict::NoRepo => no_repo(counts, roots, loc),
        }
    }
}

/// [`Roots::read`], except that a file missing because its repo has no
/// directory under the root is not a verdict.
fn read_in_repo(roots: &Roots, loc: &Location) -> Result<FileState, NoVerdict> {
    match roots.read(loc).map_err(NoVerdict::Io)? {
        FileState::Absent(Absent::Missing) => match roots.has_repo(loc) {
            Ok(true) => Ok(FileState::Absent(Absent::Missing)),
            Ok(false) => Err(NoVerdict::NoRepo),
            Err(e) => Err(NoVerdict::Io(e)),
        },
        state => Ok(state),
    }
}

/// A line whose repo has no directory under any root (a wrong or unmounted
/// `--root`, a repo name in the wrong case): a failed item, retried by the
/// next run like a file that cannot be read.
fn no_repo(mut counts: Counts, roots: &Roots, loc: &Location) -> Planned {
    counts.failed += 1;
    Planned::Failed {
        repo: loc.repo.clone(),
        path: loc.path.clone(),
        kind: FailureKind::Source,
        reason: format!(
            "repo directory {} not found under any --root ({})",
            loc.repo,
            roots.describe()
        ),
        counts,
    }
}

fn source_failed(mut counts: Counts, loc: &Location, e: std::io::Error) -> Planned {
    counts.failed += 1;
    Planned::Failed {
        repo: loc.repo.clone(),
        path: loc.path.clone(),
        kind: FailureKind::Source,
        reason: format!("cannot read file: {e}"),
        counts,
    }
}

/// mgit's untracked directory: every eligible file under it is upserted.
fn plan_dir(
    repo: Option<String>,
    dir: String,
    roots: &Roots,
    read_disk: bool,
    mut counts: Counts,
) -> Planned {
    let shown = repo.clone().unwrap_or_default();
    let loc = match roots.resolve(repo.as_deref(), &dir) {
        Ok(l) => l,
        Err(e) => return malformed(counts, &shown, &dir, Why::Path(e)),
    };
    if !read_disk {
        return no_ops(loc, counts);
    }
    let handle = match roots.open_dir(&loc) {
        Ok(DirState::Dir(d)) => d,
        Ok(DirState::NotADirectory(what)) => {
            let why = PathError::NotADirectory {
                path: format!("{dir}/"),
                repo: loc.repo.clone(),
                dir: loc.path.clone(),
                what,
            };
            return malformed(counts, &loc.repo, &loc.path, Why::Path(why));
        }
        Ok(DirState::Absent(Absent::Missing)) => {
            return match roots.has_repo(&loc) {
                Ok(true) => no_ops(loc, counts),
                Ok(false) => no_repo(counts, roots, &loc),
                Err(e) => source_failed(counts, &loc, e),
            };
        }
        Ok(DirState::Absent(_)) => {
            // A directory outside the root (or a symlink loop): nothing
            // under it is listed.
            counts.skipped += 1;
            return no_ops(loc, counts);
        }
        Err(e) => return source_failed(counts, &loc, e),
    };
    let files = match crate::manifest::mgit::untracked_files(handle, &loc.path) {
        Ok(f) => f,
        Err(e) => return source_failed(counts, &loc, e),
    };
    let mut ops = Vec::new();
    for f in files {
        let Ok(file_loc) = roots.resolve(Some(&loc.repo), &f) else {
            continue;
        };
        match roots.read(&file_loc) {
            Ok(state) => push_state(&mut ops, &mut counts, &file_loc, state, true),
            Err(e) => return source_failed(counts, &file_loc, e),
        }
    }
    Planned::Ops {
        repo: loc.repo,
        path: loc.path,
        ops,
        counts,
    }
}

fn plan_prune(
    repo: String,
    roots: &Roots,
    target: Option<&dyn Target>,
    mut counts: Counts,
) -> Planned {
    let Some(target) = target else {
        return Planned::Ops {
            repo,
            path: String::new(),
            ops: Vec::new(),
            counts,
        };
    };
    let paths = match target.list_repo(&repo) {
        Ok(p) => p,
        Err(e) => {
            counts.failed += 1;
            return Planned::Failed {
                repo,
                path: String::new(),
                kind: FailureKind::Target,
                reason: format!("cannot list the repo's objects: {e}"),
                counts,
            };
        }
    };
    let mut ops = Vec::new();
    for path in paths {
        let Ok(loc) = roots.resolve(Some(&repo), &path) else {
            continue;
        };
        match roots.read(&loc) {
            Ok(FileState::Eligible(_)) => {}
            Ok(FileState::Absent(_)) => {
                counts.deleted += 1;
                ops.push(delete_op(&loc));
            }
            Err(e) => return source_failed(counts, &loc, e),
        }
    }
    Planned::Ops {
        repo,
        path: String::new(),
        ops,
        counts,
    }
}
