//! Per-file work of a manifest line, piece by piece: resolving the path
//! (repo-relative and absolute),
//! reading the file (canonicalise, stat, open, read), hashing, the object id,
//! building the document, and encoding a batch as the Weaviate JSON body.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use elysiactl::source::{document, FileState, Roots, DEFAULT_MAX_FILE_SIZE};
use elysiactl::target::object_id;
use elysiactl::target::weaviate::wire::{write_batch, BatchObjects, WireObject};
use sha2::{Digest, Sha256};

const FILES: usize = 1_000;
const SIZE: usize = 2_048;

fn bench(c: &mut Criterion) {
    let root = tempfile::tempdir().expect("temp dir");
    common::write_tree(root.path(), FILES, SIZE).expect("write tree");
    let roots = Roots::new(&[root.path().to_owned()], DEFAULT_MAX_FILE_SIZE).expect("roots");
    let names: Vec<(String, String)> = (0..FILES).map(common::file_path).collect();
    let locs: Vec<_> = names
        .iter()
        .map(|(r, p)| roots.resolve(Some(r), p).expect("resolve"))
        .collect();
    let text = common::file_text(1, SIZE);

    let mut g = c.benchmark_group("per_file");
    g.throughput(Throughput::Elements(FILES as u64));
    g.sample_size(20);
    let resolve_all = |lines: &[(String, String)]| {
        lines
            .iter()
            .map(|(r, p)| roots.resolve(Some(r), p).map(|l| l.path.len()).unwrap_or(0))
            .sum::<usize>()
    };
    g.bench_function("resolve_path", |b| b.iter(|| resolve_all(&names)));
    // The seed's form of the same lines: `<root>/<repo>/<path>`.
    let top = root.path().display().to_string();
    let absolute: Vec<(String, String)> = names
        .iter()
        .map(|(r, p)| (r.clone(), format!("{top}/{r}/{p}")))
        .collect();
    g.bench_function("resolve_path_absolute", |b| {
        b.iter(|| resolve_all(&absolute))
    });
    g.bench_function("read_file_to_document", |b| {
        b.iter(|| {
            let mut n = 0;
            for l in &locs {
                if let Ok(FileState::Eligible(d)) = roots.read(l) {
                    n += d.size;
                }
            }
            n
        })
    });
    g.bench_function("sha256_2KiB", |b| {
        b.iter(|| {
            for _ in 0..FILES {
                black_box(Sha256::digest(black_box(&text)));
            }
        })
    });
    g.bench_function("object_id_uuid_v5", |b| {
        b.iter(|| {
            names
                .iter()
                .map(|(r, p)| object_id(r, p).as_bytes()[0] as usize)
                .sum::<usize>()
        })
    });
    g.bench_function("document_from_bytes", |b| {
        b.iter(|| {
            names
                .iter()
                .map(|(r, p)| document(r, p, &text).size)
                .sum::<u64>()
        })
    });
    let docs: Vec<_> = names.iter().map(|(r, p)| document(r, p, &text)).collect();
    // What the Weaviate target sends (`wire::write_batch`), and serde_json's
    // encoding of the same body as the baseline it replaced.
    g.bench_function("json_encode_batch_body", |b| {
        let mut out = Vec::with_capacity(FILES * (SIZE + 400));
        b.iter(|| {
            out.clear();
            write_batch(&mut out, "Bench", docs.iter().flat_map(|d| &d.chunks));
            out.len()
        })
    });
    g.bench_function("json_encode_batch_body_serde", |b| {
        let mut out = Vec::with_capacity(FILES * (SIZE + 400));
        b.iter(|| {
            out.clear();
            let body = BatchObjects {
                objects: docs
                    .iter()
                    .flat_map(|d| d.chunks.iter())
                    .map(|c| WireObject::new("Bench", c))
                    .collect(),
            };
            serde_json::to_writer(&mut out, &body).expect("encode");
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
