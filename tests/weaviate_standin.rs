//! The stand-in answers as CONTRACT.md says real Weaviate does, so tests run
//! against it mean something.

#[path = "weaviate_support/mod.rs"]
mod support;

use std::process::{Command, Stdio};

use elysiactl::target::weaviate::classify::TransportFailure;
use elysiactl::target::weaviate::client::{default_headers, Exchange};
use reqwest::Method;
use serde_json::{json, Value};
use support::standin::{Config, Faults, Release, Standin};
use support::Raw;

const ID1: &str = "00000000-0000-0000-0000-000000000001";
const ID2: &str = "00000000-0000-0000-0000-000000000002";
const ID3: &str = "00000000-0000-0000-0000-000000000003";

fn setup(cfg: Config) -> (Standin, Raw) {
    let si = Standin::start(cfg).expect("stand-in");
    let raw = Raw::new(&si.url(), Default::default());
    let (s, _) = raw.status(
        Method::POST,
        "/v1/schema",
        Some(
            r#"{"class":"Code","properties":[
                {"name":"path","dataType":["text"],"tokenization":"field"},
                {"name":"repo","dataType":["text"],"tokenization":"field"},
                {"name":"size","dataType":["int"]}]}"#,
        ),
    );
    assert_eq!(s, 200);
    (si, raw)
}

fn batch(raw: &Raw, objects: Value) -> (u16, Value) {
    let body = json!({ "objects": objects }).to_string();
    raw.status(Method::POST, "/v1/batch/objects", Some(&body))
}

fn obj(id: &str, path: &str) -> Value {
    json!({"class": "Code", "id": id, "properties": {"path": path, "repo": "R"}})
}

fn message(v: &Value) -> String {
    v["error"][0]["message"]
        .as_str()
        .or(v["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn duplicate_ids_in_one_request_write_only_the_last_and_report_success_for_all() {
    let (si, raw) = setup(Config::default());
    let (s, v) = batch(
        &raw,
        json!([obj(ID1, "first"), obj(ID2, "x"), obj(ID1, "last")]),
    );
    assert_eq!(s, 200);
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i["result"]["status"] == "SUCCESS"));
    assert!(items.iter().all(|i| i["deprecations"].is_null()));
    let dump = si.dump();
    assert_eq!(dump.len(), 2);
    assert_eq!(dump[0].path.as_deref(), Some("last"));
}

#[test]
fn empty_batch_and_non_uuid_id_are_422() {
    let (_si, raw) = setup(Config::default());
    let (s, v) = batch(&raw, json!([]));
    assert_eq!(s, 422);
    assert!(message(&v).contains("cannot be empty"), "{v}");
    let (s, v) = raw.status(Method::POST, "/v1/batch/objects", Some("{}"));
    assert_eq!(s, 422, "{v}");
    let (s, v) = batch(&raw, json!([{"class": "Code", "id": "not-a-uuid"}]));
    assert_eq!(s, 422);
    assert!(message(&v).contains("must be of type uuid"), "{v}");
    assert!(v["code"].as_u64().is_some_and(|c| c >= 600));
}

#[test]
fn invalid_json_and_bad_consistency_level_are_400() {
    let (_si, raw) = setup(Config::default());
    let (s, v) = raw.status(Method::POST, "/v1/batch/objects", Some("{\"objects\":[}"));
    assert_eq!(s, 400);
    assert!(message(&v).starts_with("parsing body body from"), "{v}");
    let body = json!({"objects": [obj(ID1, "a")]}).to_string();
    let (s, _) = raw.status(
        Method::POST,
        "/v1/batch/objects?consistency_level=SOME",
        Some(&body),
    );
    assert_eq!(s, 400);
}

#[test]
fn unknown_class_and_unknown_property_fail_per_object_in_a_200() {
    let (si, raw) = setup(Config::default());
    let (s, v) = batch(
        &raw,
        json!([
            {"class": "Nope", "id": ID1, "properties": {"path": "a"}},
            {"class": "Code", "id": ID2, "properties": {"pathh": "a"}},
            {"class": "Code", "id": ID3, "properties": {"size": "big"}},
            {"class": "", "properties": {"path": "a"}},
        ]),
    );
    assert_eq!(s, 200);
    let msgs: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["result"]["status"], "FAILED");
            i["result"]["errors"]["error"][0]["message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(msgs[0].contains("class 'Nope' not present in schema"));
    assert!(msgs[1].contains("no such prop with name 'pathh'"));
    assert!(msgs[2].contains("invalid integer property 'size'"));
    assert!(msgs[3].contains("object has an empty class"));
    assert!(si.dump().is_empty(), "nothing auto-created or stored");
    assert!(si.class("Nope").is_none());
}

#[test]
fn class_names_are_uppercased_and_duplicates_are_422() {
    let (si, raw) = setup(Config::default());
    let (s, v) = raw.status(Method::POST, "/v1/schema", Some(r#"{"class":"code"}"#));
    assert_eq!(s, 422);
    assert!(message(&v).contains("already exists"), "{v}");
    let (s, _) = raw.status(Method::GET, "/v1/schema/code", None);
    assert_eq!(s, 200);
    let (s, v) = raw.status(Method::GET, "/v1/schema/Missing", None);
    assert_eq!((s, v), (404, Value::Null), "404 with an empty body");
    let (s, _) = raw.status(Method::POST, "/v1/schema", Some(r#"{"class":"bad-name"}"#));
    assert_eq!(s, 422);
    let (s, _) = raw.status(Method::DELETE, "/v1/schema/Code", None);
    assert_eq!(s, 200);
    assert!(si.class("Code").is_none());
}

#[test]
fn deleting_a_missing_object_is_204_and_an_unknown_class_500() {
    let (_si, raw) = setup(Config::default());
    batch(&raw, json!([obj(ID1, "a")]));
    let p = format!("/v1/objects/Code/{ID1}");
    assert_eq!(raw.status(Method::HEAD, &p, None).0, 204);
    assert_eq!(raw.status(Method::DELETE, &p, None).0, 204);
    assert_eq!(raw.status(Method::HEAD, &p, None).0, 404);
    assert_eq!(raw.status(Method::DELETE, &p, None).0, 204);
    let (s, v) = raw.status(Method::DELETE, &format!("/v1/objects/Nope/{ID1}"), None);
    assert_eq!(s, 500);
    assert!(message(&v).contains("delete from non-existing index"));
    assert_eq!(
        raw.status(Method::DELETE, "/v1/objects/Code/xyz", None).0,
        422
    );
}

#[test]
fn batch_delete_deletes_at_most_the_limit_per_call_in_uuid_order() {
    let (si, raw) = setup(Config {
        delete_limit: 2,
        ..Config::default()
    });
    batch(&raw, json!([obj(ID3, "c"), obj(ID1, "a"), obj(ID2, "b")]));
    let body =
        json!({"match": {"class": "Code", "where": {"path": ["id"], "operator": "ContainsAny",
        "valueTextArray": [ID1, ID2, ID3]}}, "output": "verbose"})
        .to_string();
    let (s, v) = raw.status(Method::DELETE, "/v1/batch/objects", Some(&body));
    assert_eq!(s, 200);
    let r = &v["results"];
    assert_eq!(
        (
            r["matches"].as_u64(),
            r["limit"].as_u64(),
            r["successful"].as_u64()
        ),
        (Some(3), Some(2), Some(2))
    );
    assert_eq!(r["objects"][0]["id"], ID1);
    assert_eq!(r["objects"][1]["id"], ID2);
    assert_eq!(si.dump().len(), 1);
    let (_, v) = raw.status(Method::DELETE, "/v1/batch/objects", Some(&body));
    assert_eq!(v["results"]["matches"], 1);
    let (_, v) = raw.status(Method::DELETE, "/v1/batch/objects", Some(&body));
    assert_eq!(v["results"]["matches"], 0);
    // minimal output lists only failures: none.
    let minimal = body.replace("verbose", "minimal");
    let (_, v) = raw.status(Method::DELETE, "/v1/batch/objects", Some(&minimal));
    assert!(v["results"]["objects"].is_null());
}

#[test]
fn batch_delete_by_property_equal_and_dry_run() {
    let (si, raw) = setup(Config::default());
    batch(
        &raw,
        json!([
            obj(ID1, "src/a.rs"),
            obj(ID2, "src/a.rs.bak"),
            obj(ID3, "b")
        ]),
    );
    let body = json!({"match": {"class": "Code", "where": {"path": ["path"], "operator": "Equal",
        "valueText": "src/a.rs"}}, "dryRun": true, "output": "verbose"})
    .to_string();
    let (_, v) = raw.status(Method::DELETE, "/v1/batch/objects", Some(&body));
    assert_eq!(v["results"]["matches"], 1);
    assert_eq!(v["results"]["successful"], 0);
    assert_eq!(v["results"]["objects"][0]["status"], "DRYRUN");
    assert_eq!(si.dump().len(), 3);
    let body = body.replace("true", "false");
    raw.status(Method::DELETE, "/v1/batch/objects", Some(&body));
    let left: Vec<_> = si.dump().into_iter().filter_map(|d| d.path).collect();
    assert_eq!(left, vec!["src/a.rs.bak".to_string(), "b".to_string()]);
}

#[test]
fn batch_delete_without_match_where_or_known_class_is_422() {
    let (_si, raw) = setup(Config::default());
    for body in [
        json!({}),
        json!({"match": {"class": "Code"}}),
        json!({"match": {"where": {"path": ["id"], "operator": "Equal", "valueText": ID1}}}),
        json!({"match": {"class": "Nope", "where": {"path": ["id"], "operator": "Equal", "valueText": ID1}}}),
        json!({"match": {"class": "Code", "where": {"path": ["id"], "operator": "Equal"}}}),
        json!({"match": {"class": "Code", "where": {"path": ["id"], "operator": "Equal", "valueInt": 1}}}),
    ] {
        let (s, _) = raw.status(Method::DELETE, "/v1/batch/objects", Some(&body.to_string()));
        assert_eq!(s, 422, "{body}");
    }
}

#[test]
fn authorization_header_without_configured_auth_is_401() {
    let si = Standin::start(Config::default()).unwrap();
    let raw = Raw::new(&si.url(), default_headers(Some("k"), &[]).unwrap());
    let (s, v) = raw.status(Method::GET, "/v1/meta", None);
    assert_eq!(s, 401);
    assert_eq!(v["code"], 401);
    // Readiness needs no auth.
    assert_eq!(
        raw.status(Method::GET, "/v1/.well-known/ready", None).0,
        200
    );
}

#[test]
fn configured_key_needs_the_right_bearer() {
    let si = Standin::start(Config {
        api_key: Some("right".into()),
        ..Config::default()
    })
    .unwrap();
    let none = Raw::new(&si.url(), Default::default());
    let (s, v) = none.status(Method::GET, "/v1/meta", None);
    assert_eq!(s, 401);
    assert!(message(&v).contains("anonymous access not enabled"));
    let wrong = Raw::new(&si.url(), default_headers(Some("wrong"), &[]).unwrap());
    let (s, v) = wrong.status(Method::GET, "/v1/meta", None);
    assert_eq!(
        (s, message(&v).as_str()),
        (401, "unauthorized: invalid api key")
    );
    let right = Raw::new(&si.url(), default_headers(Some("right"), &[]).unwrap());
    let (s, v) = right.status(Method::GET, "/v1/meta", None);
    assert_eq!(s, 200);
    assert_eq!(v["version"], "1.39.0");
}

#[test]
fn dropped_connection_gives_no_reply_and_apply_then_drop_stores_anyway() {
    let (si, raw) = setup(Config::default());
    si.set_faults(Faults {
        p_drop: 1.0,
        ..Faults::default()
    });
    let body = json!({"objects": [obj(ID1, "a")]}).to_string();
    match raw.call(Method::POST, "/v1/batch/objects", Some(&body)) {
        Exchange::NoReply(TransportFailure::Dropped(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(si.dump().is_empty());
    si.set_faults(Faults {
        p_apply_drop: 1.0,
        ..Faults::default()
    });
    match raw.call(Method::POST, "/v1/batch/objects", Some(&body)) {
        Exchange::NoReply(TransportFailure::Dropped(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(si.dump().len(), 1, "stored although the reply was lost");
}

#[test]
fn injected_429_carries_retry_after_and_changes_nothing() {
    let (si, raw) = setup(Config {
        faults: Faults {
            p429: 1.0,
            retry_after_secs: 4,
            ..Faults::default()
        },
        ..Config::default()
    });
    let body = json!({"objects": [obj(ID1, "a")]}).to_string();
    match raw.call(Method::POST, "/v1/batch/objects", Some(&body)) {
        Exchange::Http {
            status, headers, ..
        } => {
            assert_eq!(status.as_u16(), 429);
            assert_eq!(headers.get("retry-after").unwrap(), "4");
        }
        other => panic!("{other:?}"),
    }
    assert!(si.dump().is_empty());
}

#[test]
fn object_listing_pages_with_the_after_cursor() {
    let (_si, raw) = setup(Config::default());
    batch(&raw, json!([obj(ID3, "c"), obj(ID1, "a"), obj(ID2, "b")]));
    let (s, v) = raw.status(Method::GET, "/v1/objects?class=Code&limit=2", None);
    assert_eq!(s, 200);
    let ids = object_ids(&v);
    assert_eq!(ids, vec![ID1, ID2]);
    let (_, v) = raw.status(
        Method::GET,
        &format!("/v1/objects?class=Code&limit=2&after={ID2}"),
        None,
    );
    assert_eq!(v["objects"][0]["id"], ID3);
    assert_eq!(v["objects"].as_array().unwrap().len(), 1);
    assert_eq!(
        raw.status(Method::GET, &format!("/v1/objects?after={ID2}"), None)
            .0,
        422
    );
}

#[test]
fn standin_binary_prints_its_url_and_serves_the_dump_endpoint() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weaviate-standin"))
        .args(["--port", "0", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stand-in");
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = child.stdout.take().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
    }
    let url = line.trim().to_string();
    let result = std::panic::catch_unwind(|| {
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let raw = Raw::new(&url, Default::default());
        raw.status(
            Method::POST,
            "/v1/schema",
            Some(r#"{"class":"Code","properties":[{"name":"path","dataType":["text"]},{"name":"repo","dataType":["text"]}]}"#),
        );
        batch(&raw, json!([obj(ID1, "a")]));
        match raw.call(Method::GET, "/__standin/objects", None) {
            Exchange::Http { body, .. } => {
                let text = String::from_utf8_lossy(&body);
                let v: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
                assert_eq!(v["id"], ID1);
                assert_eq!(v["path"], "a");
            }
            other => panic!("{other:?}"),
        }
        let (s, v) = raw.status(Method::PUT, "/__standin/faults", Some(r#"{"p429":0.5}"#));
        assert_eq!(s, 200);
        assert_eq!(v["p429"], 0.5);
        assert_eq!(
            raw.status(Method::PUT, "/__standin/faults", Some(r#"{"p4299":1}"#))
                .0,
            422
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn batch_log_names_the_ids_of_each_batch_request_and_its_fault_after_a_mark() {
    let (si, raw) = setup(Config {
        log_batches: true,
        ..Config::default()
    });
    let (s, _) = batch(&raw, json!([obj(ID1, "a"), obj(ID2, "b")]));
    assert_eq!(s, 200);
    let mark = si.mark();
    let body = json!({"match": {"class": "Code", "where": {"operator": "Or", "operands": [
        {"path": ["id"], "operator": "ContainsAny", "valueTextArray": [ID1, ID3]},
        {"path": ["_id"], "operator": "Equal", "valueText": ID2},
        {"path": ["path"], "operator": "Equal", "valueText": ID3}]}}});
    let (s, _) = raw.status(Method::DELETE, "/v1/batch/objects", Some(&body.to_string()));
    assert_eq!(s, 200);
    si.set_faults(Faults {
        p503: 1.0,
        ..Faults::default()
    });
    let (s, _) = batch(&raw, json!([obj(ID3, "c")]));
    assert_eq!(s, 503);

    let id = |s: &str| uuid::Uuid::parse_str(s).unwrap();
    let all = si.batches();
    assert_eq!(all.len(), 3);
    assert_eq!(
        (all[0].method.as_str(), &all[0].ids),
        ("POST", &vec![id(ID1), id(ID2)])
    );
    let since = si.batches_since(mark);
    assert_eq!(since.len(), 2);
    assert_eq!(since[0].method, "DELETE");
    // Only values compared with the id count, not those of a property.
    assert_eq!(since[0].ids, vec![id(ID1), id(ID3), id(ID2)]);
    assert_eq!(since[0].fault, "none");
    assert_eq!(
        (since[1].ids.clone(), since[1].fault.as_str()),
        (vec![id(ID3)], "503")
    );
    assert!(since.iter().all(|b| b.seq > mark));

    // The same log over HTTP, and reset clears it.
    si.set_faults(Faults::default());
    let (s, v) = raw.status(Method::GET, "/__standin/batches", None);
    assert_eq!(s, 200);
    let text = v.as_str().unwrap_or_default().to_string();
    assert_eq!(text.lines().count(), 3, "{v}");
    raw.status(Method::POST, "/__standin/reset", None);
    assert!(si.batches().is_empty());
}

/// The chunk class elysiactl declares: a vectorizer, `skip` on every
/// property but `content`, no class name in the vector.
/// A stand-in started with `cfg`, a raw client on it, and the [`chunk_class`].
fn chunk_setup(cfg: Config) -> (Standin, Raw) {
    let si = Standin::start(cfg).expect("stand-in");
    let raw = Raw::new(&si.url(), Default::default());
    chunk_class(&raw);
    (si, raw)
}

/// The ids of a listing's or a delete's `objects`, in order.
fn object_ids(v: &Value) -> Vec<&str> {
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect()
}

fn chunk_class(raw: &Raw) {
    let skip = json!({"text2vec-openai": {"skip": true}});
    let text = |n: &str| {
        json!({"name": n, "dataType": ["text"], "tokenization": "field",
        "moduleConfig": skip})
    };
    let int = |n: &str| json!({"name": n, "dataType": ["int"], "moduleConfig": skip});
    let class = json!({
        "class": "Chunk",
        "vectorizer": "text2vec-openai",
        "moduleConfig": {"text2vec-openai": {"model": "text-embedding-3-small",
            "vectorizeClassName": false}},
        "properties": [
            text("repo"), text("path"), text("contentSha256"),
            {"name": "content", "dataType": ["text"]},
            int("chunk"), int("chunkCount"), int("byteStart"), int("byteEnd"),
            int("startLine"), int("endLine"), int("size"),
        ],
    });
    let (s, v) = raw.status(Method::POST, "/v1/schema", Some(&class.to_string()));
    assert_eq!(s, 200, "{v}");
}

fn uuid(n: u64) -> String {
    format!("00000000-0000-0000-0000-{n:012x}")
}

fn chunk(n: u64, repo: &str, path: &str, chunk: Option<u64>, content: &str) -> Value {
    let mut props = json!({"repo": repo, "path": path, "content": content});
    if let Some(c) = chunk {
        props["chunk"] = json!(c);
    }
    json!({"class": "Chunk", "id": uuid(n), "properties": props})
}

fn item_message(item: &Value) -> &str {
    item["result"]["errors"]["error"][0]["message"]
        .as_str()
        .unwrap_or_default()
}

#[test]
fn token_estimate_counts_alnum_runs_by_four_bytes_and_every_other_visible_byte() {
    use support::standin::estimate_tokens;
    assert_eq!(estimate_tokens(""), 0);
    assert_eq!(estimate_tokens(" \t\n\r\n    "), 0, "whitespace is free");
    assert_eq!(estimate_tokens("main"), 1);
    assert_eq!(estimate_tokens("mains"), 2);
    assert_eq!(estimate_tokens("println"), 2);
    assert_eq!(estimate_tokens("fn main() {}"), 6);
    assert_eq!(estimate_tokens("a_b"), 3, "underscore splits the run");
    assert_eq!(estimate_tokens("é"), 2, "each byte of non-ASCII counts");
    assert_eq!(estimate_tokens(&"abcd ".repeat(120)), 120);
}

#[test]
fn vectorizer_limit_fails_too_long_objects_with_openais_message_and_stores_the_rest() {
    let (si, raw) = chunk_setup(Config {
        vectorizer_max_tokens: 100,
        ..Config::default()
    });
    let long = "abcd ".repeat(120); // 600 bytes, 120 tokens
    assert_eq!(long.len(), 600);
    // A long skipped property does not count: only `content` is vectorized.
    let long_path = "x".repeat(4000);
    let (s, v) = batch(
        &raw,
        json!([
            chunk(1, "R", "a.rs", Some(0), &long),
            chunk(2, "R", "a.rs", Some(1), "fn main() {}"),
            chunk(3, "R", &long_path, Some(0), "short"),
        ]),
    );
    assert_eq!(s, 200);
    let items = v.as_array().unwrap();
    assert_eq!(items[0]["result"]["status"], "FAILED", "{v}");
    assert_eq!(
        item_message(&items[0]),
        "update vector: connection to: OpenAI API failed with status: 400 error: \
         This model's maximum context length is 100 tokens, however you requested \
         120 tokens (120 in your prompt; 0 for the completion). Please reduce your \
         prompt; or completion length."
    );
    assert_eq!(
        item_message(&items[0]),
        support::standin::too_long_message(100, 120)
    );
    assert_eq!(items[1]["result"]["status"], "SUCCESS", "{v}");
    assert_eq!(items[2]["result"]["status"], "SUCCESS", "{v}");
    assert!(si.object("Chunk", uuid(1).parse().unwrap()).is_none());
    assert!(si.object("Chunk", uuid(2).parse().unwrap()).is_some());
    assert_eq!(si.dump().len(), 2);

    // A class without a vectorizer has no limit.
    let (s, _) = raw.status(
        Method::POST,
        "/v1/schema",
        Some(r#"{"class":"Plain","properties":[{"name":"content","dataType":["text"]}]}"#),
    );
    assert_eq!(s, 200);
    let (_, v) = batch(
        &raw,
        json!([{"class": "Plain", "id": ID1, "properties": {"content": long}}]),
    );
    assert_eq!(v[0]["result"]["status"], "SUCCESS", "{v}");

    // Off (the default): both are stored.
    let (si, raw) = chunk_setup(Config::default());
    let (_, v) = batch(
        &raw,
        json!([
            chunk(1, "R", "a.rs", Some(0), &long),
            chunk(2, "R", "a.rs", Some(1), "fn main() {}"),
        ]),
    );
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|i| i["result"]["status"] == "SUCCESS"),
        "{v}"
    );
    assert_eq!(si.dump().len(), 2);
}

fn delete_where(raw: &Raw, where_: Value, dry_run: bool) -> Value {
    let body = json!({"match": {"class": "Chunk", "where": where_}, "dryRun": dry_run,
        "output": "verbose"})
    .to_string();
    let (s, v) = raw.status(Method::DELETE, "/v1/batch/objects", Some(&body));
    assert_eq!(s, 200, "{v}");
    v
}

fn file_from(repo: &str, path: &str, op: &str, chunk: u64) -> Value {
    json!({"operator": "And", "operands": [
        {"path": ["repo"], "operator": "Equal", "valueText": repo},
        {"path": ["path"], "operator": "Equal", "valueText": path},
        {"path": ["chunk"], "operator": op, "valueInt": chunk},
    ]})
}

/// (repo, path, chunk) of every stored Chunk object, sorted.
fn chunks_left(si: &Standin) -> Vec<(String, String, Option<u64>)> {
    let mut out: Vec<_> = si
        .dump()
        .into_iter()
        .map(|d| {
            let props = si.object("Chunk", d.id).unwrap();
            (
                d.repo.unwrap(),
                d.path.unwrap(),
                props.get("chunk").and_then(Value::as_u64),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn batch_delete_with_int_range_filters_removes_the_tail_of_a_file() {
    let (si, raw) = chunk_setup(Config::default());
    let mut objs = Vec::new();
    for c in 0..6 {
        objs.push(chunk(c + 1, "R", "P", Some(c), "x"));
        objs.push(chunk(c + 11, "R", "Q", Some(c), "x"));
        objs.push(chunk(c + 21, "S", "P", Some(c), "x"));
    }
    objs.push(chunk(31, "R", "P", None, "no chunk property"));
    let (_, v) = batch(&raw, Value::Array(objs));
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["result"]["status"] == "SUCCESS"));
    let all = chunks_left(&si);
    assert_eq!(all.len(), 19);

    // dryRun reports the matches and deletes nothing.
    let v = delete_where(&raw, file_from("R", "P", "GreaterThanEqual", 2), true);
    assert_eq!(v["results"]["matches"], 4);
    assert_eq!(v["results"]["successful"], 0);
    assert_eq!(v["results"]["objects"][0]["status"], "DRYRUN");
    assert_eq!(chunks_left(&si), all);

    let v = delete_where(&raw, file_from("R", "P", "GreaterThanEqual", 2), false);
    assert_eq!(v["results"]["matches"], 4);
    assert_eq!(v["results"]["successful"], 4);
    let left = chunks_left(&si);
    let rp: Vec<Option<u64>> = left
        .iter()
        .filter(|(r, p, _)| r == "R" && p == "P")
        .map(|(_, _, c)| *c)
        .collect();
    assert_eq!(
        rp,
        vec![None, Some(0), Some(1)],
        "chunks 2..5 gone, a missing chunk never matches a range"
    );
    assert_eq!(left.len(), 15, "other files untouched");

    // An Or of two such Ands; the other operators.
    let v = delete_where(
        &raw,
        json!({"operator": "Or", "operands": [
            file_from("R", "Q", "GreaterThan", 3),
            file_from("S", "P", "LessThan", 2),
        ]}),
        false,
    );
    assert_eq!(v["results"]["successful"], 4, "{v}");
    let v = delete_where(&raw, file_from("S", "P", "LessThanEqual", 2), false);
    assert_eq!(v["results"]["successful"], 1, "{v}");
    let v = delete_where(
        &raw,
        json!({"path": ["chunk"], "operator": "GreaterThan", "valueNumber": 4.5}),
        true,
    );
    assert_eq!(v["results"]["matches"], 1, "S/P chunk 5: {v}");
    let left = chunks_left(&si);
    let want: Vec<(String, String, Option<u64>)> = [
        ("R", "P", None),
        ("R", "P", Some(0)),
        ("R", "P", Some(1)),
        ("R", "Q", Some(0)),
        ("R", "Q", Some(1)),
        ("R", "Q", Some(2)),
        ("R", "Q", Some(3)),
        ("S", "P", Some(3)),
        ("S", "P", Some(4)),
        ("S", "P", Some(5)),
    ]
    .into_iter()
    .map(|(r, p, c)| (r.to_string(), p.to_string(), c))
    .collect();
    assert_eq!(left, want);

    // A range on text, or a non-integer valueInt, is a bad filter: 422.
    for bad in [
        json!({"path": ["path"], "operator": "GreaterThan", "valueText": "P"}),
        json!({"path": ["chunk"], "operator": "GreaterThan", "valueInt": 1.5}),
        json!({"path": ["chunk"], "operator": "GreaterThan", "valueIntArray": [1]}),
    ] {
        let body = json!({"match": {"class": "Chunk", "where": bad}}).to_string();
        let (s, v) = raw.status(Method::DELETE, "/v1/batch/objects", Some(&body));
        assert_eq!(s, 422, "{bad}: {v}");
    }
}

#[test]
fn range_delete_keeps_the_per_call_limit() {
    let (si, raw) = chunk_setup(Config {
        delete_limit: 3,
        ..Config::default()
    });
    let objs: Vec<Value> = (0..6)
        .map(|c| chunk(c + 1, "R", "P", Some(c), "x"))
        .collect();
    batch(&raw, Value::Array(objs));
    let f = file_from("R", "P", "GreaterThanEqual", 1);
    let v = delete_where(&raw, f.clone(), false);
    let r = &v["results"];
    assert_eq!(
        (r["matches"].as_u64(), r["limit"].as_u64()),
        (Some(5), Some(3))
    );
    assert_eq!(r["successful"], 3);
    // In UUID order: chunks 1, 2, 3 go first.
    let ids = object_ids(r);
    assert_eq!(ids, vec![uuid(2), uuid(3), uuid(4)]);
    let v = delete_where(&raw, f.clone(), false);
    assert_eq!(v["results"]["matches"], 2);
    let v = delete_where(&raw, f, false);
    assert_eq!(v["results"]["matches"], 0);
    assert_eq!(chunks_left(&si).len(), 1);
}

#[test]
fn an_int_property_added_later_is_accepted_and_undeclared_ones_still_refused() {
    let (si, raw) = setup(Config::default());
    let (s, v) = raw.status(
        Method::POST,
        "/v1/schema/Code/properties",
        Some(r#"{"name":"chunkCount","dataType":["int"]}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "chunkCount");
    let declared = si.class("Code").unwrap()["properties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "chunkCount" && p["dataType"] == json!(["int"]));
    assert!(declared);
    let (s, _) = raw.status(
        Method::POST,
        "/v1/schema/Code/properties",
        Some(r#"{"name":"chunkCount","dataType":["int"]}"#),
    );
    assert_eq!(s, 422, "a second time");
    let (s, v) = batch(
        &raw,
        json!([
            {"class": "Code", "id": ID1, "properties": {"path": "a", "chunkCount": 3}},
            {"class": "Code", "id": ID2, "properties": {"path": "b", "startLine": 1}},
            {"class": "Code", "id": ID3, "properties": {"path": "c", "chunkCount": "3"}},
        ]),
    );
    assert_eq!(s, 200);
    let items = v.as_array().unwrap();
    assert_eq!(items[0]["result"]["status"], "SUCCESS", "{v}");
    assert!(
        item_message(&items[1]).contains("no such prop with name 'startLine'"),
        "{v}"
    );
    assert!(
        item_message(&items[2]).contains("invalid integer property"),
        "{v}"
    );
    assert_eq!(si.dump().len(), 1);
    assert!(
        si.class("Code").unwrap()["properties"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "startLine"),
        "no auto-schema"
    );
}

#[test]
fn listed_objects_carry_int_properties_as_json_integers() {
    let (_si, raw) = chunk_setup(Config::default());
    let mut o = chunk(1, "R", "P", Some(2), "x");
    o["properties"]["chunkCount"] = json!(6);
    o["properties"]["byteStart"] = json!(4096.0); // a whole float is an int
    o["properties"]["size"] = json!(0);
    let (_, v) = batch(&raw, json!([o]));
    assert_eq!(v[0]["result"]["status"], "SUCCESS", "{v}");
    let (s, v) = raw.status(Method::GET, "/v1/objects?class=Chunk&limit=10", None);
    assert_eq!(s, 200);
    let props = &v["objects"][0]["properties"];
    for (k, want) in [
        ("chunk", 2),
        ("chunkCount", 6),
        ("byteStart", 4096),
        ("size", 0),
    ] {
        assert!(props[k].is_u64(), "{k}: {props}");
        assert_eq!(props[k].as_u64(), Some(want), "{k}");
    }
    assert_eq!(props["repo"], "R");
    let (_, one) = raw.status(Method::GET, &format!("/v1/objects/Chunk/{}", uuid(1)), None);
    assert_eq!(&one["properties"], props);
}

#[test]
fn held_batch_deletes_wait_unapplied_until_released_then_apply_or_drop() {
    let (si, raw) = setup(Config::default());
    batch(&raw, json!([obj(ID1, "a"), obj(ID2, "b")]));
    let delete = |id: &'static str| {
        let url = si.url();
        std::thread::spawn(move || {
            let raw = Raw::new(&url, Default::default());
            let body = json!({"match": {"class": "Code", "where": {"path": ["id"],
                "operator": "Equal", "valueText": id}}})
            .to_string();
            raw.call(Method::DELETE, "/v1/batch/objects", Some(&body))
        })
    };
    let wait_held = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while si.held_deletes() != n {
            assert!(std::time::Instant::now() < deadline, "never {n} held");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };

    si.hold_deletes();
    let applied = delete(ID1);
    wait_held(1);
    // Held: neither applied nor answered; upserts still go through.
    assert_eq!(si.dump().len(), 2);
    assert_eq!(batch(&raw, json!([obj(ID3, "c")])).0, 200);
    assert!(!applied.is_finished());
    si.release_deletes(Release::Apply);
    match applied.join().unwrap() {
        Exchange::Http { status, .. } => assert_eq!(status.as_u16(), 200),
        other => panic!("{other:?}"),
    }
    wait_held(0);
    let left: Vec<_> = si.dump().into_iter().filter_map(|d| d.path).collect();
    assert_eq!(left, vec!["b".to_string(), "c".to_string()]);

    si.hold_deletes();
    let dropped = delete(ID2);
    wait_held(1);
    si.release_deletes(Release::Drop);
    match dropped.join().unwrap() {
        Exchange::NoReply(TransportFailure::Dropped(_)) => {}
        other => panic!("{other:?}"),
    }
    wait_held(0);
    assert_eq!(si.dump().len(), 2, "a dropped delete applies nothing");
    // The hold is lifted: the next delete is served at once.
    assert!(matches!(delete(ID2).join().unwrap(), Exchange::Http { .. }));
    assert_eq!(si.dump().len(), 1);
}

#[test]
fn a_slow_vectorizer_takes_its_time_per_object_and_still_stores_them() {
    let (si, raw) = setup(Config::default());
    si.set_faults(Faults {
        vectorizer_us_per_object: 4_000,
        ..Faults::default()
    });
    let objects: Vec<Value> = (1..=25)
        .map(|n| {
            obj(
                &format!("00000000-0000-0000-0000-{n:012}"),
                &format!("f{n}"),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let (s, v) = batch(&raw, Value::Array(objects));
    // 25 objects × 4 ms: never answered sooner than 100 ms.
    let took = started.elapsed();
    assert_eq!(s, 200, "{v}");
    assert!(
        took >= std::time::Duration::from_millis(100),
        "answered in {took:?}"
    );
    assert_eq!(si.dump().len(), 25);
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["result"]["status"] == "SUCCESS"));
}
