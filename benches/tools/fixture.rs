//! Inputs for the end-to-end benchmark (scripts/bench-e2e.py).
//!
//! ```text
//! bench-fixture tree ROOT FILES SIZE          files 0..FILES of ~SIZE bytes under ROOT
//! bench-fixture manifest OUT LINES DISTINCT [ROOT]
//!     LINES lines (~110 B) over files 0..DISTINCT; with ROOT the paths are
//!     absolute (`ROOT/<repo>/<path>`), otherwise repo-relative
//! bench-fixture listing OUT FILES             "repo<TAB>path" of files 0..FILES (the peer's input)
//! bench-fixture resume-wal STATE MANIFEST FRACTION BATCH
//!     the WAL a run with --batch-size BATCH leaves when killed after
//!     FRACTION of MANIFEST's lines: RunStarted, ManifestStarted, then one
//!     BatchDone per batch (no RunFinished), written with the library's Wal.
//! ```

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufWriter, Write};
use std::path::Path;

use elysiactl::manifest::Manifest;
use elysiactl::wal::{self, BatchDone, Counts, Record, Span, Wal};

fn usage() -> ! {
    eprintln!("usage: bench-fixture tree ROOT FILES SIZE | manifest OUT LINES DISTINCT [ROOT] | listing OUT FILES | resume-wal STATE MANIFEST FRACTION BATCH");
    std::process::exit(2)
}

fn num<T: std::str::FromStr>(s: Option<&String>) -> T {
    s.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

fn main() -> std::io::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    match a.first().map(String::as_str) {
        Some("tree") => {
            let root = Path::new(a.get(1).unwrap_or_else(|| usage()));
            common::write_tree(root, num(a.get(2)), num(a.get(3)))
        }
        Some("manifest") => {
            let out = a.get(1).unwrap_or_else(|| usage());
            let (lines, distinct): (usize, usize) = (num(a.get(2)), num(a.get(3)));
            let root = a.get(4).map(String::as_str);
            let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
            let mut buf = Vec::with_capacity(1 << 20);
            for n in 0..lines {
                common::manifest_line_under(&mut buf, n, distinct, root);
                buf.push(b'\n');
                if buf.len() > (1 << 20) - 256 {
                    w.write_all(&buf)?;
                    buf.clear();
                }
            }
            w.write_all(&buf)?;
            w.flush()
        }
        Some("listing") => {
            let out = a.get(1).unwrap_or_else(|| usage());
            let mut w = BufWriter::new(std::fs::File::create(out)?);
            for i in 0..num::<usize>(a.get(2)) {
                let (repo, path) = common::file_path(i);
                writeln!(w, "{repo}\t{path}")?;
            }
            w.flush()
        }
        Some("resume-wal") => {
            let state = Path::new(a.get(1).unwrap_or_else(|| usage()));
            let manifest = Path::new(a.get(2).unwrap_or_else(|| usage()));
            let fraction: f64 = num(a.get(3));
            let batch: u64 = num(a.get(4));
            resume_wal(state, manifest, fraction, batch).map_err(std::io::Error::other)
        }
        _ => usage(),
    }
}

fn resume_wal(state: &Path, manifest: &Path, fraction: f64, batch: u64) -> Result<(), String> {
    let m = Manifest::open(manifest, false).map_err(|e| e.to_string())?;
    let total = m.count_lines();
    let stop = (total as f64 * fraction) as u64;
    let (mut w, _) = Wal::open(state).map_err(|e| e.to_string())?;
    let fp = m.id.fingerprint;
    w.append(&[
        Record::RunStarted(wal::RunStarted {
            run_id: 1,
            started_ms: 1,
            pid: 1,
            version: env!("CARGO_PKG_VERSION").into(),
            target: "local".into(),
            batch_size: batch as u32,
            on_error: "continue".into(),
            max_retries: 3,
        }),
        Record::ManifestStarted(wal::ManifestStarted {
            run_id: 1,
            manifest: m.id.clone(),
            total_lines: total,
            from: None,
        }),
    ])
    .map_err(|e| e.to_string())?;
    let mut pending = Vec::with_capacity(10_000);
    let mut seq = 0u64;
    let mut span: Option<Span> = None;
    for raw in m.lines_from(0, 1) {
        if raw.line > stop {
            break;
        }
        let s = span.get_or_insert(Span {
            start: raw.offset,
            end: raw.end,
            first_line: raw.line,
            next_line: raw.line + 1,
        });
        s.end = raw.end;
        s.next_line = raw.line + 1;
        if s.next_line - s.first_line == batch || raw.line == stop {
            seq += 1;
            let n = s.next_line - s.first_line;
            pending.push(Record::BatchDone(BatchDone {
                run_id: 1,
                fingerprint: fp,
                seq,
                spans: vec![*s],
                counts: Counts {
                    lines: n,
                    update: n,
                    upserted: n,
                    ..Counts::default()
                },
            }));
            span = None;
            if pending.len() == 10_000 {
                w.append(&pending).map_err(|e| e.to_string())?;
                pending.clear();
            }
        }
    }
    w.append(&pending).map_err(|e| e.to_string())?;
    println!("{seq} batches, lines 1-{stop} of {total} recorded as applied");
    Ok(())
}
