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

/// `property` is one of `values`: `Equal` for one, `ContainsAny` for more
/// (whole values under `field` tokenization).
fn one_of(property: &str, values: Vec<String>) -> Value {
    match <[String; 1]>::try_from(values) {
        Ok([v]) => text_equal(property, &v),
        Err(vs) => json!({"path": [property], "operator": "ContainsAny", "valueTextArray": vs}),
    }
}

/// The filters of a batch's one delete, one or two per repo rather than one
/// per file (a filter of thousands of operands is slow to evaluate):
/// every object of the `deleted` files (`And[repo = R, path ContainsAny
/// […]]`), and every object of the `written` files but their current chunks
/// (`And[repo = R, path ContainsAny […], id ContainsNone [their chunks'
/// ids]]`). Chunk ids are unique to their file, so keeping the union of a
/// repo's kept ids keeps exactly each file's own chunks.
pub fn delete_filters(deleted: &[(&str, &str)], written: &[&Document]) -> Vec<Value> {
    use std::collections::BTreeMap;
    let mut gone: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (repo, path) in deleted {
        gone.entry(repo).or_default().push((*path).to_owned());
    }
    let mut kept: BTreeMap<&str, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for d in written {
        let (paths, ids) = kept.entry(d.repo.as_str()).or_default();
        paths.push(d.path.clone());
        ids.extend(d.chunks.iter().map(|c| c.id.to_string()));
    }
    let mut out: Vec<Value> = gone
        .into_iter()
        .map(|(repo, paths)| {
            json!({"operator": "And", "operands": [text_equal("repo", repo), one_of("path", paths)]})
        })
        .collect();
    out.extend(kept.into_iter().map(|(repo, (paths, ids))| {
        json!({"operator": "And", "operands": [
            text_equal("repo", repo),
            one_of("path", paths),
            {"path": ["id"], "operator": "ContainsNone", "valueTextArray": ids},
        ]})
    }));
    out
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

    fn up(path: &str, content: &str) -> Op {
        Op::Upsert(doc(path, content))
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
        let ops = [up("a", "1"), del("a"), up("b", "1")];
        let r = reduce(&ops);
        assert_eq!(r.deletes, vec![(object_id("R", "a"), "R", "a")]);
        assert_eq!(r.upserts.len(), 1);
        assert_eq!(r.upserts[0].path, "b");
    }

    #[test]
    fn duplicate_upserts_keep_only_the_last_content() {
        let ops = [up("a", "old"), del("a"), up("a", "new")];
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
    fn one_delete_filter_per_repo_keeps_each_written_file_s_chunks() {
        let (a, b) = (doc("a.rs", "x"), doc("b.rs", "y"));
        let filters = delete_filters(&[("R", "gone.rs"), ("S", "old.rs")], &[&a, &b]);
        assert_eq!(filters.len(), 3, "{filters:?}");
        // Deleted files: repo R and repo S, one path each.
        assert_eq!(filters[0]["operands"][1]["operator"], "Equal");
        assert_eq!(filters[1]["operands"][0]["valueText"], "S");
        // Written files of R: both paths, their chunk ids kept.
        let w = &filters[2]["operands"];
        assert_eq!(w[1]["operator"], "ContainsAny");
        assert_eq!(w[1]["valueTextArray"], serde_json::json!(["a.rs", "b.rs"]));
        assert_eq!(w[2]["operator"], "ContainsNone");
        assert_eq!(
            w[2]["valueTextArray"],
            serde_json::json!([a.id.to_string(), b.id.to_string()])
        );
        let body = batch_delete_where("C", filters);
        assert_eq!(body["match"]["where"]["operator"], "Or");
    }
}
