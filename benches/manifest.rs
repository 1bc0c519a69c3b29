//! Manifest scan and parse: the memchr line split alone, the simd-json tape
//! parser the sync uses ([`LineParser`]), and a serde_json baseline that
//! deserializes the same lines into a borrowed struct and builds the same
//! owned result — measured in the same run, so their ratio is meaningful on
//! a noisy machine.

mod common;

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use elysiactl::manifest::{count_lines, Change, FileChange, LineParser, Op};

const LINES: usize = 100_000;
const DISTINCT: usize = 1_000;

/// One line as serde_json sees it: strings borrowed where they have no
/// escapes, unknown fields ignored.
#[derive(serde::Deserialize)]
struct BorrowedLine<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    repo: Option<Cow<'a, str>>,
    #[serde(borrow)]
    path: Option<Cow<'a, str>>,
    #[serde(borrow)]
    from: Option<Cow<'a, str>>,
}

/// The baseline: same output as `LineParser` for these lines.
fn serde_parse(line: &[u8]) -> Option<Change> {
    let l: BorrowedLine<'_> = serde_json::from_slice(line).ok()?;
    let op = match l.op.as_deref()? {
        "add" => Op::Add,
        "update" | "modify" => Op::Update,
        "delete" => Op::Delete,
        "rename" => Op::Rename,
        _ => return None,
    };
    Some(Change::File(FileChange {
        op,
        repo: l.repo.map(Cow::into_owned),
        path: l.path?.into_owned(),
        from: l.from.map(Cow::into_owned),
        content: None,
    }))
}

/// Lines split with memchr, as `Manifest::lines_from` does.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = bytes.get(pos..).filter(|r| !r.is_empty())?;
        let n = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        pos += n + 1;
        Some(&rest[..n])
    })
}

fn bench(c: &mut Criterion) {
    let data = common::manifest(LINES, DISTINCT);
    let mut g = c.benchmark_group("manifest");
    g.throughput(Throughput::Elements(LINES as u64));
    g.sample_size(20);

    g.bench_function("scan_memchr_lines", |b| {
        b.iter(|| {
            let mut n = 0usize;
            let mut pos = 0usize;
            while let Some(i) = memchr::memchr(b'\n', &data[pos..]) {
                n += black_box(&data[pos..pos + i]).len();
                pos += i + 1;
            }
            n
        })
    });
    g.bench_function("count_lines", |b| b.iter(|| count_lines(black_box(&data))));
    g.bench_function("parse_simd_json_lineparser", |b| {
        let mut p = LineParser::new();
        b.iter(|| {
            let mut files = 0usize;
            for l in lines(&data) {
                if let Ok(Some(Change::File(f))) = p.parse(l) {
                    files += f.path.len();
                }
            }
            files
        })
    });
    g.bench_function("parse_serde_json_borrowed_baseline", |b| {
        b.iter(|| {
            let mut files = 0usize;
            for l in lines(&data) {
                if let Some(Change::File(f)) = serde_parse(l) {
                    files += f.path.len();
                }
            }
            files
        })
    });
    g.finish();

    interleaved(&data);

    // The two parsers agree on every line of the bench input.
    let mut p = LineParser::new();
    for l in lines(&data).take(2_000) {
        assert_eq!(p.parse(l).ok().flatten(), serde_parse(l));
    }
}

/// The machine is shared: besides criterion's sequential groups, time the
/// two parsers alternately, 15 rounds each, and report each one's fastest
/// round (the least disturbed) and their ratio.
fn interleaved(data: &[u8]) {
    let mut p = LineParser::new();
    let mut simd = f64::MAX;
    let mut serde = f64::MAX;
    for _ in 0..15 {
        let t = std::time::Instant::now();
        let mut n = 0usize;
        for l in lines(data) {
            if let Ok(Some(Change::File(f))) = p.parse(l) {
                n += f.path.len();
            }
        }
        simd = simd.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        for l in lines(data) {
            if let Some(Change::File(f)) = serde_parse(l) {
                n += f.path.len();
            }
        }
        serde = serde.min(t.elapsed().as_secs_f64());
        black_box(n);
    }
    let per_s = |t: f64| LINES as f64 / t / 1e6;
    eprintln!(
        "manifest/interleaved_best_of_15: LineParser {:.2} M lines/s, serde_json baseline {:.2} M lines/s, ratio {:.2}",
        per_s(simd),
        per_s(serde),
        serde / simd
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
