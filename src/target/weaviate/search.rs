//! `search` on a Weaviate collection: one GraphQL `Get` (`POST /v1/graphql`)
//! with `bm25` (keyword), `hybrid` (with `alpha`) or `nearText` (semantic),
//! a `where` filter for `--repo` (`Equal`, an `Or` of several) and `--path`
//! (`Like` with `PREFIX*`), the chunk's properties and
//! `_additional { id score distance }`.
//!
//! The query text is written into the GraphQL document as a string literal
//! ([`gql_string`], the spec's `StringValue` grammar), never pasted raw, so
//! no query text can change the document's shape.
//!
//! Before the query, `GET /v1/schema/{class}` tells an unknown collection
//! (exit 3) and whether it has a vectorizer: hybrid and semantic on a
//! collection without one are refused as a usage error (exit 2) instead of
//! surfacing a GraphQL error. Every message goes through the [`Redactor`]
//! and is one line.
//!
//! [`Redactor`]: super::redact::Redactor

use reqwest::Method;
use serde_json::Value;

use super::classify::{status_error, transport_error};
use super::client::Exchange;
use super::WeaviateTarget;
use crate::target::search::{ChunkHit, Mode, Query, SearchError};
use crate::target::Error;

/// `s` as a GraphQL string literal (`"..."`): `"` and `\` escaped, and
/// every control character (C0, DEL, C1) as an escape, so the literal is a
/// single line of `StringCharacter`s (GraphQL spec, "String Value").
/// Everything else, non-ASCII included, goes as itself.
pub fn gql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `Like` pattern for paths starting with `prefix`: `*` and `?` are
/// wildcards there with no escape, so each becomes `?` (any one
/// character) and the hits are checked against the prefix after.
fn like_prefix(prefix: &str) -> String {
    let mut p: String = prefix
        .chars()
        .map(|c| if c == '*' || c == '?' { '?' } else { c })
        .collect();
    p.push('*');
    p
}

/// The `where` argument for the filters of `q`, if any.
fn where_filter(q: &Query) -> Option<String> {
    let equal = |r: &String| {
        format!(
            "{{path: [\"repo\"], operator: Equal, valueText: {}}}",
            gql_string(r)
        )
    };
    let mut operands: Vec<String> = Vec::new();
    match q.repos.as_slice() {
        [] => {}
        [one] => operands.push(equal(one)),
        many => operands.push(format!(
            "{{operator: Or, operands: [{}]}}",
            many.iter().map(equal).collect::<Vec<_>>().join(", ")
        )),
    }
    if let Some(p) = q.path_prefix.as_deref().filter(|p| !p.is_empty()) {
        operands.push(format!(
            "{{path: [\"path\"], operator: Like, valueText: {}}}",
            gql_string(&like_prefix(p))
        ));
    }
    match operands.len() {
        0 => None,
        1 => operands.pop(),
        _ => Some(format!(
            "{{operator: And, operands: [{}]}}",
            operands.join(", ")
        )),
    }
}

/// The GraphQL document of a search of `class`.
pub fn graphql_query(class: &str, q: &Query) -> String {
    let text = gql_string(&q.text);
    let mut args = vec![format!("limit: {}", q.chunk_limit())];
    args.push(match q.mode {
        Mode::Keyword => format!("bm25: {{query: {text}, properties: [\"content\"]}}"),
        Mode::Hybrid => format!(
            "hybrid: {{query: {text}, alpha: {}, properties: [\"content\"]}}",
            number(q.alpha)
        ),
        Mode::Semantic => format!("nearText: {{concepts: [{text}]}}"),
    });
    if let Some(w) = where_filter(q) {
        args.push(format!("where: {w}"));
    }
    format!(
        "{{ Get {{ {class}({}) {{ repo path chunk startLine endLine content _additional {{ id score distance }} }} }} }}",
        args.join(", ")
    )
}

/// A float as a GraphQL `FloatValue` (always with a fraction part).
fn number(f: f64) -> String {
    let s = format!("{f}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

/// The request body: `{"query": "..."}`.
pub fn graphql_body(class: &str, q: &Query) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "query": graphql_query(class, q) })).unwrap_or_default()
}

/// A hit of the reply. Score: `_additional.score` for keyword and hybrid
/// (a string in Weaviate's replies), `1 - distance` for semantic.
fn chunk_hit(o: &Value, q: &Query) -> Option<ChunkHit> {
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| o.get(k).and_then(Value::as_f64).map(|f| f as u64);
    let add = o.get("_additional");
    let num = |k: &str| {
        add.and_then(|a| a.get(k)).and_then(|v| match v {
            Value::String(s) => s.parse::<f64>().ok(),
            v => v.as_f64(),
        })
    };
    let score = match q.mode {
        Mode::Semantic => num("distance").map(|d| 1.0 - d),
        _ => num("score"),
    }
    .unwrap_or(0.0);
    let (repo, path) = (s("repo")?, s("path")?);
    if !q.admits(&repo, &path) {
        return None;
    }
    let content = s("content").unwrap_or_default();
    let start_line = n("startLine").unwrap_or(1);
    let end_line = n("endLine").unwrap_or_else(|| {
        let body = content.strip_suffix('\n').unwrap_or(&content);
        start_line + body.bytes().filter(|&b| b == b'\n').count() as u64
    });
    Some(ChunkHit {
        id: add
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        repo,
        path,
        chunk: n("chunk").unwrap_or(0),
        start_line,
        end_line,
        score: score as f32,
        content,
    })
}

/// A message on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl WeaviateTarget {
    /// The best chunk hits of `q` (up to [`Query::chunk_limit`]), for
    /// [`crate::target::search::group`].
    pub fn search(&self, q: &Query) -> Result<Vec<ChunkHit>, SearchError> {
        let r = self.rt.handle().block_on(self.search_async(q));
        r.map_err(|e| match e {
            SearchError::Usage(m) => SearchError::Usage(one_line(&self.redactor.text(&m))),
            SearchError::Failed(m) => SearchError::Failed(one_line(&self.redactor.text(&m))),
        })
    }

    fn failed(&self, e: Error) -> SearchError {
        SearchError::Failed(format!("{}: {e}", self.target_name()))
    }

    async fn search_async(&self, q: &Query) -> Result<Vec<ChunkHit>, SearchError> {
        if q.text.trim().is_empty() {
            return Err(SearchError::Usage(format!(
                "bad query {:?}: the query is empty",
                q.text
            )));
        }
        let path = format!("/v1/schema/{}", self.class);
        let class: Value = match self.send(Method::GET, &path, None).await {
            Exchange::Http { status, body, .. } if status.is_success() => {
                serde_json::from_slice(&body).map_err(|_| {
                    SearchError::Failed(format!(
                        "{}: GET {path}: the reply is not a JSON class",
                        self.target_name()
                    ))
                })?
            }
            Exchange::Http { status, .. } if status.as_u16() == 404 => {
                return Err(self.no_collection())
            }
            ex => return Err(self.failed(self.reply_error(&format!("GET {path}"), ex.reply()))),
        };
        let vectorizer = class
            .get("vectorizer")
            .and_then(Value::as_str)
            .unwrap_or("none");
        if q.mode != Mode::Keyword && (vectorizer.is_empty() || vectorizer == "none") {
            return Err(SearchError::Usage(format!(
                "--mode {} needs vectors, and collection {} on {} has no vectorizer: \
                 use --mode keyword, or a collection synced with --vectorizer",
                q.mode.name(),
                self.class,
                self.shown_url
            )));
        }
        let what = "POST /v1/graphql";
        let ex = self
            .send(
                Method::POST,
                "/v1/graphql",
                Some(graphql_body(&self.class, q)),
            )
            .await;
        let body = match ex {
            Exchange::Http { status, body, .. } if status.is_success() => body,
            Exchange::Http {
                status,
                headers,
                body,
            } => return Err(self.failed(status_error(what, status.as_u16(), &headers, &body))),
            Exchange::NoReply(f) => {
                return Err(self.failed(transport_error(&self.target_name(), what, &f)))
            }
        };
        let reply: Value = serde_json::from_slice(&body).map_err(|_| {
            SearchError::Failed(format!(
                "{}: {what}: the reply is not JSON",
                self.target_name()
            ))
        })?;
        if let Some(errors) = reply
            .get("errors")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
        {
            let messages: Vec<&str> = errors
                .iter()
                .filter_map(|e| e.get("message").and_then(Value::as_str))
                .collect();
            let joined = messages.join("; ");
            if joined.contains("Cannot query field") && joined.contains(&self.class) {
                return Err(self.no_collection());
            }
            return Err(SearchError::Failed(format!(
                "{}: {what}: the server refused the query: {joined}",
                self.target_name()
            )));
        }
        let hits = reply
            .pointer(&format!("/data/Get/{}", self.class))
            .and_then(Value::as_array)
            .ok_or_else(|| {
                SearchError::Failed(format!(
                    "{}: {what}: the reply has no data.Get.{}",
                    self.target_name(),
                    self.class
                ))
            })?;
        Ok(hits.iter().filter_map(|o| chunk_hit(o, q)).collect())
    }

    fn no_collection(&self) -> SearchError {
        SearchError::Failed(format!(
            "{} has no collection {}: check --collection, or sync into it first",
            self.target_name(),
            self.class
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(gql_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            gql_string("x\ny\r\t\u{1}\u{7f}"),
            r#""x\ny\r\t\u0001\u007F""#
        );
        assert_eq!(gql_string("}{ é 😀"), "\"}{ é 😀\"");
    }

    #[test]
    fn the_document_carries_the_mode_the_filters_and_the_properties() {
        let mut q = Query::keyword("max_retries", 5);
        q.repos = vec!["A".into(), "B".into()];
        q.path_prefix = Some("src/*x".into());
        let d = graphql_query("Code", &q);
        assert!(
            d.contains("bm25: {query: \"max_retries\", properties: [\"content\"]}"),
            "{d}"
        );
        assert!(d.contains("operator: Or"), "{d}");
        assert!(d.contains("valueText: \"src/?x*\""), "{d}");
        assert!(d.contains("_additional { id score distance }"), "{d}");
        q.mode = Mode::Hybrid;
        q.alpha = 1.0;
        assert!(graphql_query("Code", &q).contains("alpha: 1.0"));
        q.mode = Mode::Semantic;
        assert!(graphql_query("Code", &q).contains("nearText: {concepts: [\"max_retries\"]}"));
    }
}
