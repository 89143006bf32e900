"""Single-query search latency: Kenning's /v1/search against txtai behind FastAPI, on the
same model and the same data.

Data: the ``--assets`` two-sentence news texts of :mod:`bench_search_api` (the same
deterministic corpus), already ingested into ``--data-dir`` by that bench. txtai indexes
the same texts with the same embedding model (Kenning's own backend, USE multilingual v3
on one thread, through txtai's ``external`` vector method), with its defaults otherwise:
faiss (its default index for this size) and SQLite content; keyword is txtai's BM25
scoring index. Three txtai indexes, built once and saved under ``--txtai-dir``:
``semantic`` (dense only), ``keyword`` (sparse only) and ``hybrid`` (both, txtai's
default equal weights). Building re-uses one embedding pass, or none with
``--vectors-from-kenning``: the text vectors Kenning stored for the same texts (its
asset-level vector of each, from the same model) go to txtai as they are.

Sides: ``kenning serve`` (a separate process, from ``--kenning``) answering
``POST /v1/search`` with ``limit`` 10; txtai answering ``POST /search`` in a FastAPI app
served by uvicorn, as txtai's own API serves it (a plain function returning txtai's
results, no response model), in a separate process too: this script started again with
``--serve-txtai``. Each server then runs as it would be deployed, and the client (this
process) shares its interpreter with neither. ``--txtai-in-process`` serves txtai from a
thread of the client's process instead, as this bench did before 2026-12-01. One client,
one query at a time, the two sides alternating query by query (which goes first
alternates too), so both see the same machine; queries are the first sentences of the
300 ABC articles. Reported: p50 and p99 per side and mode and the ratio Kenning / txtai.

txtai needs PyTorch, which Kenning does not install; run this from a side environment::

    python3.11 -m venv /tmp/txtai-venv
    /tmp/txtai-venv/bin/pip install torch==2.13.0 txtai fastapi uvicorn httpx
    /tmp/txtai-venv/bin/pip install -e '.[text]'
    /tmp/txtai-venv/bin/python bench/bench_search_txtai.py --data-dir /tmp/kenning-100k \\
        --assets 100000 --txtai-dir /tmp/txtai-100k --kenning .venv/bin/kenning
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from bench_search_api import corpus_texts, queries
from fastapi import FastAPI
from serve_support import Server, free_port
from txtai import Embeddings

from kenning.cli.client import wait_ready
from kenning.inference.embedding import make_embedding_backend

MODES = ("keyword", "semantic", "hybrid")
_CONFIGS: dict[str, dict[str, Any]] = {
    "semantic": {"content": True},
    "keyword": {"keyword": True, "content": True},
    "hybrid": {"hybrid": True, "content": True},
}


def kenning_vectors(data_dir: Path, texts: list[str], model: str) -> np.ndarray:
    """The vectors Kenning stored for ``texts`` (each asset's text vector, found by the
    SHA-256 of its bytes): the same model's output, without a second embedding pass."""
    db = sqlite3.connect(f"file:{data_dir / 'kenning.db'}?mode=ro", uri=True)
    try:
        stored = dict(db.execute(
            "SELECT a.sha256, e.vector FROM embedding e JOIN asset a ON a.id = e.asset_id "
            "WHERE e.segment_id IS NULL AND e.space = ?", (model,)))
    finally:
        db.close()
    keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    missing = sum(k not in stored for k in keys)
    if missing:
        raise SystemExit(f"{missing} of the texts have no stored vector in {data_dir}")
    return np.stack([np.frombuffer(stored[k], dtype=np.float32) for k in keys])


def txtai_indexes(texts: list[str], folder: Path, model: str) -> dict[str, Embeddings]:
    """The three txtai indexes over ``texts``, loaded from ``folder`` or built and saved."""
    backend = make_embedding_backend(model, threads=1)
    cache = folder / "vectors.npy"
    folder.mkdir(parents=True, exist_ok=True)
    known: dict[str, np.ndarray] = {}
    if cache.exists():
        known = dict(zip(texts, np.load(cache), strict=True))

    corpus = set(texts)

    def transform(batch: list[str]) -> np.ndarray:
        # Only the corpus's vectors are kept (one embedding pass for three indexes): a
        # query is embedded every time it is asked, as Kenning embeds it.
        missing = [t for t in dict.fromkeys(batch) if t not in known]
        fresh = dict(zip(missing, backend.embed(missing), strict=True)) if missing else {}
        known.update((t, v) for t, v in fresh.items() if t in corpus)
        return np.stack([known[t] if t in known else fresh[t] for t in batch])

    out: dict[str, Embeddings] = {}
    for mode, config in _CONFIGS.items():
        path = folder / mode
        dense = mode != "keyword"
        if dense:
            config = {**config, "method": "external", "transform": transform}
        embeddings = Embeddings(config)
        if path.exists():  # the saved config names the function; give the function itself
            embeddings.load(str(path), config={"transform": transform} if dense else None)
        else:
            started = time.perf_counter()
            embeddings.index((str(i), t, None) for i, t in enumerate(texts))
            embeddings.save(str(path))
            print(f"txtai {mode}: indexed {len(texts)} in {time.perf_counter() - started:.0f} s",
                  flush=True)
            if dense and not cache.exists():
                np.save(cache, np.stack([known[t] for t in texts]))
        out[mode] = embeddings
    return out


def txtai_app(indexes: dict[str, Embeddings]) -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:  # what wait_ready asks (the indexes load first)
        return {"status": "ok"}

    @app.post("/search", response_model=None)
    def search(body: dict[str, Any]) -> list[dict[str, Any]]:
        hits: list[dict[str, Any]] = indexes[str(body["mode"])].search(
            str(body["query"]), int(body.get("limit", 10)))
        return hits

    return app


def pct(values: list[float], p: int) -> float:
    return 1000 * statistics.quantiles(values, n=100)[p - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--assets", type=int, required=True,
                        help="the --assets bench_search_api.py seeded --data-dir with")
    parser.add_argument("--ingested", type=int, default=None,
                        help="how many of them it ingested, when seeding was stopped early "
                        "(they go in order: the first ones)")
    parser.add_argument("--txtai-dir", type=Path, required=True)
    parser.add_argument("--kenning", default=".venv/bin/kenning",
                        help="the kenning script of Kenning's own environment")
    parser.add_argument("--model", default="use-multilingual-v3")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the 300 queries")
    parser.add_argument("--vectors-from-kenning", action="store_true",
                        help="give txtai the text vectors Kenning stored (same model) instead "
                        "of embedding the texts again")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--txtai-in-process", action="store_true",
                        help="serve txtai from a thread of this (the client's) process")
    parser.add_argument("--serve-txtai", type=int, default=None, metavar="PORT",
                        help=argparse.SUPPRESS)  # the txtai server process
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not (args.data_dir / "kenning.db").exists():
        parser.error(f"{args.data_dir} holds no Kenning data: run bench_search_api.py first")

    texts = corpus_texts(args.assets)[:args.ingested]
    if args.serve_txtai is not None:
        uvicorn.run(txtai_app(txtai_indexes(texts, args.txtai_dir, args.model)),
                    host="127.0.0.1", port=args.serve_txtai, log_level="warning")
        return
    cache = args.txtai_dir / "vectors.npy"
    if args.vectors_from_kenning and not cache.exists():
        args.txtai_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, kenning_vectors(args.data_dir, texts, args.model))
    indexes = txtai_indexes(texts, args.txtai_dir, args.model)  # built here, once
    port = free_port()
    txtai_server: subprocess.Popen[bytes] | None = None
    if args.txtai_in_process:
        uv = uvicorn.Server(uvicorn.Config(txtai_app(indexes), host="127.0.0.1", port=port,
                                           log_level="warning"))
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
    else:
        del indexes
        txtai_server = subprocess.Popen([
            sys.executable, __file__, "--serve-txtai", str(port),
            "--data-dir", str(args.data_dir), "--assets", str(args.assets),
            *(["--ingested", str(args.ingested)] if args.ingested else []),
            "--txtai-dir", str(args.txtai_dir), "--model", args.model])
    server = Server(args.data_dir, command=[str(Path(args.kenning).resolve())])
    server.start()
    if txtai_server is not None:
        wait_ready(f"http://127.0.0.1:{port}", alive=lambda: txtai_server.poll() is None,
                   timeout_s=300)
    assert server.http is not None
    asked = queries()
    latencies: dict[tuple[str, str], list[float]] = {}
    try:
        with httpx.Client(timeout=120) as plain:
            sides = {
                "kenning": lambda body: server.http.post("/v1/search", json=body),  # type: ignore[union-attr]
                "txtai": lambda body: plain.post(f"http://127.0.0.1:{port}/search", json=body),
            }
            for mode in args.modes:
                for text in asked[:10]:  # warm: models, indexes, connections
                    for call in sides.values():
                        call({"query": text, "mode": mode, "limit": 10}).raise_for_status()
                for i in range(args.rounds * len(asked)):
                    body = {"query": asked[i % len(asked)], "mode": mode, "limit": 10}
                    order = list(sides) if i % 2 == 0 else list(reversed(sides))
                    for name in order:
                        started = time.perf_counter()
                        r = sides[name](body)
                        elapsed = time.perf_counter() - started
                        r.raise_for_status()
                        latencies.setdefault((name, mode), []).append(elapsed)
    finally:
        server.stop()
        if txtai_server is not None:
            txtai_server.terminate()
            txtai_server.wait(timeout=30)
        else:
            uv.should_exit = True
            thread.join(timeout=10)

    print(f"\n{len(texts)} texts, one client, {args.rounds} x {len(queries())} queries per "
          "mode\n")
    print("| mode | kenning p50 ms | txtai p50 ms | p50 ratio | kenning p99 ms | txtai p99 ms "
          "| p99 ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in args.modes:
        ours, theirs = latencies[("kenning", mode)], latencies[("txtai", mode)]
        print(f"| {mode} | {pct(ours, 50):.1f} | {pct(theirs, 50):.1f} | "
              f"{pct(ours, 50) / pct(theirs, 50):.2f} | {pct(ours, 99):.1f} | "
              f"{pct(theirs, 99):.1f} | {pct(ours, 99) / pct(theirs, 99):.2f} |")


if __name__ == "__main__":
    main()
