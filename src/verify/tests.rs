//! The comparison of one file, table by table.

use super::*;

fn want(sha: &str, chunks: &[(u64, u64, &str)]) -> Want {
    Want {
        sha: sha.into(),
        chunks: chunks
            .iter()
            .map(|&(a, b, t)| (a, b, text_hash(t)))
            .collect(),
    }
}

fn held(sha: &str, n: u64, chunks: &[(u64, u64, u64, &str)]) -> Vec<Held> {
    chunks
        .iter()
        .map(|&(k, a, b, t)| Held {
            chunk: k,
            count: n,
            start: a,
            end: b,
            file_sha: sha.into(),
            text: text_hash(t),
        })
        .collect()
}

#[test]
fn each_kind_of_difference_is_told_apart() {
    let w = want("s", &[(0, 4, "abcd"), (4, 8, "efgh"), (8, 9, "i")]);
    let all = [(0, 0, 4, "abcd"), (1, 4, 8, "efgh"), (2, 8, 9, "i")];
    let kind = |want: Option<&Want>, got: Option<Vec<Held>>| compare(want, got, true).map(|d| d.0);
    // Equal, in any order.
    let mut shuffled = held("s", 3, &all);
    shuffled.reverse();
    assert_eq!(kind(Some(&w), Some(shuffled)), None);
    assert_eq!(kind(None, None), None);
    assert_eq!(kind(Some(&w), None), Some(Kind::Missing));
    assert_eq!(kind(None, Some(held("s", 3, &all))), Some(Kind::Extra));
    // A chunk gone from the middle: not wholly in the index.
    let gap = held("s", 3, &[all[0], all[2]]);
    let d = compare(Some(&w), Some(gap), true).unwrap();
    assert_eq!(d.0, Kind::Missing);
    assert!(d.1.contains("chunk 1 of 3"), "{}", d.1);
    // Another hash, a chunk's text altered, another chunking, a surplus
    // chunk, a chunk twice.
    assert_eq!(
        kind(Some(&w), Some(held("old", 3, &all))),
        Some(Kind::Stale)
    );
    let edited = held("s", 3, &[all[0], (1, 4, 8, "EFGH"), all[2]]);
    assert_eq!(kind(Some(&w), Some(edited)), Some(Kind::Stale));
    let other = held("s", 2, &[(0, 0, 6, "abcdef"), (1, 6, 9, "ghi")]);
    assert_eq!(kind(Some(&w), Some(other)), Some(Kind::Stale));
    let mut surplus = held("s", 3, &all);
    surplus.extend(held("s", 4, &[(3, 9, 9, "")]));
    assert_eq!(kind(Some(&w), Some(surplus)), Some(Kind::Stale));
    let mut twice = held("s", 3, &all);
    twice.extend(held("s", 3, &[all[1]]));
    assert_eq!(kind(Some(&w), Some(twice)), Some(Kind::Stale));
}

#[test]
fn the_repair_manifest_updates_each_file_and_prunes_gone_repos() {
    let mut r = Report::default();
    for (kind, repo, path) in [
        (Kind::Missing, "A", "a.rs"),
        (Kind::Stale, "A", "b.rs"),
        (Kind::Extra, "A", "c.rs"),
        (Kind::Extra, "Gone", "x.rs"),
        (Kind::Extra, "Gone", "y.rs"),
    ] {
        r.push(Drift {
            kind,
            repo: repo.into(),
            path: path.into(),
            why: String::new(),
        });
    }
    r.repos.get_mut("Gone").unwrap().gone = true;
    let text = String::from_utf8(r.repair_manifest()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], serde_json::json!({"op": "prune", "repo": "Gone"}));
    let updates: Vec<&str> = lines[1..]
        .iter()
        .map(|l| {
            assert_eq!(l["op"], "update");
            l["path"].as_str().unwrap()
        })
        .collect();
    assert_eq!(updates, ["a.rs", "b.rs", "c.rs"]);
}
