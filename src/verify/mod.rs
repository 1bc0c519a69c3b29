//! `index verify`: the live index against the disk, trusting neither the WAL
//! nor an earlier verify (docs/verify.md).
//!
//! Three passes, in bounded memory (a compact record per object and per
//! file, never a file's content past its own hashing):
//! 1. **The index**, streamed ([`Target::scan`]): per file, its chunks'
//!    numbers, byte ranges, the whole-file hash they carry, and a hash of
//!    each chunk's text.
//! 2. **The disk**: every file of every repo directory under the roots (or of
//!    the `--repo`s named), read through [`Roots::read`], the sync's own
//!    reader, so eligibility (containment, size, binary) is the sync's by
//!    construction; what a file should be in the index is
//!    [`Document::new`]'s chunks. A repo with a `.git` lists its tracked
//!    files (`git ls-files`), as `elysiactl changes` does; any other
//!    directory is walked, skipping `.git`. Files are read by two threads.
//! 3. **The comparison**, file by file: *missing* (eligible on disk, not or
//!    not wholly in the index), *extra* (objects of a file that is not
//!    eligible, or of a repo that is gone), *stale* (another whole-file hash,
//!    a chunk's text altered, chunks of another chunking or inconsistent).
//!    An object of a file the listing did not name is checked against the
//!    disk too: indexed and eligible is fine (the sync indexes any eligible
//!    file it is given).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::object::ChunkSize;
use crate::source::{FileState, Roots};
use crate::target::{self, Exported, Target};

/// How many paths of each kind a report lists per repo (the counts are
/// always whole).
pub const LISTED: usize = 20;

/// What to compare.
#[derive(Debug, Clone)]
pub struct Options {
    pub roots: Vec<PathBuf>,
    /// Only these repos (all when empty).
    pub repos: Vec<String>,
    pub max_file_size: u64,
    /// The chunking the index should have.
    pub chunk_size: ChunkSize,
}

/// Why verify could not compare.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The index cannot be read (exit 3).
    #[error("cannot read the index: {0}")]
    Index(target::Error),
    /// A root cannot be used (exit 2).
    #[error("{0}")]
    Roots(std::io::Error),
    /// The disk cannot be read (exit 3).
    #[error("cannot read {}: {source}", path.display())]
    Disk {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Missing,
    Extra,
    Stale,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Stale => "stale",
        }
    }
}

/// One file that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub kind: Kind,
    pub repo: String,
    pub path: String,
    /// In a user's words (`no object`, `chunk 3 of 7 is missing`, …).
    pub why: String,
}

/// The counts of one repo (or of all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Eligible files on disk.
    pub files: u64,
    /// Objects in the index.
    pub objects: u64,
    pub missing: u64,
    pub extra: u64,
    pub stale: u64,
}

impl Counts {
    fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Missing => self.missing += 1,
            Kind::Extra => self.extra += 1,
            Kind::Stale => self.stale += 1,
        }
    }

    fn plus(&mut self, o: &Counts) {
        self.files += o.files;
        self.objects += o.objects;
        self.missing += o.missing;
        self.extra += o.extra;
        self.stale += o.stale;
    }

    /// Files that differ.
    pub fn drift(&self) -> u64 {
        self.missing + self.extra + self.stale
    }
}

/// One repo's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoReport {
    #[serde(flatten)]
    pub counts: Counts,
    /// The repo has no directory under any root: every object of it is extra.
    pub gone: bool,
    /// The first [`LISTED`] differences.
    pub first: Vec<Drift>,
}

/// The whole result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub total: Counts,
    pub repos: BTreeMap<String, RepoReport>,
    /// Every difference (what a repair applies), not serialized.
    #[serde(skip)]
    pub drifts: Vec<Drift>,
    /// Files on disk that could not be read, with why (they are counted as
    /// neither equal nor different).
    pub unreadable: Vec<(String, String, String)>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.total.drift() == 0
    }

    fn push(&mut self, d: Drift) {
        let r = self.repos.entry(d.repo.clone()).or_default();
        r.counts.add(d.kind);
        if r.first.len() < LISTED {
            r.first.push(d.clone());
        }
        self.drifts.push(d);
    }

    /// The manifest that makes the index equal the disk: an `update` of
    /// every file that differs (the sync re-reads it: written if eligible,
    /// removed if not) and a `prune` of every repo that is gone (an update
    /// of a repo without a directory is a failed item, never a deletion).
    pub fn repair_manifest(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line = |v: serde_json::Value| {
            out.extend_from_slice(v.to_string().as_bytes());
            out.push(b'\n');
        };
        for (repo, r) in &self.repos {
            if r.gone && r.counts.extra > 0 && !repo.is_empty() {
                line(serde_json::json!({"op": "prune", "repo": repo}));
            }
        }
        for d in &self.drifts {
            if !self.repos.get(&d.repo).is_some_and(|r| r.gone) && !unnamed(d) {
                line(serde_json::json!({"op": "update", "repo": d.repo, "path": d.path}));
            }
        }
        out
    }

    /// Differences no manifest line can name: objects without a repo or a
    /// path (written by another client). A repair leaves them; they are
    /// removed by id.
    pub fn unrepairable(&self) -> usize {
        self.drifts.iter().filter(|d| unnamed(d)).count()
    }
}

/// An empty repo or path: a manifest line naming it is malformed.
fn unnamed(d: &Drift) -> bool {
    d.repo.is_empty() || d.path.is_empty()
}

/// What the index holds of one chunk, compactly.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    chunk: u64,
    count: u64,
    start: u64,
    end: u64,
    file_sha: String,
    text: [u8; 16],
}

fn text_hash(s: &str) -> [u8; 16] {
    let d = Sha256::digest(s.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

type FileKey = (String, String);

/// Compare the index `target` holds with the disk.
pub fn verify(target: &dyn Target, opts: &Options) -> Result<Report, Error> {
    let wanted = |repo: &str| opts.repos.is_empty() || opts.repos.iter().any(|r| r == repo);
    let mut held: HashMap<FileKey, Vec<Held>> = HashMap::new();
    let mut objects: BTreeMap<String, u64> = BTreeMap::new();
    target
        .scan(true, &mut |o: Exported| {
            if !wanted(&o.repo) {
                return;
            }
            *objects.entry(o.repo.clone()).or_default() += 1;
            let h = Held {
                chunk: o.chunk,
                count: o.chunk_count,
                start: o.byte_start,
                end: o.byte_end,
                file_sha: o.content_sha256,
                text: text_hash(o.content.as_deref().unwrap_or_default()),
            };
            held.entry((o.repo, o.path)).or_default().push(h);
        })
        .map_err(Error::Index)?;

    let roots = Roots::new(&opts.roots, opts.max_file_size)
        .map_err(Error::Roots)?
        .with_chunk_size(opts.chunk_size);
    let repo_dirs = repo_dirs(&opts.roots, &opts.repos)?;
    let mut report = Report::default();
    for (repo, n) in &objects {
        report.repos.entry(repo.clone()).or_default().counts.objects = *n;
    }
    // Every file to look at: the listed ones, then every indexed file of a
    // repo that is there (so an object of an unlisted but eligible file is
    // not called extra).
    let mut files: Vec<FileKey> = Vec::new();
    for (repo, dir) in &repo_dirs {
        report.repos.entry(repo.clone()).or_default();
        for path in disk::list(dir).map_err(|source| Error::Disk {
            path: dir.clone(),
            source,
        })? {
            files.push((repo.clone(), path));
        }
    }
    files.sort_unstable();
    files.dedup();
    let listed: std::collections::HashSet<&FileKey> = files.iter().collect();
    let mut unlisted: Vec<FileKey> = held
        .keys()
        .filter(|k| repo_dirs.contains_key(&k.0) && !listed.contains(k))
        .cloned()
        .collect();
    drop(listed);
    unlisted.sort_unstable();
    let n_listed = files.len();
    files.extend(unlisted);

    let expected = disk::read_all(&roots, &files);
    for (i, ((repo, path), want)) in files.into_iter().zip(expected).enumerate() {
        let got = held.remove(&(repo.clone(), path.clone()));
        let want = match want {
            Ok(w) => w,
            Err(why) => {
                report.unreadable.push((repo, path, why));
                continue;
            }
        };
        if want.is_some() {
            report.repos.entry(repo.clone()).or_default().counts.files += 1;
        }
        let listed = i < n_listed;
        if let Some((kind, why)) = compare(want.as_ref(), got, listed) {
            report.push(Drift {
                kind,
                repo,
                path,
                why,
            });
        }
    }
    // What is left is of repos that are gone (or not under any root).
    let mut rest: Vec<FileKey> = held.into_keys().collect();
    rest.sort_unstable();
    for (repo, path) in rest {
        report.repos.entry(repo.clone()).or_default().gone = true;
        report.push(Drift {
            kind: Kind::Extra,
            repo,
            path,
            why: "its repo has no directory under any root".into(),
        });
    }
    let mut total = Counts::default();
    for r in report.repos.values() {
        total.plus(&r.counts);
    }
    report.total = total;
    Ok(report)
}

/// What a file's objects should be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    sha: String,
    /// (start, end, text hash) per chunk.
    chunks: Vec<(u64, u64, [u8; 16])>,
}

/// One file's difference, if any.
fn compare(want: Option<&Want>, got: Option<Vec<Held>>, listed: bool) -> Option<(Kind, String)> {
    let (want, mut got) = match (want, got) {
        (None, None) => return None,
        (None, Some(_)) => {
            let why = if listed {
                "the file is not eligible (binary, too large, not a regular file)"
            } else {
                "the file is gone or not eligible"
            };
            return Some((Kind::Extra, why.into()));
        }
        (Some(_), None) => return Some((Kind::Missing, "no object".into())),
        (Some(w), Some(g)) => (w, g),
    };
    got.sort_by_key(|h| (h.chunk, h.start));
    if got.iter().any(|h| h.file_sha != want.sha) {
        return Some((
            Kind::Stale,
            "another content hash (an older version)".into(),
        ));
    }
    let n = want.chunks.len() as u64;
    let mut seen = vec![false; want.chunks.len()];
    for h in &got {
        let Some(&(start, end, text)) = usize::try_from(h.chunk)
            .ok()
            .and_then(|k| want.chunks.get(k))
        else {
            return Some((
                Kind::Stale,
                format!("chunk {} of {} should not exist", h.chunk, h.count),
            ));
        };
        if h.count != n || (h.start, h.end) != (start, end) {
            return Some((
                Kind::Stale,
                format!(
                    "chunk {} is bytes [{}, {}) of {}, expected [{start}, {end}) of {n} (another chunking)",
                    h.chunk, h.start, h.end, h.count
                ),
            ));
        }
        if h.text != text {
            return Some((Kind::Stale, format!("chunk {}'s text differs", h.chunk)));
        }
        let k = h.chunk as usize;
        if seen[k] {
            return Some((Kind::Stale, format!("chunk {} is stored twice", h.chunk)));
        }
        seen[k] = true;
    }
    let absent: Vec<usize> = (0..seen.len()).filter(|&k| !seen[k]).collect();
    absent.first().map(|k| {
        (
            Kind::Missing,
            format!("chunk {k} of {n} is missing ({} in all)", absent.len()),
        )
    })
}

/// The repo directories to compare: every directory directly under a root
/// (the first root wins a name), or the named repos. A named repo with no
/// directory is left out (its objects are then extra: the repo is gone).
fn repo_dirs(roots: &[PathBuf], only: &[String]) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut out = BTreeMap::new();
    for root in roots {
        let entries = std::fs::read_dir(root).map_err(|source| Error::Disk {
            path: root.clone(),
            source,
        })?;
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir || name.starts_with('.') {
                continue;
            }
            if only.is_empty() || only.contains(&name) {
                names.push((name, e.path()));
            }
        }
        for (name, dir) in names {
            out.entry(name).or_insert(dir);
        }
    }
    Ok(out)
}

mod disk;
#[cfg(test)]
mod tests;

pub use disk::list as list_repo_files;

/// The disk side for one file, as [`disk::read_all`] gives it.
fn want_of(roots: &Roots, repo: &str, path: &str) -> Result<Option<Want>, String> {
    let loc = roots.resolve(Some(repo), path).map_err(|e| e.to_string())?;
    match roots.read(&loc) {
        Ok(FileState::Eligible(d)) => Ok(Some(Want {
            chunks: d
                .chunks
                .iter()
                .map(|c| (c.byte_start, c.byte_end, text_hash(&c.content)))
                .collect(),
            sha: d.content_sha256,
        })),
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The state dir file that keeps the last verify's result.
pub fn last_path(state_dir: &Path) -> PathBuf {
    state_dir.join("verify-last.json")
}
