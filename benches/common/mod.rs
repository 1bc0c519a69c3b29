//! Synthetic inputs shared by the benches and `bench-fixture`: manifest lines
//! of about 110 bytes naming a fixed set of files, and those files' text.
#![allow(dead_code)]

use std::io::{self, Write};
use std::path::Path;

/// Repositories the files are spread over.
pub const REPOS: usize = 16;

/// Repo name and repo-relative path of file number `i`.
pub fn file_path(i: usize) -> (String, String) {
    let repo = format!("ServiceRepo{:02}", i % REPOS);
    let path = format!(
        "src/components/module_{:03}/handlers/file_{:06}.rs",
        (i / REPOS) % 100,
        i
    );
    (repo, path)
}

/// One manifest line (without its newline) for file `i % distinct`; every
/// 50th line is a delete, the rest add/update, as a day of commits looks.
pub fn manifest_line(out: &mut Vec<u8>, n: usize, distinct: usize) {
    manifest_line_under(out, n, distinct, None)
}

/// [`manifest_line`] with the path absolute under `root` (`<root>/<repo>/<path>`,
/// the form the seed's and mgit's manifests carry) when `root` is given.
pub fn manifest_line_under(out: &mut Vec<u8>, n: usize, distinct: usize, root: Option<&str>) {
    let (repo, path) = file_path(n % distinct);
    let op = match n % 50 {
        0 => "delete",
        k if k % 2 == 0 => "add",
        _ => "update",
    };
    let _ = write!(out, r#"{{"op":"{op}","repo":"{repo}","path":""#);
    if let Some(root) = root {
        let _ = write!(out, "{}/{repo}/", root.trim_end_matches('/'));
    }
    let _ = write!(out, r#"{path}","size":2048}}"#);
}

/// A whole manifest of `lines` lines over `distinct` files.
pub fn manifest(lines: usize, distinct: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines * 112);
    for n in 0..lines {
        manifest_line(&mut out, n, distinct);
        out.push(b'\n');
    }
    out
}

/// Deterministic source-like text of about `size` bytes for file `i`.
pub fn file_text(i: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 80);
    let mut k = 0usize;
    while out.len() < size {
        let _ = writeln!(
            out,
            "fn handler_{i}_{k}(req: &Request) -> Result<Response> {{ route(req, {}) }}",
            (i * 31 + k * 7) % 1000
        );
        k += 1;
    }
    out.truncate(size);
    out.push(b'\n');
    out
}

/// Write files `0..count` of about `size` bytes under `root`.
pub fn write_tree(root: &Path, count: usize, size: usize) -> io::Result<()> {
    for i in 0..count {
        let (repo, path) = file_path(i);
        let full = root.join(repo).join(path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&full, file_text(i, size))?;
    }
    Ok(())
}
