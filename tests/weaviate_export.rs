//! `index export` and `prune` against the Weaviate stand-in.

mod support;

#[allow(unused_imports)]
#[path = "weaviate_support/mod.rs"]
mod wsupport;

use std::path::Path;
use std::process::Command;

use support::{cmd, sync_cmd, text};
use wsupport::standin::{Config, Standin};

/// The binary, with no API key from the environment.
fn elysiactl(mut c: Command) -> std::process::Output {
    c.env_remove("WEAVIATE_API_KEY").output().unwrap()
}

#[test]
fn export_lists_the_weaviate_collection_and_prune_removes_vanished_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("R/src")).unwrap();
    for i in 0..250 {
        std::fs::write(
            root.join(format!("R/src/f{i}.rs")),
            format!("fn f{i}() {{}}\n"),
        )
        .unwrap();
    }
    let mut m = String::new();
    for i in 0..250 {
        m.push_str(&format!(
            "{{\"op\":\"add\",\"repo\":\"R\",\"path\":\"src/f{i}.rs\"}}\n"
        ));
    }
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(&manifest, m).unwrap();
    let si = Standin::start(Config::default()).unwrap();
    let url = si.url();
    let state = dir.path().join("state");
    let common = ["--weaviate-url", url.as_str(), "--collection", "Code"];
    let sync = |manifest: &Path| {
        let mut extra = vec!["--quiet"];
        extra.extend_from_slice(&common);
        let out = elysiactl(sync_cmd(manifest, &root, &state, &extra));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    sync(&manifest);

    let export = |state: &Path| -> Vec<serde_json::Value> {
        let mut a = vec!["index", "export", "--state-dir", state.to_str().unwrap()];
        a.extend_from_slice(&common);
        let out = elysiactl(cmd(&a));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let objs = export(&state);
    assert_eq!(objs.len(), 250, "export pages through the whole collection");
    assert_eq!(objs.len(), si.dump().len());
    let o = objs.iter().find(|o| o["path"] == "src/f7.rs").unwrap();
    assert_eq!(
        o["id"],
        elysiactl::target::object_id("R", "src/f7.rs").to_string()
    );

    // Files vanish without a manifest line; a prune line removes their objects.
    for i in 0..100 {
        std::fs::remove_file(root.join(format!("R/src/f{i}.rs"))).unwrap();
    }
    let prune = dir.path().join("prune.jsonl");
    std::fs::write(&prune, "{\"op\":\"prune\",\"repo\":\"R\"}\n").unwrap();
    sync(&prune);
    let objs = export(&state);
    assert_eq!(objs.len(), 150);
    assert!(objs.iter().all(|o| o["path"].as_str().unwrap() >= "src/f1"));
    assert!(!objs.iter().any(|o| o["path"] == "src/f5.rs"));
}
