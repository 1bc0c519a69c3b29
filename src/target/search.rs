//! What `search` asks either target and what it prints: a [`Query`] goes to
//! the local index (`local::search_with`) or to Weaviate
//! (`WeaviateTarget::search`); each answers ranked chunk hits
//! ([`ChunkHit`]), which [`group`] turns into one [`FileHit`] per file (its
//! best chunk, with the line ranges of its other matching chunks), the same
//! for both targets.

use std::collections::HashMap;

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

/// One matching chunk.
#[derive(Debug, Clone)]
pub struct ChunkHit {
    pub id: String,
    pub repo: String,
    pub path: String,
    pub chunk: u64,
    pub start_line: u64,
    pub end_line: u64,
    pub score: f32,
    pub snippet: String,
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
    pub snippet: String,
    /// The file's other matching chunks, in line order.
    pub other: Vec<LineRange>,
}

impl FileHit {
    /// The text form: `repo/path:start-end  (score)`, the snippet indented,
    /// and `also: a-b, c-d` when other chunks matched.
    pub fn text(&self) -> String {
        self.text_in(false)
    }

    /// [`FileHit::text`], with the location in bold cyan, the score dimmed
    /// and the `also:` line dimmed when `colour` (a terminal without
    /// `NO_COLOR`). The snippet is left as it is: code has brackets of its
    /// own, so the match markers are not turned into colour.
    pub fn text_in(&self, colour: bool) -> String {
        let (loc, dim, end) = if colour {
            ("\x1b[1;36m", "\x1b[2m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        let mut s = format!(
            "{loc}{}/{}:{}-{}{end}  {dim}({:.2}){end}\n    {}",
            self.repo, self.path, self.start_line, self.end_line, self.score, self.snippet
        );
        if !self.other.is_empty() {
            let ranges: Vec<String> = self
                .other
                .iter()
                .map(|r| format!("{}-{}", r.start_line, r.end_line))
                .collect();
            s.push_str("\n    ");
            s.push_str(dim);
            s.push_str("also: ");
            s.push_str(&ranges.join(", "));
            s.push_str(end);
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

/// One hit per file (its best chunk), best first, at most `limit`.
pub fn group(mut chunks: Vec<ChunkHit>, limit: usize) -> Vec<FileHit> {
    chunks.sort_by(order);
    let mut at: HashMap<(String, String), usize> = HashMap::new();
    let mut files: Vec<FileHit> = Vec::new();
    for c in chunks {
        let key = (c.repo.clone(), c.path.clone());
        match at.get(&key) {
            Some(&i) => {
                if files[i].chunk != c.chunk {
                    files[i].other.push(LineRange {
                        start_line: c.start_line,
                        end_line: c.end_line,
                    });
                }
            }
            None => {
                at.insert(key, files.len());
                files.push(FileHit {
                    id: c.id,
                    repo: c.repo,
                    path: c.path,
                    chunk: c.chunk,
                    start_line: c.start_line,
                    end_line: c.end_line,
                    score: c.score,
                    snippet: c.snippet,
                    other: Vec::new(),
                });
            }
        }
    }
    files.truncate(limit);
    for f in &mut files {
        f.other.sort_by_key(|r| (r.start_line, r.end_line));
        f.other.dedup();
    }
    files
}

/// The lowercased words of `text`: runs of letters and digits.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Characters of a snippet.
const SNIPPET_CHARS: usize = 160;

/// A snippet of `content` around the first word of `query`, each word of
/// the query in it marked `[like this]`, whitespace collapsed: what the
/// local index's snippets look like, for a target that returns none.
pub fn snippet(content: &str, query: &str) -> String {
    let wanted: Vec<String> = words(query).collect();
    let is_wanted = |w: &str| wanted.iter().any(|q| *q == w.to_lowercase());
    // Byte ranges of the content's words.
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in content.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                spans.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push(s..content.len());
    }
    let first = spans.iter().find(|r| is_wanted(&content[(*r).clone()]));
    let Some(first) = first else {
        return collapse(&content.chars().take(120).collect::<String>());
    };
    // Start a little before the match, at a word's start.
    // Start a little before the match: at the content's start when that is
    // near, else after the earliest space within 40 characters back.
    let before: Vec<(usize, char)> = content[..first.start]
        .char_indices()
        .rev()
        .take(41)
        .collect();
    let from = if before.len() <= 40 {
        0
    } else {
        before
            .iter()
            .take(40)
            .rfind(|(_, c)| c.is_whitespace())
            .map_or(first.start, |(i, c)| i + c.len_utf8())
    };
    let to = content[from..]
        .char_indices()
        .nth(SNIPPET_CHARS)
        .map_or(content.len(), |(i, _)| from + i);
    let mut out = String::new();
    let mut at = from;
    for r in spans
        .iter()
        .filter(|r| r.start >= from && r.end <= to && is_wanted(&content[(*r).clone()]))
    {
        out.push_str(&content[at..r.start]);
        out.push('[');
        out.push_str(&content[r.clone()]);
        out.push(']');
        at = r.end;
    }
    out.push_str(&content[at..to]);
    collapse(&out)
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
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
            snippet: String::new(),
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
        );
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].path.as_str(), g[0].chunk), ("a", 1));
        assert_eq!(
            g[0].other,
            vec![
                LineRange {
                    start_line: 1,
                    end_line: 10
                },
                LineRange {
                    start_line: 31,
                    end_line: 40
                }
            ]
        );
        assert!(
            g[0].text().ends_with("\n    also: 1-10, 31-40"),
            "{}",
            g[0].text()
        );
        assert_eq!(g[1].path, "b");
        assert_eq!(
            group(vec![hit("R", "a", 0, 1.0), hit("R", "b", 0, 1.0)], 1).len(),
            1
        );
    }

    #[test]
    fn snippets_mark_query_words_near_the_first_match() {
        let s = snippet(
            "fn a() {}\nfn parse_config(x) { Config::new() }\n",
            "config",
        );
        assert_eq!(s, "fn a() {} fn parse_[config](x) { [Config]::new() }");
        assert_eq!(snippet("abc  def", "zzz"), "abc def");
        let long = format!("{} needle {}", "x ".repeat(200), "y ".repeat(200));
        let s = snippet(&long, "NEEDLE");
        assert!(s.contains("[needle]") && s.len() < 200, "{s}");
    }
}
