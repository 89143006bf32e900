"""``GET /v1/users/{id}/recommendations`` over HTTP under concurrent load, and events/s
through ``POST /v1/events``, on a real ``kenning serve`` (embedded profile, API only).

Data (``--readers`` x ``--stories``, default 10,000 x 100,000, fixed seed):

* **Stories are inserted directly through the metadata store**, not ingested: at 100k
  the pipeline (chunking, language id, a real embedding model) would take hours on the
  machines this runs on and is measured by its own benches. Each story is an ``asset``
  row (status ``ready``, a title, a language: en 60%, de 20%, fr 10%, es 10%, an author
  of ``stories / 25``, one of 50 topics in its metadata, created in the last 30 days),
  one asset-level ``embedding`` row and the ``index_log`` entry that makes every process
  index it. **The embeddings are synthetic**, of the configured model's dimension (512
  for the default USE model) and in its space name: the topic's random unit centre
  times 0.8 plus isotropic noise, normalised, so content similarity has topics to find.
* **Events go through the API**: every reader follows one to three topics and has
  ``--events-per-reader`` events (impressions 50%, opens 20%, reads with dwell 15%, likes
  8%, shares 2%, follows 3%, hides 2%) on their topics' stories (Zipf-like popularity
  within a topic), over the last 14 days, posted in batches of ``--batch`` by one client
  (events/s is this phase's throughput: validation, asset and author lookups, the
  idempotent insert).

Phases against the server, each with ``--clients`` threads, one keep-alive connection
each, one request after the other (concurrency bounded by the client count):

1. **first request**: one reader, alone: the tenant snapshot (catalogue, engagement log)
   is built and the collaborative model fitted (EASE over the most engaged 5,000
   stories); timed on its own.
2. **cold**: ``--cold`` other readers, once each: every request computes the reader's
   candidate pool (every source) and caches it.
3. **warm**: for ``--seconds``, random readers among those: the precomputed pool,
   online features, blend, re-rank, exploration and the ``rec_served`` insert.
4. **baseline** (same clients, same readers, same seconds): ``GET /v1/events?reader_id=
   ...&limit=20``, an authenticated, reader-indexed read through the same HTTP stack
   and database: the floor a recommendation request cannot go below.

Reported: p50, p99 and requests/s per phase, and warm p50/p99 as ratios of the
baseline's. Run (loopback only; nice it on a shared machine)::

    nice .venv/bin/python bench/bench_recs_serving.py [--readers 10000] [--stories 100000]
        [--clients 8] [--seconds 20] [--cold 500] [--data-dir DIR]

A data dir that holds a previous run's stories and events is reused (only the server
phases run again).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve_support import Server
from sqlalchemy import func, insert, select

from kenning.inference.embedding import make_embedding_backend
from kenning.services.tenants import TenantService
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Embedding, Event, IndexLog, new_id
from kenning.stores.namespaces import vector_namespace

TOPICS = 50
LANGUAGES = (("en", 60), ("de", 20), ("fr", 10), ("es", 10))
MIX = (("impression", 50), ("open", 20), ("read", 15), ("like", 8), ("share", 2),
       ("follow", 3), ("hide", 2))
CHUNK = 5000


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, log_json=False, _env_file=None)  # type: ignore[call-arg]


def build_stories(data_dir: Path, n: int, seed: int) -> tuple[str, list[dict[str, Any]]]:
    """Insert ``n`` stories of the bootstrap tenant; return its id and the stories."""
    settings = _settings(data_dir)
    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    db.upgrade()
    tenants = TenantService(db)
    tenants.bootstrap(settings.bootstrap_tenant, settings.bootstrap_key_path)
    tenant_id = tenants.tenant_id(settings.bootstrap_tenant)
    assert tenant_id is not None
    backend = make_embedding_backend(settings.embedding_model)
    space, dim = backend.model_id, int(getattr(backend, "dim", 0) or 384)
    namespace = vector_namespace(tenant_id, space, asset_level=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((TOPICS, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    now = datetime.now(UTC)
    authors = max(1, n // 25)
    author_topic = rng.integers(0, TOPICS, authors)
    langs = [lang for lang, _ in LANGUAGES]
    weights = np.array([w for _, w in LANGUAGES], dtype=float) / 100
    stories = []
    started = time.perf_counter()
    for lo in range(0, n, CHUNK):
        size = min(CHUNK, n - lo)
        author = rng.integers(0, authors, size)
        topic = np.where(rng.random(size) < 0.8, author_topic[author],
                         rng.integers(0, TOPICS, size))
        vectors = centres[topic] * 0.8 + rng.standard_normal((size, dim)) * (0.6 / dim ** 0.5)
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        language = rng.choice(langs, size, p=weights)
        age_s = rng.uniform(0, 30 * 86_400, size)
        assets, embeddings = [], []
        for i in range(size):
            asset_id = new_id()
            meta = {"author": f"author-{author[i]}", "topics": [f"topic-{topic[i]}"]}
            created = now - timedelta(seconds=float(age_s[i]))
            assets.append({"id": asset_id, "tenant_id": tenant_id, "kind": "text",
                           "sha256": f"{asset_id}{asset_id}", "mime": "text/plain",
                           "bytes": 2000, "source": "bench",
                           "title": f"Story {lo + i} on topic {topic[i]}",
                           "language": str(language[i]), "meta": meta, "status": "ready",
                           "created_at": created, "updated_at": created})
            embeddings.append({"tenant_id": tenant_id, "asset_id": asset_id,
                               "segment_id": None, "producer": "bench", "space": space,
                               "vector": vectors[i].tobytes()})
            stories.append({"id": asset_id, "topic": int(topic[i]),
                            "author": meta["author"]})
        with db.session() as s:
            s.execute(insert(Asset), assets)
            s.execute(insert(Embedding), embeddings)
            ids = s.scalars(select(Embedding.id).where(
                Embedding.asset_id.in_([a["id"] for a in assets]))).all()
            s.execute(insert(IndexLog), [
                {"tenant_id": tenant_id, "kind": "vector", "op": "add", "item_id": i,
                 "namespace": namespace, "at": now} for i in ids])
    log(f"stories: {n} inserted in {time.perf_counter() - started:.1f} s "
        f"({dim}-d synthetic vectors in space {space})")
    db.dispose()
    return tenant_id, stories


def make_events(stories: list[dict[str, Any]], readers: int, per_reader: int,
                seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    by_topic: dict[int, list[dict[str, Any]]] = {}
    for story in stories:
        by_topic.setdefault(story["topic"], []).append(story)
    topics = sorted(by_topic)
    kinds = [k for k, _ in MIX]
    kind_weights = [w for _, w in MIX]
    now = datetime.now(UTC)
    events = []
    for r in range(readers):
        reader = f"reader-{r:05d}"
        mine = rng.sample(topics, min(len(topics), rng.choice((1, 1, 2, 3))))
        for e, kind in enumerate(rng.choices(kinds, kind_weights, k=per_reader)):
            pool = by_topic[rng.choice(mine)]
            story = pool[min(int(rng.paretovariate(1.2)) - 1, len(pool) - 1)]
            at = (now - timedelta(seconds=rng.uniform(60, 14 * 86_400))).isoformat()
            event: dict[str, Any] = {"event_id": f"{reader}-{e}", "type": kind,
                                     "reader_id": reader, "at": at}
            if kind == "follow":
                event["author_id"] = story["author"]
            else:
                event["asset_id"] = story["id"]
            if kind == "impression":
                event.update(surface="home", position=rng.randrange(10))
            elif kind == "read":
                event.update(dwell_ms=rng.randrange(5_000, 300_000))
            events.append(event)
    return events


def post_events(server: Server, events: list[dict[str, Any]], batch: int) -> dict[str, float]:
    assert server.http is not None
    started = time.perf_counter()
    accepted = duplicates = 0
    for lo in range(0, len(events), batch):
        r = server.http.post("/v1/events", json={"events": events[lo:lo + batch]})
        if r.status_code != 200:
            raise RuntimeError(f"POST /v1/events: {r.status_code} {r.text[:300]}")
        accepted += r.json()["accepted"]
        duplicates += r.json()["duplicates"]
    seconds = time.perf_counter() - started
    return {"events": len(events), "accepted": accepted, "duplicates": duplicates,
            "seconds": round(seconds, 2), "events_per_s": round(len(events) / seconds)}


def load(server: Server, clients: int, paths: Callable[[random.Random], str | None],
         seconds: float | None) -> dict[str, float]:
    """``clients`` threads GETting ``paths(rng)`` until it gives None or ``seconds`` pass."""
    key = (server.data_dir / "bootstrap_api_key").read_text().strip()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = None if seconds is None else time.perf_counter() + seconds

    def run(n: int) -> None:
        rng = random.Random(n)
        mine: list[float] = []
        with httpx.Client(base_url=server.url, timeout=120,
                          headers={"Authorization": f"Bearer {key}"}) as http:
            while deadline is None or time.perf_counter() < deadline:
                with lock:
                    path = paths(rng)
                if path is None:
                    break
                t0 = time.perf_counter()
                r = http.get(path)
                mine.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    ms = sorted(x * 1000 for x in latencies)
    return {"requests": len(ms), "rps": round(len(ms) / wall, 1),
            "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1),
            "max_ms": round(ms[-1], 1)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def log(message: str) -> None:
    print(message, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--stories", type=int, default=100_000)
    parser.add_argument("--events-per-reader", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cold", type=int, default=500)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="kenning-recs-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    marker = data_dir / "bench_recs_serving.json"
    built = json.loads(marker.read_text()) if marker.exists() else None
    fresh = built is None
    if fresh:
        _, stories = build_stories(data_dir, args.stories, args.seed)
    server = Server(data_dir, args=["--api-only"])
    started = time.perf_counter()
    server.start(timeout_s=1800)
    log(f"server ready in {time.perf_counter() - started:.1f} s (indexes loaded)")
    results: dict[str, Any] = {"readers": args.readers, "stories": args.stories,
                               "clients": args.clients, "limit": args.limit}
    try:
        if fresh:
            events = make_events(stories, args.readers, args.events_per_reader, args.seed)
            results["events"] = post_events(server, events, args.batch)
            log(f"events: {results['events']}")
            marker.write_text(json.dumps({"readers": args.readers, "stories": args.stories}))
        with server.db.session(write=False) as s:
            counts = (s.scalar(select(func.count()).select_from(Asset)),
                      s.scalar(select(func.count()).select_from(Event)))
        log(f"in the store: {counts[0]} stories, {counts[1]} events")
        readers = [f"reader-{r:05d}" for r in
                   random.Random(args.seed).sample(range(args.readers),
                                                   min(args.cold + 1, args.readers))]
        first, cold = readers[0], readers[1:]

        def recs(reader: str) -> str:
            return f"/v1/users/{reader}/recommendations?limit={args.limit}"

        once = iter([recs(first)])
        results["first_request"] = load(server, 1, lambda _: next(once, None), None)
        log(f"first request (snapshot, model fit): {results['first_request']}")
        queue = iter([recs(r) for r in cold])
        results["cold"] = load(server, args.clients, lambda _: next(queue, None), None)
        log(f"cold (pool computed): {results['cold']}")
        results["warm"] = load(server, args.clients, lambda rng: recs(rng.choice(cold)),
                               args.seconds)
        log(f"warm (precomputed pool): {results['warm']}")
        results["baseline"] = load(
            server, args.clients,
            lambda rng: f"/v1/events?reader_id={rng.choice(cold)}&limit=20", args.seconds)
        log(f"baseline GET /v1/events: {results['baseline']}")
        results["warm_vs_baseline"] = {
            "p50": round(results["warm"]["p50_ms"] / results["baseline"]["p50_ms"], 2),
            "p99": round(results["warm"]["p99_ms"] / results["baseline"]["p99_ms"], 2)}
        results["server_rss_mb"] = rss_mb(server.pid)
    finally:
        server.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
