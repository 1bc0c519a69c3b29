//! The stand-in answers as CONTRACT.md says real Weaviate does, so tests run
//! against it mean something.

#[path = "weaviate_support/mod.rs"]
mod support;

use std::process::{Command, Stdio};

use elysiactl::target::weaviate::classify::TransportFailure;
use elysiactl::target::weaviate::client::{default_headers, Exchange};
use reqwest::Method;
use serde_json::{json, Value};
use support::standin::{Config, Faults, Standin};
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
    let ids: Vec<&str> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
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
