#!/usr/bin/env python3
"""End-to-end benchmark of elysiactl (docs/PERFORMANCE.md).

Builds its inputs with `bench-fixture` (benches/tools/fixture.rs), drives the
release binaries, and prints one JSON document with every figure and the
baselines measured in the same run (the machine is shared and noisy: compare
ratios, not absolute numbers). Talks only to 127.0.0.1; every child process
has a timeout.

    cargo build --release --bins --example bench-fixture
    python3 scripts/bench-e2e.py [--work DIR] [--quick] [--skip-peer] [--only NAME,...]

Parts (--only): fsync, dryrun, resume, weaviate, latency, local, peer, chunks,
verify, abspaths, chunkpeer.
`abspaths` times the dry run on the 1M and 10M manifests with absolute paths
(`<root>/<repo>/<path>`, the seed's form) against the same lines with
repo-relative paths, interleaved, medians of 5.
`chunkpeer` compares elysiactl --chunk-size 4096 into the stand-in with the
Python pipeline users build instead (langchain-text-splitters + weaviate-client
3.x batch, best of a sweep of its configurations), on the 2 KiB tree and the
real-source tree, interleaved, medians of 3.
`chunks` compares --chunk-size 4096 with --chunk-size 0 (whole files),
interleaved in the same run, on the 2 KiB tree and on a tree of real source
files (the crate sources in $CARGO_HOME/registry/src), local and Weaviate.
`verify` syncs the tree into the local index and into the stand-in, times
`index verify` of each (clean: exit 0), and times the disk side alone (verify
of an empty local index: every file listed, read, hashed and chunked, every
one missing) against `find | xargs -0 -P2 sha256sum` over the same tree,
interleaved, medians of 3.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CARGO_TARGET_DIR as cargo reads it (a worktree building elsewhere).
REL = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release")
BIN = os.path.join(REL, "elysiactl")
STANDIN = os.path.join(REL, "weaviate-standin")
FIXTURE = os.path.join(REL, "examples", "bench-fixture")
TIMEOUT = 900


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    kw.setdefault("timeout", TIMEOUT)
    return subprocess.run(cmd, check=True, **kw)


def proc_status(pid):
    """(RssAnon, RssFile, VmHWM) in KiB, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            vals = {}
            for line in f:
                k, _, v = line.partition(":")
                if k in ("RssAnon", "RssFile", "VmHWM"):
                    vals[k] = int(v.split()[0])
            return vals
    except (FileNotFoundError, ProcessLookupError):
        return None


def timed(cmd, sample_rss=False, env=None):
    """Run cmd; return (wall seconds, peak RssAnon KiB, peak RssFile KiB, exit)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    anon = filed = 0
    deadline = t0 + TIMEOUT
    while p.poll() is None:
        if sample_rss:
            s = proc_status(p.pid)
            if s:
                anon = max(anon, s.get("RssAnon", 0))
                filed = max(filed, s.get("RssFile", 0))
        if time.perf_counter() > deadline:
            p.kill()
            raise RuntimeError(f"timeout: {cmd}")
        time.sleep(0.005 if sample_rss else 0.002)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{cmd} exited {p.returncode}: {err[-2000:]}")
    return wall, anon, filed, p.returncode, err


class Standin:
    """weaviate-standin on 127.0.0.1, stopped on exit."""

    def __init__(self, *flags):
        self.p = subprocess.Popen(
            [STANDIN, "--host", "127.0.0.1", "--port", "0", *flags],
            stdout=subprocess.PIPE,
        )
        self.url = self.p.stdout.readline().decode().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def fsync_baseline(work, n=300):
    """The disk's raw cost of a durable append: write ~200 B + fdatasync."""
    path = os.path.join(work, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    buf = b"x" * 200
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, buf)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return {
        "median_ms": statistics.median(times) * 1e3,
        "mean_ms": statistics.fmean(times) * 1e3,
        "p90_ms": times[int(len(times) * 0.9)] * 1e3,
    }


def sync_cmd(manifest, root, state, *extra):
    return [BIN, "index", "sync", "--input", manifest, "--root", root, "--state-dir", state, *extra]


def part_dryrun(work, root, manifests):
    out = {}
    for name, (path, lines) in manifests.items():
        state = fresh(os.path.join(work, f"state-dry-{name}"))
        best = None
        for _ in range(3):
            wall, anon, filed, rc, _ = timed(
                sync_cmd(path, root, state, "--dry-run", "--quiet"), sample_rss=True
            )
            r = {
                "lines": lines,
                "wall_s": wall,
                "lines_per_s": lines / wall,
                "peak_rss_anon_mib": anon / 1024,
                "peak_rss_file_mib": filed / 1024,
            }
            if best is None or wall < best["wall_s"]:
                best = r
        out[name] = best
        log(f"dry-run {name}: {best}")
    return out


def part_resume(work, root, manifest, lines, reps=3):
    """Time from start to the first batch recorded, resuming at 90 %."""
    tmpl = fresh(os.path.join(work, "state-resume-template"))
    made = run([FIXTURE, "resume-wal", tmpl, manifest, "0.9", "100"],
               capture_output=True).stdout.decode().strip()
    wal_bytes = sum(
        os.path.getsize(os.path.join(tmpl, "wal", f)) for f in os.listdir(os.path.join(tmpl, "wal"))
    )
    results = []
    for target in ("local",):
        for _ in range(reps):
            state = os.path.join(work, "state-resume")
            shutil.rmtree(state, ignore_errors=True)
            shutil.copytree(tmpl, state)
            t0 = time.perf_counter()
            p = subprocess.Popen(
                sync_cmd(manifest, root, state, "--target", target, "--batch-size", "100"),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            first = None
            resume_line = None
            for raw in p.stderr:
                line = raw.decode(errors="replace")
                if line.startswith("[RESUME]"):
                    resume_line = line.strip()
                if line.startswith("[PROCESSED]"):
                    first = time.perf_counter() - t0
                    break
                if time.perf_counter() - t0 > 120:
                    break
            p.send_signal(signal.SIGKILL)
            p.wait()
            results.append(first)
            log(f"resume: first batch after {first}; {resume_line}")
    ok = [r for r in results if r is not None]
    return {
        "fixture": made,
        "wal_bytes": wal_bytes,
        "target": "local",
        "batch_size": 100,
        "first_batch_ms_each": [r * 1e3 for r in ok],
        "first_batch_ms_median": statistics.median(ok) * 1e3 if ok else None,
        "resume_line": resume_line,
    }


def weaviate_run(work, root, manifest, files, batch, conc, latency=0, tag=""):
    with Standin("--latency-ms", str(latency)) as s:
        state = fresh(os.path.join(work, f"state-w{tag}"))
        wall, _, _, rc, err = timed(sync_cmd(
            manifest, root, state, "--target", "weaviate", "--weaviate-url", s.url,
            "--batch-size", str(batch), "--concurrency", str(conc), "--quiet",
        ))
        summary = [l for l in err.splitlines() if l.startswith("[SUMMARY]")]
        return {
            "files": files, "batch_size": batch, "concurrency": conc,
            "latency_ms": latency, "wall_s": wall, "files_per_s": files / wall,
            "exit": rc, "summary": summary[-1] if summary else err[-300:],
        }


def part_weaviate(work, root, manifest, files):
    out = []
    for batch, conc in ((1000, 2), (1000, 4), (2000, 2), (5000, 2)):
        r = weaviate_run(work, root, manifest, files, batch, conc, 0, "zero")
        log(f"weaviate zero latency: {r}")
        out.append(r)
    return out


def part_latency(work, root, manifest, files, batch=100):
    out = []
    for conc in (1, 4, 8):
        r = weaviate_run(work, root, manifest, files, batch, conc, 50, f"lat{conc}")
        bound = conc * batch / 0.050
        r["latency_bound_files_per_s"] = bound
        r["fraction_of_bound"] = r["files_per_s"] / bound
        log(f"weaviate 50 ms: {r}")
        out.append(r)
    return out


def part_local(work, root, manifest, files):
    out = []
    for batch in (1000, 5000):
        state = fresh(os.path.join(work, "state-local"))
        wall, _, _, rc, err = timed(sync_cmd(
            manifest, root, state, "--target", "local", "--batch-size", str(batch), "--quiet",
        ))
        r = {"files": files, "batch_size": batch, "wall_s": wall,
             "files_per_s": files / wall, "exit": rc}
        log(f"local: {r}")
        out.append(r)
    return out


def real_tree(work, limit=20_000):
    """A manifest over real source files: the crate sources cargo left in
    $CARGO_HOME/registry/src (one repo per crate), text files only, at most
    `limit` files. Returns (root, manifest, files, bytes)."""
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    src = os.path.join(home, "registry", "src")
    regs = sorted(os.listdir(src)) if os.path.isdir(src) else []
    if not regs:
        return None
    root = os.path.join(src, regs[0])
    manifest = os.path.join(work, "manifest-real.jsonl")
    files, total = 0, 0
    with open(manifest, "w") as out:
        for crate in sorted(os.listdir(root)):
            for d, _, names in sorted(os.walk(os.path.join(root, crate))):
                for n in sorted(names):
                    if not n.endswith((".rs", ".md", ".toml", ".txt", ".c", ".h", ".py")):
                        continue
                    full = os.path.join(d, n)
                    size = os.path.getsize(full)
                    if size > 1 << 20 or files >= limit:
                        continue
                    rel = os.path.relpath(full, os.path.join(root, crate))
                    out.write(json.dumps({"op": "add", "repo": crate, "path": rel}) + "\n")
                    files += 1
                    total += size
    return root, manifest, files, total


def part_chunks(work, root2k, manifest2k, files2k, reps=3):
    """--chunk-size 4096 against 0, interleaved, medians of `reps` runs."""
    trees = [("2KiB", root2k, manifest2k, files2k, files2k * 2048)]
    real = real_tree(work)
    if real:
        trees.append(("real",) + real)
    out = {}
    for name, root, manifest, files, nbytes in trees:
        for target in ("local", "weaviate"):
            walls = {"0": [], "4096": []}
            objects = {}
            for rep in range(reps):
                for size in ("0", "4096"):
                    state = fresh(os.path.join(work, f"state-chunks-{size}"))
                    extra = ["--chunk-size", size, "--batch-size", "1000", "--quiet"]
                    if target == "weaviate":
                        with Standin() as s:
                            wall, _, _, rc, err = timed(sync_cmd(
                                manifest, root, state, "--target", "weaviate",
                                "--weaviate-url", s.url, "--concurrency", "4", *extra))
                    else:
                        wall, _, _, rc, err = timed(sync_cmd(
                            manifest, root, state, "--target", "local", *extra))
                        if rep == 0:
                            p = run([BIN, "index", "export", "--state-dir", state],
                                    capture_output=True)
                            objects[size] = p.stdout.count(b"\n")
                    if rc not in (0, 1):
                        raise SystemExit(f"chunks {name} {target} {size}: exit {rc}: {err[-500:]}")
                    walls[size].append(wall)
            med = {k: statistics.median(v) for k, v in walls.items()}
            r = {
                "files": files, "mb": nbytes / 1e6,
                "whole_file": {"wall_s": med["0"], "files_per_s": files / med["0"],
                               "mb_per_s": nbytes / 1e6 / med["0"]},
                "chunk_4096": {"wall_s": med["4096"], "files_per_s": files / med["4096"],
                               "mb_per_s": nbytes / 1e6 / med["4096"]},
                "cost": med["4096"] / med["0"] - 1,
                "walls": walls,
            }
            if objects:
                r["objects"] = objects
            log(f"chunks {name} {target}: {r}")
            out[f"{name}_{target}"] = r
    return out


def sha256sum_baseline(root):
    """`find ROOT -type f -print0 | xargs -0 -P2 sha256sum > /dev/null`."""
    t0 = time.perf_counter()
    run(["sh", "-c", 'find "$1" -type f -print0 | xargs -0 -P2 sha256sum > /dev/null',
         "sh", root])
    return time.perf_counter() - t0


def part_search(work, root, manifest, files, queries=100):
    """Keyword search over the local index of the tree: p50 and p95 wall
    time of `queries` runs of `elysiactl search`, each a process as a user
    starts it (start, open the index, query, print), words drawn from the
    files themselves."""
    import random
    import re
    state = fresh(os.path.join(work, "state-search"))
    _, _, _, rc, err = timed(sync_cmd(
        manifest, root, state, "--target", "local", "--batch-size", "1000", "--quiet"))
    if rc != 0:
        raise SystemExit(f"search: sync exit {rc}: {err[-500:]}")
    rng = random.Random(15)
    paths = []
    for d, _, names in os.walk(root):
        paths.extend(os.path.join(d, n) for n in names if not n.startswith("."))
    words = []
    for p in rng.sample(sorted(paths), min(queries, len(paths))):
        toks = re.findall(rb"[A-Za-z_][A-Za-z0-9_]{3,}", open(p, "rb").read())
        if toks:
            words.append(rng.choice(toks).decode())
    walls, hits = [], 0
    for w in words:
        t0 = time.perf_counter()
        p = run([BIN, "search", w, "--state-dir", state, "--json", "--limit", "10"],
                capture_output=True)
        walls.append(time.perf_counter() - t0)
        hits += p.stdout.count(b"\n")
    walls.sort()
    pct = lambda q: walls[min(len(walls) - 1, int(q * len(walls)))]
    r = {"files": files, "queries": len(walls), "p50_ms": pct(0.50) * 1e3,
         "p95_ms": pct(0.95) * 1e3, "max_ms": walls[-1] * 1e3, "hits": hits}
    log(f"search: {r}")
    return r


def part_verify(work, root, manifest, files, reps=3):
    """`index verify` of the whole tree against the local index and the
    stand-in (both in sync: exit 0), and its disk side alone as a ratio to
    sha256sum over the same tree, interleaved."""
    out = {"files": files}

    def verify(state, *target):
        wall, anon, filed, rc, err = timed(
            [BIN, "index", "verify", "--root", root, "--state-dir", state, "--json", *target],
            sample_rss=True)
        return wall, anon, filed, rc, err

    def best_of(name, state, want_rc, *target):
        walls, anons, files_ = [], [], []
        for _ in range(reps):
            wall, anon, filed, rc, err = verify(state, *target)
            if rc != want_rc:
                raise SystemExit(f"verify {name}: exit {rc}, want {want_rc}: {err[-500:]}")
            walls.append(wall)
            anons.append(anon)
            files_.append(filed)
        med = statistics.median(walls)
        r = {"wall_s": med, "files_per_s": files / med, "walls": walls,
             "peak_rss_anon_mib": max(anons) / 1024, "peak_rss_file_mib": max(files_) / 1024}
        log(f"verify {name}: {r}")
        return r

    # The local index.
    local = fresh(os.path.join(work, "state-verify-local"))
    wall, _, _, rc, err = timed(sync_cmd(
        manifest, root, local, "--target", "local", "--batch-size", "1000", "--quiet"))
    if rc != 0:
        raise SystemExit(f"verify: local sync exit {rc}: {err[-500:]}")
    out["local"] = best_of("local", local, 0)

    # The stand-in (one process for the sync and the verifies).
    with Standin() as s:
        wstate = fresh(os.path.join(work, "state-verify-weaviate"))
        flags = ["--target", "weaviate", "--weaviate-url", s.url]
        wall, _, _, rc, err = timed(sync_cmd(
            manifest, root, wstate, *flags, "--batch-size", "1000", "--concurrency", "4",
            "--quiet"))
        if rc != 0:
            raise SystemExit(f"verify: weaviate sync exit {rc}: {err[-500:]}")
        out["weaviate"] = best_of("weaviate", wstate, 0, *flags)

    # The disk side alone: an empty local index (a state dir without one),
    # so the index pass reads nothing and every file is listed, read,
    # hashed and chunked, and reported missing. Interleaved with sha256sum.
    empty = fresh(os.path.join(work, "state-verify-empty"))
    disk, base, anons = [], [], []
    for _ in range(reps):
        base.append(sha256sum_baseline(root))
        wall, anon, _, rc, err = verify(empty)
        if rc != 1:
            raise SystemExit(f"verify of an empty index: exit {rc}, want 1: {err[-500:]}")
        disk.append(wall)
        anons.append(anon)
    d, b = statistics.median(disk), statistics.median(base)
    out["disk_side"] = {
        "what": "index verify of an empty local index (every file missing)",
        "wall_s": d, "files_per_s": files / d, "walls": disk,
        "peak_rss_anon_mib": max(anons) / 1024,
        "sha256sum_p2_wall_s": b, "sha256sum_walls": base,
        "ratio_vs_sha256sum": b / d,
    }
    log(f"verify disk side: {out['disk_side']}")
    return out


def pacing_run(work, root, manifest, quota, batch, conc, patience, tag, us_per_object=0):
    """One sync against the stand-in's vectorizer quota of `quota` objects/s
    (and a vectorizer taking `us_per_object` µs an object)."""
    with Standin("--vectorizer-quota-per-sec", str(quota),
                 "--vectorizer-us-per-object", str(us_per_object)) as s:
        state = fresh(os.path.join(work, f"state-pace-{tag}"))
        prom = os.path.join(work, f"pace-{tag}.prom")
        cmd = sync_cmd(manifest, root, state, "--target", "weaviate", "--weaviate-url", s.url,
                       "--batch-size", str(batch), "--concurrency", str(conc), "--quiet",
                       "--rate-limit-patience", patience, "--metrics-file", prom)
        t0 = time.perf_counter()
        # run(): stderr is read while the sync runs (thousands of [FAILED]
        # lines without pacing would fill a pipe read only at the end).
        p = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT)
        wall = time.perf_counter() - t0
        if p.returncode not in (0, 1):
            raise RuntimeError(f"{cmd} exited {p.returncode}: {p.stderr[-2000:]}")
        import urllib.request
        stats = json.load(urllib.request.urlopen(f"{s.url}/__standin/stats"))
    err = p.stderr.decode(errors="replace")
    summary = [l for l in err.splitlines() if l.startswith("[SUMMARY]")]
    m = {}
    for line in open(prom).read().splitlines():
        if line.startswith("elysiactl_sync_") and " " in line:
            k, v = line.rsplit(" ", 1)
            m[k] = float(v)
    refused = stats.get("injected", {}).get("quota", 0)
    indexed = int(summary[-1].split(" indexed")[0].rsplit(" ", 1)[-1]) if summary else 0
    failed = int(summary[-1].split(" failed")[0].rsplit(" ", 1)[-1]) if summary else -1
    return {
        "quota_per_s": quota, "batch_size": batch, "concurrency": conc,
        "rate_limit_patience": patience, "vectorizer_us_per_object": us_per_object,
        "exit": p.returncode, "wall_s": wall,
        "files_indexed": indexed, "failed_items": failed,
        "indexed_per_s": indexed / wall, "ratio_of_quota": indexed / wall / quota,
        "quota_refusals": refused,
        "refused_share_of_sends": refused / max(1, refused + indexed),
        "in_flight_limit_lowest": m.get("elysiactl_sync_in_flight_limit_lowest"),
        "paced_objects_per_second_lowest": m.get("elysiactl_sync_paced_objects_per_second_lowest"),
        "throttled_seconds_total": m.get("elysiactl_sync_throttled_seconds_total"),
        "summary": summary[-1] if summary else err[-300:],
    }


def part_pacing(work, root, files, quota=200):
    """Issue 16: the sync against a vectorizer quota well below what it can
    send (the zero-latency runs index thousands of files a second), paced
    (the default --rate-limit-patience) and not (0s: rate limits as
    ordinary transient failures), in the same run. Every file of the 2 KiB
    tree is one object (chunk size 4096), so files are objects here."""
    n = min(files, 40 * quota)
    manifest = os.path.join(work, f"manifest-pace-{n}.jsonl")
    if not os.path.exists(manifest):
        run([FIXTURE, "manifest", manifest, str(n), str(n)])
    out = {"quota_per_s": quota, "lines": n, "runs": []}
    for batch, conc, patience, us, tag in ((100, 4, "10m", 0, "paced-b100"),
                                           (100, 4, "10m", 1000, "paced-b100-slow"),
                                           (500, 4, "10m", 0, "paced-b500"),
                                           (100, 4, "0s", 0, "unpaced-b100")):
        r = pacing_run(work, root, manifest, quota, batch, conc, patience, tag, us)
        log(f"pacing: {r}")
        out["runs"].append(r)
    return out


# The Python peers' shared parts: the client and the collection (EXTRA: more
# properties), and the batch set-up (failures collected by the callback).
PEER_SCHEMA = r'''
client = weaviate.Client(url, timeout_config=(5, 60), startup_period=None)
client.schema.create_class({"class": cls, "vectorizer": "none", "properties": [
    {"name": "repo", "dataType": ["text"], "tokenization": "field"},
    {"name": "path", "dataType": ["text"], "tokenization": "field"},
    {"name": "content", "dataType": ["text"]},
    {"name": "contentSha256", "dataType": ["text"], "tokenization": "field"},
    {"name": "size", "dataType": ["int"]}] + EXTRA})
'''

PEER_BATCH = r'''
failed = []
def cb(results):
    for r in results or []:
        if "errors" in r.get("result", {}):
            failed.append(r)
client.batch.configure(batch_size=int(batch), num_workers=int(workers),
                       dynamic=dynamic == "1", callback=cb)
'''


PEER = r'''
import hashlib, json, os, sys, time, uuid
import weaviate
url, root, listing, batch, workers, dynamic, cls = sys.argv[1:8]
EXTRA = []
''' + PEER_SCHEMA + r'''files = [l.split("\t") for l in open(listing).read().splitlines()]
''' + PEER_BATCH + r'''t0 = time.perf_counter()
with client.batch as b:
    for repo, path in files:
        raw = open(os.path.join(root, repo, path), "rb").read()
        b.add_data_object(
            {"repo": repo, "path": path, "content": raw.decode("utf-8", "replace"),
             "contentSha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)},
            cls, uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"elysiactl://{repo}/{path}")))
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "files": len(files), "failed": len(failed)}))
'''


def peer_venv(work, name, packages, script_name, script_text):
    """A venv under `work` with `packages` (made once), and the peer's script
    written next to it: (python, script)."""
    venv = os.path.join(work, name)
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        run([sys.executable, "-m", "venv", venv])
        run([py, "-m", "pip", "install", "-q", *packages])
    script = os.path.join(work, script_name)
    with open(script, "w") as f:
        f.write(script_text)
    return py, script


def part_peer(work, root, files):
    py, script = peer_venv(work, "venv-peer", ["weaviate-client<4"], "peer.py", PEER)
    ver = run([py, "-c", "import weaviate; print(weaviate.__version__)"],
              capture_output=True).stdout.decode().strip()
    listing = os.path.join(work, "peer-files.tsv")
    run([FIXTURE, "listing", listing, str(files)])
    out = {"weaviate_client": ver, "configs": []}
    n = 0
    for batch in (100, 500):
        for workers in (1, 2, 4):
            for dynamic in ("0", "1"):
                n += 1
                with Standin() as s:
                    p = run([py, script, s.url, root, listing, str(batch), str(workers),
                             dynamic, f"Peer{n}"], capture_output=True)
                r = json.loads(p.stdout.decode().strip().splitlines()[-1])
                r.update(batch_size=batch, workers=workers, dynamic=dynamic == "1",
                         files_per_s=r["files"] / r["wall_s"])
                log(f"peer: {r}")
                out["configs"].append(r)
    out["best"] = max(out["configs"], key=lambda r: r["files_per_s"])
    return out


def timed_cpu(cmd):
    """Run cmd; return (wall s, user+sys CPU s, exit)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc
    if rc not in (0, 1):
        raise RuntimeError(f"{cmd} exited {rc}: {err[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime, rc


def part_abspaths(work, root, mans, reps=5):
    """Dry run of absolute-path lines against the same lines repo-relative,
    interleaved, medians of `reps`."""
    out = {}
    for name, (rel_path, lines) in mans.items():
        abs_path = rel_path.replace(".jsonl", "-abs.jsonl")
        if not os.path.exists(abs_path):
            log(f"writing {abs_path}")
            run([FIXTURE, "manifest", abs_path, str(lines), "1000", os.path.abspath(root)])
        state = fresh(os.path.join(work, f"state-abs-{name}"))
        walls = {"relative": [], "absolute": []}
        cpus = {"relative": [], "absolute": []}
        for _ in range(reps):
            for kind, path in (("relative", rel_path), ("absolute", abs_path)):
                wall, cpu, rc = timed_cpu(sync_cmd(path, root, state, "--dry-run", "--quiet"))
                if rc != 0:
                    raise SystemExit(f"abspaths {name} {kind}: exit {rc}")
                walls[kind].append(wall)
                cpus[kind].append(cpu)
        r = {"lines": lines,
             "manifest_bytes": {"relative": os.path.getsize(rel_path),
                                "absolute": os.path.getsize(abs_path)}}
        for kind in walls:
            w, c = statistics.median(walls[kind]), statistics.median(cpus[kind])
            r[kind] = {"wall_s": w, "lines_per_s": lines / w, "cpu_s": c,
                       "walls": walls[kind], "cpus": cpus[kind]}
        r["ratio_abs_vs_rel"] = r["relative"]["wall_s"] / r["absolute"]["wall_s"]
        r["ratio_abs_vs_rel_cpu"] = r["relative"]["cpu_s"] / r["absolute"]["cpu_s"]
        log(f"abspaths {name}: {r}")
        out[name] = r
    return out


CHUNKPEER = r"""
import hashlib, json, os, sys, time, uuid
import weaviate
from langchain_text_splitters import Language, RecursiveCharacterTextSplitter
url, root, listing, batch, workers, dynamic, cls, chunk = sys.argv[1:9]
chunk = int(chunk)
EXTRA = [{"name": "chunk", "dataType": ["int"]},
         {"name": "chunkCount", "dataType": ["int"]}]
""" + PEER_SCHEMA + r"""with open(listing) as f:
    files = [l.split("\t") for l in f.read().splitlines()]
# The language by extension, as users write it; one splitter per language.
LANG = {".rs": Language.RUST, ".py": Language.PYTHON, ".md": Language.MARKDOWN,
        ".c": Language.C, ".h": Language.C, ".go": Language.GO, ".js": Language.JS}
splitters = {}
def splitter(path):
    lang = LANG.get(os.path.splitext(path)[1])
    if lang not in splitters:
        if lang is None:
            splitters[lang] = RecursiveCharacterTextSplitter(chunk_size=chunk, chunk_overlap=0)
        else:
            splitters[lang] = RecursiveCharacterTextSplitter.from_language(
                lang, chunk_size=chunk, chunk_overlap=0)
    return splitters[lang]
""" + PEER_BATCH + r"""objects = 0
nbytes = 0
t0 = time.perf_counter()
with client.batch as b:
    for repo, path in files:
        with open(os.path.join(root, repo, path), "rb") as f:
            raw = f.read()
        nbytes += len(raw)
        text = raw.decode("utf-8", "replace")
        sha = hashlib.sha256(raw).hexdigest()
        chunks = splitter(path).split_text(text) or [""]
        for k, c in enumerate(chunks):
            name = f"elysiactl://{repo}/{path}" + (f"//{k}" if k else "")
            b.add_data_object(
                {"repo": repo, "path": path, "content": c, "contentSha256": sha,
                 "chunk": k, "chunkCount": len(chunks), "size": len(raw)},
                cls, uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, name)))
            objects += 1
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "files": len(files), "bytes": nbytes,
                  "objects": objects, "failed": len(failed)}))
"""


def standin_stats(url):
    import urllib.request
    with urllib.request.urlopen(url + "/__standin/stats", timeout=30) as r:
        return json.loads(r.read())


def part_chunkpeer(work, root2k, manifest2k, files2k, reps=3, chunk=4096):
    """elysiactl --chunk-size 4096 into the stand-in against the Python
    pipeline (langchain splitter by extension + weaviate-client 3.x batch),
    same trees, same stand-in, interleaved, medians of `reps`."""
    py, script = peer_venv(work, "venv-chunkpeer",
                           ["weaviate-client<4", "langchain-text-splitters"],
                           "chunkpeer.py", CHUNKPEER)
    vers = run([py, "-c", "import weaviate, importlib.metadata as m; "
                "print(weaviate.__version__, m.version('langchain-text-splitters'))"],
               capture_output=True).stdout.decode().split()
    listing2k = os.path.join(work, "chunkpeer-2k.tsv")
    run([FIXTURE, "listing", listing2k, str(files2k)])
    trees = [("2KiB", root2k, manifest2k, listing2k)]
    real = real_tree(work)
    if real:
        rroot, rman, _, _ = real
        listing = os.path.join(work, "chunkpeer-real.tsv")
        with open(rman) as m, open(listing, "w") as out:
            for l in m:
                d = json.loads(l)
                out.write(f"{d['repo']}\t{d['path']}\n")
        trees.append(("real", rroot, rman, listing))
    out = {"weaviate_client": vers[0], "langchain_text_splitters": vers[1],
           "chunk_size": chunk, "chunk_overlap": 0}
    n = 0

    def peer(root, listing, batch, workers, dynamic):
        nonlocal n
        n += 1
        with Standin() as s:
            p = run([py, script, s.url, root, listing, str(batch), str(workers),
                     dynamic, f"Chunkpeer{n}", str(chunk)], capture_output=True)
            st = standin_stats(s.url)
        r = json.loads(p.stdout.decode().strip().splitlines()[-1])
        r.update(batch_size=batch, workers=workers, dynamic=dynamic == "1",
                 objects_written=st["objects_written"])
        return r

    def ours(root, manifest, batch, conc):
        with Standin() as s:
            state = fresh(os.path.join(work, "state-chunkpeer"))
            wall, _, _, rc, err = timed(sync_cmd(
                manifest, root, state, "--target", "weaviate", "--weaviate-url", s.url,
                "--chunk-size", str(chunk), "--batch-size", str(batch),
                "--concurrency", str(conc), "--quiet"))
            st = standin_stats(s.url)
        if rc != 0:
            raise SystemExit(f"chunkpeer: elysiactl exit {rc}: {err[-500:]}")
        return {"wall_s": wall, "objects_written": st["objects_written"],
                "batch_size": batch, "concurrency": conc}

    for name, root, manifest, listing in trees:
        files = sum(1 for _ in open(listing))
        # The peer's best configuration, one run of each.
        sweep = []
        for batch in (100, 500):
            for workers in (1, 2, 4):
                for dynamic in ("0", "1"):
                    r = peer(root, listing, batch, workers, dynamic)
                    log(f"chunkpeer {name} sweep: {r}")
                    sweep.append(r)
        best = min(sweep, key=lambda r: r["wall_s"])
        nbytes = best["bytes"]
        # Ours: the best of the settings part_chunks uses, one run each.
        mine = [ours(root, manifest, b, c) for b, c in ((1000, 4), (1000, 2), (500, 4))]
        for r in mine:
            log(f"chunkpeer {name} elysiactl: {r}")
        ob = min(mine, key=lambda r: r["wall_s"])
        # Interleaved: ours and the peer's best in turn.
        walls = {"elysiactl": [], "peer": []}
        objs = {}
        for _ in range(reps):
            r = ours(root, manifest, ob["batch_size"], ob["concurrency"])
            walls["elysiactl"].append(r["wall_s"])
            objs["elysiactl"] = r["objects_written"]
            r = peer(root, listing, best["batch_size"], best["workers"],
                     "1" if best["dynamic"] else "0")
            walls["peer"].append(r["wall_s"])
            objs["peer"] = r["objects"]
        res = {"files": files, "mb": nbytes / 1e6,
               "peer_config": {k: best[k] for k in ("batch_size", "workers", "dynamic")},
               "elysiactl_config": {k: ob[k] for k in ("batch_size", "concurrency")},
               "sweep": sweep, "elysiactl_settings": mine}
        for who in walls:
            w = statistics.median(walls[who])
            res[who] = {"wall_s": w, "files_per_s": files / w, "mb_per_s": nbytes / 1e6 / w,
                        "objects": objs[who], "objects_per_s": objs[who] / w,
                        "walls": walls[who]}
        res["ratio_mb_per_s"] = res["elysiactl"]["mb_per_s"] / res["peer"]["mb_per_s"]
        log(f"chunkpeer {name}: ratio {res['ratio_mb_per_s']:.2f}")
        out[name] = res
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/elysiactl-bench")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--files", type=int, default=50_000)
    a = ap.parse_args()
    parts = set(a.only.split(",")) if a.only else {
        "fsync", "dryrun", "resume", "weaviate", "latency", "local", "peer", "chunks",
        "verify", "search", "pacing", "abspaths", "chunkpeer"}
    if a.skip_peer:
        parts -= {"peer", "chunkpeer"}
    for b in (BIN, STANDIN, FIXTURE):
        if not os.path.exists(b):
            sys.exit(f"{b} missing: cargo build --release --bins --example bench-fixture")
    work = a.work
    os.makedirs(work, exist_ok=True)
    files = 2_000 if a.quick else a.files
    big = 200_000 if a.quick else 10_000_000
    small = 20_000 if a.quick else 1_000_000

    root = os.path.join(work, "root")
    stamp = os.path.join(root, f".done-{files}")
    if not os.path.exists(stamp):
        fresh(root)
        log(f"writing {files} files of 2 KiB under {root}")
        run([FIXTURE, "tree", root, str(files), "2048"])
        open(stamp, "w").close()
    mans = {}
    need = {"1M": bool(parts & {"dryrun", "abspaths"}),
            "10M": bool(parts & {"dryrun", "resume", "abspaths"}),
            "e2e": True}
    for name, lines, distinct in (("1M", small, 1000), ("10M", big, 1000), ("e2e", files, files)):
        if not need[name]:
            continue
        path = os.path.join(work, f"manifest-{name}-{lines}.jsonl")
        if not os.path.exists(path):
            log(f"writing {path}")
            run([FIXTURE, "manifest", path, str(lines), str(distinct)])
        mans[name] = (path, lines)

    res = {
        "machine": {
            "nproc": os.cpu_count(),
            "uname": " ".join(os.uname()),
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                         if l.startswith("model name")), "?"),
            "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        },
        "inputs": {"files": files, "file_size": 2048,
                   "manifest_bytes": {k: os.path.getsize(p) for k, (p, _) in mans.items()}},
    }
    if "fsync" in parts:
        res["fdatasync_baseline"] = fsync_baseline(work)
        log(f"fdatasync: {res['fdatasync_baseline']}")
    if "dryrun" in parts:
        res["dry_run"] = part_dryrun(work, root, {"1M": mans["1M"], "10M": mans["10M"]})
    if "resume" in parts:
        res["resume_90pct"] = part_resume(work, root, *mans["10M"])
    if "weaviate" in parts:
        res["weaviate_zero_latency"] = part_weaviate(work, root, mans["e2e"][0], files)
    if "latency" in parts:
        lat_files = min(files, 20_000)
        path = os.path.join(work, f"manifest-lat-{lat_files}.jsonl")
        if not os.path.exists(path):
            run([FIXTURE, "manifest", path, str(lat_files), str(lat_files)])
        res["weaviate_50ms"] = part_latency(work, root, path, lat_files)
    if "local" in parts:
        res["local_index"] = part_local(work, root, mans["e2e"][0], files)
    if "chunks" in parts:
        res["chunks"] = part_chunks(work, root, mans["e2e"][0], files)
    if "verify" in parts:
        res["verify"] = part_verify(work, root, mans["e2e"][0], files)
    if "search" in parts:
        res["search"] = part_search(work, root, mans["e2e"][0], files)
    if "pacing" in parts:
        res["pacing"] = part_pacing(work, root, files)
    if "abspaths" in parts:
        res["abs_paths_dry_run"] = part_abspaths(work, root, {"1M": mans["1M"], "10M": mans["10M"]})
    if "chunkpeer" in parts:
        res["chunked_python_peer"] = part_chunkpeer(work, root, mans["e2e"][0], files)
    if "peer" in parts:
        res["python_peer"] = part_peer(work, root, files)
        if "weaviate_zero_latency" in res:
            ours = max(r["files_per_s"] for r in res["weaviate_zero_latency"])
            res["ratio_vs_python_best"] = ours / res["python_peer"]["best"]["files_per_s"]
    res["machine"]["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
