"""/v1/search over HTTP under concurrent load, against a bare FastAPI endpoint doing the
same index lookup on the same indexes.

Corpus: ``--assets`` short real-news texts (each two sentences of the Lee background and
Reuters articles, paired deterministically, so every text is distinct), ingested once
through a real ``kenning serve`` (``POST /v1/assets/batch``) into ``--data-dir`` and
reused by later runs (a dir that holds them already is not ingested again).

Sides, each for ``--seconds`` with ``--clients`` threads sending one query after the
other (the first sentences of the 300 ABC articles, cycling):

* ``kenning <mode>``: ``POST /v1/search`` on the real server (keyword, semantic, hybrid;
  limit 10): authentication, the index follower's catch-up, filters, the joins against
  the metadata store, fusion, the response model.
* ``bare <leg>``: a FastAPI app in this process, served by uvicorn on another port, over
  the same data dir's indexes (the faiss snapshot and the keyword index the settings
  name: tantivy by default) and the same embedding model: ``semantic`` embeds the query
  and searches the vectors, ``keyword`` searches the keyword index, ``hybrid`` does
  both; it returns ids only.

Before each side's clock, five queries warm it up (a serving process loads the model and
the indexes on its first search). Reported: QPS, p50 and p99 latency, and the ratio of
our p50 and p99 to the bare endpoint's for the same mode. Run::

    .venv/bin/python bench/bench_search_api.py --assets 100000 --data-dir /tmp/kenning-100k
        [--clients 8] [--seconds 20] [--modes keyword semantic hybrid]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import re
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from serve_support import Server, free_port, wait_idle
from sqlalchemy import func, select

from kenning.container import Kenning
from kenning.demo.corpus import news_articles, reuters_articles_or_reason
from kenning.settings import Settings
from kenning.stores.bundle import vector_namespace
from kenning.stores.metadata.tables import Asset, Tenant

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def corpus_texts(n: int) -> list[str]:
    """``n`` distinct two-sentence texts from real news."""
    articles = news_articles(300)
    reuters, _ = reuters_articles_or_reason()
    sentences = sorted({s.strip() for a in [*articles, *reuters]
                        for s in _SENTENCE.split(" ".join(a.text.split())) if len(s) > 40})
    size = len(sentences)
    out = []
    for i in random.Random(7).sample(range(size * (size - 1)), n):
        a, b = divmod(i, size - 1)  # the i-th ordered pair of two different sentences
        out.append(f"{sentences[a]} {sentences[b + (b >= a)]}")
    return out


def queries() -> list[str]:
    return [_SENTENCE.split(" ".join(a.text.split()))[0] for a in news_articles(300)]


def seed(server: Server, n: int, batch: int = 100) -> None:
    texts = corpus_texts(n)
    started = time.perf_counter()
    assert server.http is not None
    for i in range(0, n, batch):
        while True:  # backpressure: wait as the server says, then send the batch again
            r = server.http.post("/v1/assets/batch",
                                 json={"items": [{"text": t} for t in texts[i:i + batch]]})
            if r.status_code != 429:
                r.raise_for_status()
                break
            time.sleep(float(r.headers.get("Retry-After", 1)))
    wait_idle(server.db, timeout_s=7200)
    print(f"ingested {n} texts in {time.perf_counter() - started:.0f} s", flush=True)


def bare_app(data_dir: Path) -> tuple[FastAPI, Kenning]:
    kenning = Kenning(Settings(data_dir=data_dir, workers=0, _env_file=None))
    kenning.load_indexes()
    with kenning.stores.db.session(write=False) as s:
        tenant = s.scalars(select(Tenant.id)).first()
    assert tenant is not None
    space = kenning.resources.embedder.model_id
    namespace = vector_namespace(tenant, space)
    app = FastAPI()

    def semantic(query: str) -> list[int]:
        vector = kenning.resources.embedder.embed([query])[0]
        return [h.id for h in kenning.stores.vectors.search(namespace, vector, 50)]

    def keyword(query: str) -> list[int]:
        return [h.id for h in kenning.stores.keyword.search(tenant, query, 50)]

    @app.post("/bare/{mode}")
    def bare(mode: str, body: dict[str, Any]) -> dict[str, list[int]]:
        query = str(body["query"])
        if mode == "keyword":
            return {"ids": keyword(query)}
        if mode == "semantic":
            return {"ids": semantic(query)}
        return {"ids": keyword(query) + semantic(query)}

    return app, kenning


def load(url: str, headers: dict[str, str], body: Callable[[str], dict[str, Any]],
         clients: int, seconds: float) -> list[float]:
    texts = queries()
    with httpx.Client(timeout=300, headers=headers) as http:  # models and indexes loaded
        for text in texts[-5:]:
            http.post(url, json=body(text)).raise_for_status()
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(offset: int) -> None:
        with httpx.Client(timeout=60, headers=headers) as http:
            for i in itertools.count(offset * 37):
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                r = http.post(url, json=body(texts[i % len(texts)]))
                r.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--modes", nargs="+", default=["keyword", "semantic", "hybrid"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    fresh = not (args.data_dir / "kenning.db").exists()
    server = Server(args.data_dir)
    server.start()
    try:
        if fresh:
            seed(server, args.assets)
        with server.db.session(write=False) as s:  # a seeding stopped early holds fewer
            held = s.scalar(select(func.count()).select_from(Asset)) or 0
        assert server.http is not None
        headers = dict(server.http.headers)
        results: dict[str, list[float]] = {}
        for mode in args.modes:
            results[f"kenning {mode}"] = load(
                f"{server.url}/v1/search", headers,
                lambda q, mode=mode: {"query": q, "mode": mode, "limit": 10},
                args.clients, args.seconds)
    finally:
        server.stop()
    app, bare = bare_app(args.data_dir)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    try:
        for mode in args.modes:
            results[f"bare {mode}"] = load(f"http://127.0.0.1:{port}/bare/{mode}", {},
                                           lambda q: {"query": q}, args.clients, args.seconds)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        bare.close()

    def pct(values: list[float], p: float) -> float:
        return 1000 * statistics.quantiles(values, n=100)[int(p) - 1]

    print(f"\n{held} assets, {args.clients} clients, {args.seconds:.0f} s per side\n")
    print("| side | requests | QPS | p50 ms | p99 ms | p50 / bare | p99 / bare |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in args.modes:
        ours, base = results[f"kenning {mode}"], results[f"bare {mode}"]
        for name, lat in ((f"kenning {mode}", ours), (f"bare {mode}", base)):
            ratio = (f"{pct(ours, 50) / pct(base, 50):.2f} | {pct(ours, 99) / pct(base, 99):.2f}"
                     if name.startswith("kenning") else " | ")
            print(f"| {name} | {len(lat)} | {len(lat) / args.seconds:.1f} | "
                  f"{pct(lat, 50):.1f} | {pct(lat, 99):.1f} | {ratio} |")


if __name__ == "__main__":
    main()
