"""Search quality: keyword, semantic and hybrid on the same queries over real news.

The corpus: the 300 ABC news articles of the Lee background corpus (gensim test data;
exact duplicates dropped), each ingested with its headline as title into a fresh
in-process :class:`~kenning.container.Kenning` (embedded profile, default model).

Query sets, each query with the one article it was written for:

* ``first-sentence`` and ``second-sentence`` (English): that sentence of each of the
  first ``--queries`` articles (the first is also the article's headline, so the
  keyword retriever finds it almost always; the second is a harder same-language test).
* ``paraphrase`` (English) and ``crosslingual`` (German, French, Spanish): written by a
  Kenning engineer, in ``bench/data/fusion_queries.tsv``; the cross-lingual ones are
  the article's first sentence translated by hand.

Sides: ``keyword``, ``semantic``, and ``hybrid`` with the default settings, and
hybrid variants (the language rule off; other keyword weights) through the same
:class:`~kenning.services.search.SearchService` with other settings. Per set: hit@1,
hit@10, MRR@10 (rank of the target asset in the top 10), and for hybrid sides the number
of queries whose target hybrid ranks lower than semantic search does ("lost to
semantic"; the fusion rule's target is 0 on cross-lingual queries). Run::

    .venv/bin/python bench/bench_fusion.py [--queries 200]
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_ingest import distinct, warm

from kenning.container import Kenning
from kenning.demo.corpus import news_articles
from kenning.ingest.service import IngestRequest
from kenning.principal import Principal
from kenning.services.search import SearchMode, SearchRequest, SearchService
from kenning.settings import Settings

QUERIES = Path(__file__).parent / "data" / "fusion_queries.tsv"
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s+(?=[A-Z\"'])|$)", re.S)


@dataclass(frozen=True)
class Query:
    set: str
    target: str  # external id of the article
    language: str
    text: str


def sentence(text: str, n: int) -> str | None:
    """The ``n``-th sentence (0-based) of ``text``, None past the end."""
    rest = " ".join(text.split())
    for _ in range(n + 1):
        match = _FIRST_SENTENCE.match(rest)
        if not match:
            return None
        found, rest = match.group(1), rest[match.end():]
    return found


def load_queries(articles: list[Any], first: int) -> list[Query]:
    queries = [Query(f"{name}-sentence", a.id, "en", text)
               for n, name in enumerate(("first", "second"))
               for a in articles[:first] if (text := sentence(a.text, n))]
    for line in QUERIES.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            set_, target, language, text = line.split("\t")
            queries.append(Query(set_, target, language, text))
    return queries


SIDES: dict[str, tuple[SearchMode, dict[str, Any]]] = {
    "keyword": (SearchMode.KEYWORD, {}),
    "semantic": (SearchMode.SEMANTIC, {}),
    "hybrid": (SearchMode.HYBRID, {}),
    "hybrid, no language rule": (SearchMode.HYBRID, {"hybrid_crosslingual_keyword": 1.0}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200, help="first-sentence queries")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    articles = distinct(news_articles(300))
    queries = load_queries(articles, args.queries)
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), workers=2, log_json=False, _env_file=None)
        kenning = Kenning(settings)
        try:
            tenant_id = kenning.tenants.create_tenant("bench")
            who = Principal(tenant_id, kenning.tenants.create_key(tenant_id, "bench").key_id)
            warm(kenning)
            kenning.start()
            ids: dict[str, str] = {}
            for a in articles:
                accepted = kenning.ingest.ingest_text(
                    who, a.text, IngestRequest(title=a.title, external_id=a.id))
                ids[a.id] = accepted.asset_id
            kenning.join(timeout_s=3600)
            by_asset = {v: k for k, v in ids.items()}
            ranks: dict[str, list[int | None]] = {}
            seconds: dict[str, list[float]] = {}
            for side, (mode, update) in SIDES.items():
                service = SearchService(kenning.stores, kenning.resources.embedder,
                                        settings.model_copy(update=update))
                ranks[side], seconds[side] = [], []
                for q in queries:
                    started = time.perf_counter()
                    hits = service.search(who, SearchRequest(query=q.text, mode=mode,
                                                             limit=10)).hits
                    seconds[side].append(time.perf_counter() - started)
                    found = [by_asset.get(h.asset_id) for h in hits]
                    ranks[side].append(found.index(q.target) + 1 if q.target in found else None)
            languages = {q.text: kenning.search.query_language(q.text)
                         for q in queries if q.set == "crosslingual"}
            demo = kenning.search.search(who, SearchRequest(
                query="Waldbrände in Australien", mode=SearchMode.HYBRID, limit=5,
                explain=True))
        finally:
            kenning.close()

    print(f"{len(articles)} distinct ABC articles; model {settings.embedding_model}; "
          f"rrf_k {settings.rrf_k}\n")
    print("| set | queries | side | hit@1 | hit@10 | MRR@10 | lost to semantic | p50 ms |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for set_ in dict.fromkeys(q.set for q in queries):
        rows = [i for i, q in enumerate(queries) if q.set == set_]
        for side in SIDES:
            r = [ranks[side][i] for i in rows]
            hit1 = sum(x == 1 for x in r) / len(r)
            hit10 = sum(x is not None for x in r) / len(r)
            mrr = sum(1 / x for x in r if x) / len(r)
            lost = "" if not side.startswith("hybrid") else str(sum(
                1 for i in rows if ranks["semantic"][i] is not None and (
                    ranks[side][i] is None or ranks[side][i] > ranks["semantic"][i])))
            p50 = 1000 * statistics.median(seconds[side][i] for i in rows)
            print(f"| {set_} | {len(r)} | {side} | {hit1:.3f} | {hit10:.3f} | {mrr:.3f} "
                  f"| {lost} | {p50:.1f} |")
    wrong = {t: lang for t, lang in languages.items()
             if lang != next(q.language for q in queries if q.text == t)}
    print(f"\ncross-lingual query languages identified: {len(languages) - len(wrong)} of "
          f"{len(languages)} (others: {sorted(set(wrong.values()), key=str)})")
    print(f"\n'Waldbrände in Australien' (hybrid, query language {demo.query_language}):")
    for hit in demo.hits:
        parts = ", ".join(f"{leg} #{c.rank}" for leg, c in (hit.explain or {}).items())
        print(f"  {hit.score:.4f}  {(hit.title or '')[:70]}  ({parts})")


if __name__ == "__main__":
    main()
