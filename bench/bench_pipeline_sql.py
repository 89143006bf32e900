"""Pipeline v2: SQL statements and transactions on the metadata store per text article.

An in-process ``Kenning(Settings(data_dir=tmp, workers=2, worker_processes=0))``: the
articles are ingested with ``IngestService.ingest_many`` in batches of ``--batch``
(workers not started yet), then ``start()`` and a wait until no stage run is pending,
queued or running. SQLAlchemy engine events on the metadata store's engine count, over
the whole run:

* statements: ``before_cursor_execute`` (an ``executemany`` is one), without the
  ``BEGIN`` / ``BEGIN IMMEDIATE`` that open transactions;
* transactions: the ``begin`` event (read and write transactions alike; SQLite's
  connect-time PRAGMAs are not statements of a transaction and are not counted).

The wait polls through a second, uncounted engine, so the bench's own polling is not
counted. The split is by phase (ingest, ``start()``, pipeline) and, for the pipeline,
by thread (worker threads, the index follower, the reconciler, ...). The broker's own
SQLite file (``queue.db``) is not the metadata store and is not counted.

``--by-step`` adds a single-thread driver on a fresh data dir: the same ingest, then
``runner.run_step(step)`` in a loop per step until it claims nothing, with the
statements, transactions and CPU seconds of each step (what one worker pays). Run::

    .venv/bin/python bench/bench_pipeline_sql.py [--articles 300] [--batch 50]
        [--by-step] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import re
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_ingest import distinct
from serve_support import provenance
from sqlalchemy import event

from kenning.container import Kenning
from kenning.demo.corpus import NewsArticle, news_articles
from kenning.ingest.service import IngestItem, IngestRequest
from kenning.media.kinds import MediaKind
from kenning.principal import Principal
from kenning.processors.text import detect_language
from kenning.settings import Settings
from kenning.stores.metadata import Database

TARGET_TRANSACTIONS = 3.0


class SqlCounter:
    """Statements and transactions on one engine, by phase and by thread."""

    def __init__(self, kenning: Kenning) -> None:
        self.phase = "setup"
        self.statements: Counter[tuple[str, str]] = Counter()
        self.transactions: Counter[tuple[str, str]] = Counter()
        self.writes: Counter[tuple[str, str]] = Counter()
        """Transactions opened with ``BEGIN IMMEDIATE`` (SQLite's write transactions)."""
        self._lock = threading.Lock()
        engine = kenning.stores.db.engine
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)

    @staticmethod
    def _thread() -> str:
        thread = threading.current_thread()
        if thread is threading.main_thread():
            return "main"
        kind = type(thread).__name__
        return kind if kind != "Thread" else re.sub(r"[-_ ]?\d+.*$", "", thread.name)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("BEGIN"):
            if statement.startswith("BEGIN IMMEDIATE"):
                with self._lock:
                    self.writes[(self.phase, self._thread())] += 1
            return
        with self._lock:
            self.statements[(self.phase, self._thread())] += 1

    def _begin(self, _conn: Any) -> None:
        with self._lock:
            self.transactions[(self.phase, self._thread())] += 1

    def total(self, counter: Counter[tuple[str, str]], phase: str | None = None) -> int:
        return sum(n for (p, _), n in counter.items() if phase is None or p == phase)


def settings_for(tmp: str, workers: int) -> Settings:
    return Settings(data_dir=Path(tmp), workers=workers, worker_processes=0, log_json=False,
                    _env_file=None)


def principal(kenning: Kenning) -> Principal:
    tenant_id = kenning.tenants.create_tenant("bench")
    key = kenning.tenants.create_key(tenant_id, "bench")
    return Principal(tenant_id, key.key_id)


def ingest(kenning: Kenning, who: Principal, texts: list[NewsArticle], batch: int) -> None:
    for i in range(0, len(texts), batch):
        items = [IngestItem.text(a.text, IngestRequest(title=a.title, external_id=a.id))
                 for a in texts[i:i + batch]]
        outcomes = kenning.ingest.ingest_many(who, items)
        bad = [o for o in outcomes if isinstance(o, Exception)]
        if bad:
            raise RuntimeError(f"ingest refused {len(bad)} items: {bad[0]!r}")


def wait_idle(db: Database, timeout_s: float = 1800) -> None:
    from serve_support import unfinished

    deadline = time.monotonic() + timeout_s
    while unfinished(db):
        if time.monotonic() > deadline:
            raise TimeoutError("pipeline not idle")
        time.sleep(0.05)


def run_whole(texts: list[NewsArticle], batch: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        kenning = Kenning(settings_for(tmp, 2))
        poll = Database(kenning.settings.resolved_database_url)
        try:
            who = principal(kenning)
            kenning.resources.embedder.embed(["warm-up sentence for the embedding model"])
            detect_language("warm-up sentence for the language identifier")
            counter = SqlCounter(kenning)
            counter.phase = "ingest"
            started = time.perf_counter()
            ingest(kenning, who, texts, batch)
            ingest_s = time.perf_counter() - started
            counter.phase = "start"
            kenning.start()
            counter.phase = "pipeline"
            wait_idle(poll)
            seconds = time.perf_counter() - started
            counter.phase = "after"
        finally:
            kenning.close()
            poll.dispose()
    n = len(texts)
    print(f"{n} articles, ingest_many in batches of {batch}, workers=2 threads, "
          f"worker_processes=0; ingest {ingest_s:.2f} s, all done after {seconds:.2f} s\n")
    print(f"{'phase / thread':<28} {'statements':>10} {'per art':>8} {'transactions':>12} "
          f"{'per art':>8} {'of them writes':>14} {'per art':>8}")
    counted = ("ingest", "start", "pipeline")
    rows: list[tuple[str, int, int, int]] = []
    for phase in counted:
        rows.append((phase, *(counter.total(c, phase) for c in (
            counter.statements, counter.transactions, counter.writes))))
        if phase == "pipeline":
            threads = sorted({t for (p, t) in counter.statements | counter.transactions
                              if p == phase})
            rows += [(f"  {t}", counter.statements[(phase, t)],
                      counter.transactions[(phase, t)], counter.writes[(phase, t)])
                     for t in threads]
    rows.append(("total", *(sum(counter.total(c, p) for p in counted) for c in (
        counter.statements, counter.transactions, counter.writes))))
    for name, statements, transactions, writes in rows:
        print(f"{name:<28} {statements:>10} {statements / n:>8.2f} {transactions:>12} "
              f"{transactions / n:>8.2f} {writes:>14} {writes / n:>8.2f}")
    per = rows[-1][2] / n
    verdict = "holds" if per <= TARGET_TRANSACTIONS else "MISSED"
    print(f"\ntransactions per article {per:.2f}, aim <= {TARGET_TRANSACTIONS:.0f}: {verdict}")


def run_by_step(texts: list[NewsArticle], batch: int, profile: bool) -> None:
    results = []
    profiles: dict[str, cProfile.Profile] = {}
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        kenning = Kenning(settings_for(tmp, 0))
        try:
            who = principal(kenning)
            kenning.resources.embedder.embed(["warm-up sentence for the embedding model"])
            detect_language("warm-up sentence for the language identifier")
            counter = SqlCounter(kenning)
            counter.phase = "ingest"
            cpu = time.process_time()
            ingest(kenning, who, texts, batch)
            results.append(("ingest", 0, 0, time.process_time() - cpu))
            steps = [st.step for st in kenning.registry.plan(MediaKind.TEXT)]
            for step in dict.fromkeys(steps):  # in plan order, once each
                counter.phase = step
                prof = profiles[step] = cProfile.Profile()
                cpu = time.process_time()
                runs = batches = 0
                if profile:
                    prof.enable()
                while claimed := kenning.runner.run_step(step):
                    runs += claimed
                    batches += 1
                prof.disable()
                results.append((step, runs, batches, time.process_time() - cpu))
            counter.phase = "after"
        finally:
            kenning.close()
    n = len(texts)
    print(f"\nsingle-thread driver: {n} articles, run_step per step until it claims nothing "
          f"(step_batch_items={Settings(_env_file=None).step_batch_items})\n")
    print(f"{'phase':<58} {'runs':>5} {'batches':>7} {'stmts/art':>9} {'tx/art':>6} "
          f"{'writes/art':>10} {'CPU s':>6} {'ms/art':>6}")
    for phase, runs, batches, cpu_s in results:
        st, tx, wr = (counter.total(c, phase) / n for c in (
            counter.statements, counter.transactions, counter.writes))
        print(f"{phase:<58} {runs:>5} {batches:>7} {st:>9.2f} {tx:>6.2f} {wr:>10.2f} "
              f"{cpu_s:>6.2f} {1000 * cpu_s / n:>6.2f}")
    print("(CPU s includes the embedding model in the embed step: the batcher's model "
          "thread is in this process)")
    for step, prof in profiles.items():
        if profile:
            print(f"\ncProfile of {step}, kenning functions by cumulative time (s):")
            stats = pstats.Stats(prof)
            rows = [(ct, f"{Path(file).name}:{line}({name})", nc)
                    for (file, line, name), (_cc, nc, _tt, ct, _callers)
                    in stats.stats.items()  # type: ignore[attr-defined]
                    if "/kenning/" in file]
            for ct, where, calls in sorted(rows, reverse=True)[:12]:
                print(f"  {ct:7.2f}  {calls:6d} calls  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=300, help="ABC news articles (<= 300)")
    parser.add_argument("--batch", type=int, default=50, help="items per ingest_many call")
    parser.add_argument("--by-step", action="store_true",
                        help="also split the pipeline per step with a single-thread driver")
    parser.add_argument("--cprofile", action="store_true",
                        help="with --by-step: cProfile each step (slower) and print the top "
                        "kenning functions")
    parser.add_argument("--quick", action="store_true", help="a small run: 60 articles")
    args = parser.parse_args()
    if args.quick:
        args.articles = min(args.articles, 60)
    logging.basicConfig(level=logging.WARNING)
    texts = distinct(news_articles(args.articles))
    print(f"start: {provenance()}", flush=True)
    run_whole(texts, args.batch)
    if args.by_step:
        run_by_step(texts, args.batch, args.cprofile)


if __name__ == "__main__":
    main()
