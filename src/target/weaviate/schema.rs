//! The collection elysiactl writes to: its name rules and its `Class` body.
//!
//! Every property is declared up front (auto-schema would guess `path` as
//! word-tokenized text, which breaks exact matching). `repo`, `path` and
//! `contentSha256` use `field` tokenization so filters match whole values.
//! The int properties place a chunk in its file (docs/objects.md); a
//! collection made before chunked objects gets them added at prepare.

use serde_json::{json, Value};

/// The properties every object carries, with their Weaviate data type.
pub const PROPERTIES: &[(&str, &str)] = &[
    ("repo", "text"),
    ("path", "text"),
    ("content", "text"),
    ("contentSha256", "text"),
    ("size", "int"),
    ("chunk", "int"),
    ("chunkCount", "int"),
    ("byteStart", "int"),
    ("byteEnd", "int"),
    ("startLine", "int"),
    ("endLine", "int"),
];

/// The class name as the server stores it (first letter uppercased), or why
/// it is not a valid class name.
pub fn normalize_class(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let first = chars
        .next()
        .ok_or_else(|| "collection name is empty".to_string())?;
    let norm: String = first.to_ascii_uppercase().to_string() + chars.as_str();
    let ok = norm.len() <= 255
        && norm.as_bytes()[0].is_ascii_uppercase()
        && norm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(norm)
    } else {
        Err(format!(
            "invalid collection name {name:?}: must match ^[A-Za-z][_0-9A-Za-z]{{0,254}}$"
        ))
    }
}

/// One property definition. `vectorizer` (a `text2vec-*` module) is told to
/// skip everything but `content`.
pub fn property(name: &str, data_type: &str, vectorizer: Option<&str>) -> Value {
    let mut p = json!({"name": name, "dataType": [data_type]});
    if data_type == "text" && name != "content" {
        p["tokenization"] = json!("field");
        p["indexFilterable"] = json!(true);
        p["indexSearchable"] = json!(name != "contentSha256");
    }
    if let Some(v) = text2vec(vectorizer) {
        if name != "content" {
            p["moduleConfig"] = json!({ v: {"skip": true} });
        }
    }
    p
}

/// The `Class` body for `POST /v1/schema`.
pub fn class_body(class: &str, vectorizer: Option<&str>) -> Value {
    let properties: Vec<Value> = PROPERTIES
        .iter()
        .map(|(n, t)| property(n, t, vectorizer))
        .collect();
    let mut c = json!({
        "class": class,
        "description": "Source files indexed by elysiactl",
        "vectorizer": vectorizer.unwrap_or("none"),
        "properties": properties,
    });
    if let Some(v) = text2vec(vectorizer) {
        c["moduleConfig"] = json!({ v: {"vectorizeClassName": false} });
    }
    c
}

/// The declared properties missing from a `Class` the server returned.
pub fn missing_properties(class: &Value) -> Vec<&'static str> {
    let have: Vec<String> = class
        .get("properties")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("name").and_then(Value::as_str))
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    PROPERTIES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !have.contains(&n.to_ascii_lowercase()))
        .collect()
}

fn text2vec(vectorizer: Option<&str>) -> Option<&str> {
    vectorizer.filter(|v| v.starts_with("text2vec-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_uppercased_and_checked() {
        assert_eq!(
            normalize_class("SRC_ENTERPRISE__").unwrap(),
            "SRC_ENTERPRISE__"
        );
        assert_eq!(normalize_class("codeChunk").unwrap(), "CodeChunk");
        assert!(normalize_class("").is_err());
        assert!(normalize_class("_x").is_err());
        assert!(normalize_class("a-b").is_err());
    }

    #[test]
    fn class_body_declares_every_property_with_field_tokenized_paths() {
        let c = class_body("C", Some("text2vec-openai"));
        assert_eq!(c["vectorizer"], "text2vec-openai");
        let path = &c["properties"][1];
        assert_eq!(path["name"], "path");
        assert_eq!(path["tokenization"], "field");
        assert_eq!(path["moduleConfig"]["text2vec-openai"]["skip"], true);
        assert!(c["properties"][2].get("moduleConfig").is_none());
        assert!(missing_properties(&c).is_empty());
        assert_eq!(class_body("C", None)["vectorizer"], "none");
    }
}
