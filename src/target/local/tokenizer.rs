//! The code-aware tokenizer of the local index (`content` and `path_text`).
//!
//! Text is cut into *identifiers*: runs of letters, digits and `_`, where a
//! `-` between two letters or digits joins too (`max-retries`). Each
//! identifier is split again into *parts* at `_` and `-`, at a lower-case
//! letter followed by an upper-case one (`getUser` → get, user), before the
//! last capital of a run of capitals followed by a lower-case letter
//! (`HTTPServer` → http, server; a plural `URLs` stays one part) and between
//! letters and digits (`utf8` → utf, 8). Everything is lowercased.
//!
//! The index side emits each part at its own position and, for an identifier
//! of two parts or more, the *whole* (its parts joined: `getUserName`,
//! `get_user_name` and `GET-USER-NAME` are all `getusername`) at the first
//! part's position. So `user name` and `"user name"` find `getUserName`, and
//! `getusername` finds every spelling of it. The query side emits the parts
//! only (a query word of several parts becomes a phrase of them); the search
//! adds the wholes as optional terms so the exact identifier ranks first.
//! Tokens of 40 bytes or more are not indexed (they keep their positions).
//!
//! The tokenizer's name ([`NAME`]) is recorded in the schema of every index
//! built with it: a new rule means a new name, and an index whose name is
//! not this one is rebuilt (see `LocalIndex::format`).

use std::ops::Range;

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// The name under which the index's schema records this tokenizer.
pub const NAME: &str = "code1";

/// The tokenizer the local index used before [`NAME`] (tantivy's default:
/// split at every non-alphanumeric character, lowercased).
pub const LEGACY: &str = "default";

/// Tokens of this many bytes or more are dropped, as tantivy's default does.
const MAX_TOKEN: usize = 40;

/// One token of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Lowercased.
    pub text: String,
    /// Byte range in the text.
    pub range: Range<usize>,
    pub position: usize,
    /// Positions covered: the number of parts for a whole, else 1.
    pub span: usize,
    /// The whole of an identifier of several parts.
    pub whole: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Upper,
    /// Lower-case letters, and letters without case.
    Lower,
    Digit,
}

fn class(c: char) -> Class {
    if c.is_numeric() {
        Class::Digit
    } else if c.is_uppercase() {
        Class::Upper
    } else {
        Class::Lower
    }
}

/// A letter that is not a capital (lower-case, or without case).
fn is_small(c: char) -> bool {
    c.is_alphabetic() && !c.is_uppercase()
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The byte ranges of the identifiers of `text`.
fn identifiers(text: &str) -> Vec<Range<usize>> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, &(at, c)) in chars.iter().enumerate() {
        let joins = is_word_char(c)
            || (c == '-'
                && start.is_some()
                && i > 0
                && chars[i - 1].1.is_alphanumeric()
                && chars.get(i + 1).is_some_and(|n| n.1.is_alphanumeric()));
        match (joins, start) {
            (true, None) => start = Some(at),
            (false, Some(s)) => {
                out.push(s..at);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..text.len());
    }
    out
}

/// The byte ranges of the parts of the identifier `word` (relative to it).
fn parts(word: &str) -> Vec<Range<usize>> {
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, &(at, c)) in chars.iter().enumerate() {
        if c == '_' || c == '-' {
            if let Some(s) = start.take() {
                out.push(s..at);
            }
            continue;
        }
        let Some(s) = start else {
            start = Some(at);
            continue;
        };
        let prev = class(chars[i - 1].1);
        let here = class(c);
        let next = chars.get(i + 1).map(|n| n.1);
        let split = match (prev, here) {
            (Class::Digit, Class::Digit) => false,
            (Class::Digit, _) | (_, Class::Digit) => true,
            (Class::Lower, Class::Upper) => true,
            (Class::Upper, Class::Upper) => next.is_some_and(is_small) && !plural_s(&chars, i + 1),
            _ => false,
        };
        if split {
            out.push(s..at);
            start = Some(at);
        }
    }
    if let Some(s) = start {
        out.push(s..word.len());
    }
    out
}

/// Whether the lower-case run at `i` is a lone `s` ending the word or its
/// part (`URLs`, `IDs`): a plural of the acronym before it, not a word.
fn plural_s(chars: &[(usize, char)], i: usize) -> bool {
    chars.get(i).is_some_and(|c| c.1 == 's') && chars.get(i + 1).is_none_or(|n| !is_small(n.1))
}

/// Every token of `text`, in order: the parts, and when `wholes` the whole
/// of each identifier of several parts just before its first part.
pub fn pieces(text: &str, wholes: bool) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut position = 0;
    for id in identifiers(text) {
        let word = &text[id.clone()];
        let ps = parts(word);
        if ps.is_empty() {
            continue;
        }
        if wholes && ps.len() > 1 {
            let joined: String = ps.iter().map(|r| word[r.clone()].to_lowercase()).collect();
            if joined.len() < MAX_TOKEN {
                out.push(Piece {
                    text: joined,
                    range: id.clone(),
                    position,
                    span: ps.len(),
                    whole: true,
                });
            }
        }
        for r in &ps {
            let part = word[r.clone()].to_lowercase();
            if part.len() < MAX_TOKEN {
                out.push(Piece {
                    text: part,
                    range: id.start + r.start..id.start + r.end,
                    position,
                    span: 1,
                    whole: false,
                });
            }
            position += 1;
        }
    }
    out
}

/// [`pieces`] as a tantivy tokenizer: [`CodeTokenizer::index`] for
/// documents, [`CodeTokenizer::query`] for query words.
#[derive(Clone)]
pub struct CodeTokenizer {
    wholes: bool,
    tokens: Vec<Token>,
}

impl CodeTokenizer {
    /// Parts and wholes.
    pub fn index() -> CodeTokenizer {
        CodeTokenizer {
            wholes: true,
            tokens: Vec::new(),
        }
    }

    /// Parts only.
    pub fn query() -> CodeTokenizer {
        CodeTokenizer {
            wholes: false,
            tokens: Vec::new(),
        }
    }
}

pub struct CodeTokenStream<'a> {
    tokens: &'a mut [Token],
    /// One past the current token (0: before the first).
    next: usize,
    empty: Token,
}

impl Tokenizer for CodeTokenizer {
    type TokenStream<'a> = CodeTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CodeTokenStream<'a> {
        self.tokens.clear();
        self.tokens
            .extend(pieces(text, self.wholes).into_iter().map(|p| Token {
                offset_from: p.range.start,
                offset_to: p.range.end,
                position: p.position,
                text: p.text,
                position_length: p.span,
            }));
        CodeTokenStream {
            tokens: &mut self.tokens,
            next: 0,
            empty: Token::default(),
        }
    }
}

impl TokenStream for CodeTokenStream<'_> {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        match self.next.checked_sub(1) {
            Some(i) => self.tokens.get(i).unwrap_or(&self.empty),
            None => &self.empty,
        }
    }

    fn token_mut(&mut self) -> &mut Token {
        match self.next.checked_sub(1) {
            Some(i) if i < self.tokens.len() => &mut self.tokens[i],
            _ => &mut self.empty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (text, position) of every token, wholes marked with `=`.
    fn toks(text: &str, wholes: bool) -> Vec<String> {
        pieces(text, wholes)
            .into_iter()
            .map(|p| {
                let mark = if p.whole { "=" } else { "" };
                format!("{mark}{}@{}", p.text, p.position)
            })
            .collect()
    }

    fn parts_of(text: &str) -> Vec<String> {
        pieces(text, false).into_iter().map(|p| p.text).collect()
    }

    #[test]
    fn identifiers_split_at_case_changes_separators_and_digits() {
        let cases: &[(&str, &[&str])] = &[
            ("getUserName", &["get", "user", "name"]),
            ("GetUserName", &["get", "user", "name"]),
            ("max_retries", &["max", "retries"]),
            ("MAX_RETRIES", &["max", "retries"]),
            ("GET_USER_NAME", &["get", "user", "name"]),
            ("HTTP_SERVER", &["http", "server"]),
            ("IDs_and_URLs", &["ids", "and", "urls"]),
            ("max-retries", &["max", "retries"]),
            ("__init__", &["init"]),
            ("HTTPServer", &["http", "server"]),
            ("parseHTTPResponse", &["parse", "http", "response"]),
            ("URLs", &["urls"]),
            ("userIDs", &["user", "ids"]),
            ("utf8Decode", &["utf", "8", "decode"]),
            ("x86_64", &["x", "86", "64"]),
            ("sha256sum", &["sha", "256", "sum"]),
            ("1024", &["1024"]),
            ("straße", &["straße"]),
            ("ÉcoleNormale", &["école", "normale"]),
            ("日本語", &["日本語"]),
        ];
        for (text, want) in cases {
            assert_eq!(parts_of(text), *want, "{text}");
        }
    }

    #[test]
    fn the_index_side_adds_the_whole_at_the_first_parts_position() {
        assert_eq!(
            toks("x = getUserName(id);", true),
            ["x@0", "=getusername@1", "get@1", "user@2", "name@3", "id@4"]
        );
        assert_eq!(toks("getUserName", false), ["get@0", "user@1", "name@2"]);
        assert_eq!(toks("plain words", true), ["plain@0", "words@1"]);
        // Every spelling of one identifier has the same whole.
        for s in ["get_user_name", "GET-USER-NAME", "GetUserName"] {
            assert_eq!(pieces(s, true)[0].text, "getusername", "{s}");
        }
    }

    #[test]
    fn a_minus_joins_only_between_letters_or_digits() {
        assert_eq!(parts_of("a - b"), ["a", "b"]);
        assert_eq!(toks("--dry-run", true), ["=dryrun@0", "dry@0", "run@1"]);
        assert_eq!(toks("x-", true), ["x@0"]);
    }

    #[test]
    fn offsets_point_at_the_text_and_paths_split_into_components() {
        let text = "src/userService/HTTPServer.java";
        let ps = pieces(text, true);
        let got: Vec<(&str, &str)> = ps
            .iter()
            .map(|p| (p.text.as_str(), &text[p.range.clone()]))
            .collect();
        assert_eq!(
            got,
            [
                ("src", "src"),
                ("userservice", "userService"),
                ("user", "user"),
                ("service", "Service"),
                ("httpserver", "HTTPServer"),
                ("http", "HTTP"),
                ("server", "Server"),
                ("java", "java"),
            ]
        );
    }

    #[test]
    fn long_tokens_are_dropped_but_keep_their_positions() {
        let long = "a".repeat(40);
        assert_eq!(toks(&format!("{long} b"), true), ["b@1"]);
        let camel = format!("{}Tail", "x".repeat(40));
        assert_eq!(toks(&camel, true), ["tail@1"]);
    }

    #[test]
    fn the_token_stream_yields_the_pieces_and_ends() {
        let mut t = CodeTokenizer::index();
        let mut s = t.token_stream("fooBar");
        assert_eq!(s.token().text, "");
        let mut seen = Vec::new();
        while s.advance() {
            let tok = s.token();
            seen.push((tok.text.clone(), tok.position, tok.position_length));
        }
        assert_eq!(
            seen,
            [
                ("foobar".to_string(), 0, 2),
                ("foo".to_string(), 0, 1),
                ("bar".to_string(), 1, 1)
            ]
        );
        assert!(!s.advance());
        assert_eq!(CodeTokenizer::query().token_stream("").next(), None);
    }
}
