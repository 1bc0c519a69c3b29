//! `--pull`: fast-forward every repository from its upstream, N at a time.
//!
//! `git pull --ff-only` never rewrites local work: a diverged branch (a force
//! push upstream, local commits), a detached HEAD or a missing upstream fails,
//! is reported, and the repository is still diffed at its current HEAD. git's
//! stderr is kept for the report with credentials in URLs redacted.

use std::ffi::OsString;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::discover::{repo_dirs, RepoDir};
use super::git::Git;
use super::{Error, RepoFailure};

/// Pull every repository; returns the ones that failed. Only a missing git
/// program is an error for the whole run.
pub(super) fn pull_all(
    program: &OsString,
    repos: &[RepoDir],
    jobs: usize,
    log: &mut dyn Write,
) -> Result<Vec<RepoFailure>, Error> {
    let work: Vec<_> = repo_dirs(repos).collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<(), super::GitError>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(work.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, dir, root)) = work.get(i) else {
                    break;
                };
                let git = Git::new(program.clone(), dir, root);
                let r = git
                    .output(&["pull", "--ff-only", "--no-rebase", "--quiet"])
                    .map(|_| ());
                if let Ok(mut all) = results.lock() {
                    all.push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    for (i, r) in results {
        let name = work.get(i).map(|w| w.0).unwrap_or("?");
        match r {
            Ok(()) => {
                let _ = writeln!(log, "[PULLED] {name}");
            }
            Err(e) if e.is_spawn() => return Err(Error::GitUnavailable(e)),
            Err(e) => {
                let _ = writeln!(log, "[FAILED] {name}: pull: {e}");
                failures.push(RepoFailure {
                    repo: name.to_owned(),
                    reason: format!("pull: {e}"),
                });
            }
        }
    }
    Ok(failures)
}
