"""Pipeline v2: one CPU-bound step (``embed:text.embed``) with 1 and with 2 worker processes.

Preparation, once, in process: ``Kenning`` with no workers on a temporary data dir
ingests ``--articles`` texts and drives the text step with ``runner.run_step(step)``
until it claims nothing, so only the embed runs are queued (the preparation's doorbells
go to a throwaway broker file outside the data dir, so the copies start with an empty
broker). Then, per side and round, a copy of that data dir and K worker processes on it
(``bench/worker_warm.py worker --data-dir COPY --threads 1``: ``kenning worker`` with
the models loaded before it consumes). Once every worker is consuming, the embed step's
doorbell is rung K times (``Dispatcher.ring(..., force=True)``); the bench waits until
no embed run is queued or running, checks the end state (every asset ``ready``,
embedding rows = chunks + assets) and stops the workers (SIGTERM).

The time is read from ``stage_run``: the first claim (``started_at``) to the last
settle (``finished_at``) of the embed runs, which leaves out process start and model
load. Speed-up = t(1) / t(2), medians over ``--rounds`` interleaved rounds, for each
``--batch-items`` (``KENNING_STEP_BATCH_ITEMS`` of the workers). The baseline, in the
same rounds: the raw embedding model on the same chunks in 1 and in 2 processes started
together (the batches dealt between them), whose speed-up is what the machine allows
right now (it is shared; another job's load lowers it). Run::

    .venv/bin/python bench/bench_pipeline_workers.py [--articles 200] [--rounds 3]
        [--batch-items 32 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_ingest import batches, distinct, pipeline_chunks
from serve_support import WorkerLog, cpu_seconds, provenance
from sqlalchemy import func, select

from kenning.container import Kenning, make_broker
from kenning.demo.corpus import news_articles
from kenning.inference.embedding import UseMultilingualBackend
from kenning.ingest.service import IngestItem, IngestRequest
from kenning.media.kinds import MediaKind
from kenning.principal import Principal
from kenning.queue.dispatch import Dispatcher
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Embedding, Segment, StageRun

TARGET_SPEEDUP = 1.7
HERE = Path(__file__).resolve().parent


@dataclass
class Run:
    processes: int
    batch_items: int
    seconds: float
    """First claim to last ``finished_at`` (stamped when the last settle begins)."""
    to_idle: float
    """First claim to the poll that saw no embed run left (includes the last settle)."""
    runs: int
    log: WorkerLog
    cpu_s: float
    """CPU seconds of the worker processes from "consuming" to idle."""
    per_worker: dict[int, tuple[int, int]]
    """pid: (runs, batches)."""


def prepare(root: Path, articles: int) -> tuple[Path, str]:
    """A data dir whose only queued work is the embed step; returns it and the step."""
    data_dir = root / "prepared"
    settings = Settings(data_dir=data_dir, workers=0, worker_processes=0, log_json=False,
                        broker_url=f"sqlite:///{root / 'prepare-queue.db'}", _env_file=None)
    kenning = Kenning(settings)
    try:
        tenant_id = kenning.tenants.create_tenant("bench")
        who = Principal(tenant_id, kenning.tenants.create_key(tenant_id, "bench").key_id)
        texts = distinct(news_articles(articles))
        for i in range(0, len(texts), 50):
            kenning.ingest.ingest_many(who, [
                IngestItem.text(a.text, IngestRequest(title=a.title, external_id=a.id))
                for a in texts[i:i + 50]])
        plan = kenning.registry.plan(MediaKind.TEXT)
        embed = next(st.step for st in plan if st.name == "text.embed")
        for step in dict.fromkeys(st.step for st in plan):
            if step != embed:
                while kenning.runner.run_step(step):
                    pass
        with kenning.stores.db.session(write=False) as s:
            states = dict(s.execute(select(StageRun.step, func.count())
                                    .where(StageRun.state != "succeeded")
                                    .group_by(StageRun.step)).all())
        if states != {embed: len(texts)}:
            raise RuntimeError(f"preparation left {states}, expected {{{embed!r}: "
                               f"{len(texts)}}}")
    finally:
        kenning.close()
    return data_dir, embed


def _raw_worker(chunks: list[list[str]], threads: int, barrier: Any, out: Any) -> None:
    backend = UseMultilingualBackend(threads=threads)
    backend.embed(["warm-up sentence for the embedding model"])
    barrier.wait()
    started = time.time()
    for batch in chunks:
        backend.embed(batch)
    out.put((started, time.time()))


def run_raw(chunks: list[str], processes: int) -> float:
    """The raw model on the same chunks, split evenly between ``processes`` processes
    that start together (each batching its share as the batcher would): the machine's
    own speed-up for this work, right now."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    s = Settings(_env_file=None)
    share = -(-len(chunks) // processes)
    procs = [ctx.Process(target=_raw_worker, args=(
        batches(chunks[i * share:(i + 1) * share], s.embed_batch_size, s.embed_batch_chars),
        s.model_threads, barrier, out)) for i in range(processes)]
    for p in procs:
        p.start()
    spans = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def run_side(prepared: Path, step: str, processes: int, batch_items: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        shutil.copytree(prepared, data_dir)
        ready = Path(tmp) / "ready"
        ready.mkdir()
        env = {**os.environ, "KENNING_LOG_JSON": "true", "BENCH_READY_DIR": str(ready),
               "KENNING_STEP_BATCH_ITEMS": str(batch_items)}
        log_path = Path(tmp) / "workers.log"
        procs = []
        with log_path.open("ab") as log:
            for _ in range(processes):
                procs.append(subprocess.Popen(
                    [sys.executable, str(HERE / "worker_warm.py"), "worker", "--data-dir",
                     str(data_dir), "--threads", "1"],
                    stdout=log, stderr=subprocess.STDOUT, env=env))
        settings = Settings(data_dir=data_dir, _env_file=None)
        db = Database(settings.resolved_database_url)
        try:
            deadline = time.monotonic() + 300
            while len(list(ready.iterdir())) < processes:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"workers did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.05)
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
            broker = make_broker(settings)
            try:
                dispatcher = Dispatcher(broker, db, time_limit_s=lambda _: 300.0,
                                        webhook_max_attempts=1)
                for _ in range(processes):
                    dispatcher.ring([step], force=True)
            finally:
                broker.close()
            deadline = time.monotonic() + 1800
            while True:
                with db.session(write=False) as s:
                    left = s.scalar(select(func.count()).select_from(StageRun).where(
                        StageRun.step == step, StageRun.state.in_(("queued", "running"))))
                if not left:
                    idle_at = datetime.now(UTC)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("embed step not done")
                time.sleep(0.05)
            cpu_s = sum(cpu_seconds(p.pid) for p in procs) - cpu0
            first, seconds, runs, per_worker = measure(db, step)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            stats = worker_log(log_path)
            db.dispose()
    return Run(processes, batch_items, seconds, (idle_at - first).total_seconds(), runs,
               stats, cpu_s, per_worker)


def measure(db: Database, step: str) -> tuple[
        datetime, float, int, dict[int, tuple[int, int]]]:
    """The first claim, and from it to the last ``finished_at`` of the step, after
    checking the end state."""
    with db.session(write=False) as s:
        rows = s.execute(select(StageRun.worker, StageRun.started_at, StageRun.finished_at,
                                StageRun.state).where(StageRun.step == step)).all()
        assets = dict(s.execute(select(Asset.status, func.count())
                                .group_by(Asset.status)).all())
        chunks = s.scalar(select(func.count()).select_from(Segment)
                          .where(Segment.kind == "chunk"))
        embeddings = s.scalar(select(func.count()).select_from(Embedding))
    n = len(rows)
    if {r.state for r in rows} != {"succeeded"} or assets != {"ready": n} or (
            embeddings != (chunks or 0) + n):
        raise RuntimeError(f"wrong end state: run states {dict(Counter(r.state for r in rows))}, "
                           f"assets {assets}, embeddings {embeddings}, chunks {chunks}")
    start = min(r.started_at for r in rows)
    end = max(r.finished_at for r in rows)
    batches: dict[int, set[object]] = defaultdict(set)
    counts: dict[int, int] = defaultdict(int)
    for r in rows:
        pid = int(str(r.worker).rsplit(":", 1)[1])
        batches[pid].add(r.started_at)
        counts[pid] += 1
    return start, (end - start).total_seconds(), n, {
        p: (counts[p], len(batches[p])) for p in counts}


def worker_log(path: Path) -> WorkerLog:
    stats = WorkerLog()
    for line in path.read_text(errors="replace").splitlines():
        if '"workers stopped"' in line:
            entry = json.loads(line)
            stats.processes += 1
            stats.deliveries += int(entry.get("deliveries", 0))
            stats.noop_deliveries += int(entry.get("noop_deliveries", 0))
            stats.doorbells_rung += int(entry.get("doorbells_rung", 0))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=200, help="ABC news articles (<= 300)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side")
    parser.add_argument("--batch-items", type=int, nargs="+", default=[32, 8],
                        help="KENNING_STEP_BATCH_ITEMS values to try (default: 32 8)")
    parser.add_argument("--quick", action="store_true",
                        help="a small run: 60 articles, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.articles, args.rounds = min(args.articles, 60), 1
    logging.basicConfig(level=logging.WARNING)

    print(f"start: {provenance()}", flush=True)
    settings = Settings(_env_file=None)
    texts = distinct(news_articles(args.articles))
    chunks = [c for a in texts for c in pipeline_chunks(a.text, settings)]
    raw: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        prepared, step = prepare(Path(tmp), args.articles)
        sides = [(k, b) for b in args.batch_items for k in (1, 2)]
        runs: dict[tuple[int, int], list[Run]] = {side: [] for side in sides}
        for round_no in range(1, args.rounds + 1):
            for k in (1, 2):
                raw[k].append(run_raw(chunks, k))
                print(f"round {round_no}  raw model K={k}           {raw[k][-1]:6.2f} s",
                      flush=True)
            for k, b in sides:
                run = run_side(prepared, step, k, b)
                runs[(k, b)].append(run)
                workers = ", ".join(f"{runs_} runs in {n} batches"
                                    for runs_, n in run.per_worker.values())
                print(f"round {round_no}  K={k} batch_items={b:<3} {run.seconds:6.2f} s "
                      f"(to idle {run.to_idle:5.2f} s)  "
                      f"{run.runs / run.seconds:6.1f} assets/s  worker CPU {run.cpu_s:5.1f} s  "
                      f"deliveries {run.log.deliveries} (no-op {run.log.noop_deliveries})  "
                      f"[{workers}]", flush=True)

    ceiling = statistics.median(raw[1]) / statistics.median(raw[2])
    print(f"\n{step}, {len(texts)} assets, {len(chunks)} chunks, {args.rounds} rounds, "
          f"medians; load average at end {os.getloadavg()}\n")
    print(f"{'side':<24} {'seconds':>8} {'assets/s':>9} {'to idle s':>9} "
          f"{'worker CPU s':>12} {'no-op/deliveries':>16} {'speed-up':>8}")
    for k in (1, 2):
        secs = statistics.median(raw[k])
        print(f"{f'raw model, {k} process':<24} {secs:>8.2f} {len(texts) / secs:>9.1f} "
              f"{'':>9} {'':>12} {'':>16} {statistics.median(raw[1]) / secs:>8.2f}")
    for b in args.batch_items:
        t1 = statistics.median(r.seconds for r in runs[(1, b)])
        for k in (1, 2):
            rs = runs[(k, b)]
            secs = statistics.median(r.seconds for r in rs)
            noop = (f"{statistics.median(r.log.noop_deliveries for r in rs):.0f}/"
                    f"{statistics.median(r.log.deliveries for r in rs):.0f}")
            print(f"{f'batch_items={b}, K={k}':<24} {secs:>8.2f} {rs[0].runs / secs:>9.1f} "
                  f"{statistics.median(r.to_idle for r in rs):>9.2f} "
                  f"{statistics.median(r.cpu_s for r in rs):>12.1f} {noop:>16} "
                  f"{t1 / secs:>8.2f}")
    print(f"\nspeed-up = t(K=1) / t(K=2) (target >= {TARGET_SPEEDUP}); the raw model's own "
          f"speed-up on this machine in this run (its ceiling): {ceiling:.2f}")
    for b in args.batch_items:
        t1 = statistics.median(r.seconds for r in runs[(1, b)])
        t2 = statistics.median(r.seconds for r in runs[(2, b)])
        verdict = "holds" if t1 / t2 >= TARGET_SPEEDUP else "MISSED"
        print(f"batch_items={b}: speed-up {t1 / t2:.2f}: {verdict}")


if __name__ == "__main__":
    main()
