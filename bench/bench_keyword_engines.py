"""The embedded keyword engines side by side: SQLite FTS5 against tantivy, same documents,
same queries, same process.

Corpus: ``--docs`` short real-news texts (``corpus_texts`` of bench_search_api.py: two
sentences of the Lee background and Reuters articles each), one tenant, ten documents per
asset, indexed into each engine in a temporary directory. Queries: the first sentences of
the 300 ABC articles (``queries``), searched at depth 50 as /v1/search's keyword leg does
(``highlights=False``), with ``language="en"`` and with ``None`` (the stopword union), and
once more with a word no document holds appended, so that every query runs the any-word
pass (the every-word pass finds nothing).

Reported per engine and language: p50, p99 and mean latency of ``search``; per language:
how many queries ran one pass (a single content word), and of the others how many
needed the any-word pass (fewer than 50 documents hold every content word), with the
median number of documents that pass matches. Then the cost of ``apply_log`` (what the
index follower calls) for batches of 8 and 200 new documents on the full index. Run::

    nice .venv/bin/python bench/bench_keyword_engines.py [--docs 100000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_search_api import corpus_texts, queries

from kenning.stores.keyword import KeywordDoc, KeywordIndex, SQLiteKeywordIndex
from kenning.stores.keyword.stopwords import passes
from kenning.stores.keyword.tantivy_index import TantivyKeywordIndex
from kenning.stores.keyword.words import query_terms

TENANT = "t1"
DEPTH = 50
BUILD_BATCH = 10_000


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"p50 {statistics.median(ordered):7.2f} ms  p99 {p99:7.2f} ms  "
            f"mean {statistics.fmean(ordered):7.2f} ms  max {ordered[-1]:7.2f} ms")


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def build(index: KeywordIndex, docs: list[KeywordDoc]) -> float:
    started = time.perf_counter()
    for i in range(0, len(docs), BUILD_BATCH):
        index.upsert(docs[i:i + BUILD_BATCH])
    return time.perf_counter() - started


def pass_counts(index: TantivyKeywordIndex, qs: list[str], language: str | None) -> str:
    """How the queries split into passes, counted on the tantivy index."""
    import tantivy

    searcher = index._idx.searcher()  # a bench reads the engine directly
    one, both, any_pass, matches = 0, 0, 0, []
    for q in qs:
        steps = passes(query_terms(q), language)
        if len(steps) == 1:
            one += 1
            continue
        both += 1
        terms = steps[0][1]
        every = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, index._term("text", t)) for t in terms])
        anyone = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, index._term("text", t)) for t in terms])
        if searcher.search(every, 1, count=True).count < DEPTH:
            any_pass += 1
            matches.append(searcher.search(anyone, 1, count=True).count)
    median = statistics.median(matches) if matches else 0
    return (f"{one} one-pass, {both} two-pass of which {any_pass} ran the any-word pass "
            f"(median {median:.0f} documents matched by it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the queries")
    args = parser.parse_args()

    texts = corpus_texts(args.docs)
    docs = [KeywordDoc(i + 1, TENANT, f"asset-{i // 10}", text) for i, text in enumerate(texts)]
    qs = queries()
    print(f"{len(docs)} documents, {len(qs)} queries, depth {DEPTH}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kw-engines-") as tmp:
        root = Path(tmp)
        engines: dict[str, KeywordIndex] = {
            "fts5": SQLiteKeywordIndex(root / "keyword.db"),
            "tantivy": TantivyKeywordIndex(root / "keyword-tantivy"),
        }
        for name, index in engines.items():
            print(f"{name:8s} indexed in {build(index, docs):6.1f} s "
                  f"(upserts of {BUILD_BATCH})", flush=True)
        tantivy_index = engines["tantivy"]
        assert isinstance(tantivy_index, TantivyKeywordIndex)
        # The same queries with a word no document holds (a typo, a rare name): the
        # every-word pass finds nothing, so every query runs the any-word pass.
        unknown = [f"{q} Zwölfquxtal" for q in qs]
        for language, batch in (("en", qs), (None, qs), ("en", unknown)):
            label = f"language={language!r}{' +unknown word' if batch is unknown else ''}"
            print(f"{label}: {pass_counts(tantivy_index, batch, language)}")
            for name, index in engines.items():
                for q in batch[:5]:  # warm caches
                    index.search(TENANT, q, DEPTH, language=language, highlights=False)
                lat = [_timed(lambda q=q, index=index, language=language: index.search(
                    TENANT, q, DEPTH, language=language, highlights=False))
                       for _ in range(args.repeat) for q in batch]
                print(f"  {name:8s} search  {_ms(lat)}", flush=True)
            agree = sum(
                [h.id for h in engines["fts5"].search(TENANT, q, 10, language=language)][:1]
                == [h.id for h in tantivy_index.search(TENANT, q, 10, language=language)][:1]
                for q in batch)
            print(f"  same top hit in both engines: {agree}/{len(batch)}")
        next_id = len(docs) + 1
        for size, rounds in ((8, 20), (200, 10)):
            for name, index in engines.items():
                lat = []
                for r in range(rounds):
                    batch = [KeywordDoc(next_id + j, TENANT, f"new-{r}", texts[(r * size + j)
                                                                              % len(texts)])
                             for j in range(size)]
                    next_id += size
                    mark = index.log_mark()
                    lat.append(_timed(lambda index=index, batch=batch, mark=mark:
                                      index.apply_log(delete=[], upsert=batch, expect=mark,
                                                      mark=mark + 1)))
                print(f"apply_log {size:3d} docs  {name:8s} {_ms(lat)}", flush=True)
        for name, index in engines.items():
            lat = [_timed(lambda q=q, index=index: index.search(
                TENANT, q, DEPTH, language="en", highlights=False)) for q in qs]
            print(f"after the applies: {name:8s} search  {_ms(lat)}", flush=True)


if __name__ == "__main__":
    main()
