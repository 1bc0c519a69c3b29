//! For every object the effect of the latest applied line wins (SPEC,
//! Failures and retries), on Weaviate, with faults, retries and kills.
//!
//! The manifest gives 40 paths five versions each, inline, in order: every
//! path's last version must be what the index ends with. Two ways an older
//! version used to win: a batch retried after backoff landed after a later
//! batch that wrote the same object (several batches in flight), and a line
//! that failed in one run was retried by a later run after a newer line for
//! the same file had been applied.

#[path = "weaviate_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use elysiactl::target::object_id;
use support::e2e::*;
use support::standin::{Config, Faults, Rng, Standin};

const PATHS: usize = 40;
const VERSIONS: usize = 5;

fn body(path: usize, version: usize) -> String {
    format!("path {path} version {version}\n")
}

/// The manifest and what the index must hold after it: id → (repo, path,
/// sha of the last version).
fn workload(dir: &Path) -> (PathBuf, PathBuf, Expected) {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("r")).unwrap();
    let mut lines = String::new();
    for v in 0..VERSIONS {
        for p in 0..PATHS {
            let line = serde_json::json!({
                "op": if v == 0 { "add" } else { "update" },
                "repo": "r",
                "path": format!("f{p}.txt"),
                "content": body(p, v),
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
    }
    let manifest = dir.join("versions.jsonl");
    std::fs::write(&manifest, lines).unwrap();
    let expected: Expected = (0..PATHS)
        .map(|p| {
            let path = format!("f{p}.txt");
            (
                object_id("r", &path),
                ("r".to_string(), path, sha(body(p, VERSIONS - 1).as_bytes())),
            )
        })
        .collect();
    (root, manifest, expected)
}

fn which_versions(si: &Standin) -> BTreeMap<String, String> {
    let shas: BTreeMap<String, usize> = (0..PATHS)
        .flat_map(|p| (0..VERSIONS).map(move |v| (sha(body(p, v).as_bytes()), v)))
        .collect();
    index_of(si)
        .into_values()
        .map(|(_, path, s)| {
            let v = shas.get(&s).map(|v| v.to_string()).unwrap_or("?".into());
            (path, v)
        })
        .collect()
}

fn faults(seed: u64) -> Faults {
    Faults {
        latency_ms: 1,
        jitter_ms: 15 + seed % 20,
        p500: 0.2,
        p_object_fail: 0.2,
        ..Faults::default()
    }
}

const ARGS: [&str; 6] = [
    "--concurrency",
    "4",
    "--batch-size",
    "7",
    "--max-retries",
    "1",
];

/// The [`workload`] in a temp dir, a state dir beside it, and a stand-in
/// (not recording requests) seeded `seed`.
struct Scene {
    _dir: tempfile::TempDir,
    root: PathBuf,
    manifest: PathBuf,
    state: PathBuf,
    expected: Expected,
    si: Standin,
}

impl Scene {
    fn new(seed: u64) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let (root, manifest, expected) = workload(dir.path());
        let si = Standin::start(Config {
            record: false,
            seed,
            ..Config::default()
        })
        .unwrap();
        Scene {
            state: dir.path().join("state"),
            _dir: dir,
            root,
            manifest,
            expected,
            si,
        }
    }

    /// Sync (quiet, or verbose for [`kill_at`]) with [`ARGS`].
    fn sync(&self, quiet: bool) -> Command {
        let make = if quiet {
            sync_command
        } else {
            sync_command_verbose
        };
        make(
            &self.si.url(),
            &self.root,
            &self.state,
            &self.manifest,
            &ARGS,
        )
    }

    /// Sync under the faults set until a run exits 0 (runs that exit 1
    /// leave failed lines; later runs of the same manifest retry them),
    /// then, faults off, check every path's last version is what the index
    /// holds.
    fn converge(&self, what: &str) {
        sync_until_clean(|| self.sync(true), 30, what);
        self.si.set_faults(Faults::default());
        let held = which_versions(&self.si);
        let what = format!("{what}: versions held {held:?}");
        assert_index_equals(&self.si, &self.expected, &what);
    }
}

#[test]
fn latest_line_wins_under_faults_and_retries_on_weaviate() {
    for seed in 0..4u64 {
        let s = Scene::new(0xA11 + seed);
        s.si.set_faults(faults(seed));
        // Retried lines must never bring back an older version.
        s.converge(&format!("ordering under faults, seed {seed}"));
    }
}

#[test]
fn latest_line_wins_across_kills_on_weaviate() {
    let s = Scene::new(0xB0B);
    let mut rng = Rng::new(0x5EED);
    for kill in 0..10u64 {
        s.si.set_faults(faults(kill));
        let delay = Duration::from_millis(rng.below(60));
        match kill_at(s.sync(false), true, delay) {
            Life::Killed(_) => {}
            Life::Ended(code, err) => assert!(code == 0 || code == 1, "exit {code}: {err}"),
        }
    }
    s.si.set_faults(faults(99));
    s.converge("ordering after kills");
}
