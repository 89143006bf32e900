"""Start-up of the vector index at scale: snapshot + index-log replay against the tables.

Stores ``--n`` random unit vectors (``--dim``, float32; one tenant, one embedding space,
asset-level so one namespace) as embedding rows of a SQLite metadata DB in a temporary
data dir, written with plain ``executemany`` INSERTs. Then, each step in a fresh process
so that memory is one copy at a time and nothing is cached in Python:

- (a) read once: ``SELECT id, vector FROM embedding``, every row through ``np.frombuffer``
  into one matrix (sqlite3 directly: the least any start-up from the tables must pay);
- (c) first start: ``Kenning(settings).load_indexes()`` with no snapshot: the full
  rebuild from the tables (HNSW graph build included) and writing the snapshot; its
  rebuild share is taken from the follower's log record;
- (c') the same rebuild without an HNSW graph (exact search only), to show what the
  graph build costs;
- (b) start from the snapshot: ``Kenning(settings)`` then ``load_indexes()``, repeated;
  the graph file is mapped, not read, so the costs it defers are measured too: the
  first searches after the start (pages come in as they are touched), the background
  copy into memory that follows a start, and the first add, once after that copy and
  once right after a start with the copy switched off (faiss cannot add to a mapped
  index, so that add reads the graph into memory itself);
- ``kenning serve`` from spawn to ``/healthz`` and ``/readyz`` answering 200 (unless
  ``--no-serve``).

The page cache is warm for (a) and (b) alike (the DB and the snapshot were just
written). Reports medians and the ratio (b)/(a); the target is a start-up of seconds,
faster than reading the vectors once from the database.

    .venv/bin/python bench/bench_index_startup.py --n 1000000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

SPACE = "bench-space"


def _settings(data_dir: Path) -> Any:
    from kenning.settings import Settings

    return Settings(data_dir=data_dir, workers=0, run_workers=False, log_json=False,
                    log_level="WARNING")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill(data_dir: Path, n: int, dim: int) -> dict[str, Any]:
    """Embedding rows for one asset of one tenant, inserted in bulk."""
    from kenning.services.tenants import TenantService
    from kenning.stores.metadata import Database
    from kenning.stores.metadata.tables import Asset

    settings = _settings(data_dir)
    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    db.upgrade()
    tenant = TenantService(db).create_tenant("bench")
    with db.session() as s:
        asset = Asset(tenant_id=tenant, kind="text", sha256="ab" * 32, mime="text/plain",
                      bytes=1, source="upload")
        s.add(asset)
        s.flush()
        asset_id = asset.id
    db.dispose()
    started = time.perf_counter()
    conn = sqlite3.connect(data_dir / "kenning.db")
    rng = np.random.default_rng(7)
    for start in range(0, n, 10_000):
        rows = rng.standard_normal((min(10_000, n - start), dim)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        conn.executemany(
            "INSERT INTO embedding (tenant_id, asset_id, segment_id, producer, space, vector)"
            " VALUES (?, ?, NULL, 'bench', ?, ?)",
            [(tenant, asset_id, SPACE, row.tobytes()) for row in rows],
        )
        conn.commit()
    conn.close()
    return {"seconds": time.perf_counter() - started, "tenant": tenant,
            "db_mb": (data_dir / "kenning.db").stat().st_size / 2**20}


def read_once(data_dir: Path, n: int, dim: int) -> dict[str, Any]:
    """(a): every vector read from the tables once, into one matrix."""
    started = time.perf_counter()
    conn = sqlite3.connect(data_dir / "kenning.db")
    ids = np.empty(n, dtype=np.int64)
    matrix = np.empty((n, dim), dtype=np.float32)
    i = 0
    cursor = conn.execute("SELECT id, vector FROM embedding ORDER BY id")
    while rows := cursor.fetchmany(10_000):
        for emb_id, raw in rows:
            ids[i] = emb_id
            matrix[i] = np.frombuffer(raw, dtype=np.float32)
            i += 1
    conn.close()
    assert i == n, (i, n)
    return {"seconds": time.perf_counter() - started, "peak_mb": _peak_mb()}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def start(data_dir: Path, n: int, tenant: str) -> dict[str, Any]:
    """(b) or (c): build Kenning and load its indexes, as `kenning serve` does at start."""
    from kenning.container import Kenning
    from kenning.stores.bundle import vector_namespace

    records = _Records()
    follower_log = logging.getLogger("kenning.stores.follower")
    follower_log.addHandler(records)
    follower_log.setLevel(logging.INFO)
    started = time.perf_counter()
    kenning = Kenning(_settings(data_dir))
    built = time.perf_counter()
    counts = kenning.load_indexes()
    loaded = time.perf_counter()
    namespace = vector_namespace(tenant, SPACE, asset_level=True)
    assert kenning.stores.vectors.count(namespace) == n, kenning.stores.vectors.count(namespace)
    probe = np.random.default_rng(1).standard_normal(kenning.stores.vectors.stats(  # type: ignore[attr-defined]
        namespace).dim).astype(np.float32)
    hnsw = kenning.stores.vectors.stats(namespace).hnsw_built  # type: ignore[attr-defined]
    searched = time.perf_counter()
    assert len(kenning.stores.vectors.search(namespace, probe, 10)) == 10
    first_search = time.perf_counter() - searched
    searched = time.perf_counter()
    for seed in range(2, 102):
        query = np.random.default_rng(seed).standard_normal(probe.shape).astype(np.float32)
        kenning.stores.vectors.search(namespace, query, 10)
    next_searches = (time.perf_counter() - searched) / 100
    rebuild = [getattr(r, "seconds", None) for r in records.records
               if r.getMessage().startswith("vector and hash indexes rebuilt")]
    peak = _peak_mb()
    kenning.close()
    return {"construct_s": built - started, "load_s": loaded - built, "counts": counts,
            "rebuild_s": rebuild[0] if rebuild else None, "hnsw": hnsw, "peak_mb": peak,
            "first_search_s": first_search, "search_s": next_searches}


def first_add(data_dir: Path, tenant: str, *, warm: bool) -> dict[str, Any]:
    """After a start from the snapshot: the background copy into memory (``warm``), or
    none (the first add then reads the mapped graph itself), and the first adds. Not
    saved: the tables stay the truth."""
    from kenning.stores.bundle import vector_namespace
    from kenning.stores.vectors import FaissVectorIndex

    class Cold(FaissVectorIndex):
        def _warm(self, spaces: Any) -> None:
            return None

    index = (FaissVectorIndex if warm else Cold)(_settings(data_dir).index_dir / "vectors")
    namespace = vector_namespace(tenant, SPACE, asset_level=True)
    started = time.perf_counter()
    n = index.count(namespace)
    loaded = time.perf_counter()
    index.settle()
    settled = time.perf_counter()
    vector = np.random.default_rng(5).standard_normal((1, index.stats(namespace).dim))  # type: ignore[union-attr]
    index.add(namespace, [10**12], vector.astype(np.float32))
    first = time.perf_counter()
    index.add(namespace, [10**12 + 1], vector.astype(np.float32))
    second = time.perf_counter()
    assert index.count(namespace) == n + 2
    return {"load_s": loaded - started, "warm_s": settled - loaded,
            "first_add_s": first - settled, "second_add_s": second - first,
            "peak_mb": _peak_mb()}


def rebuild_without_graph(data_dir: Path, n: int) -> dict[str, Any]:
    """(c'): the rebuild's reads and inserts alone (an index that never builds a graph)."""
    from kenning.stores.hashes import FaissBinaryHashIndex
    from kenning.stores.metadata import Database
    from kenning.stores.sync import rebuild_indexes
    from kenning.stores.vectors import FaissVectorIndex

    db = Database(_settings(data_dir).resolved_database_url)
    started = time.perf_counter()
    counts = rebuild_indexes(db, FaissVectorIndex(None, exact_threshold=n + 1),
                             FaissBinaryHashIndex(None))
    assert counts["vectors"] == n
    return {"seconds": time.perf_counter() - started, "peak_mb": _peak_mb()}


def serve(data_dir: Path) -> dict[str, Any]:
    """`kenning serve` from spawn until /healthz and /readyz answer 200."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "KENNING_DATA_DIR": str(data_dir), "KENNING_PORT": str(port),
           "KENNING_RUN_WORKERS": "false", "KENNING_WORKERS": "0",
           "KENNING_LOG_LEVEL": "WARNING"}
    kenning = Path(sys.executable).parent / "kenning"
    started = time.perf_counter()
    proc = subprocess.Popen([str(kenning), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    times: dict[str, Any] = {}
    try:
        while len(times) < 2:
            if proc.poll() is not None:
                raise RuntimeError(f"kenning serve exited with {proc.returncode}")
            for path in ("healthz", "readyz"):
                if path in times:
                    continue
                try:
                    ok = httpx.get(f"http://127.0.0.1:{port}/{path}", timeout=1).status_code
                except httpx.HTTPError:
                    ok = 0
                if ok == 200:
                    times[path] = time.perf_counter() - started
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    return {"healthz_s": times["healthz"], "readyz_s": times["readyz"]}


def _phase(args: argparse.Namespace, phase: str, **extra: Any) -> dict[str, Any]:
    """Run one step in a fresh interpreter and return what it printed."""
    command = [sys.executable, __file__, "--phase", phase, "--data-dir", str(args.data_dir),
               "--n", str(args.n), "--dim", str(args.dim)]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors to store")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="repeats of (a) and (b)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data dir to use (default: a temporary one, removed after)")
    parser.add_argument("--no-serve", action="store_true", help="skip `kenning serve`")
    parser.add_argument("--no-graphless", action="store_true", help="skip (c')")
    parser.add_argument("--keep", action="store_true",
                        help="keep the data dir (with --data-dir: do not delete it after)")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tenant", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase is not None:
        results = {
            "fill": lambda: fill(args.data_dir, args.n, args.dim),
            "read": lambda: read_once(args.data_dir, args.n, args.dim),
            "start": lambda: start(args.data_dir, args.n, args.tenant),
            "graphless": lambda: rebuild_without_graph(args.data_dir, args.n),
            "addwarm": lambda: first_add(args.data_dir, args.tenant, warm=True),
            "addcold": lambda: first_add(args.data_dir, args.tenant, warm=False),
            "serve": lambda: serve(args.data_dir),
        }[args.phase]()
        print(json.dumps(results, default=str))
        return

    if args.data_dir is None:
        args.data_dir = Path(tempfile.mkdtemp(prefix="kenning-bench-index-"))
    elif args.data_dir.exists() and any(args.data_dir.iterdir()):
        parser.error(f"{args.data_dir} is not empty")
    try:
        report(args)
    finally:
        if not args.keep:
            shutil.rmtree(args.data_dir, ignore_errors=True)


def report(args: argparse.Namespace) -> None:
    print(f"{args.n:,} x {args.dim}-d float32 vectors in {args.data_dir}", flush=True)
    filled = _phase(args, "fill")
    print(f"fill: {filled['seconds']:.1f} s, metadata DB {filled['db_mb']:.0f} MB", flush=True)
    first = _phase(args, "start", tenant=filled["tenant"])
    print(f"(c) first start (rebuild + snapshot): {first}", flush=True)
    snapshot_mb = sum(p.stat().st_size for p in (args.data_dir / "indexes").rglob("*")
                      if p.is_file()) / 2**20
    graphless = None if args.no_graphless else _phase(args, "graphless")
    reads, starts = [], []
    for _ in range(args.rounds):  # alternate, so both see the same machine state
        reads.append(_phase(args, "read"))
        starts.append(_phase(args, "start", tenant=filled["tenant"]))
        print(f"(a) {reads[-1]}  (b) {starts[-1]}", flush=True)
    warm = _phase(args, "addwarm", tenant=filled["tenant"])
    cold = _phase(args, "addcold", tenant=filled["tenant"])
    print(f"after a start: with the background copy {warm}; without {cold}", flush=True)
    served = None if args.no_serve else _phase(args, "serve")

    a = statistics.median(r["seconds"] for r in reads)
    b = statistics.median(s["load_s"] for s in starts)
    construct = statistics.median(s["construct_s"] for s in starts)
    rows = [
        ("(a) read every vector once from the DB", a, reads[0]["peak_mb"]),
        ("(b) load_indexes() from the snapshot", b, starts[0]["peak_mb"]),
        ("(b) Kenning(settings) + load_indexes()", construct + b, starts[0]["peak_mb"]),
        ("    then the first search (pages the graph in)",
         statistics.median(s["first_search_s"] for s in starts), None),
        ("    then one more search (median of 100)",
         statistics.median(s["search_s"] for s in starts), None),
        ("    background copy into memory after the start (off the request path)",
         warm["warm_s"], warm["peak_mb"]),
        ("    then the first add", warm["first_add_s"], None),
        ("    the first add right after a start, no background copy (reads the graph)",
         cold["first_add_s"], cold["peak_mb"]),
        ("    then one more add", cold["second_add_s"], None),
        ("(c) first start: load_indexes() with no snapshot", first["load_s"], first["peak_mb"]),
    ]
    if first["rebuild_s"] is not None:
        rows.append(("    of which the rebuild from the tables", first["rebuild_s"], None))
    if graphless is not None:
        rows.append(("(c') rebuild without an HNSW graph", graphless["seconds"],
                     graphless["peak_mb"]))
    if served is not None:
        rows.append(("kenning serve: spawn to /healthz 200", served["healthz_s"], None))
        rows.append(("kenning serve: spawn to /readyz 200", served["readyz_s"], None))
    print()
    print("| step | seconds | vs (a) | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for name, seconds, peak in rows:
        peak_text = "" if peak is None else f"{peak:,.0f}"
        print(f"| {name} | {seconds:.3f} | {seconds / a:.3f} | {peak_text} |")
    print()
    print(f"ratio (b)/(a) = {b / a:.2f}; snapshot on disk {snapshot_mb:,.0f} MB; "
          f"HNSW graph in the snapshot: {starts[0]['hnsw']}")


if __name__ == "__main__":
    main()
