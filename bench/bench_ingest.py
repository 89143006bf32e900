"""End-to-end text ingest throughput against the raw embedding model, same texts, same run.

Baseline ("raw model"): the default embedding backend alone, warmed up, embedding
exactly the chunks the pipeline will embed (``normalize_text`` + ``chunk_text`` with the
settings' chunk sizes), in batches of ``embed_batch_size`` / ``embed_batch_chars`` as the
batcher would form them.

End to end: a fresh :class:`~kenning.container.Kenning` on a temporary data dir
(embedded SQLite metadata store + SQLite broker, default settings), the same articles
submitted through ``IngestService.ingest_text`` (in process) or ``POST /v1/assets``
(FastAPI TestClient), timed from the first submit until every stage is done
(``Kenning.join``). Model and language-id load time is excluded from both sides. Each
run is then checked: every asset ``ready``, one vector per chunk.

The sides run interleaved ``--rounds`` times; the table shows medians. Run::

    .venv/bin/python bench/bench_ingest.py [--articles 300] [--rounds 3] [--workers 2 4]
        [--no-http]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from kenning.container import Kenning
from kenning.demo.corpus import NewsArticle, news_articles
from kenning.inference.embedding import EmbeddingBackend, UseMultilingualBackend
from kenning.ingest.service import IngestRequest
from kenning.principal import Principal
from kenning.processors.text import chunk_text, detect_language, normalize_text
from kenning.settings import Settings
from kenning.stores.bundle import vector_namespace
from kenning.stores.metadata.tables import Asset, Embedding, Segment

TARGET_RATIO = 0.8


@dataclass(frozen=True)
class Run:
    side: str
    seconds: float
    articles: int
    chunks: int

    @property
    def articles_per_s(self) -> float:
        return self.articles / self.seconds

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds


def pipeline_chunks(text: str, settings: Settings) -> list[str]:
    """The chunk texts ``text.normalize`` + ``text.chunk`` produce for one text asset."""
    clean = normalize_text(text)
    spans = chunk_text(clean, settings.chunk_chars, settings.chunk_overlap_chars)
    return [clean[s:e].strip() for s, e in spans]


def batches(texts: Sequence[str], max_items: int, max_chars: int) -> list[list[str]]:
    """Greedy batches capped by item count and characters, like ``EmbeddingBatcher``."""
    out: list[list[str]] = []
    batch: list[str] = []
    chars = 0
    for text in texts:
        if batch and (len(batch) + 1 > max_items or chars + len(text) > max_chars):
            out.append(batch)
            batch, chars = [], 0
        batch.append(text)
        chars += len(text)
    if batch:
        out.append(batch)
    return out


def run_raw(backend: EmbeddingBackend, chunks: list[str], articles: int, s: Settings) -> Run:
    work = batches(chunks, s.embed_batch_size, s.embed_batch_chars)
    started = time.perf_counter()
    rows = sum(len(backend.embed(batch)) for batch in work)
    seconds = time.perf_counter() - started
    assert rows == len(chunks)
    return Run("raw model", seconds, articles, len(chunks))


def warm(kenning: Kenning) -> None:
    """Load the embedding and language-id models before the clock starts."""
    kenning.resources.embedder.embed(["warm-up sentence for the embedding model"])
    detect_language("warm-up sentence for the language identifier")


def verify(kenning: Kenning, tenant_id: str, articles: int, chunks: int) -> None:
    """Every asset ready; one chunk segment, embedding row and vector per chunk."""
    with kenning.stores.db.session(write=False) as s:
        statuses = dict(
            s.execute(
                select(Asset.status, func.count())
                .where(Asset.tenant_id == tenant_id)
                .group_by(Asset.status)
            ).all()
        )
        segments = s.scalar(
            select(func.count()).select_from(Segment)
            .where(Segment.tenant_id == tenant_id, Segment.kind == "chunk")
        )
        embeddings = s.scalar(
            select(func.count()).select_from(Embedding)
            .where(Embedding.tenant_id == tenant_id, Embedding.segment_id.is_not(None))
        )
    space = kenning.resources.embedder.model_id
    vectors = kenning.stores.vectors.count(vector_namespace(tenant_id, space))
    doc_vectors = kenning.stores.vectors.count(
        vector_namespace(tenant_id, space, asset_level=True)
    )
    expected = ({"ready": articles}, chunks, chunks, chunks, articles)
    found = (statuses, segments, embeddings, vectors, doc_vectors)
    if found != expected:
        raise RuntimeError(
            "wrong end state (statuses, chunk segments, chunk embeddings, chunk vectors, "
            f"asset vectors): expected {expected}, found {found}"
        )


def settings_for(tmp: str, workers: int) -> Settings:
    return Settings(data_dir=Path(tmp), workers=workers, log_json=False, _env_file=None)


def run_inprocess(texts: list[NewsArticle], chunks: int, workers: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        kenning = Kenning(settings_for(tmp, workers))
        try:
            tenant_id = kenning.tenants.create_tenant("bench")
            key = kenning.tenants.create_key(tenant_id, "bench")
            who = Principal(tenant_id, key.key_id)
            warm(kenning)
            kenning.start()
            started = time.perf_counter()
            for article in texts:
                kenning.ingest.ingest_text(
                    who, article.text, IngestRequest(title=article.title, external_id=article.id)
                )
            kenning.join(timeout_s=3600)
            seconds = time.perf_counter() - started
            verify(kenning, tenant_id, len(texts), chunks)
        finally:
            kenning.close()
    return Run(f"e2e in-process w={workers}", seconds, len(texts), chunks)


def run_http(texts: list[NewsArticle], chunks: int, workers: int) -> Run:
    with warnings.catch_warnings():  # starlette's note about its httpx dependency
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastapi.testclient import TestClient

    from kenning.api.app import create_app

    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        kenning = Kenning(settings_for(tmp, workers))
        warm(kenning)
        # The lifespan bootstraps a tenant and key, starts the workers, closes at exit.
        with TestClient(create_app(kenning)) as client:
            key = kenning.settings.bootstrap_key_path.read_text().strip()
            headers = {"Authorization": f"Bearer {key}"}
            started = time.perf_counter()
            for article in texts:
                body = {"text": article.text, "title": article.title, "external_id": article.id}
                response = client.post("/v1/assets", json=body, headers=headers)
                if response.status_code != 202:
                    raise RuntimeError(f"POST /v1/assets: {response.status_code} {response.text}")
            kenning.join(timeout_s=3600)
            seconds = time.perf_counter() - started
            tenant_id = kenning.tenants.tenant_id(kenning.settings.bootstrap_tenant)
            assert tenant_id is not None
            verify(kenning, tenant_id, len(texts), chunks)
    return Run(f"e2e HTTP w={workers}", seconds, len(texts), chunks)


def distinct(articles: list[NewsArticle]) -> list[NewsArticle]:
    """Drop exact duplicate texts: ingest would answer them with the first asset."""
    seen: set[str] = set()
    out = []
    for article in articles:
        if article.text not in seen:
            seen.add(article.text)
            out.append(article)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=300, help="ABC news articles (<= 300)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=None,
        help="worker thread counts to try (default: the workers setting)",
    )
    parser.add_argument("--no-http", dest="http", action="store_false",
                        help="skip the FastAPI TestClient side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)

    requested = news_articles(args.articles)
    texts = distinct(requested)
    settings = Settings(_env_file=None)
    workers = args.workers or [settings.workers]
    chunks = [c for article in texts for c in pipeline_chunks(article.text, settings)]

    backend = UseMultilingualBackend(threads=settings.model_threads)
    backend.embed(["warm-up sentence for the embedding model"])

    sides: list[tuple[str, Callable[[], Run]]] = [
        ("raw model", lambda: run_raw(backend, chunks, len(texts), settings)),
    ]
    for w in workers:
        sides.append((f"e2e in-process w={w}",
                      lambda w=w: run_inprocess(texts, len(chunks), w)))  # type: ignore[misc]
        if args.http:
            sides.append((f"e2e HTTP w={w}", lambda w=w: run_http(texts, len(chunks), w)))  # type: ignore[misc]

    runs: dict[str, list[Run]] = {name: [] for name, _ in sides}
    for round_no in range(1, args.rounds + 1):
        for name, side in sides:
            run = side()
            runs[name].append(run)
            print(f"round {round_no}  {name:<24} {run.seconds:7.2f} s  "
                  f"{run.articles_per_s:6.2f} articles/s", flush=True)

    raw = statistics.median(r.articles_per_s for r in runs["raw model"])
    print(
        f"\n{len(texts)} distinct articles ({len(requested)} requested), {len(chunks)} chunks, "
        f"{args.rounds} rounds, medians; model {backend.model_id}, "
        f"threads={settings.model_threads}\n"
    )
    print(f"{'side':<24} {'articles/s':>10} {'chunks/s':>9} {'seconds':>8} {'ratio':>6}")
    for name, _ in sides:
        rate = statistics.median(r.articles_per_s for r in runs[name])
        crate = statistics.median(r.chunks_per_s for r in runs[name])
        secs = statistics.median(r.seconds for r in runs[name])
        print(f"{name:<24} {rate:>10.2f} {crate:>9.2f} {secs:>8.2f} {rate / raw:>6.2f}")
    print(f"\nratio = e2e / raw model articles/s (target >= {TARGET_RATIO})")
    if importlib.util.find_spec("threadpoolctl") is None:
        print("note: threadpoolctl is not installed, so model_threads is not applied: the "
              "model's numpy calls use OpenBLAS's default thread count on both sides")


if __name__ == "__main__":
    main()
