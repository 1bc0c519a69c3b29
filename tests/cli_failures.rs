//! `index failures` prints the typed rows `sync::status::failures` returns:
//! its `--json` objects are exactly the `--status` document's `failures`,
//! and its text line says the same fields.

mod support;

use serde_json::Value;
use support::*;

#[test]
fn index_failures_json_rows_are_the_status_failures_objects_and_text_says_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("R")).unwrap();
    std::fs::write(root.join("R/a.txt"), "a\n").unwrap();
    let state = dir.path().join("state");
    let m = dir.path().join("m.jsonl");
    std::fs::write(
        &m,
        "{\"op\":\"add\",\"repo\":\"R\",\"path\":\"a.txt\"}\nnot json\n\
         {\"op\":\"add\",\"repo\":\"R\",\"path\":\"../escape\"}\n",
    )
    .unwrap();
    let out = sync(&m, &root, &state, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let sd = state.to_str().unwrap();
    let json = run(&["index", "failures", "--json", "--state-dir", sd]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stderr));
    let raw = text(&json.stdout);
    let rows: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).expect("each row is one JSON object"))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let st = status(&state);
    assert_eq!(Value::Array(rows.clone()), st["failures"]);
    // Byte for byte the objects of --status, keys in the same order.
    let shown: Vec<String> = st["failures"]
        .as_array()
        .expect("failures is an array")
        .iter()
        .map(Value::to_string)
        .collect();
    assert_eq!(raw.lines().collect::<Vec<_>>(), shown);
    let keys: Vec<&str> = rows[1]
        .as_object()
        .expect("a row is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "attempts",
            "dead_letter",
            "kind",
            "line",
            "manifest",
            "offset",
            "path",
            "reason",
            "repo"
        ]
    );
    assert_eq!(rows[1]["repo"], "R");
    assert_eq!(rows[1]["path"], "../escape");
    assert_eq!(rows[1]["kind"], "malformed_line");

    let plain = run(&["index", "failures", "--state-dir", sd]);
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain.stderr));
    let lines: Vec<String> = text(&plain.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), rows.len());
    for (line, row) in lines.iter().zip(&rows) {
        let s = |k: &str| row[k].as_str().unwrap_or_default().to_string();
        let expected = format!(
            "{}:{} (byte {}) {}/{} [{}; {} attempt(s){}] {}",
            s("manifest"),
            row["line"],
            row["offset"],
            s("repo"),
            s("path"),
            s("kind"),
            row["attempts"],
            if row["dead_letter"] == true {
                ", dead letter"
            } else {
                ""
            },
            s("reason"),
        );
        assert_eq!(line, &expected);
    }
}
