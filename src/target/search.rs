//! What `search` asks either target and what it prints: a [`Query`] goes to
//! the local index (`local::search_with`) or to Weaviate
//! (`WeaviateTarget::search`); each answers ranked chunk hits
//! ([`ChunkHit`]), which [`group`] turns into one [`FileHit`] per file (its
//! best chunk, with the line ranges of its other matching chunks), the same
//! for both targets.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::local::tokenizer::pieces;

/// How the query text is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// BM25 over the words of the content.
    Keyword,
    /// BM25 and vector similarity fused (`alpha` 0 = keyword only, 1 = vector only).
    Hybrid,
    /// Vector similarity to the query text (`nearText`).
    Semantic,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Keyword => "keyword",
            Mode::Hybrid => "hybrid",
            Mode::Semantic => "semantic",
        }
    }
}

/// One search, as either target runs it.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    /// Files to return (hits after grouping by file).
    pub limit: usize,
    /// Only these repos (none: every repo).
    pub repos: Vec<String>,
    /// Only repo-relative paths starting with this.
    pub path_prefix: Option<String>,
    pub mode: Mode,
    /// Hybrid only: the weight of the vector side.
    pub alpha: f64,
}

impl Query {
    /// A keyword query over everything.
    pub fn keyword(text: &str, limit: usize) -> Query {
        Query {
            text: text.to_owned(),
            limit,
            repos: Vec::new(),
            path_prefix: None,
            mode: Mode::Keyword,
            alpha: 0.5,
        }
    }

    /// How many chunk hits to ask a target for, so that `limit` files
    /// survive grouping even when the best files match in several chunks.
    pub fn chunk_limit(&self) -> usize {
        self.limit.max(1).saturating_mul(8).clamp(50, 1000)
    }

    /// Whether a repo-relative `path` of `repo` passes the filters.
    pub fn admits(&self, repo: &str, path: &str) -> bool {
        (self.repos.is_empty() || self.repos.iter().any(|r| r == repo))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// Why a target could not answer a search: the user's to fix (exit 2),
/// or the index's (exit 3). One line, secrets removed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

/// One matching chunk, with its text (for the snippet of the file's hit).
#[derive(Debug, Clone)]
pub struct ChunkHit {
    pub id: String,
    pub repo: String,
    pub path: String,
    pub chunk: u64,
    pub start_line: u64,
    pub end_line: u64,
    pub score: f32,
    pub content: String,
}

/// Lines of a file's other matching chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LineRange {
    #[serde(rename = "startLine")]
    pub start_line: u64,
    #[serde(rename = "endLine")]
    pub end_line: u64,
}

/// One file's hit: its best chunk, and the lines of its other matching chunks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileHit {
    pub id: String,
    pub repo: String,
    pub path: String,
    pub chunk: u64,
    #[serde(rename = "startLine")]
    pub start_line: u64,
    #[serde(rename = "endLine")]
    pub end_line: u64,
    pub score: f32,
    /// The snippet's lines joined by `\n`, matched words in `[brackets]`.
    pub snippet: String,
    /// The line number of the snippet's first line.
    #[serde(rename = "snippetLine")]
    pub snippet_line: u64,
    /// The file's other matching chunks, in line order.
    pub other: Vec<LineRange>,
    #[serde(skip)]
    pub lines: Snippet,
}

/// How the text form looks: the escapes that open the location, the dimmed
/// parts (score, `also:`) and the line numbers, what goes around a matched
/// word, and the reset.
struct Style {
    location: &'static str,
    dim: &'static str,
    number: &'static str,
    mark: (&'static str, &'static str),
    end: &'static str,
}

/// Into a pipe: no escapes, matched words in brackets.
const PLAIN: Style = style(["", "", "", "[", "]", ""]);

/// On a terminal: location bold cyan, score and `also:` dimmed, line numbers
/// green, matched words bold red (as ripgrep and grep show them).
const COLOUR: Style = style([
    "\x1b[1;36m",
    "\x1b[2m",
    "\x1b[32m",
    "\x1b[1;31m",
    "\x1b[0m",
    "\x1b[0m",
]);

const fn style([location, dim, number, open, close, end]: [&'static str; 6]) -> Style {
    Style {
        location,
        dim,
        number,
        mark: (open, close),
        end,
    }
}

impl FileHit {
    /// The text form: `repo/path:start-end  (score)`, the snippet's lines
    /// indented with their numbers, and `also: a-b, c-d` when other chunks
    /// matched.
    pub fn text(&self) -> String {
        self.text_in(false)
    }

    /// [`FileHit::text`], in colour when `colour` (a terminal without
    /// `NO_COLOR`): the matched words are then coloured instead of
    /// bracketed.
    pub fn text_in(&self, colour: bool) -> String {
        let st = if colour { &COLOUR } else { &PLAIN };
        let end = st.end;
        let mut s = format!(
            "{}{}/{}:{}-{}{end}  {}({:.2}){end}",
            st.location, self.repo, self.path, self.start_line, self.end_line, st.dim, self.score
        );
        let width = self
            .lines
            .lines
            .last()
            .map_or(1, |l| l.number.to_string().len());
        for l in &self.lines.lines {
            s.push_str(&format!(
                "\n    {}{:>width$}:{end} {}",
                st.number,
                l.number,
                l.marked(st.mark)
            ));
        }
        if !self.other.is_empty() {
            let ranges: Vec<String> = self
                .other
                .iter()
                .map(|r| format!("{}-{}", r.start_line, r.end_line))
                .collect();
            s.push_str(&format!("\n    {}also: {}{end}", st.dim, ranges.join(", ")));
        }
        s
    }
}

/// Best first: higher score, then repo, path, chunk (so equal scores come
/// out the same way from both targets).
fn order(a: &ChunkHit, b: &ChunkHit) -> std::cmp::Ordering {
    b.score
        .total_cmp(&a.score)
        .then_with(|| (&a.repo, &a.path, a.chunk).cmp(&(&b.repo, &b.path, b.chunk)))
}

/// One hit per file (its best chunk, with a snippet marking `terms`), best
/// first, at most `limit`.
pub fn group(mut chunks: Vec<ChunkHit>, limit: usize, terms: &Terms) -> Vec<FileHit> {
    chunks.sort_by(order);
    let mut at: HashMap<(String, String), usize> = HashMap::new();
    let mut best: Vec<ChunkHit> = Vec::new();
    let mut other: Vec<Vec<LineRange>> = Vec::new();
    for c in chunks {
        let key = (c.repo.clone(), c.path.clone());
        match at.get(&key) {
            Some(&i) if best[i].chunk != c.chunk => other[i].push(LineRange {
                start_line: c.start_line,
                end_line: c.end_line,
            }),
            Some(_) => {}
            None if best.len() < limit => {
                at.insert(key, best.len());
                best.push(c);
                other.push(Vec::new());
            }
            None => {}
        }
    }
    best.into_iter()
        .zip(other)
        .map(|(c, mut other)| {
            other.sort_by_key(|r| (r.start_line, r.end_line));
            other.dedup();
            let lines = Snippet::of(&c.content, c.start_line, terms);
            FileHit {
                snippet: lines.plain(),
                snippet_line: lines.lines.first().map_or(c.start_line, |l| l.number),
                lines,
                id: c.id,
                repo: c.repo,
                path: c.path,
                chunk: c.chunk,
                start_line: c.start_line,
                end_line: c.end_line,
                score: c.score,
                other,
            }
        })
        .collect()
}

/// The words a snippet marks.
pub type Terms = HashSet<String>;

/// The words of a query to mark in snippets: its tokens as the local index
/// cuts them (the parts of each identifier and its whole), leaving out what
/// is query syntax there: `field:value` words, `-excluded` words and the
/// operators `AND`, `OR`, `NOT`.
pub fn terms(query: &str) -> Terms {
    let mut out = Terms::new();
    for word in query.split_whitespace() {
        let w = word.trim_start_matches(['(', '+', '"']);
        let field = w
            .split_once(':')
            .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(char::is_alphanumeric));
        if field || w.starts_with('-') || matches!(w, "AND" | "OR" | "NOT") {
            continue;
        }
        out.extend(pieces(w, true).into_iter().map(|p| p.text));
    }
    out
}

/// Lines of a snippet around the best-matching line of a chunk.
const CONTEXT: usize = 1;

/// Characters of a snippet line.
const LINE_CHARS: usize = 120;

/// A few lines of a chunk: its best-matching line (the most distinct
/// matched words, the first of equals) with a line either side, or its
/// first lines when nothing in it matched (a path match, a vector match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snippet {
    pub lines: Vec<SnippetLine>,
}

/// One line of a snippet: its number in the file, its text (indentation
/// common to the snippet removed, cut to [`LINE_CHARS`] around the first
/// match with `…` where cut) and the byte ranges of matched words in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnippetLine {
    pub number: u64,
    pub text: String,
    pub marks: Vec<Range<usize>>,
}

impl SnippetLine {
    /// The text with each mark between `open` and `close`.
    fn marked(&self, (open, close): (&str, &str)) -> String {
        let mut out = String::with_capacity(self.text.len() + 8 * self.marks.len());
        let mut at = 0;
        for r in &self.marks {
            let (Some(before), Some(word)) = (self.text.get(at..r.start), self.text.get(r.clone()))
            else {
                continue;
            };
            out.push_str(before);
            out.push_str(open);
            out.push_str(word);
            out.push_str(close);
            at = r.end;
        }
        out.push_str(self.text.get(at..).unwrap_or_default());
        out
    }
}

/// The byte ranges of the words of `line` in `terms`, overlapping and
/// touching ones merged (`get[User][Name]` is `get[UserName]`).
fn marks(line: &str, terms: &Terms) -> (Vec<Range<usize>>, usize) {
    let mut found: Vec<&str> = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for p in pieces(line, true) {
        if let Some(t) = terms.get(&p.text) {
            found.push(t);
            ranges.push(p.range);
        }
    }
    found.sort_unstable();
    found.dedup();
    ranges.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
            _ => merged.push(r),
        }
    }
    (merged, found.len())
}

impl Snippet {
    /// The snippet of a chunk whose first line is `start_line`.
    pub fn of(content: &str, start_line: u64, terms: &Terms) -> Snippet {
        let body = content.strip_suffix('\n').unwrap_or(content);
        let all: Vec<&str> = body.split('\n').map(|l| l.trim_end()).collect();
        let scored: Vec<(Vec<Range<usize>>, usize)> = all.iter().map(|l| marks(l, terms)).collect();
        let best = scored
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| *n > 0)
            .max_by_key(|(i, (_, n))| (*n, std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let (from, to) = match best {
            Some(b) => (b.saturating_sub(CONTEXT), (b + CONTEXT).min(all.len() - 1)),
            None => {
                let first = all.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
                (first, (first + 2 * CONTEXT).min(all.len() - 1))
            }
        };
        // Blank lines at the edges say nothing.
        let blank = |i: usize| all[i].trim().is_empty() && Some(i) != best;
        let (mut from, mut to) = (from, to);
        while from < to && blank(from) {
            from += 1;
        }
        while to > from && blank(to) {
            to -= 1;
        }
        let shown = from..=to;
        let indent = shown
            .clone()
            .filter(|&i| !all[i].trim().is_empty())
            .map(|i| all[i].len() - all[i].trim_start_matches([' ', '\t']).len())
            .min()
            .unwrap_or(0);
        let lines = shown
            .map(|i| {
                let line = all[i];
                let cut = indent.min(line.len());
                let marks: Vec<Range<usize>> = scored[i]
                    .0
                    .iter()
                    .filter(|r| r.start >= cut)
                    .map(|r| r.start - cut..r.end - cut)
                    .collect();
                window(&line[cut..], marks, start_line + i as u64)
            })
            .collect();
        Snippet { lines }
    }

    /// The lines joined by `\n`, matched words in `[brackets]`.
    pub fn plain(&self) -> String {
        let lines: Vec<String> = self.lines.iter().map(|l| l.marked(("[", "]"))).collect();
        lines.join("\n")
    }
}

/// `text` cut to [`LINE_CHARS`] characters, starting a little before its
/// first mark, `…` where cut; the marks moved with it.
fn window(text: &str, marks: Vec<Range<usize>>, number: u64) -> SnippetLine {
    if text.chars().count() <= LINE_CHARS {
        return SnippetLine {
            number,
            text: text.to_owned(),
            marks,
        };
    }
    let first = marks.first().map_or(0, |r| r.start);
    let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let at = starts.partition_point(|&i| i < first);
    let from = starts[at.saturating_sub(LINE_CHARS / 4)];
    let to = starts
        .get(at.saturating_sub(LINE_CHARS / 4) + LINE_CHARS)
        .copied()
        .unwrap_or(text.len());
    let (lead, tail) = (
        if from > 0 { "…" } else { "" },
        if to < text.len() { "…" } else { "" },
    );
    let shift = lead.len();
    SnippetLine {
        number,
        text: format!("{lead}{}{tail}", &text[from..to]),
        marks: marks
            .into_iter()
            .filter(|r| r.start >= from && r.end <= to)
            .map(|r| r.start - from + shift..r.end - from + shift)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(repo: &str, path: &str, chunk: u64, score: f32) -> ChunkHit {
        ChunkHit {
            id: format!("{repo}/{path}#{chunk}"),
            repo: repo.into(),
            path: path.into(),
            chunk,
            start_line: chunk * 10 + 1,
            end_line: chunk * 10 + 10,
            score,
            content: "let x = needle;\n".into(),
        }
    }

    #[test]
    fn group_keeps_each_files_best_chunk_and_lists_the_others_in_line_order() {
        let g = group(
            vec![
                hit("R", "a", 3, 1.0),
                hit("R", "b", 0, 2.0),
                hit("R", "a", 1, 3.0),
                hit("R", "a", 0, 0.5),
            ],
            10,
            &terms("needle"),
        );
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].path.as_str(), g[0].chunk), ("a", 1));
        let range = |start_line, end_line| LineRange {
            start_line,
            end_line,
        };
        assert_eq!(g[0].other, vec![range(1, 10), range(31, 40)]);
        assert_eq!(
            g[0].text(),
            "R/a:11-20  (3.00)\n    11: let x = [needle];\n    also: 1-10, 31-40"
        );
        assert_eq!(
            (g[0].snippet.as_str(), g[0].snippet_line),
            ("let x = [needle];", 11)
        );
        assert_eq!(g[1].path, "b");
        let one = group(
            vec![
                hit("R", "a", 0, 1.0),
                hit("R", "b", 0, 1.0),
                hit("R", "a", 1, 0.5),
            ],
            1,
            &terms("x"),
        );
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].other, vec![range(11, 20)]);
    }

    #[test]
    fn colour_replaces_the_brackets_and_plain_text_has_no_escapes() {
        let g = group(vec![hit("R", "a", 0, 1.0)], 1, &terms("needle"));
        let c = g[0].text_in(true);
        assert!(
            c.contains("\x1b[1;31mneedle\x1b[0m") && !c.contains("[needle]"),
            "{c:?}"
        );
        assert!(!g[0].text().contains('\x1b'));
    }

    fn snip(content: &str, start: u64, query: &str) -> Vec<String> {
        Snippet::of(content, start, &terms(query))
            .lines
            .iter()
            .map(|l| format!("{}: {}", l.number, l.marked(("[", "]"))))
            .collect()
    }

    #[test]
    fn snippets_show_the_best_line_with_a_line_either_side_marked() {
        let code =
            "fn a() {}\n\n    fn parse_config(x) {\n        Config::new(x)\n    }\n\nfn b() {}\n";
        assert_eq!(
            snip(code, 10, "config"),
            ["12: fn parse_[config](x) {", "13:     [Config]::new(x)"]
        );
        // The line with the most distinct words wins.
        assert_eq!(
            snip("a config\nb\nnew config here\n", 1, "config new"),
            ["2: b", "3: [new] [config] here"]
        );
        // Nothing matched: the first lines.
        assert_eq!(snip("\n\nx\ny\nz\nw\n", 1, "q"), ["3: x", "4: y", "5: z"]);
        assert_eq!(snip("", 1, "q"), ["1: "]);
    }

    #[test]
    fn identifiers_are_marked_by_their_parts_and_as_a_whole() {
        let line = "let n = self.getUserName(); max_retries += 1;";
        for (query, want) in [
            (
                "user name",
                "let n = self.get[UserName](); max_retries += 1;",
            ),
            (
                "getUserName",
                "let n = self.[getUserName](); max_retries += 1;",
            ),
            (
                "max retries",
                "let n = self.getUserName(); [max]_[retries] += 1;",
            ),
            (
                "repo:A -name max_retries AND",
                "let n = self.getUserName(); [max_retries] += 1;",
            ),
        ] {
            assert_eq!(snip(line, 1, query), [format!("1: {want}")], "{query}");
        }
    }

    #[test]
    fn a_long_line_is_cut_around_its_first_match() {
        let long = format!("{} needle {}", "x ".repeat(200), "y ".repeat(200));
        let s = Snippet::of(&long, 1, &terms("NEEDLE"));
        let l = &s.lines[0];
        assert!(
            l.text.starts_with('…') && l.text.ends_with('…'),
            "{}",
            l.text
        );
        assert_eq!(l.text.chars().count(), LINE_CHARS + 2);
        assert_eq!(&l.text[l.marks[0].clone()], "needle");
        // Multi-byte characters are never split.
        let wide = format!("{} needle {}", "é ".repeat(150), "日 ".repeat(150));
        let s = Snippet::of(&wide, 1, &terms("needle"));
        assert_eq!(&s.lines[0].text[s.lines[0].marks[0].clone()], "needle");
    }
}
