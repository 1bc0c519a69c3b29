//! An independent check of SPEC.md's *Objects* contract: what the index
//! holds (read back with `index export --content`) against the files on
//! disk. Written from the SPEC, not from `elysiactl::object`: it shares no
//! code with the chunker or with the library's own `object::check`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{run, sha256_hex, text, Rng};

/// One object as `index export --content` prints it (parsed with serde:
/// any field missing or of another type fails the test).
pub type Obj = elysiactl::target::Exported;

/// Every object of the index, with its text (`extra`: target flags, or the
/// state dir as `--state-dir DIR`).
pub fn export_objects(extra: &[&str]) -> Vec<Obj> {
    let mut args = vec!["index", "export", "--content"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "export failed: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|line| {
            let o: Obj =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("export line {line:?}: {e}"));
            assert!(
                o.content.is_some(),
                "export --content line without content: {line}"
            );
            o
        })
        .collect()
}

/// SPEC's id of chunk `k`: UUIDv5 in the URL namespace.
pub fn chunk_uuid(repo: &str, path: &str, k: u64) -> Uuid {
    let name = if k == 0 {
        format!("elysiactl://{repo}/{path}")
    } else {
        format!("elysiactl://{repo}/{path}//{k}")
    };
    let ns = Uuid::parse_str("6ba7b811-9dad-11d1-80b4-00c04fd430c8").unwrap();
    Uuid::new_v5(&ns, name.as_bytes())
}

/// The positions strictly inside a valid UTF-8 character of `bytes`.
fn inside_chars(bytes: &[u8]) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    let mut at = 0u64;
    for part in bytes.utf8_chunks() {
        for c in part.valid().chars() {
            for i in 1..c.len_utf8() as u64 {
                out.insert(at + i);
            }
            at += c.len_utf8() as u64;
        }
        at += part.invalid().len() as u64;
    }
    out
}

fn newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// The file's bytes if SPEC calls it eligible: a regular file inside the
/// root, at most `max` bytes, no NUL in its first 8 KiB.
fn eligible(root: &Path, repo: &str, path: &str, max: u64) -> Option<Vec<u8>> {
    let root_c = root.canonicalize().ok()?;
    let c = root.join(repo).join(path).canonicalize().ok()?;
    let meta = std::fs::metadata(&c).ok()?;
    if !c.starts_with(&root_c) || !meta.is_file() || meta.len() > max {
        return None;
    }
    let bytes = std::fs::read(&c).ok()?;
    (!bytes[..bytes.len().min(8192)].contains(&0)).then_some(bytes)
}

/// Assert that the index holds exactly the chunks SPEC allows for every file
/// of `refs` (repo, repo-relative path) as it is under `root` now, and
/// nothing else: coverage without gaps, the bound, no cut inside a
/// character, content = lossy UTF-8 of the range, ids, lines, the file's
/// size and hash on every chunk, no surplus chunk, no object for a file that
/// is not eligible. Returns how many chunks the files have in all.
pub fn assert_exact(
    objs: &[Obj],
    root: &Path,
    refs: &[(String, String)],
    max: u64,
    chunk_size: u64,
) -> usize {
    let mut by_file: BTreeMap<(&str, &str), Vec<&Obj>> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    for o in objs {
        assert!(ids.insert(&o.id), "object id {} twice", o.id);
        by_file
            .entry((o.repo.as_str(), o.path.as_str()))
            .or_default()
            .push(o);
    }
    let known: std::collections::HashSet<(&str, &str)> =
        refs.iter().map(|(r, p)| (r.as_str(), p.as_str())).collect();
    for file in by_file.keys() {
        assert!(
            known.contains(file),
            "object for a file never named: {file:?}"
        );
    }
    let mut total = 0;
    for (repo, path) in refs {
        let file = format!("{repo}/{path}");
        let got = by_file.remove(&(repo.as_str(), path.as_str()));
        let Some(bytes) = eligible(root, repo, path, max) else {
            assert!(got.is_none(), "{file} is not eligible but has objects");
            continue;
        };
        let mut chunks = got.unwrap_or_else(|| panic!("{file} is eligible but has no object"));
        chunks.sort_by_key(|o| o.chunk);
        let n = chunks.len() as u64;
        let size = bytes.len() as u64;
        let sha = sha256_hex(&bytes);
        let inside = inside_chars(&bytes);
        if chunk_size == 0 {
            assert_eq!(n, 1, "{file}: chunk size 0 is one object per file");
        }
        let mut prev: Option<(u64, u64)> = None;
        for (k, o) in chunks.iter().enumerate() {
            let k = k as u64;
            let at = format!("{file} chunk {k} of {n}");
            assert_eq!(
                (o.chunk, o.chunk_count),
                (k, n),
                "{at}: numbering (no surplus)"
            );
            assert_eq!(o.id, chunk_uuid(repo, path, k).to_string(), "{at}: id");
            assert_eq!(
                (o.size, o.content_sha256.as_str()),
                (size, sha.as_str()),
                "{at}: file size/hash"
            );
            let (a, b) = (o.byte_start, o.byte_end);
            assert!(
                a <= b && b <= size,
                "{at}: range [{a}, {b}) in a file of {size}"
            );
            match prev {
                None => assert_eq!(a, 0, "{at}: chunk 0 starts at byte 0"),
                Some((pa, pb)) => {
                    assert!(a <= pb, "{at}: gap after [{pa}, {pb})");
                    assert!(a > pa && b > pb, "{at}: not in file order");
                }
            }
            if k + 1 == n {
                assert_eq!(b, size, "{at}: the last chunk ends at the file's end");
            }
            assert!(b > a || size == 0, "{at}: empty chunk in a non-empty file");
            if chunk_size > 0 {
                assert!(
                    b - a <= chunk_size,
                    "{at}: {} bytes over {chunk_size}",
                    b - a
                );
            }
            assert!(
                !inside.contains(&a) && !inside.contains(&b),
                "{at}: [{a}, {b}) cuts a UTF-8 character"
            );
            let (ua, ub) = (a as usize, b as usize);
            assert_eq!(
                o.content.as_deref(),
                Some(&*String::from_utf8_lossy(&bytes[ua..ub])),
                "{at}: content"
            );
            let start_line = 1 + newlines(&bytes[..ua]);
            let end_line = if b > a {
                start_line + newlines(&bytes[ua..ub - 1])
            } else {
                start_line
            };
            assert_eq!(
                (o.start_line, o.end_line),
                (start_line, end_line),
                "{at}: lines"
            );
            prev = Some((a, b));
        }
        total += chunks.len();
    }
    total
}

/// A file's bytes of exactly `size`: lines of every kind the chunker meets —
/// short and longer than the chunk size, multibyte characters, CRLF, an
/// invalid byte, blank runs, no final newline.
pub fn body(rng: &mut Rng, size: usize) -> Vec<u8> {
    const PIECES: &[&str] = &[
        "fn main() {\n",
        "    let x = 1;\n",
        "}\n",
        "\n",
        "\n\n\n",
        "// caf\u{e9} \u{65e5}\u{672c}\u{8a9e} \u{1f980}\n",
        "pub struct S;\r\n",
        "\u{1f980}\u{1f980}\u{1f980}\u{1f980}\u{1f980}\u{1f980}\u{1f980}\u{1f980}\u{1f980}\u{1f980}",
        "class A:\n    def f(self):\n        return 1\n",
        "            ",
    ];
    let mut out = Vec::with_capacity(size + 64);
    while out.len() < size {
        match rng.below(12) {
            10 => out.extend(std::iter::repeat_n(b'a', 40 + rng.below(300) as usize)),
            11 => out.push(0xff),
            i => out.extend_from_slice(PIECES[i as usize].as_bytes()),
        }
    }
    out.truncate(size);
    out
}

/// Files that grow and shrink across chunk counts at 128 bytes: `n` files
/// over two repos, each rewritten now and then at a size from none to two
/// dozen chunks (one time in ten removed instead, to come back later).
pub struct Churn {
    pub root: PathBuf,
    pub refs: Vec<(String, String)>,
    pub rng: Rng,
}

impl Churn {
    /// `n` files under `root`, each written once.
    pub fn new(root: &Path, n: usize, seed: u64) -> Churn {
        let refs = (0..n)
            .map(|i| {
                (
                    ["alpha", "beta"][i % 2].to_owned(),
                    format!("d{}/f{i}.rs", i % 7),
                )
            })
            .collect();
        let mut c = Churn {
            root: root.to_owned(),
            refs,
            rng: Rng(seed),
        };
        for i in 0..n {
            c.write(i);
        }
        c
    }

    /// Rewrite file `i`: removed one time in ten, else a [`body`] of one of
    /// the sizes around the chunk size.
    fn write(&mut self, i: usize) {
        const SIZES: &[usize] = &[0, 1, 60, 127, 128, 129, 400, 1000, 3000];
        let (repo, path) = &self.refs[i];
        let full = self.root.join(repo).join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        if self.rng.below(10) == 0 {
            let _ = std::fs::remove_file(&full);
        } else {
            let size = SIZES[self.rng.below(SIZES.len() as u64) as usize];
            std::fs::write(&full, body(&mut self.rng, size)).unwrap();
        }
    }

    /// Rewrite `n` files picked at random (grow, shrink, vanish, return).
    pub fn change(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.rng.below(self.refs.len() as u64) as usize;
            self.write(i);
        }
    }

    /// Write to `path` a manifest of `rounds` rounds of an `update` line for
    /// every file.
    pub fn write_manifest(&self, path: &Path, rounds: usize) {
        let mut manifest = String::new();
        for _ in 0..rounds {
            for (repo, path) in &self.refs {
                manifest.push_str(&format!(
                    r#"{{"op":"update","repo":"{repo}","path":"{path}"}}"#
                ));
                manifest.push('\n');
            }
        }
        std::fs::write(path, manifest).unwrap();
    }
}
