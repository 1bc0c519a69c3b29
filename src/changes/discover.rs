//! Finding repositories: every directory directly under a root with a
//! `.git` entry, the first root winning a name two roots share. A root that
//! is itself a repository is refused (the usual `--root` slip).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::git::Git;
use super::{ChangesReport, Error, RepoFailure};

/// A repository directory found under a root.
#[derive(Debug, Clone)]
pub(super) struct RepoDir {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) root: PathBuf,
}

impl RepoDir {
    pub(super) fn git(&self, program: &OsString) -> Git {
        Git::new(program.clone(), &self.dir, &self.root)
    }
}

pub(super) fn shown_roots(roots: &[PathBuf]) -> String {
    roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every directory directly under a root that has a `.git` entry. Names
/// that are not UTF-8 or that an earlier root already provides are reported
/// as failures. A root that holds none is refused when it is itself a
/// repository (the usual slip: `--root` given the repository), else logged.
pub(super) fn discover(
    roots: &[PathBuf],
    report: &mut ChangesReport,
    log: &mut dyn Write,
) -> Result<Vec<RepoDir>, Error> {
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut repos = Vec::new();
    for root in roots {
        let root_err = |source| Error::Root {
            path: root.clone(),
            source,
        };
        let meta = std::fs::metadata(root).map_err(root_err)?;
        if !meta.is_dir() {
            return Err(Error::RootNotDir { path: root.clone() });
        }
        let root_abs = std::fs::canonicalize(root).map_err(root_err)?;
        let entries = std::fs::read_dir(&root_abs).map_err(root_err)?;
        let mut found: Vec<(OsString, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(root_err)?;
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

/// Where `run` finds repositories: used by `pull`.
pub(super) fn repo_dirs(repos: &[RepoDir]) -> impl Iterator<Item = (&str, &Path, &Path)> {
    repos
        .iter()
        .map(|r| (r.name.as_str(), r.dir.as_path(), r.root.as_path()))
}
