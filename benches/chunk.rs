//! Chunker throughput (docs/PERFORMANCE.md, docs/objects.md): MB/s over real
//! Rust sources at chunk size 4096, one core.
//!
//! The files are the `.rs` files of `CHUNK_BENCH_DIR`, else of cargo's
//! registry sources (`$CARGO_HOME/registry/src`, `~/.cargo/registry/src`),
//! sorted by path, each at most 1 MiB (the default eligibility limit), at
//! most `CHUNK_BENCH_MAX_BYTES` (default 32 MiB) in all; generated text if
//! there are none. `scripts/bench-chunker.py` points `CHUNK_BENCH_DIR` at the
//! tree it splits with LangChain, so both measure the same bytes.

mod common;

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use elysiactl::object::{chunk_spans, objects, ChunkSize};

const MAX_FILE: u64 = 1 << 20;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        let path = e.path();
        if kind.is_dir() {
            rust_files(&path, out);
        } else if kind.is_file() && path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn source_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CHUNK_BENCH_DIR") {
        return Some(PathBuf::from(d));
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("registry").join("src")).filter(|d| d.is_dir())
}

/// (path, bytes) of the benchmark's files, and where they came from.
fn corpus() -> (Vec<(String, Vec<u8>)>, String) {
    let max_total: usize = std::env::var("CHUNK_BENCH_MAX_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32 << 20);
    let mut files = Vec::new();
    if let Some(dir) = source_dir() {
        let mut paths = Vec::new();
        rust_files(&dir, &mut paths);
        paths.sort();
        let mut total = 0;
        for p in paths {
            if !std::fs::metadata(&p).is_ok_and(|m| m.len() <= MAX_FILE) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            if total + bytes.len() > max_total {
                break;
            }
            total += bytes.len();
            files.push((p.to_string_lossy().into_owned(), bytes));
        }
        if !files.is_empty() {
            return (files, dir.display().to_string());
        }
    }
    for i in 0..2_000 {
        let size = 512 + (i * 7919) % 16_384;
        files.push((common::file_path(i).1, common::file_text(i, size)));
    }
    (files, "generated text (no Rust sources found)".to_owned())
}

fn bench(c: &mut Criterion) {
    let (files, from) = corpus();
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    // What a file costs: the chunker alone, or the whole object model
    // (chunks, SHA-256, lossy content, ids).
    type Count = fn(&str, &[u8], ChunkSize) -> usize;
    let spans: Count = |p, bytes, size| chunk_spans(bytes, size, p).len();
    let objs: Count = |p, bytes, size| objects("Bench", p, bytes, size).len();
    let chunks: usize = files
        .iter()
        .map(|(p, b)| spans(p, b, ChunkSize::DEFAULT))
        .sum();
    eprintln!(
        "chunk bench: {} files, {total} bytes, {chunks} chunks at 4096, from {from}",
        files.len()
    );

    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(10);
    for (name, size, count) in [
        ("chunk_spans_4096", ChunkSize::DEFAULT, spans),
        ("chunk_spans_whole_file", ChunkSize::WHOLE_FILE, spans),
        ("objects_4096", ChunkSize::DEFAULT, objs),
        ("objects_whole_file", ChunkSize::WHOLE_FILE, objs),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                files
                    .iter()
                    .map(|(p, bytes)| count(p, bytes, size))
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
