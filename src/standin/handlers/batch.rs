//! The batch endpoints, `POST` and `DELETE /v1/batch/objects`: body
//! validation as go-openapi reports it, per-object schema checks, the
//! duplicate-id rule (the last occurrence wins, every one reports SUCCESS),
//! the delete limit, and the per-object faults.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use elysiactl::target::weaviate::wire::write_str;
use elysiactl::util::now_ms;

use super::super::{filter, vectorizer};
use super::{
    code_message, error_list, parse_body, reply, upper_first, Resp, Shared, State, Stored,
};

const RATE_LIMIT_MESSAGE: &str =
    "update vector: connection to: OpenAI API failed with status: 429 \
     error: Rate limit reached for text-embedding-3-small in organization org-standin on \
     requests per min (RPM): Limit 3000, Used 3000, Requested 1. Please try again in 20ms.";

/// [`RATE_LIMIT_MESSAGE`] for the vectorizer quota: its limit per minute,
/// and the wait until the bucket has a token again.
fn quota_message(per_sec: u32, wait: std::time::Duration) -> String {
    let per_min = u64::from(per_sec) * 60;
    let ms = wait.as_millis().max(1);
    format!(
        "update vector: connection to: OpenAI API failed with status: 429 \
         error: Rate limit reached for text-embedding-3-small in organization org-standin on \
         requests per min (RPM): Limit {per_min}, Used {per_min}, Requested 1. \
         Please try again in {ms}ms."
    )
}

const REJECT_MESSAGE: &str = "invalid object: rejected by the stand-in (validation fault)";

/// The object ids a batch request names: an upsert's object ids, or the
/// `id`/`_id` values of a delete's filter and the files its `repo`+`path`
/// filters name (as their chunk 0 id). Unparsable bodies name none.
pub(super) fn batch_ids(method: &Method, body: &[u8]) -> Vec<Uuid> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let parse = |s: &Value| s.as_str().and_then(|s| Uuid::parse_str(s).ok());
    if *method == Method::POST {
        return v
            .get("objects")
            .and_then(Value::as_array)
            .map(|objs| {
                objs.iter()
                    .filter_map(|o| o.get("id").and_then(parse))
                    .collect()
            })
            .unwrap_or_default();
    }
    fn walk(w: &Value, out: &mut Vec<Uuid>) {
        if let Some(ops) = w.get("operands").and_then(Value::as_array) {
            ops.iter().for_each(|o| walk(o, out));
            // elysiactl deletes a file's chunks by `repo` and `path` (one,
            // or several with ContainsAny): such a filter names the files,
            // logged as their ids (chunk 0's).
            let named = |name: &str| -> Vec<String> {
                ops.iter()
                    .find(|o| {
                        let on = o.get("path").and_then(Value::as_array);
                        on.is_some_and(|p| matches!(p.as_slice(), [Value::String(s)] if s == name))
                    })
                    .map(|o| text_values(o).map(str::to_owned).collect())
                    .unwrap_or_default()
            };
            let is_and = w.get("operator").and_then(Value::as_str) == Some("And");
            if let (true, [repo]) = (is_and, named("repo").as_slice()) {
                for path in named("path") {
                    let name = format!("elysiactl://{repo}/{path}");
                    out.push(Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()));
                }
            }
        }
        let on_id = w
            .get("path")
            .and_then(Value::as_array)
            .is_some_and(|p| matches!(p.as_slice(), [Value::String(s)] if s == "id" || s == "_id"));
        if !on_id {
            return;
        }
        out.extend(text_values(w).filter_map(|s| Uuid::parse_str(s).ok()));
    }
    let mut out = Vec::new();
    if let Some(w) = v.pointer("/match/where") {
        walk(w, &mut out);
    }
    out
}

/// A filter leaf's text values: its `valueText`, or its `valueTextArray`.
fn text_values(leaf: &Value) -> impl Iterator<Item = &str> {
    let one = leaf.get("valueText").into_iter();
    let many = leaf
        .get("valueTextArray")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    one.chain(many).filter_map(Value::as_str)
}

fn check_consistency(params: &HashMap<String, String>) -> Option<Resp> {
    match params.get("consistency_level").map(String::as_str) {
        None | Some("ONE") | Some("QUORUM") | Some("ALL") => None,
        Some(other) => Some(error_list(
            400,
            &format!("unrecognized consistency level {other:?}, try one of the following: ['ONE', 'QUORUM', 'ALL']"),
        )),
    }
}

/// Spec validation of the BatchObjects body, as go-openapi reports it.
fn validate_batch_body(v: Value) -> Result<Vec<Value>, Resp> {
    let Value::Object(mut obj) = v else {
        return Err(code_message(
            422,
            601,
            "body in body must be of type object: \"array\"",
        ));
    };
    if let Some(fields) = obj.get("fields") {
        let ok = fields.as_array().is_some_and(|a| {
            a.iter().all(|f| {
                matches!(
                    f.as_str(),
                    Some("ALL" | "class" | "schema" | "id" | "creationTimeUnix")
                )
            })
        });
        if !ok {
            return Err(code_message(
                422,
                602,
                "body.fields in body should be one of [ALL class schema id creationTimeUnix]",
            ));
        }
    }
    let objects = match obj.remove("objects") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(code_message(
                422,
                601,
                "body.objects in body must be of type array",
            ))
        }
    };
    for (i, o) in objects.iter().enumerate() {
        let Some(o) = o.as_object() else {
            return Err(code_message(
                422,
                601,
                &format!("body.objects.{i} in body must be of type object"),
            ));
        };
        if let Some(id) = o.get("id") {
            let ok = id.as_str().is_some_and(|s| Uuid::parse_str(s).is_ok());
            if !ok {
                return Err(code_message(
                    422,
                    606,
                    &format!("body.objects.{i}.id in body must be of type uuid: {id}"),
                ));
            }
        }
        for (k, ty) in [
            ("class", "string"),
            ("tenant", "string"),
            ("properties", "object"),
        ] {
            let bad = match (o.get(k), ty) {
                (None | Some(Value::Null), _) => false,
                (Some(v), "string") => !v.is_string(),
                (Some(v), _) => !v.is_object(),
            };
            if bad {
                return Err(code_message(
                    422,
                    601,
                    &format!("body.objects.{i}.{k} in body must be of type {ty}"),
                ));
            }
        }
        if let Some(vec) = o.get("vector") {
            let ok = vec.is_null()
                || vec
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_number));
            if !ok {
                return Err(code_message(
                    422,
                    601,
                    &format!("body.objects.{i}.vector in body must be of type array of number"),
                ));
            }
        }
    }
    if objects.is_empty() {
        return Err(error_list(
            422,
            "invalid param 'objects': cannot be empty, need at least one object for batching",
        ));
    }
    Ok(objects)
}

/// Why one object cannot be stored, if it cannot.
fn object_error(
    class: &str,
    declared: Option<&HashMap<String, String>>,
    props: &Map<String, Value>,
) -> Option<String> {
    if class.is_empty() {
        return Some("object has an empty class".into());
    }
    let Some(declared) = declared else {
        return Some(format!("class '{class}' not present in schema"));
    };
    for (name, value) in props {
        if matches!(name.as_str(), "id" | "_id" | "_additional") {
            return Some(format!(
                "'{name}' is a reserved property name, use a different one"
            ));
        }
        let Some(ty) = declared.get(name.as_str()) else {
            return Some(format!(
                "no such prop with name '{name}' found in class '{class}' in the schema. \
                 Check your schema files for which properties in this class are available"
            ));
        };
        if value.is_null() {
            continue;
        }
        let go_type = |v: &Value| match v {
            Value::String(_) => "string",
            Value::Number(_) => "float64",
            Value::Bool(_) => "bool",
            Value::Array(_) => "[]interface {}",
            Value::Object(_) => "map[string]interface {}",
            Value::Null => "nil",
        };
        let bad = match ty.as_str() {
            "text" => (!value.is_string()).then(|| {
                format!(
                    "invalid text property '{name}' on class '{class}': not a string, but {}",
                    go_type(value)
                )
            }),
            "int" => {
                let is_int = value
                    .as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.2e18);
                (!is_int).then(|| {
                    format!(
                        "invalid integer property '{name}' on class '{class}': requires an \
                         integer, the given value is '{value}'"
                    )
                })
            }
            "number" => (!value.is_number()).then(|| {
                format!("invalid number property '{name}' on class '{class}': not a number")
            }),
            "boolean" => (!value.is_boolean()).then(|| {
                format!("invalid boolean property '{name}' on class '{class}': not a boolean")
            }),
            _ => None,
        };
        if bad.is_some() {
            return bad;
        }
    }
    None
}

/// Int properties stored as integers: a whole float such as `3.0`, which
/// [`object_error`] accepts for an int, is kept and listed as `3`, so every
/// int property reads back as a JSON integer.
fn normalize_ints(declared: &HashMap<String, String>, props: &mut Map<String, Value>) {
    let as_int = |v: &mut Value| {
        if let Some(f) = v.as_f64().filter(|_| !v.is_i64() && !v.is_u64()) {
            if f.fract() == 0.0 && f.abs() < 9.2e18 {
                *v = Value::from(f as i64);
            }
        }
    };
    for (name, v) in props.iter_mut() {
        match (declared.get(name).map(String::as_str), v) {
            (Some("int"), v) => as_int(v),
            (Some("int[]"), Value::Array(a)) => a.iter_mut().for_each(as_int),
            _ => {}
        }
    }
}

/// A class's declared properties: name → its first data type.
fn declared(def: &Value) -> HashMap<String, String> {
    def.get("properties")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let n = p.get("name")?.as_str()?;
                    let t = p.get("dataType")?.as_array()?.first()?.as_str()?;
                    Some((n.to_owned(), t.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /v1/batch/objects`, in three steps so that the state lock is held
/// only for the cheap middle one: parse and validate the body
/// ([`batch_parse`]), decide and store each object ([`batch_store`]), then
/// build the reply ([`batch_reply`]). The wire behaviour is that of one
/// step; only the stand-in's own throughput changes.
pub(super) struct ParsedBatch {
    pub(super) objects: Vec<Value>,
    /// With [`Faults::echo_headers`](super::Faults::echo_headers): the
    /// request's headers, quoted in every per-object failure.
    pub(super) echo: Option<String>,
    /// [`Config::vectorizer_max_tokens`](super::super::Config::vectorizer_max_tokens):
    /// 0 = off.
    pub(super) max_tokens: usize,
}

/// One object's fate, between the store and the reply.
pub(super) struct StoredBatch {
    objects: Vec<Value>,
    /// The properties of each stored object, taken out of `objects` and
    /// shared with the store; `None` where the object was not stored (its
    /// properties are still in `objects`).
    stored: Vec<Option<std::sync::Arc<Map<String, Value>>>>,
    /// (class, id, error) per object.
    fates: Vec<(String, Uuid, Option<String>)>,
    now: u64,
}

pub(super) fn batch_parse(
    params: &HashMap<String, String>,
    body: &[u8],
) -> Result<ParsedBatch, Resp> {
    if let Some(r) = check_consistency(params) {
        return Err(r);
    }
    let v = parse_body(body)?;
    Ok(ParsedBatch {
        objects: validate_batch_body(v)?,
        echo: None,
        max_tokens: 0,
    })
}

pub(super) fn batch_store(st: &mut State, parsed: ParsedBatch) -> StoredBatch {
    let mut objects = parsed.objects;
    let now = now_ms();
    let p_fail = st.faults.p_object_fail;
    let p_reject = st.faults.p_object_reject;
    let quota = st.faults.vectorizer_quota_per_sec;
    let empty = Map::new();
    let mut fates = Vec::with_capacity(objects.len());
    let mut schemas: HashMap<String, Option<HashMap<String, String>>> = HashMap::new();
    for o in &objects {
        let class = upper_first(o.get("class").and_then(Value::as_str).unwrap_or(""));
        let id = match o.get("id").and_then(Value::as_str).map(Uuid::parse_str) {
            Some(Ok(id)) => id,
            _ => {
                let bits = (u128::from(st.rng.next_u64()) << 64) | u128::from(st.rng.next_u64());
                uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid()
            }
        };
        let props = o
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        // Each class's declared properties, read once per batch.
        if !schemas.contains_key(&class) {
            let d = st.classes.get(&class).map(declared);
            schemas.insert(class.clone(), d);
        }
        let decl = schemas.get(&class).and_then(Option::as_ref);
        let mut err = object_error(&class, decl, props);
        if err.is_none() {
            if let Some(def) = st.classes.get(&class) {
                err = vectorizer::check(parsed.max_tokens, def, props);
            }
        }
        if err.is_none() {
            if let Err(wait) = st.quota.take(quota, std::time::Instant::now()) {
                err = Some(quota_message(quota, wait));
                *st.stats.injected.entry("quota".into()).or_default() += 1;
            }
        }
        if err.is_none() && st.rng.chance(p_fail) {
            err = Some(RATE_LIMIT_MESSAGE.to_string());
            *st.stats.injected.entry("object_fail".into()).or_default() += 1;
        }
        if err.is_none() && st.rng.chance(p_reject) {
            err = Some(REJECT_MESSAGE.to_string());
            *st.stats.injected.entry("object_reject".into()).or_default() += 1;
        }
        if let (Some(e), Some(echo)) = (&mut err, &parsed.echo) {
            e.push_str(&format!(" (request headers: {echo})"));
        }
        fates.push((class, id, err));
    }
    // Duplicates in one request: only the last occurrence is written; the
    // earlier ones are skipped and still reported SUCCESS.
    let mut last: HashMap<(&str, Uuid), usize> = HashMap::new();
    for (i, (class, id, _)) in fates.iter().enumerate() {
        last.insert((class.as_str(), *id), i);
    }
    let mut stored = vec![None; objects.len()];
    for (i, (class, id, err)) in fates.iter().enumerate() {
        if err.is_some() || last.get(&(class.as_str(), *id)) != Some(&i) {
            continue;
        }
        let mut properties = match objects[i].get_mut("properties").map(Value::take) {
            Some(Value::Object(p)) => p,
            _ => Map::new(),
        };
        if let Some(Some(decl)) = schemas.get(class) {
            normalize_ints(decl, &mut properties);
        }
        let properties = std::sync::Arc::new(properties);
        stored[i] = Some(properties.clone());
        st.objects.entry(class.clone()).or_default().insert(
            *id,
            Stored {
                properties,
                created: now,
                updated: now,
            },
        );
        st.stats.objects_written += 1;
    }
    StoredBatch {
        objects,
        stored,
        fates,
        now,
    }
}

/// The batch reply: per object, in request order, its class, id, times,
/// the properties it was sent with (as stored: ints normalized), its result
/// and its vector if sent. Written by hand with elysiactl's JSON string
/// writer: the bytes are those serde_json gives for the same `Value`s (keys
/// sorted), at a fraction of the cost for the echoed contents.
pub(super) fn batch_reply(stored: StoredBatch) -> Resp {
    use std::io::Write as _;
    let now = stored.now;
    let empty = Map::new();
    let guess: usize = stored.objects.len() * 256
        + stored
            .stored
            .iter()
            .flatten()
            .map(|p| {
                p.values()
                    .map(|v| v.as_str().map_or(8, str::len))
                    .sum::<usize>()
            })
            .sum::<usize>();
    let mut out = Vec::with_capacity(guess + guess / 16);
    out.push(b'[');
    for (i, ((class, id, err), o)) in stored.fates.iter().zip(&stored.objects).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let properties = match &stored.stored[i] {
            Some(p) => &**p,
            None => o
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty),
        };
        out.extend_from_slice(b"{\"class\":");
        write_str(&mut out, class);
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            ",\"creationTimeUnix\":{now},\"deprecations\":null,\"id\":\"{id}\",\"lastUpdateTimeUnix\":{now},\"properties\":"
        );
        write_map(&mut out, properties);
        out.extend_from_slice(b",\"result\":");
        match err {
            None => out.extend_from_slice(b"{\"status\":\"SUCCESS\"}"),
            Some(m) => {
                out.extend_from_slice(b"{\"errors\":{\"error\":[{\"message\":");
                write_str(&mut out, m);
                out.extend_from_slice(b"}]},\"status\":\"FAILED\"}");
            }
        }
        if let Some(v) = o.get("vector").filter(|v| !v.is_null()) {
            out.extend_from_slice(b",\"vector\":");
            write_value(&mut out, v);
        }
        out.push(b'}');
    }
    out.push(b']');
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(out)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// `v` as serde_json writes it, strings through [`write_str`].
fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        Value::Object(m) => write_map(out, m),
        // Null, booleans and numbers: serde_json's own text.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

fn write_map(out: &mut Vec<u8>, m: &Map<String, Value>) {
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
    }
    out.push(b'}');
}

pub(super) fn batch_delete(
    shared: &Shared,
    st: &mut State,
    params: &HashMap<String, String>,
    body: &[u8],
) -> Resp {
    if let Some(r) = check_consistency(params) {
        return r;
    }
    let v = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let output = v.get("output").and_then(Value::as_str).unwrap_or("minimal");
    if output != "minimal" && output != "verbose" {
        return error_list(422, &format!("validate: output: unknown output {output:?}"));
    }
    let dry_run = match v.get("dryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return code_message(422, 601, "body.dryRun in body must be of type boolean"),
    };
    let Some(m) = v.get("match").and_then(Value::as_object) else {
        return error_list(422, "validate: empty match clause");
    };
    let Some(class) = m
        .get("class")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    else {
        return error_list(422, "validate: empty match.class clause");
    };
    let Some(where_) = m.get("where").filter(|w| !w.is_null()) else {
        return error_list(422, "validate: empty match.where clause");
    };
    let class = upper_first(class);
    if !st.classes.contains_key(&class) {
        return error_list(422, &format!("validate: class: {class}: class not found"));
    }
    let f = match filter::parse(where_) {
        Ok(f) => f,
        Err(e) => return error_list(422, &format!("validate: failed to parse where filter: {e}")),
    };
    let limit = shared.cfg.delete_limit.max(1);
    // A filter that names its files is looked up in the collection's index
    // by file (as a real server's inverted index serves it); any other is
    // evaluated on every object of the class.
    let files = filter::files_named(&f);
    let matched: Vec<Uuid> = match (st.objects.get(&class), &files) {
        (None, _) => Vec::new(),
        (Some(objs), Some(fs)) => objs
            .ids_of_files(fs)
            .into_iter()
            .filter(|id| {
                objs.get(id)
                    .is_some_and(|o| filter::matches(&f, id, &o.properties))
            })
            .collect(),
        (Some(objs), None) => objs
            .iter()
            .filter(|(id, o)| filter::matches(&f, id, &o.properties))
            .map(|(id, _)| *id)
            .collect(),
    };
    let batch: Vec<Uuid> = matched.iter().take(limit).copied().collect();
    if !dry_run {
        if let Some(objs) = st.objects.get_mut(&class) {
            for id in &batch {
                objs.remove(id);
            }
        }
        st.stats.objects_deleted += batch.len() as u64;
    }
    let status = if dry_run { "DRYRUN" } else { "SUCCESS" };
    let objects = if output == "verbose" {
        Value::Array(
            batch
                .iter()
                .map(|id| json!({"id": id.to_string(), "status": status}))
                .collect(),
        )
    } else {
        Value::Null
    };
    let mut echo_match = m.clone();
    echo_match.insert("class".into(), json!(class));
    reply(
        200,
        Some(&json!({
            "match": echo_match,
            "output": output,
            "dryRun": dry_run,
            "deletionTimeUnixMilli": now_ms(),
            "results": {
                "matches": matched.len(),
                "limit": limit,
                "successful": if dry_run { 0 } else { batch.len() },
                "failed": 0,
                "objects": objects,
            },
        })),
    )
}
