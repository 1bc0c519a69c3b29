//! The WAL: encoding and appending a batch's record without and with
//! `fdatasync`, the disk's raw `fdatasync` of a write of the same size (the
//! floor every durable batch pays), and replay in MB/s and records/s: into
//! the state only (recovery's path) and keeping every record.
//!
//! The temporary directories live under `$ELYSIACTL_BENCH_DIR` when set (put
//! it on the disk the state dir will use), else the system temp dir.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use elysiactl::wal::{self, format, BatchDone, Counts, Record, Span, Wal};

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("ELYSIACTL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("temp dir in ELYSIACTL_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// The record a batch of `--batch-size` lines appends when all succeed.
fn batch_done(seq: u64, batch: u64) -> Record {
    let start = seq * batch * 109;
    Record::BatchDone(BatchDone {
        run_id: 1,
        fingerprint: [7; 32],
        seq,
        spans: vec![Span {
            start,
            end: start + batch * 109,
            first_line: seq * batch + 1,
            next_line: (seq + 1) * batch + 1,
        }],
        counts: Counts {
            lines: batch,
            add: batch / 2,
            update: batch / 2,
            upserted: batch,
            ..Counts::default()
        },
    })
}

/// A WAL holding `n` batch records (one run over one manifest), written in
/// large appends.
fn build_log(dir: &Path, n: u64) {
    let (mut w, _) = Wal::open(dir).expect("open WAL");
    let manifest = elysiactl::wal::ManifestId {
        path: "/bench/changes.jsonl".into(),
        size: n * 100 * 109,
        fingerprint: [7; 32],
        spooled: false,
    };
    w.append(&[
        Record::RunStarted(wal::RunStarted {
            run_id: 1,
            started_ms: 0,
            pid: 1,
            version: "bench".into(),
            target: "local".into(),
            batch_size: 100,
            on_error: "continue".into(),
            max_retries: 3,
        }),
        Record::ManifestStarted(wal::ManifestStarted {
            run_id: 1,
            manifest,
            total_lines: n * 100,
            from: None,
        }),
    ])
    .expect("append");
    let mut chunk = Vec::with_capacity(10_000);
    for seq in 0..n {
        chunk.push(batch_done(seq, 100));
        if chunk.len() == 10_000 {
            w.append(&chunk).expect("append");
            chunk.clear();
        }
    }
    w.append(&chunk).expect("append");
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append");
    g.throughput(Throughput::Elements(1));
    let rec = batch_done(5, 1000);
    let mut framed = Vec::new();
    rec.encode(&mut framed);
    let size = framed.len();

    g.bench_function("encode_batch_record", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            buf.clear();
            black_box(&rec).encode(&mut buf);
            buf.len()
        })
    });

    // Encode + write(2) with no sync: what an append costs before fdatasync.
    let d = tempdir();
    g.bench_function("append_buffered_no_sync", |b| {
        let mut f = append_only(&d.path().join("buffered"));
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            buf.clear();
            rec.encode(&mut buf);
            f.write_all(&buf).expect("write");
        })
    });

    g.sample_size(30);
    // The floor: write the same number of bytes to a plain file and fdatasync.
    g.bench_function("raw_write_fdatasync_baseline", |b| {
        let mut f = append_only(&d.path().join("raw"));
        let bytes = vec![0x5au8; size];
        b.iter(|| {
            f.write_all(&bytes).expect("write");
            f.sync_data().expect("fdatasync");
        })
    });
    g.bench_function("wal_append_fdatasync", |b| {
        let (mut w, _) = Wal::open(d.path()).expect("open WAL");
        let recs = [rec.clone()];
        b.iter(|| w.append(&recs).expect("append"))
    });
    g.finish();

    // Sequential groups drift with the machine's load: also alternate the
    // two, one append each, and compare medians.
    let mut raw_f = append_only(&d.path().join("raw-interleaved"));
    let d2 = tempdir_near(d.path());
    let (mut w, _) = Wal::open(d2.path()).expect("open WAL");
    let bytes = vec![0x5au8; size];
    let recs = [rec.clone()];
    let (mut raw, mut wal) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let t = std::time::Instant::now();
        raw_f.write_all(&bytes).expect("write");
        raw_f.sync_data().expect("fdatasync");
        raw.push(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        w.append(&recs).expect("append");
        wal.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, a) = (median(&mut raw), median(&mut wal));
    eprintln!(
        "wal_append/interleaved_median_of_200: raw write+fdatasync {:.3} ms, Wal::append {:.3} ms, ratio {:.2}",
        r * 1e3,
        a * 1e3,
        a / r
    );
}

/// A plain file opened (created if need be) for appending.
fn append_only(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open")
}

fn tempdir_near(p: &Path) -> tempfile::TempDir {
    tempfile::tempdir_in(p).expect("temp dir")
}

fn bench_replay(c: &mut Criterion) {
    const N: u64 = 200_000;
    let d = tempdir();
    build_log(d.path(), N);
    let segs = wal::list_segments(&wal::wal_dir(d.path())).expect("segments");
    let bytes: u64 = segs
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum();
    let seg_bytes = std::fs::read(&segs[0]).expect("read segment");

    let mut g = c.benchmark_group("wal_replay");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    // What recovery (`Wal::open`, resume) and `--status` run: the state only,
    // batch records applied in place.
    let resumed_at = N * 100 * 109;
    g.bench_function("replay_state_dir_bytes", |b| {
        b.iter(|| {
            let r = wal::replay(d.path()).expect("replay");
            let m = r.state.manifest(&[7; 32]).expect("manifest");
            assert_eq!(m.resume_point().0, resumed_at);
            r.bytes
        })
    });
    // Every record decoded and kept as well (`replay_records`, tests).
    g.bench_function("replay_keep_records_bytes", |b| {
        b.iter(|| {
            let r = wal::replay_records(d.path()).expect("replay");
            assert_eq!(r.records.map(|v| v.len() as u64), Some(N + 2));
            r.bytes
        })
    });
    g.bench_function("frame_decode_only_bytes", |b| {
        b.iter(|| {
            let mut at = format::SEGMENT_HEADER_LEN;
            let mut n = 0u64;
            while let format::Step::Record { next, .. } = format::decode_at(&seg_bytes, at) {
                at = next;
                n += 1;
            }
            n
        })
    });
    g.throughput(Throughput::Elements(N + 2));
    g.bench_function("replay_state_dir_records", |b| {
        b.iter(|| wal::replay(d.path()).expect("replay").state.next_run_id)
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_replay);
criterion_main!(benches);
