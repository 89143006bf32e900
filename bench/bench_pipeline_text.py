"""Pipeline v2: text ingest through a real ``kenning serve`` against the raw embedding model.

Baseline ("raw model", one thread): exactly the side of ``bench_ingest.py`` - the default
embedding backend, warmed up, embedding the chunks the pipeline will embed, in the
batches the batcher would form.

End to end, each side on a fresh temporary data dir with ``kenning serve`` (a
subprocess, JSON logs to ``server.log``) on a free loopback port:

* ``P=1 HTTP``: ``--worker-processes 1``; ``POST /v1/assets/batch`` with ``--batch``
  texts per request, one request after the other from one client thread.
* ``P=1 CLI``: ``--worker-processes 1``; the texts written one file each to a temporary
  folder, then ``kenning ingest FOLDER --api-url URL`` (a subprocess, its defaults:
  batches of ``max_batch_items``, 4 uploads in parallel). The clock includes the CLI's
  start-up.
* ``default HTTP``: no worker options (one worker process per core, ``workers`` threads
  each); HTTP batches as above.

Model load is excluded: before the clock starts, warm-up texts that are not in the
measured set are ingested until every worker process has run every text step (so each
has loaded the embedding model and the language identifier). The clock runs from the
first submit until no stage run is pending, queued or running (polled in
``kenning.db``, read only). Then the end state is checked from the database (every
measured asset ``ready``, one chunk segment per chunk, embedding rows = chunks +
assets), the server is stopped (SIGTERM) and its worker processes' "workers stopped"
log lines give doorbell deliveries and no-op deliveries (these include the warm-up).

The sides run interleaved ``--rounds`` times; the table shows medians; ratio = e2e
articles/s / raw model articles/s. Run::

    .venv/bin/python bench/bench_pipeline_text.py [--articles 300] [--rounds 3]
        [--batch 50] [--sides http1 cli1 default] [--profile] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench_ingest import distinct, pipeline_chunks, run_raw
from serve_support import (
    Server,
    WorkerLog,
    asset_statuses,
    kenning_command,
    provenance,
    step_profiles,
    wait_idle,
    warm_until_covered,
)
from sqlalchemy import func, select

from kenning.demo.corpus import NewsArticle, news_articles
from kenning.inference.embedding import UseMultilingualBackend
from kenning.media.kinds import MediaKind
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Embedding, Segment, utcnow

TARGETS = {"P=1 HTTP": 0.8, "P=1 CLI": 0.8, "default HTTP": 1.0}


@dataclass
class Run:
    side: str
    seconds: float
    articles: int
    chunks: int
    log: WorkerLog = field(default_factory=WorkerLog)
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds during the measured window: API process, worker processes."""
    profile: list[str] = field(default_factory=list)
    warmups: int = 0

    @property
    def articles_per_s(self) -> float:
        return self.articles / self.seconds


def verify(db: Database, ids: list[str], chunks: int) -> None:
    """Every measured asset ready; one chunk segment per chunk; embeddings = chunks +
    assets (one per chunk, one asset-level mean)."""
    statuses = asset_statuses(db, ids)
    with db.session(write=False) as s:
        segments = s.scalar(select(func.count()).select_from(Segment).where(
            Segment.asset_id.in_(ids), Segment.kind == "chunk"))
        embeddings = s.scalar(select(func.count()).select_from(Embedding).where(
            Embedding.asset_id.in_(ids)))
    expected = ({"ready": len(ids)}, chunks, chunks + len(ids))
    found = (statuses, segments, embeddings)
    if found != expected:
        raise RuntimeError("wrong end state (statuses, chunk segments, embedding rows): "
                           f"expected {expected}, found {found}")


def warm_text(i: int, tag: str) -> str:
    return (f"Warm-up note {tag}-{i}. The committee met on Tuesday to discuss the budget "
            f"for the coming year, and the minutes were published the next morning "
            f"({tag} {i}).")


def text_steps(settings: Settings) -> set[str]:
    from kenning.container import Kenning

    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        k = Kenning(Settings(data_dir=Path(tmp), workers=0, _env_file=None))
        try:
            return {st.step for st in k.registry.plan(MediaKind.TEXT)}
        finally:
            k.close()


def run_side(side: str, texts: list[NewsArticle], chunks: int, batch: int,
             steps: set[str], profile: bool, timeline: bool = False) -> Run:
    serve_args = [] if side == "default HTTP" else ["--worker-processes", "1"]
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        server = Server(data_dir, serve_args)
        try:
            server.start()
            warm_ids: list[str] = []

            def send_warm(i: int) -> None:
                items = [{"text": warm_text(2 * i + j, side)} for j in range(2)]
                warm_ids.extend(server.post_batch(json={"items": items}))

            rounds = warm_until_covered(server, send_warm, steps)
            if side == "P=1 CLI":
                folder = Path(tmp) / "texts"
                folder.mkdir()
                for article in texts:
                    (folder / f"{article.id}.txt").write_text(article.text, encoding="utf-8")
            cpu0 = server.cpu()
            started, t0 = time.perf_counter(), utcnow()
            if side == "P=1 CLI":
                done = subprocess.run(
                    [*kenning_command(), "ingest", str(folder), "--api-url", server.url,
                     "--data-dir", str(data_dir)],
                    capture_output=True, text=True, check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"kenning ingest: {done.returncode} {done.stderr[-500:]}")
                counts = json.loads(done.stdout)
                if counts != {"new": len(texts), "duplicate": 0, "rejected": 0}:
                    raise RuntimeError(f"kenning ingest answered {counts}")
            else:
                for i in range(0, len(texts), batch):
                    items = [{"text": a.text, "title": a.title, "external_id": a.id}
                             for a in texts[i:i + batch]]
                    server.post_batch(json={"items": items})
            wait_idle(server.db)
            seconds = time.perf_counter() - started
            cpu1 = server.cpu()
            with server.db.session(write=False) as s:
                ids = list(s.scalars(select(Asset.id).where(Asset.id.not_in(warm_ids))))
            if len(ids) != len(texts):
                raise RuntimeError(f"{len(ids)} measured assets, expected {len(texts)}")
            verify(server.db, ids, chunks)
            lines = []
            if profile:
                for name, prof in sorted(step_profiles(server.db, ids, t0).items()):
                    lines.append(prof.line(name))
                    if timeline:
                        lines.append("    batches (claim, settle, runs): " + ", ".join(
                            f"{a:.2f}-{b:.2f}:{n}" for a, b, n in prof.timeline))
        finally:
            log = server.stop()
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    return Run(side, seconds, len(texts), chunks, log, cpu, lines, rounds)


SIDES = {"http1": "P=1 HTTP", "cli1": "P=1 CLI", "default": "default HTTP"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=300, help="ABC news articles (<= 300)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side")
    parser.add_argument("--batch", type=int, default=50, help="texts per HTTP batch request")
    parser.add_argument("--sides", nargs="+", choices=sorted(SIDES), default=list(SIDES),
                        help="end-to-end sides to run (default: all)")
    parser.add_argument("--profile", action="store_true",
                        help="print per-step timings from stage_run after each e2e run")
    parser.add_argument("--timeline", action="store_true",
                        help="with --profile: each batch's claim and settle times")
    parser.add_argument("--quick", action="store_true",
                        help="a small run: 60 articles, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.articles, args.rounds = min(args.articles, 60), 1
    logging.basicConfig(level=logging.WARNING)

    requested = news_articles(args.articles)
    texts = distinct(requested)
    settings = Settings(_env_file=None)
    chunks = [c for article in texts for c in pipeline_chunks(article.text, settings)]
    steps = text_steps(settings)

    backend = UseMultilingualBackend(threads=settings.model_threads)
    backend.embed(["warm-up sentence for the embedding model"])
    print(f"start: {provenance()}", flush=True)

    def raw_side() -> Run:
        r = run_raw(backend, chunks, len(texts), settings)
        return Run("raw model", r.seconds, r.articles, r.chunks)

    sides: list[tuple[str, Callable[[], Run]]] = [("raw model", raw_side)]
    for key in args.sides:
        name = SIDES[key]
        sides.append((name, lambda name=name: run_side(  # type: ignore[misc]
            name, texts, len(chunks), args.batch, steps, args.profile, args.timeline)))

    runs: dict[str, list[Run]] = {name: [] for name, _ in sides}
    for round_no in range(1, args.rounds + 1):
        for name, side in sides:
            run = side()
            runs[name].append(run)
            extra = ""
            if name != "raw model":
                extra = (f"  deliveries {run.log.deliveries} (no-op {run.log.noop_deliveries}) "
                         f"from {run.log.processes} worker processes, warm-up rounds "
                         f"{run.warmups}, CPU s api {run.cpu['api']:.1f} "
                         f"workers {run.cpu['workers']:.1f}")
            print(f"round {round_no}  {name:<14} {run.seconds:7.2f} s  "
                  f"{run.articles_per_s:6.2f} articles/s{extra}", flush=True)
            for line in run.profile:
                print(line, flush=True)

    raw = statistics.median(r.articles_per_s for r in runs["raw model"])
    print(f"\n{len(texts)} distinct articles ({len(requested)} requested), {len(chunks)} "
          f"chunks, {args.rounds} rounds, medians; model {backend.model_id}, "
          f"model_threads={settings.model_threads}, HTTP batches of {args.batch}; load "
          f"average at end {os.getloadavg()}\n")
    print(f"{'side':<14} {'articles/s':>10} {'seconds':>8} {'ratio':>6} {'target':>6} "
          f"{'deliveries':>10} {'no-op':>6} {'no-op %':>7} {'CPU api':>7} {'CPU wrk':>7}")
    for name, _ in sides:
        rs = runs[name]
        rate = statistics.median(r.articles_per_s for r in rs)
        secs = statistics.median(r.seconds for r in rs)
        target = TARGETS.get(name)
        row = f"{name:<14} {rate:>10.2f} {secs:>8.2f} {rate / raw:>6.2f} "
        row += f"{target:>6.1f} " if target else f"{'':>6} "
        if name != "raw model":
            row += (f"{statistics.median(r.log.deliveries for r in rs):>10.0f} "
                    f"{statistics.median(r.log.noop_deliveries for r in rs):>6.0f} "
                    f"{100 * statistics.median(r.log.noop_fraction for r in rs):>6.1f}% "
                    f"{statistics.median(r.cpu['api'] for r in rs):>7.1f} "
                    f"{statistics.median(r.cpu['workers'] for r in rs):>7.1f}")
        print(row)
    print("\nratio = e2e / raw model articles/s (medians). Deliveries and no-ops: whole "
          "server life, warm-up included. CPU: seconds in the measured window, API "
          "process and worker processes.")
    for name, target in TARGETS.items():
        if name in runs:
            rate = statistics.median(r.articles_per_s for r in runs[name])
            verdict = "holds" if rate / raw >= target else "MISSED"
            print(f"{name}: ratio {rate / raw:.2f}, target >= {target}: {verdict}")


if __name__ == "__main__":
    main()
