#!/usr/bin/env python3
"""Chunker throughput, side by side with LangChain's splitter, in one run.

Splits the same files with LangChain's
RecursiveCharacterTextSplitter.from_language(Language.RUST, chunk_size=N,
chunk_overlap=0) (CPython, one core) and with elysiactl's chunker
(`cargo bench --bench chunk`, criterion, one core), then prints one JSON line:
both MB/s (10^6 bytes of raw file per second), the ratio, the files and bytes.

The files: every `.rs` file of DIR (default: the newest tokio-1.* in cargo's
registry sources), sorted by path, each at most 1 MiB: the selection
benches/chunk.rs makes from CHUNK_BENCH_DIR, which this script sets to DIR.
LangChain's sizes count characters, ours bytes; on ASCII source the two agree.

Needs `langchain-text-splitters` (pip, in a venv):
    python3 -m venv /tmp/lc && /tmp/lc/bin/pip install langchain-text-splitters
    /tmp/lc/bin/python scripts/bench-chunker.py [--dir DIR] [--rounds 5]
"""

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

MAX_FILE = 1 << 20
GROUP = "chunker"


def default_dir():
    home = os.environ.get("CARGO_HOME") or os.path.expanduser("~/.cargo")
    found = sorted(glob.glob(os.path.join(home, "registry", "src", "*", "tokio-1.*")))
    if not found:
        sys.exit("no tokio-1.* in cargo's registry sources: pass --dir")
    return found[-1]


def rust_files(top):
    paths = []
    for root, _dirs, names in os.walk(top):
        paths += [os.path.join(root, n) for n in names if n.endswith(".rs")]
    # benches/chunk.rs sorts PathBufs, which compare by component.
    paths.sort(key=lambda p: p.split(os.sep))
    out = []
    for p in paths:
        if os.path.isfile(p) and os.path.getsize(p) <= MAX_FILE:
            with open(p, "rb") as f:
                out.append(f.read())
    return out


def langchain_seconds(texts, chunk_size, rounds):
    from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter.from_language(
        Language.RUST, chunk_size=chunk_size, chunk_overlap=0
    )
    times = []
    chunks = 0
    for _ in range(rounds):
        t = time.perf_counter()
        chunks = sum(len(splitter.split_text(s)) for s in texts)
        times.append(time.perf_counter() - t)
    return statistics.median(times), chunks


def target_dir(repo):
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=repo, check=True, capture_output=True, text=True,
    )
    return json.loads(meta.stdout)["target_directory"]


def ours(repo, top, bench):
    env = dict(os.environ, CHUNK_BENCH_DIR=top)
    run = subprocess.run(
        ["cargo", "bench", "--bench", "chunk", "--", "--exact", f"{GROUP}/{bench}"],
        cwd=repo, env=env, capture_output=True, text=True,
    )
    if run.returncode != 0:
        sys.exit(f"cargo bench failed:\n{run.stderr[-3000:]}")
    found = re.search(r"chunk bench: \d+ files, \d+ bytes, (\d+) chunks", run.stderr)
    chunks = int(found.group(1)) if found else None
    base = os.path.join(target_dir(repo), "criterion", GROUP, bench, "new")
    with open(os.path.join(base, "estimates.json")) as f:
        seconds = json.load(f)["median"]["point_estimate"] / 1e9
    with open(os.path.join(base, "benchmark.json")) as f:
        measured = json.load(f)["throughput"]["Bytes"]
    return seconds, measured, chunks


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="tree of .rs files (default: tokio)")
    ap.add_argument("--chunk-size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5, help="LangChain rounds (median)")
    args = ap.parse_args()
    if args.chunk_size != 4096:
        sys.exit("benches/chunk.rs measures 4096 only")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    top = os.path.abspath(args.dir or default_dir())
    raw = rust_files(top)
    size = sum(len(b) for b in raw)
    texts = [b.decode("utf-8", errors="replace") for b in raw]

    lc_s, lc_chunks = langchain_seconds(texts, args.chunk_size, args.rounds)
    our_s, our_bytes, our_chunks = ours(repo, top, "chunk_spans_4096")
    if our_bytes != size:
        sys.exit(f"file sets differ: the bench read {our_bytes} bytes, this script {size}")
    obj_s, _, _ = ours(repo, top, "objects_4096")
    lc_mbs = size / lc_s / 1e6
    our_mbs = size / our_s / 1e6
    print(json.dumps({
        "dir": top,
        "files": len(raw),
        "bytes": size,
        "chunk_size": args.chunk_size,
        "langchain_mb_s": round(lc_mbs, 1),
        "langchain_chunks": lc_chunks,
        "elysiactl_chunk_spans_mb_s": round(our_mbs, 1),
        "elysiactl_objects_mb_s": round(size / obj_s / 1e6, 1),
        "elysiactl_chunks": our_chunks,
        "ratio": round(our_mbs / lc_mbs, 2),
        "loadavg": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
