"""The embedded vector index at scale against raw faiss, on the same data in one run.

Vectors: ``--n`` (default 1,000,000) clustered synthetic 384-d float32 unit vectors, fixed
seed: ``--clusters`` random centres on the unit sphere; each vector is its centre plus a
spread of norm about 0.7 inside a random ``--spread-dim``-dimensional subspace of its
cluster, plus isotropic noise of norm about 0.15, normalised. Real text embeddings have a
low intrinsic dimension; ``--spread-dim 0`` spreads the 0.8 isotropically instead (all
384 dimensions: the neighbours in a cluster are near ties, the worst case for HNSW).
1,000 held-out queries are drawn the same way. Truth is the exact cosine top-10 (faiss
``IndexFlatIP``, batched).

Sides, all searched one query at a time from this process:

- raw faiss: ``IndexHNSWFlat`` with the M, efConstruction and efSearch our layer uses,
  built with one ``add`` of the whole matrix;
- ours (flat): ``FaissVectorIndex`` through its public API, adds in batches of 20,000;
- ours (sq8): the same with ``storage="sq8"`` (``IndexHNSWSQ``, hits rescored exactly);
- filtered 1%: an ``allowed`` set of 1% of the ids (random) through our API, against
  the exact top-10 within that set (target: recall 1.0).

QPS is measured in alternating rounds (raw, ours, raw, ours...) and the median of each
side is reported, so load from other processes hits both sides alike; once per efSearch
in ``--ef`` (the first is our default), set alike on both sides. Memory per side:
the RSS growth over its build and the index's computed bytes (float32 rows, ids and live
flags, the graph's vectors and links; our ``pos`` dict is in the RSS only).

    .venv/bin/python bench/bench_vectors_scale.py            # 1M x 384
    .venv/bin/python bench/bench_vectors_scale.py --quick    # 100k x 384
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NS = "bench-tenant/minilm-384"
DIM = 384
K = 10
BATCH = 20_000


def clustered(rng: np.random.Generator, centres: np.ndarray, bases: np.ndarray | None,
              n: int) -> np.ndarray:
    """``n`` unit vectors: a random centre each, spread in its cluster's subspace
    (``bases``, one ``(spread_dim, dim)`` matrix per cluster) or isotropically."""
    dim = centres.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    iso = np.float32((0.15 if bases is not None else 0.8) / np.sqrt(dim))
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        labels = rng.integers(0, len(centres), stop - start)
        chunk = rng.standard_normal((stop - start, dim), dtype=np.float32)
        chunk *= iso
        chunk += centres[labels]
        if bases is not None:
            spread = np.float32(0.7 / np.sqrt(bases.shape[1]))
            coeffs = rng.standard_normal((stop - start, bases.shape[1]), dtype=np.float32)
            coeffs *= spread
            order = np.argsort(labels, kind="stable")
            cuts = np.flatnonzero(np.diff(labels[order])) + 1
            for group in np.split(order, cuts):
                chunk[group] += coeffs[group] @ bases[labels[group[0]]]
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start:stop] = chunk
    return out


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def recall(found: list[list[int]], truth: list[set[int]]) -> float:
    return float(np.mean([len(set(f) & t) / len(t) for f, t in zip(found, truth, strict=True)]))


def timed_pass(search: Callable[[np.ndarray], list[int]],
               queries: np.ndarray) -> tuple[list[list[int]], float]:
    began = time.perf_counter()
    found = [search(q) for q in queries]
    return found, len(queries) / (time.perf_counter() - began)


def alternate(sides: dict[str, Callable[[np.ndarray], list[int]]], queries: np.ndarray,
              rounds: int) -> tuple[dict[str, list[list[int]]], dict[str, float]]:
    """Every side searched ``rounds`` times, interleaved; median QPS per side."""
    for search in sides.values():
        for q in queries[:20]:
            search(q)  # warm caches
    qps: dict[str, list[float]] = {name: [] for name in sides}
    found: dict[str, list[list[int]]] = {}
    for _ in range(rounds):
        for name, search in sides.items():
            found[name], rate = timed_pass(search, queries)
            qps[name].append(rate)
    return found, {name: statistics.median(rates) for name, rates in qps.items()}


def mb_per_million(nbytes: float, n: int) -> int:
    return round(nbytes / n * 1_000_000 / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100k vectors")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--spread-dim", type=int, default=32,
                        help="dimension of each cluster's spread; 0: isotropic")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ef", default="64,128,256",
                        help="efSearch values, comma-separated; the first is our default")
    parser.add_argument("--storages", default="flat,sq8",
                        help="our sides to build, comma-separated (flat, sq8)")
    args = parser.parse_args()
    n = 100_000 if args.quick else args.n
    efs = [int(value) for value in args.ef.split(",")]

    import faiss

    from kenning.stores.vectors import FaissVectorIndex
    from kenning.stores.vectors.faiss_namespace import Storage, graph_bytes

    report: dict[str, Any] = {"n": n, "dim": DIM, "queries": args.queries,
                              "clusters": args.clusters, "spread_dim": args.spread_dim,
                              "k": K,
                              "faiss_threads": faiss.omp_get_max_threads()}
    rng = np.random.default_rng(2026)
    centres = rng.standard_normal((args.clusters, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    t0 = time.perf_counter()
    bases = None
    if args.spread_dim:
        bases = rng.standard_normal((args.clusters, args.spread_dim, DIM), dtype=np.float32)
        bases /= np.linalg.norm(bases, axis=2, keepdims=True)
    data = clustered(rng, centres, bases, n)
    queries = clustered(rng, centres, bases, args.queries)
    ids = np.arange(n, dtype=np.int64)
    allowed_ids = np.sort(rng.choice(n, n // 100, replace=False))
    allowed = set(allowed_ids.tolist())
    flat = faiss.IndexFlatIP(DIM)
    flat.add(data)
    _, top = flat.search(queries, K)
    del flat
    truth = [set(row.tolist()) for row in top]
    sub = faiss.IndexFlatIP(DIM)
    sub.add(np.ascontiguousarray(data[allowed_ids]))
    _, top_allowed = sub.search(queries, K)
    del sub
    truth_allowed = [set(allowed_ids[row].tolist()) for row in top_allowed]
    report["data_and_truth_s"] = round(time.perf_counter() - t0, 1)

    probe = FaissVectorIndex(None)
    m = probe.hnsw_m
    if efs[0] != probe.ef_search:
        print(f"note: our default efSearch is {probe.ef_search}", file=sys.stderr)
    before = rss()
    began = time.perf_counter()
    raw = faiss.IndexHNSWFlat(DIM, m, faiss.METRIC_INNER_PRODUCT)
    raw.hnsw.efConstruction = probe.ef_construction
    raw.add(data)
    report["raw"] = {"build_s": round(time.perf_counter() - began, 1),
                     "rss_mb_per_million": mb_per_million(rss() - before, n),
                     "computed_mb_per_million": mb_per_million(
                         sum(graph_bytes(raw).values()), n)}
    report["hnsw"] = {"M": m, "efConstruction": int(raw.hnsw.efConstruction),
                      "efSearch_default": probe.ef_search}

    def raw_search(q: np.ndarray) -> list[int]:
        _, labels = raw.search(q.reshape(1, -1), K)
        return [int(i) for i in labels[0] if i >= 0]

    storages = [cast(Storage, name) for name in args.storages.split(",")]
    for storage in storages:
        before = rss()
        began = time.perf_counter()
        ours = FaissVectorIndex(None, storage=storage)
        for start in range(0, n, BATCH):
            ours.add(NS, ids[start:start + BATCH], data[start:start + BATCH])
        build_s = time.perf_counter() - began
        grown = rss() - before
        footprint = ours._spaces[NS].footprint()

        def our_search(q: np.ndarray, ours: FaissVectorIndex = ours) -> list[int]:
            return [h.id for h in ours.search(NS, q, K)]

        def our_filtered(q: np.ndarray, ours: FaissVectorIndex = ours) -> list[int]:
            return [h.id for h in ours.search(NS, q, K, allowed=allowed)]

        by_ef: dict[int, dict[str, float]] = {}
        for ef in efs:
            raw.hnsw.efSearch = ours.ef_search = ef
            found, qps = alternate({"raw": raw_search, "ours": our_search}, queries,
                                   args.rounds)
            by_ef[ef] = {"raw_recall_at_10": round(recall(found["raw"], truth), 4),
                         "raw_qps": round(qps["raw"], 1),
                         "recall_at_10": round(recall(found["ours"], truth), 4),
                         "qps": round(qps["ours"], 1),
                         "qps_ratio_ours_over_raw": round(qps["ours"] / qps["raw"], 3)}
        filtered, filtered_qps = timed_pass(our_filtered, queries)
        report[f"ours_{storage}"] = {
            "build_s": round(build_s, 1),
            "by_ef_search": by_ef,
            "filtered_1pct_recall_at_10": round(recall(filtered, truth_allowed), 4),
            "filtered_1pct_qps": round(filtered_qps, 1),
            "rss_mb_per_million": mb_per_million(grown, n),
            "computed_mb_per_million": mb_per_million(sum(footprint.values()), n),
            "computed_bytes_per_vector": {key: round(value / n, 1)
                                          for key, value in footprint.items()},
        }
        del ours, our_search, our_filtered
    print(json.dumps(report, indent=2))
    print(table(report))


def table(report: dict[str, Any]) -> str:
    """Markdown: the search table (one row per side and efSearch), then the build and
    memory table."""
    raw = report["raw"]
    rows = ["| efSearch | side | recall@10 | QPS | QPS ours / raw (same rounds) |",
            "|---:|---|---:|---:|---:|"]
    sides = [(storage, report[f"ours_{storage}"]) for storage in ("flat", "sq8")
             if f"ours_{storage}" in report]
    for ef in sides[0][1]["by_ef_search"]:
        for storage, side in sides:
            at = side["by_ef_search"][ef]
            rows.append(f"| {ef} | raw faiss `IndexHNSWFlat` (rounds beside {storage}) | "
                        f"{at['raw_recall_at_10']:.4f} | {at['raw_qps']:,.0f} | |")
            rows.append(f"| {ef} | ours, storage {storage} | {at['recall_at_10']:.4f} | "
                        f"{at['qps']:,.0f} | {at['qps_ratio_ours_over_raw']:.2f} |")
    rows += ["", "| side | build s | filtered 1% recall@10 | filtered 1% QPS | "
             "MiB per 1M (RSS growth) | MiB per 1M (computed) |",
             "|---|---:|---:|---:|---:|---:|",
             f"| raw faiss `IndexHNSWFlat` (one add) | {raw['build_s']} | | | "
             f"{raw['rss_mb_per_million']:,} | {raw['computed_mb_per_million']:,} |"]
    for storage, side in sides:
        rows.append(f"| ours, storage {storage} (adds of {BATCH:,}) | {side['build_s']} | "
                    f"{side['filtered_1pct_recall_at_10']:.4f} | "
                    f"{side['filtered_1pct_qps']:,.0f} | {side['rss_mb_per_million']:,} | "
                    f"{side['computed_mb_per_million']:,} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
