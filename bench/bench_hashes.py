"""Hash index range search at PDQ scale: the embedded index against brute force.

Codes: ``--n`` uniformly random 256-bit codes (one namespace). ``--queries`` random query
codes each get ``--planted`` codes planted among them at distances spread over
``0..radius`` (random bits of the query flipped), plus as many just outside the radius
(``radius+1..radius+8``), which must not be returned. Random codes are about 128 bits
from everything, so the planted ones are the neighbours.

Sides, each searched one query at a time at ``--radius`` (default 31, PDQ's match
threshold), on the same queries:

- the index: ``FaissBinaryHashIndex`` through its API (``search(..., k=10_000)``), with
  its multi-index hashing tables built (the first search after loading builds them; that
  build is timed apart);
- numpy brute force: xor of uint64 views, ``np.bitwise_count``, per-word columns added
  (about twice as fast as ``.sum(axis=1)``), ``<= radius``: also the ground truth;
- faiss ``IndexBinaryFlat.range_search`` (the previous implementation), at faiss's default
  OpenMP threads and again with one thread: a one-query search gains nothing from the
  threads and, on a busy machine, loses much of its time waiting for them.

Recall is the share of the brute-force answer the index returns (with equal distances);
``extra`` counts ids it returns that brute force does not. Also measured: memory (RSS
growth of this process while the index is filled and its tables built, and the bytes its
arrays hold), saving and reopening the snapshot (reading it, then the table build on the
first search), and adds interleaved with searches (each new code found by the next
search). QPS is queries per second of wall time on a shared 2-core VM: compare the
ratios from one run.

    .venv/bin/python bench/bench_hashes.py --quick        # 100k codes, while developing
    .venv/bin/python bench/bench_hashes.py                # 1M codes
    .venv/bin/python bench/bench_hashes.py --n 10000000 --queries 20 --no-reload
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NS = "bench-tenant/pdq"
NBYTES = 32
BATCH = 100_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def plant(rng: np.random.Generator, data: np.ndarray, queries: int, planted: int,
          radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Queries, and ``planted`` codes near each (in ``data``, in place) plus as many just
    beyond ``radius``; returns the queries and the planted rows' indexes."""
    query_codes = rng.integers(0, 256, (queries, NBYTES), dtype=np.uint8)
    rows = rng.choice(len(data), queries * planted * 2, replace=False)
    inside = np.linspace(0, radius, planted).round().astype(int)
    outside = radius + 1 + np.arange(planted) % 8
    for q, code in enumerate(query_codes):
        for j, distance in enumerate([*inside, *outside]):
            near = code.copy()
            for bit in rng.choice(8 * NBYTES, distance, replace=False):
                near[bit // 8] ^= 1 << (bit % 8)
            data[rows[q * planted * 2 + j]] = near
    return query_codes, rows


def numpy_brute_force(data: np.ndarray, radius: int) -> Callable[[np.ndarray], dict[int, int]]:
    words = data.view(np.uint64)

    def search(query: np.ndarray) -> dict[int, int]:
        bits = np.bitwise_count(words ^ query.view(np.uint64))
        distances = bits[:, 0].astype(np.int32)
        for column in range(1, bits.shape[1]):
            distances += bits[:, column]
        hits = np.flatnonzero(distances <= radius)
        return dict(zip(hits.tolist(), distances[hits].tolist(), strict=True))

    return search


def faiss_flat(data: np.ndarray, radius: int,
               threads: int | None) -> Callable[[np.ndarray], dict[int, int]]:
    import faiss

    flat: Any = faiss.IndexBinaryFlat(8 * NBYTES)
    flat.add(data)
    default = faiss.omp_get_max_threads()

    def search(query: np.ndarray) -> dict[int, int]:
        faiss.omp_set_num_threads(threads or default)
        try:
            _, distances, ids = flat.range_search(query.reshape(1, -1), radius + 1)
        finally:
            faiss.omp_set_num_threads(default)
        return dict(zip(ids.tolist(), distances.tolist(), strict=True))

    return search


def timed(search: Callable[[np.ndarray], dict[int, int]],
          queries: np.ndarray) -> tuple[float, list[dict[int, int]]]:
    search(queries[0])  # warm
    began = time.perf_counter()
    found = [search(q) for q in queries]
    return len(queries) / (time.perf_counter() - began), found


def fill(index: Any, data: np.ndarray) -> float:
    began = time.perf_counter()
    for start in range(0, len(data), BATCH):
        chunk = data[start:start + BATCH]
        index.add(NS, range(start, start + len(chunk)), [row.tobytes() for row in chunk])
    return time.perf_counter() - began


def interleaved(index: Any, rng: np.random.Generator, first_id: int, count: int,
                radius: int) -> float:
    """Add ``count`` new codes one at a time, each searched (with a few flipped bits)
    right after its add; seconds per add+search. Every one must be found."""
    began = time.perf_counter()
    for i in range(count):
        code = rng.integers(0, 256, NBYTES, dtype=np.uint8)
        index.add(NS, [first_id + i], [code.tobytes()])
        near = code.copy()
        near[0] ^= 0b101
        hits = index.search(NS, near.tobytes(), max_distance=radius)
        assert [(h.id, h.distance) for h in hits] == [(first_id + i, 2)], hits
    return (time.perf_counter() - began) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100k codes")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--planted", type=int, default=8)
    parser.add_argument("--radius", type=int, default=31)
    parser.add_argument("--interleaved", type=int, default=2000,
                        help="new codes added one at a time, each searched at once")
    parser.add_argument("--no-reload", action="store_true", help="skip save and reopen")
    parser.add_argument("--no-faiss-flat", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = 100_000 if args.quick else args.n

    from kenning.stores.hashes import FaissBinaryHashIndex

    rng = np.random.default_rng(args.seed)
    data = rng.integers(0, 256, (n, NBYTES), dtype=np.uint8)
    queries, _ = plant(rng, data, args.queries, args.planted, args.radius)
    report: dict[str, Any] = {"codes": n, "queries": args.queries, "radius": args.radius}

    with tempfile.TemporaryDirectory() as tmp:
        index = FaissBinaryHashIndex(Path(tmp) / "hashes")
        base = rss_bytes()
        report["fill_s"] = round(fill(index, data), 2)
        began = time.perf_counter()
        index.search(NS, queries[0].tobytes(), max_distance=args.radius)
        report["table_build_s"] = round(time.perf_counter() - began, 2)
        report["rss_growth_mb"] = round((rss_bytes() - base) / 2**20)
        space = index._spaces[NS]
        held = (space.rows.nbytes + space.ids.nbytes + space.live.nbytes
                + space.index.ntotal * NBYTES + (space.tables.nbytes if space.tables else 0))
        report["array_mb"] = round(held / 2**20)

        def ours(query: np.ndarray) -> dict[int, int]:
            hits = index.search(NS, query.tobytes(), max_distance=args.radius, k=10_000)
            return {h.id: h.distance for h in hits}

        sides = {"index": ours, "numpy": numpy_brute_force(data, args.radius)}
        if not args.no_faiss_flat:
            sides["faiss_flat"] = faiss_flat(data, args.radius, None)
            sides["faiss_flat_1thread"] = faiss_flat(data, args.radius, 1)
        found = {}
        for name, search in sides.items():
            report[f"{name}_qps"], found[name] = timed(search, queries)
        truth = found["numpy"]
        report["truth_hits"] = sum(map(len, truth))
        report["recall"] = float(np.mean([
            sum(f.get(i) == d for i, d in t.items()) / len(t)
            for f, t in zip(found["index"], truth, strict=True)]))
        report["extra"] = sum(len(f.keys() - t.keys())
                              for f, t in zip(found["index"], truth, strict=True))
        report["speedup_vs_numpy"] = report["index_qps"] / report["numpy_qps"]
        for flat in ("faiss_flat", "faiss_flat_1thread"):
            if f"{flat}_qps" in report:
                report[f"speedup_vs_{flat}"] = report["index_qps"] / report[f"{flat}_qps"]
                assert found[flat] == truth, f"{flat} disagrees with numpy"

        if not args.no_reload:
            began = time.perf_counter()
            index.save()
            report["save_s"] = round(time.perf_counter() - began, 2)
            del index, space
            reopened = FaissBinaryHashIndex(Path(tmp) / "hashes")
            began = time.perf_counter()
            assert reopened.count(NS) == n
            report["reopen_s"] = round(time.perf_counter() - began, 2)
            began = time.perf_counter()
            again = reopened.search(NS, queries[0].tobytes(), max_distance=args.radius, k=10_000)
            report["reopen_first_search_s"] = round(time.perf_counter() - began, 2)
            assert {h.id: h.distance for h in again} == truth[0]
            index = reopened
        if args.interleaved:
            report["add_then_search_us"] = round(
                1e6 * interleaved(index, rng, n, args.interleaved, args.radius))

    print(json.dumps(report, indent=2, default=float))
    print(table(report))


def table(r: dict[str, Any]) -> str:
    nan = float("nan")
    rows = [
        ("codes", f"{r['codes']:,}"),
        ("queries (planted neighbours found by brute force)",
         f"{r['queries']} ({r['truth_hits']})"),
        ("radius", r["radius"]),
        ("recall vs brute force / extra ids", f"{r['recall']:.3f} / {r['extra']}"),
        ("index QPS (FaissBinaryHashIndex.search)", f"{r['index_qps']:,.0f}"),
        ("numpy brute force QPS", f"{r['numpy_qps']:,.1f}"),
        ("faiss IndexBinaryFlat QPS (default threads / 1 thread)",
         f"{r.get('faiss_flat_qps', nan):,.1f} / {r.get('faiss_flat_1thread_qps', nan):,.1f}"),
        ("speed-up vs numpy", f"{r['speedup_vs_numpy']:.0f}x"),
        ("speed-up vs faiss flat (default threads / 1 thread)",
         f"{r.get('speedup_vs_faiss_flat', nan):.1f}x / "
         f"{r.get('speedup_vs_faiss_flat_1thread', nan):.1f}x"),
        ("fill through add() (100k batches)", f"{r['fill_s']} s"),
        ("table build (first search)", f"{r['table_build_s']} s"),
        ("RSS growth (fill + tables) / arrays held", f"{r['rss_growth_mb']:,} MB / "
                                                     f"{r['array_mb']:,} MB"),
    ]
    if "reopen_s" in r:
        rows += [("save / reopen snapshot / first search after reopen",
                  f"{r['save_s']} s / {r['reopen_s']} s / {r['reopen_first_search_s']} s")]
    if "add_then_search_us" in r:
        rows += [("add one code then search it (amortised merges)",
                  f"{r['add_then_search_us']} us")]
    return "\n".join(["| measure | value |", "|---|---|",
                      *(f"| {k} | {v} |" for k, v in rows)])


if __name__ == "__main__":
    main()
