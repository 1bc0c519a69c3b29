//! The schema endpoints: create a class, add a property, with the name,
//! dataType and tokenization checks and the defaults the server fills in.

use serde_json::{json, Value};

use super::{code_message, error_list, parse_body, reply, upper_first, Resp, State};

const PRIMITIVE_TYPES: &[&str] = &[
    "text",
    "int",
    "number",
    "boolean",
    "date",
    "uuid",
    "geoCoordinates",
    "phoneNumber",
    "blob",
    "object",
    "text[]",
    "int[]",
    "number[]",
    "boolean[]",
    "date[]",
    "uuid[]",
    "object[]",
];

const TOKENIZATIONS: &[&str] = &[
    "word",
    "lowercase",
    "whitespace",
    "field",
    "trigram",
    "gse",
    "kagome_kr",
    "kagome_ja",
    "gse_ch",
];

fn valid_class_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_uppercase()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn valid_property_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 231
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Check a Property body; Ok(with defaults filled in).
fn check_property(p: &Value, class: &str) -> Result<Value, String> {
    let mut p = p.as_object().cloned().ok_or("property must be an object")?;
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .ok_or("property name is required")?
        .to_string();
    if !valid_property_name(&name) {
        return Err(format!("'{name}' is not a valid property name"));
    }
    if matches!(name.as_str(), "id" | "_id" | "_additional") {
        return Err(format!("'{name}' is a reserved property name"));
    }
    let types: Vec<&str> = p
        .get("dataType")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(ty) = types.first().copied() else {
        return Err(format!(
            "property '{name}' on class '{class}': dataType is required"
        ));
    };
    let is_primitive = PRIMITIVE_TYPES.contains(&ty);
    if !is_primitive && !valid_class_name(ty) {
        return Err(format!("property '{name}': invalid dataType {ty:?}"));
    }
    let is_text = ty == "text" || ty == "text[]";
    match p.get("tokenization") {
        None | Some(Value::Null) => {
            if is_text {
                p.insert("tokenization".into(), json!("word"));
            }
        }
        Some(t) => {
            let t = t.as_str().unwrap_or("");
            if !TOKENIZATIONS.contains(&t) {
                return Err(format!("property '{name}': unknown tokenization {t:?}"));
            }
            if !is_text {
                return Err(format!(
                    "Tokenization is not allowed for data type '{ty}' (property '{name}')"
                ));
            }
        }
    }
    p.entry("indexFilterable").or_insert(json!(true));
    p.entry("indexSearchable").or_insert(json!(is_text));
    Ok(Value::Object(p))
}

pub(super) fn create_class(st: &mut State, body: &[u8]) -> Resp {
    let v = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(mut c) = v.as_object().cloned() else {
        return code_message(422, 601, "objectClass in body must be of type object");
    };
    let Some(name) = c.get("class").and_then(Value::as_str).map(upper_first) else {
        return error_list(422, "class name must not be empty");
    };
    if !valid_class_name(&name) {
        return error_list(422, &format!("'{name}' is not a valid class name"));
    }
    if st.classes.contains_key(&name) {
        return error_list(422, &format!("class name {name} already exists"));
    }
    if let Some(similar) = st.classes.keys().find(|k| k.eq_ignore_ascii_case(&name)) {
        return error_list(
            422,
            &format!("class name {name:?} already exists as a similar class {similar:?} (found similar class)"),
        );
    }
    let mut props = Vec::new();
    let mut seen = Vec::new();
    for p in c
        .get("properties")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        match check_property(&p, &name) {
            Ok(p) => {
                let n = p["name"].as_str().unwrap_or("").to_ascii_lowercase();
                if seen.contains(&n) {
                    return error_list(
                        422,
                        &format!("class '{name}': property '{n}' already exists"),
                    );
                }
                seen.push(n);
                props.push(p);
            }
            Err(e) => return error_list(422, &e),
        }
    }
    c.insert("class".into(), json!(name));
    c.insert("properties".into(), Value::Array(props));
    let vectorizer = c.get("vectorizer").and_then(Value::as_str).unwrap_or("");
    if vectorizer.is_empty() {
        c.insert("vectorizer".into(), json!("none"));
    }
    c.entry("vectorIndexType").or_insert(json!("hnsw"));
    c.entry("invertedIndexConfig").or_insert(json!({
        "bm25": {"b": 0.75, "k1": 1.2}, "cleanupIntervalSeconds": 60, "stopwords": {"preset": "en"}
    }));
    c.entry("multiTenancyConfig")
        .or_insert(json!({"enabled": false}));
    c.entry("replicationConfig").or_insert(json!({"factor": 1}));
    let c = Value::Object(c);
    st.classes.insert(name, c.clone());
    reply(200, Some(&c))
}

pub(super) fn add_property(st: &mut State, class: &str, body: &[u8]) -> Resp {
    let v = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let class = upper_first(class);
    let p = match check_property(&v, &class) {
        Ok(p) => p,
        Err(e) => return error_list(422, &e),
    };
    let Some(c) = st.classes.get_mut(&class) else {
        return error_list(422, &format!("class {class:?} not found"));
    };
    let name = p["name"].as_str().unwrap_or("").to_string();
    let Some(props) = c.get_mut("properties").and_then(Value::as_array_mut) else {
        return error_list(500, "class has no properties list");
    };
    if props.iter().any(|q| {
        q["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
    }) {
        return error_list(422, &format!("property '{name}' already exists"));
    }
    props.push(p.clone());
    reply(200, Some(&p))
}
