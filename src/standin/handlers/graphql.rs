//! `POST /v1/graphql`: the `Get` shapes elysiactl's `search` sends.
//!
//! A small GraphQL reader (selection sets, arguments, and the value
//! literals: strings with every escape of the spec, numbers, enums, lists,
//! objects; commas and `#` comments ignored) turns
//! `{ Get { Class(args) { props _additional { id score distance } } } }`
//! into the class, its arguments as JSON (enum values as strings, so a
//! `where` reads as the REST filter (`filter.rs`) parses) and the
//! fields asked for.
//!
//! Ranking (the stand-in's own, documented so tests can predict it):
//! - words: runs of letters and digits, lowercased (whitespace and
//!   punctuation split), of the `content` property;
//! - `bm25`: Okapi BM25 over `content` (k1 1.2, b 0.75,
//!   idf = ln(1 + (N - n + 0.5) / (n + 0.5)) over the whole class), the
//!   query's distinct words; objects scoring 0 are not returned;
//! - `nearText`: the "vector" of a text is its word counts; distance =
//!   1 - cosine(concepts, content); every object is returned, nearest first;
//! - `hybrid`: relative score fusion, (1 - alpha) · bm25 / max bm25 +
//!   alpha · cosine / max cosine; objects scoring 0 are not returned.
//!
//! Ties go in id order. `score` is a string, as Weaviate sends it;
//! `distance` a number (null where it does not apply). An unknown class,
//! an unknown argument or a vector search on a class without a vectorizer
//! is a GraphQL error in a 200 reply, as Weaviate answers them.

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::super::filter;
use super::super::vectorizer::vectorizer;
use super::{code_message, reply, upper_first, Resp, State};

/// A parsed field: name, arguments, sub-selection.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub args: Map<String, Value>,
    pub fields: Vec<Field>,
}

struct Reader<'a> {
    s: &'a [u8],
    at: usize,
}

type R<T> = Result<T, String>;

impl Reader<'_> {
    fn skip(&mut self) {
        while self.at < self.s.len() {
            match self.s[self.at] {
                b' ' | b'\t' | b'\n' | b'\r' | b',' => self.at += 1,
                0xEF if self.s[self.at..].starts_with(&[0xEF, 0xBB, 0xBF]) => self.at += 3,
                b'#' => {
                    while self.at < self.s.len() && !matches!(self.s[self.at], b'\n' | b'\r') {
                        self.at += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.s.get(self.at).copied()
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected {:?}", c as char)))
        }
    }

    fn err(&self, what: &str) -> String {
        let line = 1 + self.s[..self.at.min(self.s.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        format!(
            "Syntax Error GraphQL request ({line}:{}) {what}",
            self.at + 1
        )
    }

    fn name(&mut self) -> R<String> {
        self.skip();
        let start = self.at;
        while self.at < self.s.len()
            && (self.s[self.at].is_ascii_alphanumeric() || self.s[self.at] == b'_')
        {
            self.at += 1;
        }
        if start == self.at || self.s[start].is_ascii_digit() {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    fn selection_set(&mut self) -> R<Vec<Field>> {
        self.expect(b'{')?;
        let mut fields = Vec::new();
        while self.peek() != Some(b'}') {
            if self.peek().is_none() {
                return Err(self.err("unterminated selection set"));
            }
            let name = self.name()?;
            let args = if self.peek() == Some(b'(') {
                self.at += 1;
                self.entries(b')')?
            } else {
                Map::new()
            };
            let sub = if self.peek() == Some(b'{') {
                self.selection_set()?
            } else {
                Vec::new()
            };
            fields.push(Field {
                name,
                args,
                fields: sub,
            });
        }
        self.at += 1;
        Ok(fields)
    }

    /// `name: value` entries up to `close` (arguments, object fields),
    /// the opening character already read; `close` is consumed.
    fn entries(&mut self, close: u8) -> R<Map<String, Value>> {
        let mut m = Map::new();
        while self.peek() != Some(close) {
            let k = self.name()?;
            self.expect(b':')?;
            m.insert(k, self.value()?);
        }
        self.at += 1;
        Ok(m)
    }

    fn value(&mut self) -> R<Value> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::String),
            Some(b'[') => {
                self.at += 1;
                let mut a = Vec::new();
                while self.peek() != Some(b']') {
                    if self.peek().is_none() {
                        return Err(self.err("unterminated list"));
                    }
                    a.push(self.value()?);
                }
                self.at += 1;
                Ok(Value::Array(a))
            }
            Some(b'{') => {
                self.at += 1;
                self.entries(b'}').map(Value::Object)
            }
            Some(b'$') => Err(self.err("variables are not supported by the stand-in")),
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.at;
                self.at += 1;
                while self.at < self.s.len()
                    && matches!(
                        self.s[self.at],
                        b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'
                    )
                {
                    self.at += 1;
                }
                let t = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
                serde_json::from_str::<serde_json::Number>(&t)
                    .map(Value::Number)
                    .map_err(|_| self.err(&format!("bad number {t}")))
            }
            Some(_) => {
                let n = self.name()?;
                Ok(match n.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => Value::String(n),
                })
            }
            None => Err(self.err("expected a value")),
        }
    }

    fn hex4(&mut self) -> R<u32> {
        let h = self
            .s
            .get(self.at..self.at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("bad \\u escape"))?;
        self.at += 4;
        Ok(h)
    }

    fn string(&mut self) -> R<String> {
        self.at += 1;
        if self.s[self.at..].starts_with(b"\"\"") {
            return Err(self.err("block strings are not supported by the stand-in"));
        }
        let mut out = String::new();
        loop {
            let rest =
                std::str::from_utf8(&self.s[self.at..]).map_err(|_| self.err("bad UTF-8"))?;
            let Some(c) = rest.chars().next() else {
                return Err(self.err("unterminated string"));
            };
            self.at += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\n' | '\r' => return Err(self.err("unterminated string")),
                c if (c as u32) < 0x20 && c != '\t' => {
                    return Err(self.err("invalid character within String"))
                }
                '\\' => {
                    let e = self.s.get(self.at).copied();
                    self.at += 1;
                    match e {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.s[self.at..].starts_with(b"\\u")
                            {
                                self.at += 2;
                                let lo = self.hex4()?;
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(self.err("invalid escape in String")),
                    }
                }
                c => out.push(c),
            }
        }
    }
}

/// The operation's top-level fields (`query` keyword and name allowed).
pub fn parse(doc: &str) -> R<Vec<Field>> {
    let mut r = Reader {
        s: doc.as_bytes(),
        at: 0,
    };
    if r.peek() != Some(b'{') {
        let kw = r.name()?;
        if kw != "query" {
            return Err(r.err(&format!("unexpected {kw}")));
        }
        if r.peek() != Some(b'{') {
            r.name()?;
        }
    }
    let fields = r.selection_set()?;
    if r.peek().is_some() {
        return Err(r.err("unexpected text after the query"));
    }
    Ok(fields)
}

fn gql_error(message: &str) -> Resp {
    reply(
        200,
        Some(
            &json!({"data": null, "errors": [{"message": message, "locations": [{"line": 1, "column": 1}]}]}),
        ),
    )
}

/// Lowercased runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// `POST /v1/graphql` with a JSON body `{"query": "..."}`.
pub fn graphql(st: &State, body: &[u8]) -> Resp {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return code_message(400, 400, "parsing body body from \"\" failed");
    };
    let Some(doc) = v.get("query").and_then(Value::as_str) else {
        return gql_error("Must provide an operation.");
    };
    let top = match parse(doc) {
        Ok(t) => t,
        Err(e) => return gql_error(&e),
    };
    let mut data = Map::new();
    for op in &top {
        if op.name != "Get" {
            return gql_error(&format!(
                "Cannot query field \"{}\" on type \"WeaviateObj\" (the stand-in answers Get only).",
                op.name
            ));
        }
        let mut get = Map::new();
        for f in &op.fields {
            match get_class(st, f) {
                Ok(v) => {
                    get.insert(f.name.clone(), v);
                }
                Err(e) => return gql_error(&e),
            }
        }
        data.insert("Get".into(), Value::Object(get));
    }
    reply(200, Some(&json!({ "data": data })))
}

/// An object with its score (bm25, hybrid) or distance (nearText).
type Ranked<'a> = (&'a Uuid, &'a Map<String, Value>, Option<f64>, Option<f64>);

fn get_class(st: &State, f: &Field) -> R<Value> {
    let class = upper_first(&f.name);
    let Some(def) = st.classes.get(&class) else {
        return Err(format!(
            "Cannot query field \"{}\" on type \"GetObjectsObj\".",
            f.name
        ));
    };
    for k in f.args.keys() {
        if !matches!(
            k.as_str(),
            "limit" | "bm25" | "hybrid" | "nearText" | "where"
        ) {
            return Err(format!(
                "Unknown argument \"{k}\" on field \"{}\" of type \"GetObjectsObj\".",
                f.name
            ));
        }
    }
    let vector = f.args.contains_key("hybrid") || f.args.contains_key("nearText");
    if vector && vectorizer(def).is_none() {
        return Err(format!(
            "explorer: get class: vectorize params: could not vectorize input for collection {class} with search-type {}. Make sure a vectorizer module is configured for this collection",
            if f.args.contains_key("hybrid") { "hybrid" } else { "nearText" }
        ));
    }
    let limit = f.args.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    let filter = match f.args.get("where") {
        Some(w) => Some(filter::parse(w).map_err(|e| format!("invalid where filter: {e}"))?),
        None => None,
    };
    let empty = super::super::collection::Collection::default();
    let objects = st.objects.get(&class).unwrap_or(&empty);
    let content = |p: &Map<String, Value>| {
        p.get("content")
            .and_then(Value::as_str)
            .map(words)
            .unwrap_or_default()
    };
    // Statistics over the whole class, as BM25 does.
    let docs: Vec<(&Uuid, &Map<String, Value>, Vec<String>)> = objects
        .iter()
        .map(|(id, o)| (id, &*o.properties, content(&o.properties)))
        .collect();
    let n = docs.len() as f64;
    let avgdl = if docs.is_empty() {
        1.0
    } else {
        docs.iter().map(|d| d.2.len()).sum::<usize>() as f64 / n
    };
    let mut df: HashMap<&str, usize> = HashMap::new();
    for d in &docs {
        let mut seen: Vec<&str> = d.2.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for w in seen {
            *df.entry(w).or_default() += 1;
        }
    }
    let bm25 = |terms: &[String], dw: &[String]| -> f64 {
        let dl = dw.len() as f64;
        terms
            .iter()
            .map(|t| {
                let tf = dw.iter().filter(|w| *w == t).count() as f64;
                if tf == 0.0 {
                    return 0.0;
                }
                let nq = *df.get(t.as_str()).unwrap_or(&0) as f64;
                let idf = (1.0 + (n - nq + 0.5) / (nq + 0.5)).ln();
                idf * tf * 2.2 / (tf + 1.2 * (1.0 - 0.75 + 0.75 * dl / avgdl))
            })
            .sum()
    };
    let cosine = |q: &[String], dw: &[String]| -> f64 {
        let count = |ws: &[String]| {
            let mut m: HashMap<String, f64> = HashMap::new();
            for w in ws {
                *m.entry(w.clone()).or_default() += 1.0;
            }
            m
        };
        let (a, b) = (count(q), count(dw));
        let dot: f64 = a.iter().map(|(w, x)| x * b.get(w).unwrap_or(&0.0)).sum();
        let norm = |m: &HashMap<String, f64>| m.values().map(|x| x * x).sum::<f64>().sqrt();
        let d = norm(&a) * norm(&b);
        if d == 0.0 {
            0.0
        } else {
            dot / d
        }
    };
    let distinct = |text: &str| {
        let mut t = words(text);
        t.sort();
        t.dedup();
        t
    };
    let text_arg = |arg: &str, key: &str| -> R<String> {
        f.args
            .get(arg)
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{arg}: {key} is required"))
    };
    let admitted: Vec<&(&Uuid, &Map<String, Value>, Vec<String>)> = docs
        .iter()
        .filter(|(id, p, _)| filter.as_ref().is_none_or(|fl| filter::matches(fl, id, p)))
        .collect();
    // (id, properties, score, distance)
    let mut ranked: Vec<Ranked<'_>> = if f.args.contains_key("bm25") {
        let terms = distinct(&text_arg("bm25", "query")?);
        admitted
            .iter()
            .map(|(id, p, dw)| (*id, *p, Some(bm25(&terms, dw)), None))
            .filter(|h| h.2 > Some(0.0))
            .collect()
    } else if f.args.contains_key("hybrid") {
        let text = text_arg("hybrid", "query")?;
        let alpha = f.args["hybrid"]
            .get("alpha")
            .and_then(Value::as_f64)
            .unwrap_or(0.75);
        let terms = distinct(&text);
        let qw = words(&text);
        let both: Vec<(f64, f64)> = admitted
            .iter()
            .map(|(_, _, dw)| (bm25(&terms, dw), cosine(&qw, dw)))
            .collect();
        let max = |sel: fn(&(f64, f64)) -> f64| both.iter().map(sel).fold(0.0_f64, f64::max);
        let (mb, mc) = (max(|x| x.0), max(|x| x.1));
        let norm = |x: f64, m: f64| if m > 0.0 { x / m } else { 0.0 };
        admitted
            .iter()
            .zip(&both)
            .map(|((id, p, _), (b, c))| {
                let s = (1.0 - alpha) * norm(*b, mb) + alpha * norm(*c, mc);
                (*id, *p, Some(s), None)
            })
            .filter(|h| h.2 > Some(0.0))
            .collect()
    } else if let Some(nt) = f.args.get("nearText") {
        let concepts: Vec<String> = nt
            .get("concepts")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if concepts.is_empty() {
            return Err("nearText: concepts is required".into());
        }
        let qw = words(&concepts.join(" "));
        admitted
            .iter()
            .map(|(id, p, dw)| (*id, *p, None, Some(1.0 - cosine(&qw, dw))))
            .collect()
    } else {
        admitted
            .iter()
            .map(|(id, p, _)| (*id, *p, None, None))
            .collect()
    };
    ranked.sort_by(|a, b| {
        let key = |h: &Ranked<'_>| h.2.map(|s| -s).or(h.3).unwrap_or(0.0);
        key(a).total_cmp(&key(b)).then_with(|| a.0.cmp(b.0))
    });
    ranked.truncate(limit);
    let out: Vec<Value> = ranked
        .iter()
        .map(|(id, props, score, distance)| {
            let mut o = Map::new();
            for sel in &f.fields {
                if sel.name == "_additional" {
                    let mut a = Map::new();
                    for x in &sel.fields {
                        let v = match x.name.as_str() {
                            "id" => json!(id.to_string()),
                            "score" => {
                                score.map_or(Value::Null, |s| json!(format!("{}", s as f32)))
                            }
                            "distance" => distance.map_or(Value::Null, |d| json!(d as f32)),
                            _ => Value::Null,
                        };
                        a.insert(x.name.clone(), v);
                    }
                    o.insert("_additional".into(), Value::Object(a));
                } else {
                    o.insert(
                        sel.name.clone(),
                        props.get(&sel.name).cloned().unwrap_or(Value::Null),
                    );
                }
            }
            Value::Object(o)
        })
        .collect();
    Ok(Value::Array(out))
}
