//! The vectorizer's input limit ([`Config::vectorizer_max_tokens`]): what
//! text a class's vectorizer would embed, a token estimate for it, and the
//! per-object message real Weaviate (≥ 1.25.29) passes back from OpenAI when
//! that text is too long.
//!
//! [`Config::vectorizer_max_tokens`]: super::Config::vectorizer_max_tokens

use serde_json::{Map, Value};

/// A deterministic token estimate meant never to fall below a real BPE
/// count (cl100k / o200k) for source code:
///
/// - a maximal run of ASCII letters and digits counts one token per started
///   4 bytes (`ceil(len / 4)`: `fn` 1, `main` 1, `println` 2);
/// - every other non-whitespace byte counts one token (`_`, `{`, `;`, and
///   each byte of a non-ASCII character, so `é` counts 2);
/// - ASCII whitespace is free, however long the run.
pub fn estimate_tokens(text: &str) -> usize {
    let mut tokens = 0;
    let mut run = 0usize;
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() {
            run += 1;
            continue;
        }
        tokens += run.div_ceil(4);
        run = 0;
        if !b.is_ascii_whitespace() {
            tokens += 1;
        }
    }
    tokens + run.div_ceil(4)
}

/// The class's vectorizer module, unless it is `none` (or unset).
pub fn vectorizer(class: &Value) -> Option<&str> {
    class
        .get("vectorizer")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty() && *v != "none")
}

/// The text `module` would embed for an object of `class` with `props`,
/// simplified from text2vec-*: the class name unless the class's
/// `moduleConfig.<module>.vectorizeClassName` is `false`, then, in property
/// name order, every declared `text` / `text[]` property whose
/// `moduleConfig.<module>.skip` is not `true`: its name if
/// `vectorizePropertyName` is `true`, then its value(s). Pieces are joined by
/// spaces. Other data types (int, number, date …) are never vectorized.
/// Only the class-level `vectorizer` is modelled, not named vectors.
pub fn vectorized_text(class: &Value, module: &str, props: &Map<String, Value>) -> String {
    let flag = |cfg: Option<&Value>, key: &str| {
        cfg.and_then(|c| c.pointer(&format!("/moduleConfig/{module}/{key}")))
            .and_then(Value::as_bool)
    };
    let mut parts: Vec<&str> = Vec::new();
    let name = class.get("class").and_then(Value::as_str).unwrap_or("");
    if flag(Some(class), "vectorizeClassName") != Some(false) {
        parts.push(name);
    }
    let mut declared: Vec<&Value> = class
        .get("properties")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().collect())
        .unwrap_or_default();
    declared.sort_by_key(|p| p.get("name").and_then(Value::as_str).unwrap_or(""));
    for p in declared {
        let Some(pname) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        let ty = p.pointer("/dataType/0").and_then(Value::as_str);
        if !matches!(ty, Some("text" | "text[]")) || flag(Some(p), "skip") == Some(true) {
            continue;
        }
        let values: Vec<&str> = match props.get(pname) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        if flag(Some(p), "vectorizePropertyName") == Some(true) {
            parts.push(pname);
        }
        parts.extend(values);
    }
    parts.join(" ")
}

/// The per-object error when the vectorized text is over `max` tokens:
/// OpenAI's 400 as Weaviate's text2vec-openai client wraps it.
pub fn too_long_message(max: usize, requested: usize) -> String {
    format!(
        "update vector: connection to: OpenAI API failed with status: 400 error: \
         This model's maximum context length is {max} tokens, however you requested \
         {requested} tokens ({requested} in your prompt; 0 for the completion). \
         Please reduce your prompt; or completion length."
    )
}

/// The too-long message for this object, if the limit is on (`max > 0`), the
/// class has a vectorizer, and its text is over `max` tokens.
pub fn check(max: usize, class: &Value, props: &Map<String, Value>) -> Option<String> {
    if max == 0 {
        return None;
    }
    let module = vectorizer(class)?;
    let n = estimate_tokens(&vectorized_text(class, module, props));
    (n > max).then(|| too_long_message(max, n))
}
