//! The chunker: a file's raw bytes → contiguous byte ranges of at most
//! `bound` bytes, in file order (docs/objects.md states the rules).
//!
//! One forward pass picks each cut inside the window `(start, start + bound]`:
//! the line end with the strongest seam (a top-level definition after a blank
//! line, a definition, a blank line, indentation 0, any line end), the latest
//! among equals. Only a line longer than the bound is cut inside, after its last
//! space or tab in the window's second half if it has one, else at the last
//! character boundary. A second pass merges or re-cuts whitespace-only chunks
//! where the bound allows. Chunks never overlap: each starts where the one
//! before ends. Everything here is a pure function of (bytes, bound, language).

use memchr::{memchr, memchr_iter, memrchr2};

/// The widest UTF-8 character: the smallest bound the chunker can keep
/// without cutting inside a valid character.
pub(crate) const WIDEST_CHAR: usize = 4;

/// One chunk's place in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSpan {
    /// First byte of the chunk.
    pub byte_start: u64,
    /// One past the last byte (exclusive).
    pub byte_end: u64,
    /// 1-based line of the first byte (1 for the empty file's one chunk).
    pub start_line: u64,
    /// 1-based line of the last byte: a chunk ending right after a `\n` ends
    /// on the line that `\n` closes. Equal to `start_line` for an empty chunk.
    pub end_line: u64,
}

/// The byte ranges `(start, end)` of `bytes` cut at `bound` (0: one range).
/// A `bound` below [`WIDEST_CHAR`] is raised to it; [`super::ChunkSize`]
/// refuses such sizes before they get here.
pub(crate) fn ranges(bytes: &[u8], bound: usize, lang: Lang) -> Vec<(usize, usize)> {
    let size = bytes.len();
    if bound == 0 || size <= bound {
        return vec![(0, size)];
    }
    let bound = bound.max(WIDEST_CHAR);
    let mut out = Vec::with_capacity(size / bound + 2);
    let mut start = 0;
    while size - start > bound {
        let end = cut(bytes, start, bound, lang);
        debug_assert!(start < end && end - start <= bound);
        out.push((start, end));
        start = end;
    }
    out.push((start, size));
    if is_blank(bytes) {
        return out; // whitespace only: nothing to move around
    }
    tidy_whitespace(bytes, bound, out)
}

/// [`ranges`] with their line numbers (the ranges must be contiguous).
pub(crate) fn spans_of(bytes: &[u8], ranges: &[(usize, usize)]) -> Vec<ChunkSpan> {
    let mut line = 1u64;
    ranges
        .iter()
        .map(|&(a, b)| {
            let start_line = line;
            let end_line = match b.checked_sub(1) {
                Some(last) if last >= a => {
                    let inner = count_newlines(&bytes[a..last]);
                    line = start_line + inner + u64::from(bytes[last] == b'\n');
                    start_line + inner
                }
                _ => start_line,
            };
            ChunkSpan {
                byte_start: a as u64,
                byte_end: b as u64,
                start_line,
                end_line,
            }
        })
        .collect()
}

fn count_newlines(bytes: &[u8]) -> u64 {
    memchr_iter(b'\n', bytes).count() as u64
}

/// Where the chunk starting at `s` ends, given that more than `bound` bytes
/// remain. Always in `(s, s + bound]`.
fn cut(bytes: &[u8], s: usize, bound: usize, lang: Lang) -> usize {
    let w = s + bound;
    let mut line_start = s;
    let mut content_before = false;
    let mut best: Option<(u8, usize)> = None;
    let mut last_end = None;
    for nl in memchr_iter(b'\n', &bytes[s..w]) {
        let p = s + nl + 1;
        let line = &bytes[line_start..p];
        let blank = is_blank(line);
        content_before |= !blank;
        if content_before {
            let leadin = !blank && lang.is_leadin(line);
            let level = seam_level(lang, blank, leadin, &bytes[p..]);
            if best.is_none_or(|(l, _)| level >= l) {
                best = Some((level, p));
            }
        }
        last_end = Some(p);
        line_start = p;
    }
    if let Some((_, p)) = best {
        return p;
    }
    // No line end in the window has content before it. If the line that
    // crosses the window's end fits in a chunk, keep it whole (the
    // whitespace-only chunk this leaves is for `tidy_whitespace`).
    if let Some(p) = last_end {
        let crossing_end = memchr(b'\n', &bytes[w..]).map_or(bytes.len(), |i| w + i + 1);
        if crossing_end - p <= bound {
            return p;
        }
    }
    long_line_cut(bytes, s, w, bound, last_end)
}

/// A cut inside the line that runs past `w` and is longer than the bound.
fn long_line_cut(bytes: &[u8], s: usize, w: usize, bound: usize, last_end: Option<usize>) -> usize {
    let Some(first) = bytes[s..w].iter().position(|&b| !is_blank_byte(b)) else {
        // Only whitespace within reach: the chunk cannot have content.
        return last_end.unwrap_or(w);
    };
    let from = (s + first + 1).max(s + bound / 2); // keep content in this chunk
    if from < w {
        if let Some(i) = memrchr2(b' ', b'\t', &bytes[from..w]) {
            return from + i + 1;
        }
    }
    // With bound >= 4 the character holding `w` starts after `s`.
    floor_char(bytes, w)
}

/// The seam strength of a cut before `next` (the rest of the file), the line
/// before it being blank / a lead-in (comment, attribute, decorator).
fn seam_level(lang: Lang, prev_blank: bool, prev_leadin: bool, next: &[u8]) -> u8 {
    let Some(&first) = next.first() else {
        return 0;
    };
    let indented = first == b' ' || first == b'\t';
    let next_blank = is_blank_line(next);
    if next_blank {
        return u8::from(prev_blank);
    }
    if !indented {
        if !prev_leadin && lang.starts_definition(next) {
            return if prev_blank { 5 } else { 4 };
        }
    } else if prev_blank && lang.starts_definition(trim_indent(next)) {
        return 3; // e.g. a method of an impl or class
    }
    if prev_blank {
        2
    } else if !indented && !prev_leadin && !matches!(first, b'}' | b')' | b']') {
        1
    } else {
        0
    }
}

/// Second pass: a whitespace-only chunk (in a file with content) is merged
/// into the chunk before or after it if the union fits, else takes the last
/// content line of the chunk before or the first of the chunk after, if that
/// fits and leaves the neighbour content. Otherwise it stays (see docs).
fn tidy_whitespace(bytes: &[u8], bound: usize, ranges: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    let mut rest = ranges.into_iter().peekable();
    while let Some(mut cur) = rest.next() {
        if !is_blank(&bytes[cur.0..cur.1]) {
            out.push(cur);
            continue;
        }
        if let Some(prev) = out.last_mut() {
            if cur.1 - prev.0 <= bound {
                prev.1 = cur.1;
                continue;
            }
        }
        if let Some(next) = rest.peek_mut() {
            if next.1 - cur.0 <= bound {
                next.0 = cur.0;
                continue;
            }
        }
        if let Some(prev) = out.last_mut() {
            if let Some(b) = take_from_prev(bytes, bound, *prev, cur.1) {
                prev.1 = b;
                cur.0 = b;
                out.push(cur);
                continue;
            }
        }
        if let Some(next) = rest.peek_mut() {
            if let Some(le) = first_content_line_end(bytes, next.0, next.1) {
                if le - cur.0 <= bound && !is_blank(&bytes[le..next.1]) {
                    next.0 = le;
                    cur.1 = le;
                }
            }
        }
        out.push(cur);
    }
    out
}

/// Where a whitespace-only chunk ending at `end` may start instead, taking
/// the end of the chunk `prev` before it: the start of `prev`'s last content
/// line, or, if that line is longer than the bound (so it may be cut), the
/// first position within the bound; as long as `prev` keeps content.
fn take_from_prev(bytes: &[u8], bound: usize, prev: (usize, usize), end: usize) -> Option<usize> {
    let (a, b) = prev;
    let z = a + bytes[a..b].iter().rposition(|&x| !is_blank_byte(x))?;
    let line_start = memchr::memrchr(b'\n', &bytes[..z]).map_or(0, |i| i + 1);
    let at = if end - line_start <= bound {
        line_start
    } else {
        let line_end = memchr(b'\n', &bytes[z..]).map_or(bytes.len(), |i| z + i + 1);
        if line_end - line_start <= bound {
            return None; // the line fits: it is not to be cut
        }
        ceil_char(bytes, line_start.max(end - bound))
    };
    let keeps_content = at > a && !is_blank(&bytes[a..at]);
    (keeps_content && at <= floor_char(bytes, z) && end - at <= bound).then_some(at)
}

/// The end (after its `\n`) of the line holding the first content byte of
/// `[a, b)`, if that line ends before `b`.
fn first_content_line_end(bytes: &[u8], a: usize, b: usize) -> Option<usize> {
    let z = a + bytes[a..b].iter().position(|&x| !is_blank_byte(x))?;
    let le = z + memchr(b'\n', &bytes[z..b])? + 1;
    Some(le).filter(|&le| le < b)
}

/// The largest position `<= i` that is not strictly inside a unit of the
/// UTF-8 decoding `from_utf8_lossy` does: a valid character, or an invalid
/// sequence it replaces by one U+FFFD (a lead byte and the continuation
/// bytes that could still have completed it). Keeping invalid sequences whole
/// too is more than the SPEC asks; it makes the chunks' contents concatenate
/// to the whole file's.
pub(crate) fn floor_char(bytes: &[u8], i: usize) -> usize {
    for back in 1..WIDEST_CHAR {
        let Some(q) = i.checked_sub(back) else {
            return i;
        };
        if (0x80..0xC0).contains(&bytes[q]) {
            continue; // a continuation byte: look further back for the lead
        }
        // A unit starts at every byte that is no continuation byte.
        let unit = unit_len(&bytes[q..bytes.len().min(q + WIDEST_CHAR)]);
        return if unit > back { q } else { i };
    }
    i
}

/// The smallest position `>= i` not strictly inside a decoding unit.
fn ceil_char(bytes: &[u8], i: usize) -> usize {
    let f = floor_char(bytes, i);
    if f == i {
        i
    } else {
        f + unit_len(&bytes[f..bytes.len().min(f + WIDEST_CHAR)])
    }
}

/// The length of the decoding unit at the start of `bytes`.
fn unit_len(bytes: &[u8]) -> usize {
    bytes.utf8_chunks().next().map_or(0, |c| {
        c.valid()
            .chars()
            .next()
            .map_or(c.invalid().len(), char::len_utf8)
    })
}

/// ASCII whitespace, vertical tab included.
fn is_blank_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

pub(crate) fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| is_blank_byte(b))
}

/// Whether the line at the start of `bytes` (up to its `\n`) is blank.
fn is_blank_line(bytes: &[u8]) -> bool {
    for &b in bytes {
        if b == b'\n' {
            return true;
        }
        if !is_blank_byte(b) {
            return false;
        }
    }
    true
}

fn trim_indent(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[n..]
}

/// What the chunker knows of a language: the starts of top-level definitions
/// and of lines that belong to the line after them (comments, attributes,
/// decorators), chosen by the path's extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lang {
    defs: &'static [&'static [u8]],
    leadins: &'static [&'static [u8]],
    /// Any identifier at indentation 0 starts a definition (C, YAML, shell).
    ident_defs: bool,
}

const C_COMMENTS: &[&[u8]] = &[b"//", b"/*", b"*"];
const HASH_COMMENT: &[&[u8]] = &[b"#"];

#[rustfmt::skip]
const RUST: Lang = Lang {
    defs: &[
        b"fn ", b"pub ", b"pub(", b"impl ", b"impl<", b"struct ", b"enum ", b"trait ", b"mod ",
        b"type ", b"const ", b"static ", b"use ", b"async ", b"unsafe ", b"extern ",
        b"macro_rules!",
    ],
    leadins: &[b"#[", b"#!", b"//", b"/*", b"*"],
    ident_defs: false,
};

#[rustfmt::skip]
const PYTHON: Lang = Lang {
    defs: &[b"def ", b"class ", b"async def ", b"if __name__"],
    leadins: &[b"@", b"#"],
    ident_defs: false,
};

#[rustfmt::skip]
const GO: Lang = Lang {
    defs: &[b"func ", b"type ", b"var ", b"const ", b"import ", b"package "],
    leadins: C_COMMENTS,
    ident_defs: false,
};

#[rustfmt::skip]
const JS: Lang = Lang {
    defs: &[
        b"function ", b"async function ", b"class ", b"export ", b"const ", b"let ", b"var ",
        b"interface ", b"type ", b"enum ", b"import ", b"declare ", b"abstract ",
        b"module.exports",
    ],
    leadins: &[b"//", b"/*", b"*", b"@"],
    ident_defs: false,
};

#[rustfmt::skip]
const JVM: Lang = Lang {
    defs: &[
        b"public ", b"private ", b"protected ", b"internal ", b"class ", b"interface ",
        b"enum ", b"record ", b"abstract ", b"final ", b"static ", b"sealed ", b"data ",
        b"object ", b"fun ", b"def ", b"val ", b"var ", b"package ", b"import ", b"using ",
        b"namespace ", b"func ", b"struct ", b"extension ", b"protocol ",
    ],
    leadins: &[b"//", b"/*", b"*", b"@", b"["],
    ident_defs: false,
};

#[rustfmt::skip]
const C: Lang = Lang {
    defs: &[b"#include", b"#define", b"#if", b"template", b"namespace "],
    leadins: &[b"//", b"/*", b"*", b"template"],
    ident_defs: true,
};

#[rustfmt::skip]
const RUBY: Lang = Lang {
    defs: &[b"def ", b"class ", b"module ", b"require"],
    leadins: HASH_COMMENT,
    ident_defs: false,
};

#[rustfmt::skip]
const PHP: Lang = Lang {
    defs: &[
        b"function ", b"class ", b"public ", b"namespace ", b"use ", b"interface ", b"trait ",
        b"abstract ", b"final ",
    ],
    leadins: &[b"//", b"/*", b"*", b"#"],
    ident_defs: false,
};

#[rustfmt::skip]
const SHELL: Lang = Lang {
    defs: &[b"function "],
    leadins: HASH_COMMENT,
    ident_defs: true,
};

#[rustfmt::skip]
const MARKDOWN: Lang = Lang {
    defs: &[b"#"],
    leadins: &[],
    ident_defs: false,
};

#[rustfmt::skip]
const INI: Lang = Lang {
    defs: &[b"["],
    leadins: &[b"#", b";"],
    ident_defs: false,
};

#[rustfmt::skip]
const YAML: Lang = Lang {
    defs: &[b"---"],
    leadins: HASH_COMMENT,
    ident_defs: true,
};

/// Unknown extensions: blank lines and indentation only.
#[rustfmt::skip]
const PLAIN: Lang = Lang {
    defs: &[],
    leadins: &[],
    ident_defs: false,
};

const BY_EXTENSION: &[(&[&str], Lang)] = &[
    (&["rs"], RUST),
    (&["py", "pyi", "pyw"], PYTHON),
    (&["go"], GO),
    (&["js", "jsx", "mjs", "cjs", "ts", "tsx", "mts", "cts"], JS),
    (&["java", "kt", "kts", "scala", "cs", "swift"], JVM),
    (&["c", "h", "cc", "cpp", "cxx", "hh", "hpp", "hxx"], C),
    (&["rb", "rake"], RUBY),
    (&["php"], PHP),
    (&["sh", "bash", "zsh"], SHELL),
    (&["md", "markdown", "mdx"], MARKDOWN),
    (&["toml", "ini", "cfg"], INI),
    (&["yml", "yaml"], YAML),
];

impl Lang {
    /// The language of `path`, by its extension (ASCII case ignored).
    pub(crate) fn of(path: &str) -> Lang {
        let name = path.rsplit('/').next().unwrap_or(path);
        let Some((_, ext)) = name.rsplit_once('.') else {
            return PLAIN;
        };
        BY_EXTENSION
            .iter()
            .find(|(exts, _)| exts.iter().any(|e| e.eq_ignore_ascii_case(ext)))
            .map_or(PLAIN, |&(_, lang)| lang)
    }

    /// `line` (indentation removed) starts a definition or a lead-in.
    fn starts_definition(self, line: &[u8]) -> bool {
        let Some(&first) = line.first() else {
            return false;
        };
        (self.ident_defs && (first.is_ascii_alphabetic() || first == b'_'))
            || self.defs.iter().any(|d| has_prefix(line, d))
            || self.leadins.iter().any(|d| has_prefix(line, d))
    }

    /// `line` is a comment, attribute or decorator (at any indentation).
    fn is_leadin(self, line: &[u8]) -> bool {
        let t = trim_indent(line);
        self.leadins.iter().any(|d| has_prefix(t, d))
    }
}

/// `line.starts_with(p)`, the first byte compared before the call to
/// `memcmp` (this runs for every keyword on every line of a window).
fn has_prefix(line: &[u8], p: &[u8]) -> bool {
    match (line.first(), p.first()) {
        (_, None) => true,
        (Some(a), Some(b)) => a == b && line.starts_with(p),
        (None, Some(_)) => false,
    }
}
