//! One manifest line → one [`Change`], or a [`LineError`] saying why not.
//!
//! The parser works on a byte slice (no I/O): the sync feeds it lines of the
//! memory-mapped manifest, the fuzz target arbitrary bytes. simd-json parses
//! in place, so each line is first copied into a reused scratch buffer (the
//! mapping itself is never written).

use base64::Engine;
use simd_json::{Buffers, Node, StaticNode, Tape};

/// The operation a line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    /// `update` or its synonym `modify`.
    Update,
    Delete,
    /// Needs `from`.
    Rename,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Rename => "rename",
        }
    }
}

/// A file change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub op: Op,
    pub repo: Option<String>,
    pub path: String,
    /// For `rename`: the old path (same rules as `path`).
    pub from: Option<String>,
    /// `content` / `content_base64` given inline: replaces reading the file.
    pub content: Option<Vec<u8>>,
}

/// A `new_changeset` metadata line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changeset {
    pub repo: String,
    pub commit: String,
    pub branch: Option<String>,
    pub parent: Option<String>,
    /// The line has a `parent` key (as `elysiactl changes` writes): its
    /// commit may become the repo's applied base. mgit's changesets have
    /// none and are only recorded (docs/changes.md).
    pub base: bool,
}

/// What a non-blank line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    File(FileChange),
    Changeset(Changeset),
    /// `{"op":"prune","repo":R}`: remove every object of repo R whose file is
    /// no longer eligible on disk.
    Prune {
        repo: String,
    },
    /// mgit's untracked directory (`"path":"dir/"`): every file under it
    /// on disk is an `add`.
    UntrackedDir {
        repo: Option<String>,
        dir: String,
    },
}

/// Why a line is malformed. Positions are added by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("line is not a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown op `{0}` (expected add, update, modify, delete, rename, prune)")]
    UnknownOp(String),
    #[error("field `{0}` is empty")]
    Empty(&'static str),
    #[error("field `{0}` contains a NUL byte")]
    Nul(&'static str),
    #[error("field `content_base64` is not valid base64: {0}")]
    Base64(String),
    #[error("line is {0} bytes, over the {MAX_LINE_LEN}-byte limit")]
    TooLong(usize),
    #[error("mgit line: {0}")]
    Mgit(String),
    /// Internal: the path carries mgit's porcelain quirks.
    #[doc(hidden)]
    #[error("mgit form")]
    NeedsMgit,
}

/// Longest line accepted (inline content included).
pub const MAX_LINE_LEN: usize = 64 << 20;

/// Reusable parser state: scratch buffer and simd-json buffers.
pub struct LineParser {
    scratch: Vec<u8>,
    buffers: Buffers,
    spare: Vec<Node<'static>>,
}

impl Default for LineParser {
    fn default() -> Self {
        Self::new()
    }
}

/// Reuse a vector's allocation for a vector of another lifetime.
fn recycle<'a, 'b>(mut v: Vec<Node<'a>>) -> Vec<Node<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable_node()).collect()
}

/// Nodes a value spans on the tape, itself included.
fn node_count(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => *count + 1,
        _ => 1,
    }
}

fn unreachable_node<'a>() -> Node<'a> {
    Node::Static(StaticNode::Null)
}

impl LineParser {
    pub fn new() -> Self {
        LineParser {
            scratch: Vec::with_capacity(4096),
            buffers: Buffers::new(4096),
            spare: Vec::with_capacity(64),
        }
    }

    /// Parse one line (without its line terminator). `Ok(None)` for a blank
    /// or whitespace-only line.
    pub fn parse(&mut self, line: &[u8]) -> Result<Option<Change>, LineError> {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        if line.len() > MAX_LINE_LEN {
            return Err(LineError::TooLong(line.len()));
        }
        let res = self.parse_tape(line);
        match res {
            Err(LineError::NeedsMgit) => self.parse_mgit(line).map(Some),
            other => other.map(Some),
        }
    }

    /// simd-json's tape of the line, read field by field.
    fn parse_tape(&mut self, line: &[u8]) -> Result<Change, LineError> {
        self.read_tape(line, interpret)
    }

    /// Copy `line` into the scratch buffer, build its tape with the reused
    /// buffers, and let `read` interpret it.
    fn read_tape(
        &mut self,
        line: &[u8],
        read: fn(&[Node<'_>]) -> Result<Change, LineError>,
    ) -> Result<Change, LineError> {
        match self.read_tape_once(line, read) {
            // simd-json refuses numbers that are valid JSON but do not fit
            // a u64, an i64 or a finite f64 (`1e999`, a 30-digit integer).
            // No field we read is a number, so such a line means the same
            // with every number replaced by `0`: parse that instead.
            Err(LineError::Json(e)) => match zero_numbers(line) {
                Some(zeroed) => self.read_tape_once(&zeroed, read),
                None => Err(LineError::Json(e)),
            },
            other => other,
        }
    }

    fn read_tape_once(
        &mut self,
        line: &[u8],
        read: fn(&[Node<'_>]) -> Result<Change, LineError>,
    ) -> Result<Change, LineError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(line);
        let mut tape = Tape(recycle(std::mem::take(&mut self.spare)));
        let res = simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape)
            .map_err(|e| LineError::Json(json_error_text(&e, line)))
            .and_then(|()| read(&tape.0));
        self.spare = recycle(tape.0);
        res
    }

    /// mgit's porcelain forms (`"old -> new"`, C-quoted paths, `dir/`):
    /// normalised by [`super::mgit::normalize`], then parsed as usual.
    fn parse_mgit(&mut self, line: &[u8]) -> Result<Change, LineError> {
        match super::mgit::normalize_bytes(line) {
            Ok(super::mgit::Normalized::Line(v)) => {
                let bytes = serde_json::to_vec(&v).map_err(|e| LineError::Mgit(e.to_string()))?;
                self.read_tape(&bytes, interpret_plain)
            }
            Ok(super::mgit::Normalized::UntrackedDir { repo, dir }) => {
                Ok(Change::UntrackedDir { repo, dir })
            }
            Ok(super::mgit::Normalized::Changeset { .. }) => {
                Err(LineError::Mgit("unexpected changeset form".into()))
            }
            Err(e) => Err(LineError::Mgit(e.to_string())),
        }
    }
}

/// `line` with every number token that is valid JSON replaced by `0` and
/// spaces to the same length (so error columns stay where they were);
/// `None` if it has no number that is not already `0`. Strings are skipped
/// whole; a token that is not a valid JSON number (`01`, `1.`, `-`) is left
/// alone, so the line stays as invalid as it was.
pub(crate) fn zero_numbers(line: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    // A number may start only where a token may: at the start or after a
    // structural character or whitespace (so `--5` or `x12` stay invalid).
    let mut boundary = true;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => {
                i += 1;
                while i < line.len() && line[i] != b'"' {
                    i += if line[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                boundary = false;
            }
            b',' | b':' | b'[' | b']' | b'{' | b'}' | b' ' | b'\t' | b'\n' | b'\r' => {
                boundary = true;
                i += 1;
            }
            b'-' | b'0'..=b'9' if boundary => {
                match number_end(line, i) {
                    Some(end) => {
                        if &line[i..end] != b"0" {
                            let o = out.get_or_insert_with(|| line.to_vec());
                            o[i] = b'0';
                            o[i + 1..end].fill(b' ');
                        }
                        i = end;
                    }
                    None => i += 1,
                }
                boundary = false;
            }
            _ => {
                boundary = false;
                i += 1;
            }
        }
    }
    out
}

/// The end of the JSON number starting at `at`, if it is one (RFC 8259:
/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, followed by a
/// delimiter or the end).
fn number_end(b: &[u8], at: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        let start = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        (j > start).then_some(j)
    };
    let mut j = at;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    j = match b.get(j) {
        Some(b'0') => j + 1,
        Some(b'1'..=b'9') => digits(j)?,
        _ => return None,
    };
    if b.get(j) == Some(&b'.') {
        j = digits(j + 1)?;
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        j = digits(j)?;
    }
    match b.get(j) {
        None | Some(b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') => Some(j),
        _ => None,
    }
}

fn json_error_text(e: &simd_json::Error, line: &[u8]) -> String {
    // simd-json's own names ("ExpectedNull", "InternalError") mean little to
    // a reader of a cron log; say in words what is wrong and where.
    use simd_json::ErrorType as E;
    let first = line.iter().position(|b| !b.is_ascii_whitespace());
    if let Some(i) = first.filter(|&i| line[i] != b'{') {
        return format!(
            "not a JSON object: found {} at column {}; a manifest line looks like {{\"op\":\"add\",\"repo\":\"R\",\"path\":\"src/a.py\"}}",
            describe_byte(line[i]),
            i + 1
        );
    }
    // simd-json reports most structural errors as one kind; serde_json's
    // words are better ("expected `,` or `}`"), and this is the error path.
    if let Err(se) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
        let text = se.to_string();
        let words = text.split(" at line ").next().unwrap_or(&text);
        return format!("{words} at column {}", se.column());
    }
    let what = match e.error() {
        E::Eof | E::UnterminatedString | E::ExpectedMapEnd => {
            "the line ends before the JSON value does (cut short?)"
        }
        E::InvalidUtf8 => "the line is not valid UTF-8",
        E::TrailingData => "there is more after the JSON object (two objects on one line?)",
        _ => "unexpected character",
    };
    format!("{what} at column {}", e.index() + 1)
}

fn describe_byte(b: u8) -> String {
    match b {
        b'[' => "an array `[`".into(),
        b'"' => "a string".into(),
        b'0'..=b'9' | b'-' => "a number".into(),
        0x21..=0x7e => format!("`{}`", b as char),
        _ => format!("byte 0x{b:02x}"),
    }
}

/// Fields of interest, borrowed from the tape or the line.
#[derive(Default)]
struct Fields<'a> {
    op: Option<&'a str>,
    repo: Option<&'a str>,
    path: Option<&'a str>,
    from: Option<&'a str>,
    content: Option<&'a str>,
    content_b64: Option<&'a str>,
    /// Tape index of the `new_changeset` object.
    changeset: Option<usize>,
}

/// A top-level value, as far as the interpretation cares.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    Null,
    /// An object, at this tape index.
    Object(usize),
    /// A number, a boolean or an array.
    Other,
}

fn val<'a>(node: &Node<'a>, at: usize) -> Val<'a> {
    match node {
        Node::String(s) => Val::Str(s),
        Node::Static(StaticNode::Null) => Val::Null,
        Node::Object { .. } => Val::Object(at),
        _ => Val::Other,
    }
}

impl<'a> Fields<'a> {
    /// Take one `key: value` pair; a later duplicate key wins.
    fn set(&mut self, key: &str, v: Val<'a>) -> Result<(), LineError> {
        match key {
            "op" => self.op = string_field(v, "op", false)?,
            "repo" => self.repo = string_field(v, "repo", true)?,
            "path" => self.path = string_field(v, "path", false)?,
            "from" => self.from = string_field(v, "from", true)?,
            "content" => self.content = string_field(v, "content", true)?,
            "content_base64" => self.content_b64 = string_field(v, "content_base64", true)?,
            "new_changeset" => match v {
                Val::Object(at) => self.changeset = Some(at),
                Val::Null => {}
                _ => {
                    return Err(LineError::WrongType {
                        field: "new_changeset",
                        expected: "an object",
                    })
                }
            },
            _ => {}
        }
        Ok(())
    }
}

fn string_field<'a>(
    v: Val<'a>,
    field: &'static str,
    nullable: bool,
) -> Result<Option<&'a str>, LineError> {
    match v {
        Val::Str(s) => Ok(Some(s)),
        Val::Null if nullable => Ok(None),
        _ => Err(LineError::WrongType {
            field,
            expected: if nullable {
                "a string or null"
            } else {
                "a string"
            },
        }),
    }
}

fn interpret(tape: &[Node<'_>]) -> Result<Change, LineError> {
    interpret_with(tape, true)
}

fn interpret_plain(tape: &[Node<'_>]) -> Result<Change, LineError> {
    interpret_with(tape, false)
}

/// Whether a path is in mgit's porcelain form rather than SPEC form.
fn mgit_form(path: &str) -> bool {
    path.starts_with('"')
        || path.ends_with('/')
        // A space first: building a substring finder per line cost more
        // than the search (paths rarely hold a space at all).
        || memchr::memchr_iter(b' ', path.as_bytes()).any(|i| path.as_bytes()[i..].starts_with(b" -> "))
}

fn interpret_with(tape: &[Node<'_>], allow_mgit: bool) -> Result<Change, LineError> {
    let Some(Node::Object { len, .. }) = tape.first() else {
        return Err(LineError::NotAnObject);
    };
    let mut f = Fields::default();
    let mut i = 1;
    for _ in 0..*len {
        let Some(Node::String(key)) = tape.get(i) else {
            return Err(LineError::NotAnObject);
        };
        let vi = i + 1;
        let Some(value) = tape.get(vi) else {
            return Err(LineError::NotAnObject);
        };
        f.set(key, val(value, vi))?;
        i = vi + node_count(value);
    }
    f.finish(tape, allow_mgit)
}

impl<'a> Fields<'a> {
    /// The change the fields describe. `tape` is where `changeset` points.
    fn finish(self, tape: &[Node<'_>], allow_mgit: bool) -> Result<Change, LineError> {
        let f = self;
        if let Some(ci) = f.changeset {
            return changeset(tape, ci, f.repo);
        }

        let op = match f.op {
            None => return Err(LineError::Missing("op")),
            Some("add") => Op::Add,
            Some("update") | Some("modify") => Op::Update,
            Some("delete") => Op::Delete,
            Some("rename") => Op::Rename,
            Some("prune") => {
                let repo = non_empty("repo", f.repo.ok_or(LineError::Missing("repo"))?)?;
                return Ok(Change::Prune {
                    repo: repo.to_owned(),
                });
            }
            Some(other) => {
                return Err(LineError::UnknownOp(
                    other.chars().take(64).collect::<String>(),
                ))
            }
        };
        let path = non_empty("path", f.path.ok_or(LineError::Missing("path"))?)?;
        if allow_mgit && mgit_form(path) {
            return Err(LineError::NeedsMgit);
        }
        let repo = match f.repo {
            Some(r) => Some(non_empty("repo", r)?.to_owned()),
            None => None,
        };
        let from = match (op, f.from) {
            (Op::Rename, None) => return Err(LineError::Missing("from")),
            (_, Some(p)) => Some(non_empty("from", p)?.to_owned()),
            (_, None) => None,
        };
        let content = match (f.content, f.content_b64) {
            (Some(c), _) => Some(c.as_bytes().to_vec()),
            (None, Some(b)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| LineError::Base64(e.to_string()))?,
            ),
            (None, None) => None,
        };
        Ok(Change::File(FileChange {
            op,
            repo,
            path: path.to_owned(),
            from,
            content,
        }))
    }
}

fn non_empty<'a>(field: &'static str, s: &'a str) -> Result<&'a str, LineError> {
    if s.is_empty() {
        Err(LineError::Empty(field))
    } else if memchr::memchr(0, s.as_bytes()).is_some() {
        Err(LineError::Nul(field))
    } else {
        Ok(s)
    }
}

fn changeset(tape: &[Node<'_>], at: usize, repo: Option<&str>) -> Result<Change, LineError> {
    let repo = non_empty("repo", repo.ok_or(LineError::Missing("repo"))?)?;
    let Some(Node::Object { len, .. }) = tape.get(at) else {
        return Err(LineError::WrongType {
            field: "new_changeset",
            expected: "an object",
        });
    };
    let (mut commit, mut branch, mut parent, mut base) = (None, None, None, false);
    let mut i = at + 1;
    for _ in 0..*len {
        let (Some(Node::String(key)), Some(value)) = (tape.get(i), tape.get(i + 1)) else {
            return Err(LineError::NotAnObject);
        };
        let v = val(value, i + 1);
        match *key {
            "commit" => commit = string_field(v, "new_changeset.commit", false)?,
            "branch" => branch = string_field(v, "new_changeset.branch", true)?,
            "parent" => {
                parent = string_field(v, "new_changeset.parent", true)?;
                base = true;
            }
            _ => {}
        }
        i += 1 + node_count(value);
    }
    let commit = commit.ok_or(LineError::Missing("new_changeset.commit"))?;
    Ok(Change::Changeset(Changeset {
        repo: repo.to_owned(),
        commit: commit.to_owned(),
        branch: branch.map(str::to_owned),
        parent: parent.map(str::to_owned),
        base,
    }))
}

#[cfg(test)]
#[path = "line_tests.rs"]
mod tests;
