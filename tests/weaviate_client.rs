//! The Weaviate target against the in-process stand-in: wire shapes, auth,
//! schema creation, delete repetition, listing, and convergence under every
//! injected fault.

#[path = "weaviate_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use elysiactl::target::weaviate::{WeaviateConfig, WeaviateTarget};
use elysiactl::target::{object_id, Error, Op, OpOutcome, Target};
use support::standin::{Config, Faults, Standin};
use support::{config, del, doc, target};
use uuid::Uuid;

const C: &str = "SRC_ENTERPRISE__";

fn standin(cfg: Config) -> Standin {
    Standin::start(cfg).expect("stand-in starts")
}

/// A stand-in injecting `faults`, seeded `seed`, not recording requests.
fn faulty(faults: Faults, seed: u64) -> Standin {
    standin(Config {
        faults,
        seed,
        record: false,
        ..Config::default()
    })
}

/// A target on `si`'s collection [`C`], prepared.
fn prepared(si: &Standin) -> WeaviateTarget {
    let t = target(&si.url(), C);
    t.prepare().unwrap();
    t
}

/// Upserts of `R/f0` … `R/f{n-1}`.
fn upserts(n: usize) -> Vec<Op> {
    (0..n)
        .map(|i| Op::Upsert(doc("R", &format!("f{i}"), 1)))
        .collect()
}

/// The sync loop in miniature: retry retryable errors and retryable failed
/// ops (honouring Retry-After), up to `max` attempts; panic on anything
/// permanent.
fn apply_with_retries(t: &WeaviateTarget, ops: &[Op], max: usize) {
    let mut pending: Vec<Op> = ops.to_vec();
    for _ in 0..max {
        match t.apply(&pending) {
            Ok(outcomes) => {
                assert_eq!(outcomes.len(), pending.len());
                let mut next = Vec::new();
                for (op, o) in pending.iter().zip(outcomes) {
                    match o {
                        OpOutcome::Ok => {}
                        OpOutcome::Failed {
                            retryable: true, ..
                        } => next.push(op.clone()),
                        OpOutcome::Failed { message, .. } => {
                            panic!("permanent failure for {}: {message}", op.path())
                        }
                    }
                }
                if next.is_empty() {
                    return;
                }
                pending = next;
            }
            Err(e) if e.is_retryable() => {
                std::thread::sleep(e.retry_after().unwrap_or(Duration::from_millis(1)));
            }
            Err(e) => panic!("permanent batch error: {e}"),
        }
    }
    panic!("{} ops still failing after {max} attempts", pending.len());
}

/// Expected contents after a workload: id → (repo, path, sha).
type Model = BTreeMap<Uuid, (String, String, String)>;

fn apply_to_model(model: &mut Model, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Upsert(d) => {
                model.insert(
                    d.id,
                    (d.repo.clone(), d.path.clone(), d.content_sha256.clone()),
                );
            }
            Op::Delete { id, .. } => {
                model.remove(id);
            }
        }
    }
}

/// Rounds of batches; batches within a round touch disjoint ids and run on
/// 4 threads at once, rounds run in order. About 3,000 ops.
fn workload() -> Vec<Vec<Vec<Op>>> {
    let repo = |i: usize| format!("Service{}", i % 3);
    let path = |i: usize| format!("src/mod{}/file{i}.rs", i % 17);
    let mut rounds = Vec::new();
    // 1: create 1,500 files.
    let r1: Vec<Op> = (0..1500)
        .map(|i| Op::Upsert(doc(&repo(i), &path(i), 1)))
        .collect();
    rounds.push(r1);
    // 2: update 0..500, delete 500..900, and in-batch sequences on 900..1000.
    let mut r2 = Vec::new();
    for i in 0..1000 {
        let (r, p) = (repo(i), path(i));
        match i {
            0..500 => r2.push(Op::Upsert(doc(&r, &p, 2))),
            500..900 => r2.push(del(&r, &p)),
            900..950 => {
                // upsert then delete in one batch: must end deleted
                r2.push(Op::Upsert(doc(&r, &p, 3)));
                r2.push(del(&r, &p));
            }
            _ => {
                // delete then upsert twice: must end with the last content
                r2.push(del(&r, &p));
                r2.push(Op::Upsert(doc(&r, &p, 4)));
                r2.push(Op::Upsert(doc(&r, &p, 5)));
            }
        }
    }
    rounds.push(r2);
    // 3: deletes of absent files and 300 new ones.
    let mut r3: Vec<Op> = (500..700).map(|i| del(&repo(i), &path(i))).collect();
    r3.extend((1500..1800).map(|i| Op::Upsert(doc(&repo(i), &path(i), 1))));
    rounds.push(r3);
    // Cut into batches of ~100 that never split one id's ops across batches.
    rounds
        .into_iter()
        .map(|ops| {
            let mut batches: Vec<Vec<Op>> = Vec::new();
            let mut cur: Vec<Op> = Vec::new();
            for op in ops {
                if cur.len() >= 100 && cur.last().map(Op::id) != Some(op.id()) {
                    batches.push(std::mem::take(&mut cur));
                }
                cur.push(op);
            }
            batches.push(cur);
            batches
        })
        .collect()
}

fn run_workload(t: &WeaviateTarget) -> Model {
    let mut model = Model::new();
    for round in workload() {
        let queue = Mutex::new(round.iter().collect::<Vec<_>>());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| loop {
                    let next = queue.lock().unwrap().pop();
                    match next {
                        Some(batch) => apply_with_retries(t, batch, 60),
                        None => break,
                    }
                });
            }
        });
        for batch in &round {
            apply_to_model(&mut model, batch);
        }
    }
    model
}

fn assert_contents_equal(si: &Standin, model: &Model) {
    for d in si.dump() {
        assert_eq!(d.class, C);
    }
    support::e2e::assert_index_equals(si, model, "contents");
}

/// Run the workload under `faults`; the index must end exact, and each of
/// `kinds` must have been injected at least `min_each` times.
fn converges_under(faults: Faults, kinds: &[&str], min_each: u64) {
    let si = faulty(faults, 42);
    let t = target(&si.url(), C);
    t.prepare().expect("prepare");
    let model = run_workload(&t);
    assert_contents_equal(&si, &model);
    let stats = si.stats();
    for kind in kinds {
        let injected = stats.injected.get(*kind).copied().unwrap_or(0);
        assert!(
            injected >= min_each,
            "fault {kind} injected only {injected} times: {stats:?}"
        );
    }
}

#[test]
fn converges_to_exact_contents_under_429_with_retry_after() {
    converges_under(
        Faults {
            p429: 0.2,
            retry_after_secs: 0,
            ..Faults::default()
        },
        &["429"],
        5,
    );
}

#[test]
fn converges_to_exact_contents_under_500_and_503() {
    converges_under(
        Faults {
            p500: 0.15,
            p503: 0.15,
            ..Faults::default()
        },
        &["503"],
        5,
    );
}

#[test]
fn converges_to_exact_contents_when_connections_drop_before_processing() {
    converges_under(
        Faults {
            p_drop: 0.2,
            ..Faults::default()
        },
        &["drop"],
        5,
    );
}

#[test]
fn converges_to_exact_contents_when_applied_requests_lose_their_reply() {
    converges_under(
        Faults {
            p_apply_drop: 0.2,
            ..Faults::default()
        },
        &["apply_then_drop"],
        5,
    );
}

#[test]
fn converges_to_exact_contents_under_per_object_rate_limit_failures() {
    converges_under(
        Faults {
            p_object_fail: 0.15,
            ..Faults::default()
        },
        &["object_fail"],
        5,
    );
}

#[test]
fn converges_to_exact_contents_with_out_of_order_completion_and_all_faults() {
    converges_under(
        Faults {
            latency_ms: 1,
            jitter_ms: 15,
            p429: 0.1,
            p500: 0.1,
            p503: 0.1,
            p_drop: 0.1,
            p_apply_drop: 0.1,
            p_object_fail: 0.1,
            retry_after_secs: 0,
            all_endpoints: false,
            // Not the permanent or echoing kinds: the run must converge.
            ..Faults::default()
        },
        // apply_then_drop is drawn last (after drop, 429, 500, 503), so at
        // 10 % each it hits ~6.6 % of ~120 requests: "at least 5" failed
        // about one run in ten. Every kind must show up.
        support::TRANSIENT_FAULTS,
        1,
    );
}

#[test]
fn without_retries_faults_do_lose_writes() {
    // The convergence tests are meaningful only if a single attempt is not
    // enough: one pass with no retries must leave the index wrong.
    let faults = Faults {
        p_drop: 0.3,
        ..Faults::default()
    };
    let si = faulty(faults, 7);
    let t = prepared(&si);
    let ops = upserts(500);
    for batch in ops.chunks(50) {
        let _ = t.apply(batch);
    }
    assert!(si.dump().len() < 500);
}

#[test]
fn injected_429_reports_the_servers_retry_after() {
    let faults = Faults {
        p429: 1.0,
        retry_after_secs: 3,
        ..Faults::default()
    };
    let si = faulty(faults, 1);
    let t = prepared(&si);
    let e = t.apply(&[Op::Upsert(doc("R", "a", 1))]).unwrap_err();
    assert!(matches!(e, Error::Transient { .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
}

#[test]
fn request_timeout_is_transient() {
    let faults = Faults {
        latency_ms: 2000,
        ..Faults::default()
    };
    let si = faulty(faults, 1);
    let mut cfg = config(&si.url(), C);
    cfg.timeout = Duration::from_millis(300);
    let t = WeaviateTarget::new(cfg).unwrap();
    t.prepare().unwrap();
    let e = t.apply(&[Op::Upsert(doc("R", "a", 1))]).unwrap_err();
    assert!(matches!(e, Error::Transient { .. }), "{e:?}");
}

#[test]
fn every_request_body_matches_the_openapi_schema() {
    let spec = support::openapi::Spec::load();
    let si = standin(Config {
        delete_limit: 2,
        ..Config::default()
    });
    // A class missing most properties makes the client add them one by one.
    let raw = support::Raw::new(&si.url(), Default::default());
    let (s, _) = raw.status(
        reqwest::Method::POST,
        "/v1/schema",
        Some(r#"{"class":"Partial","properties":[{"name":"path","dataType":["text"]}]}"#),
    );
    assert_eq!(s, 200);
    for (coll, vectorizer) in [("Partial", None), (C, Some("text2vec-openai"))] {
        let mut cfg = config(&si.url(), coll);
        cfg.vectorizer = vectorizer.map(str::to_string);
        let t = WeaviateTarget::new(cfg).unwrap();
        t.prepare().unwrap();
        let mut ops: Vec<Op> = (0..6)
            .map(|i| Op::Upsert(doc("R", &format!("p/{i}.rs"), 1)))
            .collect();
        ops.push(del("R", "p/1.rs"));
        ops.push(Op::Upsert(doc("R", "p/2.rs", 2)));
        apply_with_retries(&t, &ops, 3);
        apply_with_retries(
            &t,
            &(0..6)
                .map(|i| del("R", &format!("p/{i}.rs")))
                .collect::<Vec<_>>(),
            3,
        );
        t.list_repo("R").unwrap();
    }
    let requests = si.requests();
    let mut bodies = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for r in &requests {
        if let Some(kind) = spec.assert_request_conforms(&r.method, &r.path, &r.body) {
            bodies += 1;
            kinds.insert(kind);
        }
    }
    let want = [
        "DELETE /batch/objects",
        "POST /batch/objects",
        "POST /schema",
        "POST /schema/{className}/properties",
    ];
    for k in want {
        assert!(kinds.contains(k), "no {k} request was validated: {kinds:?}");
    }
    assert!(bodies >= 8);
}

#[test]
fn openapi_validator_rejects_malformed_bodies() {
    let spec = support::openapi::Spec::load();
    let batch = spec.body_schema("POST", "/v1/batch/objects").unwrap();
    let good = serde_json::json!({"objects":[{"class":"C","id":"850e44aa-fe73-571b-a991-2a849c0a5c11","properties":{"a":1}}]});
    assert!(spec.validate(&batch, &good).is_empty());
    for bad in [
        serde_json::json!({"objects":[{"class":"C","id":"nope"}]}),
        serde_json::json!({"objects":{"class":"C"}}),
        serde_json::json!({"objects":[{"klass":"C"}]}),
        serde_json::json!({"objects":[{"class":"C","vector":["x"]}]}),
        serde_json::json!({"fields":["EVERYTHING"],"objects":[]}),
    ] {
        assert!(!spec.validate(&batch, &bad).is_empty(), "accepted {bad}");
    }
    let delete = spec.body_schema("DELETE", "/v1/batch/objects").unwrap();
    let bad = serde_json::json!({"match":{"class":"C","where":{"path":["id"],"operator":"In","valueTextArray":["a"]}}});
    assert!(!spec.validate(&delete, &bad).is_empty());
    let class = spec.body_schema("POST", "/v1/schema").unwrap();
    let bad = serde_json::json!({"class":"C","properties":[{"name":"p","dataType":"text"}]});
    assert!(!spec.validate(&class, &bad).is_empty());
}

#[test]
fn prepare_creates_the_collection_with_declared_field_tokenized_properties() {
    let si = standin(Config::default());
    let t = prepared(&si);
    let class = si.class(C).expect("class created");
    assert_eq!(class["vectorizer"], "none");
    let props = class["properties"].as_array().unwrap();
    let find = |n: &str| props.iter().find(|p| p["name"] == n).cloned().unwrap();
    assert_eq!(find("path")["tokenization"], "field");
    assert_eq!(find("repo")["tokenization"], "field");
    assert_eq!(find("contentSha256")["tokenization"], "field");
    assert_eq!(find("content")["dataType"][0], "text");
    assert_eq!(find("size")["dataType"][0], "int");
    // Idempotent, and two racing targets both succeed.
    t.prepare().unwrap();
    let si2 = standin(Config::default());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| target(&si2.url(), C).prepare().unwrap());
        }
    });
    assert!(si2.class(C).is_some());
}

#[test]
fn objects_are_stored_with_all_properties() {
    let si = standin(Config::default());
    let t = prepared(&si);
    let d = doc("ServiceA", "src/main.py", 1);
    assert_eq!(
        t.apply(&[Op::Upsert(d.clone())]).unwrap(),
        vec![OpOutcome::Ok]
    );
    let p = si.object(C, object_id("ServiceA", "src/main.py")).unwrap();
    assert_eq!(p["repo"], "ServiceA");
    assert_eq!(p["path"], "src/main.py");
    assert_eq!(p["content"], d.chunks[0].content.as_str());
    assert_eq!(p["contentSha256"], d.content_sha256.as_str());
    assert_eq!(p["size"], d.size);
}

#[test]
fn upsert_then_delete_in_one_batch_ends_deleted_and_both_report_ok() {
    let si = standin(Config::default());
    let t = prepared(&si);
    let ops = vec![
        Op::Upsert(doc("R", "a", 1)),
        del("R", "a"),
        del("R", "b"),
        Op::Upsert(doc("R", "b", 2)),
    ];
    assert_eq!(t.apply(&ops).unwrap(), vec![OpOutcome::Ok; 4]);
    let dump = si.dump();
    assert_eq!(dump.len(), 1);
    assert_eq!(dump[0].path.as_deref(), Some("b"));
}

#[test]
fn deletes_repeat_until_the_server_limit_no_longer_truncates() {
    let si = standin(Config {
        delete_limit: 3,
        ..Config::default()
    });
    let t = prepared(&si);
    let ups = upserts(10);
    t.apply(&ups).unwrap();
    si.clear_requests();
    let dels: Vec<Op> = (0..10).map(|i| del("R", &format!("f{i}"))).collect();
    let out = t.apply(&dels).unwrap();
    assert!(out.iter().all(OpOutcome::is_ok));
    assert!(si.dump().is_empty(), "left: {:?}", si.dump());
    let calls = si
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert_eq!(calls, 4, "10 objects at 3 per call");
}

#[test]
fn list_repo_pages_through_every_object_of_that_repo_only() {
    let si = standin(Config {
        record: false,
        ..Config::default()
    });
    let t = prepared(&si);
    let ops: Vec<Op> = (0..2300)
        .map(|i| {
            Op::Upsert(doc(
                if i % 2 == 0 { "A" } else { "B" },
                &format!("d/{i}"),
                1,
            ))
        })
        .collect();
    for b in ops.chunks(500) {
        apply_with_retries(&t, b, 3);
    }
    let mut want: Vec<String> = (0..2300).step_by(2).map(|i| format!("d/{i}")).collect();
    want.sort();
    assert_eq!(t.list_repo("A").unwrap(), want);
    assert!(t.list_repo("Nope").unwrap().is_empty());
}

#[test]
fn bearer_header_is_sent_only_when_an_api_key_is_set() {
    let key = "wv-key-SECRET-1234";
    let si = standin(Config {
        api_key: Some(key.into()),
        ..Config::default()
    });
    let mut cfg = config(&si.url(), C);
    cfg.api_key = Some(key.into());
    let t = WeaviateTarget::new(cfg).unwrap();
    t.prepare().unwrap();
    assert!(t.apply(&[Op::Upsert(doc("R", "a", 1))]).unwrap()[0].is_ok());
    let reqs = si.requests();
    assert!(reqs.len() >= 3);
    for r in &reqs {
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer wv-key-SECRET-1234"),
            "{}",
            r.path
        );
    }

    let open = standin(Config::default());
    let t = target(&open.url(), C);
    t.prepare().unwrap();
    t.apply(&[Op::Upsert(doc("R", "a", 1))]).unwrap();
    for r in open.requests() {
        assert!(r.authorization.is_none(), "{} sent Authorization", r.path);
        assert!(!r.headers.iter().any(|(k, _)| k == "authorization"));
    }
}

#[test]
fn provider_keys_are_sent_as_headers() {
    let si = standin(Config::default());
    let cfg = WeaviateConfig::from_lookup(
        si.url(),
        C.into(),
        Some("text2vec-openai".into()),
        Duration::from_secs(5),
        2,
        |k| (k == "OPENAI_APIKEY").then(|| "sk-SECRET-openai".to_string()),
    );
    let t = WeaviateTarget::new(cfg).unwrap();
    t.prepare().unwrap();
    t.apply(&[Op::Upsert(doc("R", "a", 1))]).unwrap();
    let batch = si
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/v1/batch/objects"))
        .unwrap();
    assert!(batch
        .headers
        .iter()
        .any(|(k, v)| k == "x-openai-api-key" && v == "sk-SECRET-openai"));
}

#[test]
fn auth_failures_never_reveal_the_key() {
    let key = "wv-key-SECRET-5678";
    // No auth configured on the server: any Authorization header is a 401.
    let si = standin(Config::default());
    let mut cfg = config(&si.url(), C);
    cfg.api_key = Some(key.into());
    cfg.headers = vec![("X-Cohere-Api-Key".into(), "co-SECRET-9".into())];
    let shown = format!("{cfg:?}");
    let t = WeaviateTarget::new(cfg).unwrap();
    let e = t.prepare().unwrap_err();
    assert!(matches!(e, Error::Fatal { .. }), "{e:?}");
    let e2 = t.apply(&[Op::Upsert(doc("R", "a", 1))]).unwrap_err();
    // Authentication refused ends the run (SPEC: a permanent refusal of
    // the target is fatal under every --on-error).
    assert!(matches!(e2, Error::Fatal { .. }), "{e2:?}");
    // Wrong key.
    let locked = standin(Config {
        api_key: Some("other".into()),
        ..Config::default()
    });
    let mut cfg = config(&locked.url(), C);
    cfg.api_key = Some(key.into());
    let e3 = WeaviateTarget::new(cfg).unwrap().prepare().unwrap_err();
    assert!(e3.to_string().contains("invalid api key"), "{e3}");
    for text in [
        shown,
        e.to_string(),
        format!("{e:?}"),
        e2.to_string(),
        format!("{e2:?}"),
        e3.to_string(),
        format!("{e3:?}"),
        format!("{t:?}"),
        t.describe(),
    ] {
        assert!(!text.contains("SECRET"), "secret leaked: {text}");
    }
}

#[test]
fn unreachable_url_is_reported_as_unreachable_naming_the_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut cfg = config(&url, C);
    cfg.api_key = Some("SECRET-key".into());
    let t = WeaviateTarget::new(cfg).unwrap();
    for e in [
        t.prepare().unwrap_err(),
        t.apply(&[Op::Upsert(doc("R", "a", 1))]).unwrap_err(),
        t.list_repo("R").unwrap_err(),
    ] {
        assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&url), "{msg}");
        assert!(!msg.contains("SECRET"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        assert!(e.is_retryable() && e.is_fatal());
    }
}
