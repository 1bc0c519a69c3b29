//! Request bodies, exactly as openapi.json shapes them, and the reduction of
//! a batch to one final op per object id.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::object::ChunkObject;
use crate::target::{Document, Op};

/// Body of `POST /v1/batch/objects`. No `fields` (the server ignores it), no
/// vectors (the collection's vectorizer makes them).
#[derive(Debug, Serialize)]
pub struct BatchObjects<'a> {
    pub objects: Vec<WireObject<'a>>,
}

#[derive(Debug, Serialize)]
pub struct WireObject<'a> {
    pub class: &'a str,
    pub id: Uuid,
    /// Every property of SPEC's Objects section (see [`ChunkObject`]).
    pub properties: &'a ChunkObject,
}

impl<'a> WireObject<'a> {
    pub fn new(class: &'a str, c: &'a ChunkObject) -> Self {
        WireObject {
            class,
            id: c.id,
            properties: c,
        }
    }
}

fn text_equal(property: &str, value: &str) -> Value {
    json!({"path": [property], "operator": "Equal", "valueText": value})
}

/// Every object of `repo`/`path`: all its chunks, and a whole-file object
/// from before chunked objects.
pub fn file_filter(repo: &str, path: &str) -> Value {
    json!({"operator": "And", "operands": [text_equal("repo", repo), text_equal("path", path)]})
}

/// Every object of `repo`/`path` but its current chunks `keep`: what an
/// earlier, longer version left beyond the new count, and any copy another
/// client wrote under another id.
pub fn surplus_filter(repo: &str, path: &str, keep: &[Uuid]) -> Value {
    let keep: Vec<String> = keep.iter().map(Uuid::to_string).collect();
    json!({"operator": "And", "operands": [
        text_equal("repo", repo),
        text_equal("path", path),
        {"path": ["id"], "operator": "ContainsNone", "valueTextArray": keep},
    ]})
}

/// Body of `DELETE /v1/batch/objects` removing from `class` every object
/// any of `filters` matches (at least one filter).
pub fn batch_delete_where(class: &str, mut filters: Vec<Value>) -> Value {
    let filter = if filters.len() == 1 {
        filters.remove(0)
    } else {
        json!({"operator": "Or", "operands": filters})
    };
    json!({
        "match": {"class": class, "where": filter},
        "output": "verbose",
        "dryRun": false,
    })
}

/// A batch reduced to the last op of each id, split by kind.
///
/// Weaviate writes only the last of duplicate ids in one request, and an
/// upsert followed by a delete of the same id must end deleted; after the
/// reduction upserts and deletes touch disjoint ids, so they may be sent as
/// two independent requests.
#[derive(Debug)]
pub struct Reduced<'a> {
    pub upserts: Vec<&'a Document>,
    /// Files to remove: (key, repo, path).
    pub deletes: Vec<(Uuid, &'a str, &'a str)>,
}

pub fn reduce(ops: &[Op]) -> Reduced<'_> {
    let mut last: HashMap<Uuid, usize> = HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        last.insert(op.id(), i);
    }
    let mut out = Reduced {
        upserts: Vec::new(),
        deletes: Vec::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        if last.get(&op.id()) != Some(&i) {
            continue;
        }
        match op {
            Op::Upsert(d) => out.upserts.push(d),
            Op::Delete { id, repo, path } => out.deletes.push((*id, repo, path)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::object_id;

    fn doc(path: &str, content: &str) -> Document {
        crate::source::document("R", path, content.as_bytes())
    }

    fn del(path: &str) -> Op {
        Op::Delete {
            id: object_id("R", path),
            repo: "R".into(),
            path: path.into(),
        }
    }

    #[test]
    fn upsert_then_delete_of_one_id_reduces_to_the_delete() {
        let ops = vec![
            Op::Upsert(doc("a", "1")),
            del("a"),
            Op::Upsert(doc("b", "1")),
        ];
        let r = reduce(&ops);
        assert_eq!(r.deletes, vec![(object_id("R", "a"), "R", "a")]);
        assert_eq!(r.upserts.len(), 1);
        assert_eq!(r.upserts[0].path, "b");
    }

    #[test]
    fn duplicate_upserts_keep_only_the_last_content() {
        let ops = vec![
            Op::Upsert(doc("a", "old")),
            del("a"),
            Op::Upsert(doc("a", "new")),
        ];
        let r = reduce(&ops);
        assert!(r.deletes.is_empty());
        assert_eq!(r.upserts.len(), 1);
        assert_eq!(r.upserts[0].chunks[0].content, "new");
    }

    #[test]
    fn wire_object_uses_camel_case_properties_and_no_vector() {
        let d = doc("src/a.rs", "x");
        let v = serde_json::to_value(WireObject::new("C", &d.chunks[0])).unwrap();
        assert_eq!(v["properties"]["contentSha256"], d.content_sha256.as_str());
        assert_eq!(v["properties"]["size"], 1);
        assert_eq!(v["properties"]["chunk"], 0);
        assert_eq!(v["properties"]["chunkCount"], 1);
        assert_eq!(v["properties"]["byteEnd"], 1);
        assert_eq!(v["properties"]["endLine"], 1);
        assert!(v.get("vector").is_none());
        assert!(
            v["properties"].get("id").is_none(),
            "the id is not a property"
        );
        assert_eq!(v["id"], d.id.to_string());
    }

    #[test]
    fn surplus_filter_matches_chunks_from_the_new_count_of_one_file() {
        let keep = [object_id("R", "a.rs")];
        let body = batch_delete_where("C", vec![surplus_filter("R", "a.rs", &keep)]);
        let w = &body["match"]["where"];
        assert_eq!(w["operator"], "And");
        assert_eq!(w["operands"][2]["operator"], "ContainsNone");
        assert_eq!(w["operands"][2]["valueTextArray"][0], keep[0].to_string());
        let two = batch_delete_where("C", vec![file_filter("R", "a"), file_filter("R", "b")]);
        assert_eq!(two["match"]["where"]["operator"], "Or");
        assert_eq!(
            two["match"]["where"]["operands"].as_array().unwrap().len(),
            2
        );
    }
}
