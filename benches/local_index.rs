//! The local (tantivy) index: one batch of upserts applied and committed
//! durably, as the sync does per batch. Throughput is files per second.
//!
//! The index lives under `$ELYSIACTL_BENCH_DIR` when set, else the system
//! temp dir.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use elysiactl::source::document;
use elysiactl::target::local::LocalIndex;
use elysiactl::target::{Op, Target};

const SIZE: usize = 2_048;

fn bench(c: &mut Criterion) {
    let dir = match std::env::var_os("ELYSIACTL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let idx =
        LocalIndex::open(dir.path(), elysiactl::object::ChunkSize::DEFAULT).expect("open index");
    idx.prepare().expect("prepare");

    let mut g = c.benchmark_group("local_index");
    g.sample_size(10);
    for batch in [100usize, 1_000] {
        let ops: Vec<Op> = (0..batch)
            .map(|i| {
                let (r, p) = common::file_path(i);
                Op::Upsert(document(&r, &p, &common::file_text(i, SIZE)))
            })
            .collect();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(
            BenchmarkId::new("apply_commit_batch", batch),
            &ops,
            |b, ops| b.iter(|| idx.apply(ops).expect("apply")),
        );
    }
    g.finish();
    idx.close();
}

criterion_group!(benches, bench);
criterion_main!(benches);
