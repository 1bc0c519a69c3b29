//! Request bodies, exactly as openapi.json shapes them, and the reduction of
//! a batch to one final op per object id.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

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
    pub properties: WireProperties<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireProperties<'a> {
    pub repo: &'a str,
    pub path: &'a str,
    pub content: &'a str,
    pub content_sha256: &'a str,
    pub size: u64,
}

impl<'a> WireObject<'a> {
    pub fn new(class: &'a str, d: &'a Document) -> Self {
        WireObject {
            class,
            id: d.id,
            properties: WireProperties {
                repo: &d.repo,
                path: &d.path,
                content: &d.content,
                content_sha256: &d.content_sha256,
                size: d.size,
            },
        }
    }
}

/// Body of `DELETE /v1/batch/objects` removing `ids` from `class`.
pub fn batch_delete(class: &str, ids: &[Uuid]) -> Value {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    json!({
        "match": {
            "class": class,
            "where": {"path": ["id"], "operator": "ContainsAny", "valueTextArray": ids},
        },
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
    pub deletes: Vec<Uuid>,
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
            Op::Delete { id, .. } => out.deletes.push(*id),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::object_id;

    fn doc(path: &str, content: &str) -> Document {
        Document {
            id: object_id("R", path),
            repo: "R".into(),
            path: path.into(),
            content: content.into(),
            content_sha256: "00".into(),
            size: content.len() as u64,
        }
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
        assert_eq!(r.deletes, vec![object_id("R", "a")]);
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
        assert_eq!(r.upserts[0].content, "new");
    }

    #[test]
    fn wire_object_uses_camel_case_properties_and_no_vector() {
        let d = doc("src/a.rs", "x");
        let v = serde_json::to_value(WireObject::new("C", &d)).unwrap();
        assert_eq!(v["properties"]["contentSha256"], "00");
        assert_eq!(v["properties"]["size"], 1);
        assert!(v.get("vector").is_none());
        assert_eq!(v["id"], d.id.to_string());
    }
}
