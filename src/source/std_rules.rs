//! The path rules as they were written on `std::path` (components,
//! `strip_prefix`), kept as the oracle the byte resolver is tested against.

use std::path::{Component, Path};

use super::{normalize_abs, under_root, valid_repo, Location, PathError, Roots};

/// Split a relative `/`-path into normal parts, applying `.` and `..`.
/// `None` if `..` climbs above the start.
fn normalize_rel(p: &str) -> Option<Vec<&str>> {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts)
}

/// [`Roots::resolve`] as it was.
pub(super) fn resolve(
    roots: &Roots,
    repo: Option<&str>,
    path: &str,
) -> Result<Location, PathError> {
    if let Some(r) = repo {
        if !valid_repo(r) {
            return Err(PathError::BadRepo(r.to_owned()));
        }
    }
    if path.starts_with('/') {
        return resolve_abs(roots, repo, path);
    }
    let parts = normalize_rel(path).ok_or_else(|| match repo {
        Some(_) => PathError::EscapesRepo(path.to_owned()),
        None => PathError::EscapesRoot(path.to_owned()),
    })?;
    let (repo, rel) = match repo {
        Some(r) => (r.to_owned(), parts),
        None => {
            let (first, rest) = parts
                .split_first()
                .ok_or_else(|| PathError::NoFile(path.to_owned()))?;
            ((*first).to_owned(), rest.to_vec())
        }
    };
    if rel.is_empty() {
        return Err(PathError::NoFile(path.to_owned()));
    }
    let root = if roots.roots.len() <= 1 {
        0
    } else {
        roots
            .roots
            .iter()
            .position(|r| r.given.join(&repo).is_dir())
            .unwrap_or(0)
    };
    Ok(Location {
        root,
        repo,
        path: rel.join("/"),
    })
}

fn resolve_abs(roots: &Roots, repo: Option<&str>, path: &str) -> Result<Location, PathError> {
    let norm =
        normalize_abs(Path::new(path)).ok_or_else(|| PathError::EscapesRoot(path.to_owned()))?;
    for (i, root) in roots.roots.iter().enumerate() {
        let rest = norm
            .strip_prefix(&root.given)
            .or_else(|_| norm.strip_prefix(&root.canonical));
        let Ok(rest) = rest else { continue };
        let parts: Vec<&str> = rest
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => n.to_str(),
                _ => None,
            })
            .collect();
        let Some((first, rel)) = parts.split_first() else {
            return Err(PathError::NoFile(path.to_owned()));
        };
        // The repo and file checks are shared (`under_root`): what this
        // oracle stands for is the normalising and the prefix matching.
        return under_root(i, repo, path, first, &rel.join("/"));
    }
    Err(PathError::OutsideRoots(path.to_owned()))
}
