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

/// The `POST /v1/batch/objects` body of `chunks` in `class`, appended to
/// `out`: the bytes `serde_json::to_vec(&BatchObjects { .. })` gives (a test
/// holds the two equal), written by hand so the contents, nearly all of a
/// batch's bytes, go through [`write_str`] rather than serde_json's
/// byte-at-a-time escaping.
pub fn write_batch<'a>(
    out: &mut Vec<u8>,
    class: &str,
    chunks: impl IntoIterator<Item = &'a ChunkObject>,
) {
    use std::io::Write as _;
    out.extend_from_slice(b"{\"objects\":[");
    for (i, c) in chunks.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"class\":");
        write_str(out, class);
        // Writing to a Vec cannot fail.
        let _ = write!(out, ",\"id\":\"{}\",\"properties\":{{\"repo\":", c.id);
        write_str(out, &c.repo);
        out.extend_from_slice(b",\"path\":");
        write_str(out, &c.path);
        let _ = write!(
            out,
            ",\"chunk\":{},\"chunkCount\":{},\"byteStart\":{},\"byteEnd\":{},\"startLine\":{},\"endLine\":{},\"content\":",
            c.chunk, c.chunk_count, c.byte_start, c.byte_end, c.start_line, c.end_line
        );
        write_str(out, &c.content);
        out.extend_from_slice(b",\"contentSha256\":");
        write_str(out, &c.content_sha256);
        let _ = write!(out, ",\"size\":{}}}}}", c.size);
    }
    out.extend_from_slice(b"]}");
}

/// Appends `s` as a JSON string, quotes included, escaped exactly as
/// serde_json escapes it (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
/// control characters `\u00xx`; nothing else). Eight bytes at a time: a
/// word with no byte below 0x20, no `"` and no `\` is skipped whole (nearly
/// every word of source code), and in one that has one the lowest set bit of
/// the test's mask is exactly the first such byte (a false hit can only
/// come from a borrow, which runs upward, past a true one).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The classic "hasless" word test: the high bit of a byte set where it
    // is below `n` (n <= 128).
    let has_less = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let mask = |w: u64| {
        has_less(w, 0x20)
            | has_less(w ^ (ONES * u64::from(b'"')), 1)
            | has_less(w ^ (ONES * u64::from(b'\\')), 1)
    };
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let (mut i, mut copied) = (0, 0);
    while let Some(word) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let m = mask(u64::from_le_bytes(w));
        if m == 0 {
            i += 8;
            continue;
        }
        let j = i + (m.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&b[copied..j]);
        escape(out, b[j]);
        copied = j + 1;
        i = j + 1;
    }
    for (j, &c) in b.iter().enumerate().skip(i) {
        if c < 0x20 || c == b'"' || c == b'\\' {
            out.extend_from_slice(&b[copied..j]);
            escape(out, c);
            copied = j + 1;
        }
    }
    out.extend_from_slice(&b[copied..]);
    out.push(b'"');
}

/// The escape of one byte below 0x20, `"` or `\`.
fn escape(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match c {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
            return;
        }
    };
    out.push(b'\\');
    out.push(short);
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
    fn the_hand_written_batch_is_serde_json_s_bytes() {
        let mut text =
            String::from("fn main() {\n\t\"quoted\" \\ back\r\n\u{7f}\u{1}\u{1f} é ✓ 🦀\n}\n");
        text.push_str(&"x".repeat(5000));
        let d = crate::object::Document::new(
            "Repo \"q\"",
            "src/a\\b.rs",
            text.into_bytes(),
            crate::object::ChunkSize::new(64).unwrap(),
        );
        assert!(d.chunks.len() > 1);
        let want = serde_json::to_vec(&BatchObjects {
            objects: d.chunks.iter().map(|c| WireObject::new("Cls", c)).collect(),
        })
        .unwrap();
        let mut got = Vec::new();
        write_batch(&mut got, "Cls", &d.chunks);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }

    /// `write_str` of `s` is serde_json's text of it.
    fn escapes_as_serde_json(s: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut got = Vec::new();
        write_str(&mut got, s);
        proptest::prop_assert_eq!(
            String::from_utf8(got).unwrap(),
            serde_json::to_string(s).unwrap()
        );
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn write_str_escapes_as_serde_json(s in ".*", pad in 0usize..9) {
            // Every alignment of the text against the eight-byte words.
            escapes_as_serde_json(&format!("{}{s}", "a".repeat(pad)))?;
        }

        #[test]
        fn write_str_of_control_heavy_text(bytes in proptest::collection::vec(0u8..0x80, 0..64)) {
            escapes_as_serde_json(&String::from_utf8(bytes).unwrap())?;
        }
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
