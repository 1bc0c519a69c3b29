#![allow(dead_code)]
pub mod gitrepo;
pub mod model;

use elysiactl::changes::{self, ChangesOptions, ChangesReport};
use serde_json::Value;

/// One in-process `changes` run.
pub struct ChangesRun {
    /// The manifest as written.
    pub bytes: Vec<u8>,
    /// Its lines, as JSON.
    pub lines: Vec<Value>,
    pub log: String,
    pub report: ChangesReport,
}

impl ChangesRun {
    /// The lines that are not `new_changeset` lines.
    pub fn file_lines(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|l| l.get("new_changeset").is_none())
            .collect()
    }

    /// The `new_changeset` of `repo`, if the run wrote one.
    pub fn changeset(&self, repo: &str) -> Option<&Value> {
        self.lines
            .iter()
            .find(|l| l["repo"] == repo && l.get("new_changeset").is_some())
            .map(|l| &l["new_changeset"])
    }
}

/// `changes::run` with `opts`, in process; panics if it fails.
pub fn run_changes(opts: &ChangesOptions) -> ChangesRun {
    let mut out = Vec::new();
    let mut log = Vec::new();
    let report = changes::run(opts, &mut out, &mut log).expect("changes runs");
    ChangesRun {
        lines: json_lines(&out),
        bytes: out,
        log: String::from_utf8_lossy(&log).into_owned(),
        report,
    }
}

/// A manifest's lines, each parsed as JSON; blank lines are skipped.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("each line is JSON"))
        .collect()
}
