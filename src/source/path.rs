//! A manifest path to its repo-relative form, on the path's bytes.
//!
//! A line's path that is already normal (no empty, `.` or `..` part:
//! [`normal`]) is used as it is; any other is normalised once into a buffer.
//! An absolute one is then matched against each root's prefix, precomputed
//! in the same form ([`RootPrefix`]). No `std::path` component iteration and,
//! for a normal path, no allocation per line besides the
//! [`super::Location`]'s two strings. The rules are
//! those `std::path` gave (`Path::components`, `strip_prefix`): the old
//! code is kept as the oracle of a property test (`super::std_rules`).

use std::path::{Component, Path};

/// Normalise the `/`-separated `p` into `out` (cleared first) as `/a/b`
/// (`""` for no part at all): empty and `.` parts dropped, `..` applied.
/// `false` when a `..` climbs above the start.
pub(super) fn normalize_into(p: &str, out: &mut String) -> bool {
    out.clear();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => match out.rfind('/') {
                Some(i) => out.truncate(i),
                None => return false,
            },
            other => {
                out.push('/');
                out.push_str(other);
            }
        }
    }
    true
}

/// `p` in the form [`normalize_into`] gives, but with the leading `/`
/// optional: `p` itself when it is already normal (nearly every manifest
/// path), else normalised into `buf`. `None` when a `..` climbs above the
/// start.
pub(super) fn normal<'a>(p: &'a str, buf: &'a mut String) -> Option<&'a str> {
    if is_plain(p.as_bytes()) {
        return Some(p);
    }
    buf.reserve(p.len());
    normalize_into(p, buf).then_some(buf.as_str())
}

/// Whether `p` (after one leading `/`) has no empty, `.` or `..` part.
fn is_plain(p: &[u8]) -> bool {
    let body = p.strip_prefix(b"/").unwrap_or(p);
    if body.is_empty() {
        return false;
    }
    // A pass without early exit (it vectorises) for a `/` before a `/` or
    // a `.`; only then the parts are looked at (a dotfile, a `/tmp/.x`).
    let suspect = matches!(body.first(), Some(b'.' | b'/'))
        || body.last() == Some(&b'/')
        || body.iter().zip(&body[1..]).fold(false, |bad, (&a, &b)| {
            bad | ((a == b'/') & ((b == b'/') | (b == b'.')))
        });
    !suspect
        || body
            .split(|&b| b == b'/')
            .all(|part| !matches!(part, b"" | b"." | b".."))
}

/// The first part of a [`normal`] form and the parts after it (`"/a/b/c"`
/// → `("a", "b/c")`); `None` when there is no part.
pub(super) fn first_part(norm: &str) -> Option<(&str, &str)> {
    let tail = norm.strip_prefix('/').unwrap_or(norm);
    if tail.is_empty() {
        return None;
    }
    // A plain loop: a repo name is short, a memchr call costs more.
    Some(match tail.bytes().position(|b| b == b'/') {
        Some(i) => (&tail[..i], &tail[i + 1..]),
        None => (tail, ""),
    })
}

/// A root's path in the form [`normalize_into`] gives (`""` for `/`), or
/// nothing that can match: a root whose components `Path::strip_prefix`
/// could never find in a normalised line (a `..` left in it) or that is not
/// UTF-8 (a line's path always is).
#[derive(Debug, Clone)]
pub(super) struct RootPrefix(Option<String>);

impl RootPrefix {
    pub(super) fn of(root: &Path) -> RootPrefix {
        let mut key = String::new();
        for c in root.components() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => return RootPrefix(None),
                Component::Normal(n) => match n.to_str() {
                    Some(n) => {
                        key.push('/');
                        key.push_str(n);
                    }
                    None => return RootPrefix(None),
                },
            }
        }
        RootPrefix(Some(key))
    }

    /// The part of absolute [`normal`] `norm` below this root (`""` or
    /// `/repo/…`), when `norm` lies under it.
    pub(super) fn strip<'a>(&self, norm: &'a str) -> Option<&'a str> {
        let key = self.0.as_deref()?;
        let rest = norm.strip_prefix(key)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}
