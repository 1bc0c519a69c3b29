//! The disk side of verify: which files a repo has, and what each should be
//! in the index, read by two threads.

use std::io;
use std::path::Path;

use super::{want_of, FileKey, Want};
use crate::source::Roots;

/// The repo-relative paths of `dir`'s files: with a `.git`, the files git
/// tracks (as `elysiactl changes` lists them); otherwise, or when git cannot
/// list them, every file below it, `.git` and symlinked directories not
/// entered. Sorted.
pub fn list(dir: &Path) -> io::Result<Vec<String>> {
    if dir.join(".git").exists() {
        if let Some(files) = git_ls_files(dir) {
            return Ok(files);
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort_unstable();
    Ok(out)
}

fn git_ls_files(dir: &Path) -> Option<Vec<String>> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "-z"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut files: Vec<String> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::str::from_utf8(p).ok().map(str::to_owned))
        .collect();
    files.sort_unstable();
    files.dedup();
    Some(files)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let Ok(name) = e.file_name().into_string() else {
            continue; // not UTF-8: no manifest line can name it either
        };
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let t = e.file_type()?;
        if t.is_dir() {
            if name != ".git" {
                walk(&e.path(), &rel, out)?;
            }
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// What each of `files` should be in the index (`None`: nothing, the file
/// is gone or not eligible; `Err`: it could not be read), in order. Two
/// threads read and hash.
pub(super) fn read_all(roots: &Roots, files: &[FileKey]) -> Vec<Result<Option<Want>, String>> {
    const THREADS: usize = 2;
    let per = files.len().div_ceil(THREADS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|part| {
                let n = part.len();
                let h = s.spawn(move || {
                    part.iter()
                        .map(|(repo, path)| want_of(roots, repo, path))
                        .collect::<Vec<_>>()
                });
                (n, h)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("the reader thread panicked".to_string()); n])
            })
            .collect()
    })
}
