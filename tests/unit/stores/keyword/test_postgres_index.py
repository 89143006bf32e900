"""What the PostgreSQL keyword index adds to the keyword contract: BM25 computed from
per-tenant statistics kept exact by every write, candidates from the GIN index, followers
in several processes, and query text that PostgreSQL never parses."""

from __future__ import annotations

import math
import random
import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from kenning.stores.keyword import KeywordDoc, SQLiteKeywordIndex, query_terms
from kenning.stores.keyword.postgres_index import PostgresKeywordIndex

K1, B = 1.2, 0.75


@pytest.fixture
def table() -> str:
    return f"k_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def index(postgres_url: str, table: str) -> Iterator[PostgresKeywordIndex]:
    index = PostgresKeywordIndex(postgres_url, table=table)
    yield index
    index.close()


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


def bm25(docs: list[str], doc: str, query: list[str]) -> float:
    """The score of ``doc`` among ``docs`` (one tenant's), by the textbook formula."""
    words = [d.lower().split() for d in docs]
    n, avgdl = len(docs), sum(map(len, words)) / len(docs)
    mine = doc.lower().split()
    score = 0.0
    for term in query:
        df = sum(term in w for w in words)
        idf = math.log((n - df + 0.5) / (df + 0.5))
        idf = idf if idf > 0 else 1e-6
        tf = mine.count(term)
        score += idf * (tf * (K1 + 1)) / (tf + K1 * (1 - B + B * len(mine) / avgdl))
    return score


def assert_stats_exact(engine: Engine, table: str) -> None:
    """The kept statistics equal a recount from the documents themselves."""
    with engine.connect() as c:
        kept = {r.tenant_id: (r.docs, r.tokens) for r in c.execute(text(
            f"SELECT tenant_id, docs, tokens FROM {table}_tenant WHERE docs <> 0"))}
        recount = {r.tenant_id: (r.docs, r.tokens) for r in c.execute(text(
            f"SELECT tenant_id, count(*) AS docs, sum(length) AS tokens FROM {table} "
            "GROUP BY tenant_id"))}
        kept_df = set(c.execute(text(f"SELECT tenant_id, term, df FROM {table}_df")).tuples())
        recount_df = set(c.execute(text(
            f"SELECT tenant_id, term, count(*) FROM {table}, jsonb_object_keys(tf) AS term "
            "GROUP BY tenant_id, term")).tuples())
    assert kept == recount
    assert kept_df == recount_df


CORPUS = [
    "storm over the harbour",
    "storm after storm after storm hit the harbour",
    "calm sea",
    "harbour lights",
    "quiet night",
    "morning news",
    "sunny day ahead",
    "market opens early",
]


def test_scores_are_bm25_of_the_tenants_own_statistics(index: PostgresKeywordIndex) -> None:
    index.upsert([KeywordDoc(i, "t", "a", body) for i, body in enumerate(CORPUS)])
    # Another tenant full of "storm": its statistics must not move t's scores.
    index.upsert([KeywordDoc(100 + i, "u", "a", "storm storm") for i in range(40)])
    hits = index.search("t", "Storm harbour", 10)
    expected = {i: bm25(CORPUS, CORPUS[i], ["storm", "harbour"]) for i in (0, 1, 3)}
    # Both words: 1 and 0 by score; then the one-word match.
    assert [h.id for h in hits] == [*sorted((0, 1), key=lambda i: -expected[i]), 3]
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.id], rel=1e-12)
    # A word in more than half of the documents gets FTS5's floor idf, 1e-6.
    index.upsert([KeywordDoc(200 + i, "v", "a", "common word") for i in range(3)])
    (common, *_) = index.search("v", "common", 1)
    assert common.score == pytest.approx(1e-6 * (K1 + 1) / (1 + K1), rel=1e-9)


def test_scores_ranks_and_highlights_match_the_embedded_index(
    index: PostgresKeywordIndex,
) -> None:
    rng = random.Random(3)
    vocab = ["flood", "river", "storm", "the", "town", "warning", "rain", "bridge", "road",
             "night", "water", "police", "closed", "Flood", "said.", "level:", "<b>&"]
    docs = [KeywordDoc(i, "t", f"a{i % 5}",
                       " ".join(rng.choices(vocab, k=rng.randint(1, 80)))) for i in range(300)]
    embedded = SQLiteKeywordIndex(":memory:")
    embedded.upsert(docs)
    index.upsert(docs)
    for query in ["flood", "river storm", "police closed road night", "the", "b"]:
        ours, theirs = index.search("t", query, 400), embedded.search("t", query, 400)
        assert {h.id: h.score for h in ours} == pytest.approx(
            {h.id: h.score for h in theirs}, rel=1e-9)
        assert [h.id for h in ours] == [h.id for h in theirs]
        assert [h.highlight for h in ours] == [h.highlight for h in theirs]


def test_statistics_stay_exact_through_every_kind_of_write(
    index: PostgresKeywordIndex, engine: Engine, table: str
) -> None:
    index.upsert([KeywordDoc(i, f"t{i % 2}", f"a{i % 3}", f"flood {i} river flood")
                  for i in range(12)])
    assert_stats_exact(engine, table)
    index.upsert([KeywordDoc(3, "t1", "a0", "quiet"),  # new text, fewer words
                  KeywordDoc(4, "t1", "a1", "flood flood warning"),  # moves tenant
                  KeywordDoc(5, "t1", "a2", "flood 5 river flood")])  # unchanged
    assert_stats_exact(engine, table)
    assert index.delete([0, 1, 999]) == 2
    assert_stats_exact(engine, table)
    assert index.delete_asset("t1", "a1") == 2  # ids 4 and 7
    assert_stats_exact(engine, table)
    assert index.apply_log(delete=[2], upsert=[KeywordDoc(2, "t0", "a9", "calm")],
                           expect=0, mark=3)
    assert_stats_exact(engine, table)
    assert [index.count("t0"), index.count("t1")] == [4, 4]
    index.delete(index.ids(0, 100))
    assert_stats_exact(engine, table)
    assert index.search("t0", "flood calm", 10) == []


def test_candidates_come_from_the_gin_index(
    index: PostgresKeywordIndex, engine: Engine, table: str
) -> None:
    rng = random.Random(5)
    words = [f"w{i}" for i in range(3000)]
    index.upsert([KeywordDoc(i, "t", "a", " ".join(rng.choices(words, k=30)))
                  for i in range(3000)])
    index.upsert([KeywordDoc(5000 + i, "other", "a", "rare") for i in range(500)])
    with engine.begin() as c:
        c.execute(text(f"ANALYZE {table}"))
    for any_word in (False, True):
        plan = index.explain("t", "w7 w1234", 10, any_word=any_word)
        assert f"Bitmap Index Scan on {table}_terms" in plan
    assert index.explain("t", "!!!") == "nothing to search"


def test_two_processes_following_one_log_keep_mark_and_statistics_exact(
    postgres_url: str, engine: Engine, table: str
) -> None:
    rng = random.Random(11)
    log: list[tuple[list[int], list[KeywordDoc]]] = []  # entry n moves the mark to n + 1
    for n in range(60):
        deletes = rng.sample(range(40), k=2)
        docs = [KeywordDoc(i, f"t{i % 3}", f"a{i % 4}",
                           " ".join(rng.choices(["flood", "river", "storm", str(n)], k=5)))
                for i in rng.sample(range(40), k=4)]
        log.append((deletes, docs))
    indexes = [PostgresKeywordIndex(postgres_url, table=table) for _ in range(2)]
    seen: list[list[int]] = []
    errors: list[BaseException] = []

    def follow(index: PostgresKeywordIndex) -> None:
        marks: list[int] = []
        seen.append(marks)
        try:
            while (mark := index.log_mark()) < len(log):
                marks.append(mark)
                upto = min(mark + rng.randint(1, 4), len(log))
                # What a follower sends: the last op on an id wins.
                last: dict[int, KeywordDoc | None] = {}
                for deletes, docs in log[mark:upto]:
                    last.update(dict.fromkeys(deletes))
                    last.update({d.id: d for d in docs})
                index.apply_log(delete=[i for i, d in last.items() if d is None],
                                upsert=[d for d in last.values() if d is not None],
                                expect=mark, mark=upto)
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=follow, args=(indexes[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(marks == sorted(marks) for marks in seen)
    assert indexes[0].log_mark() == len(log)
    final: dict[int, KeywordDoc | None] = {}
    for deletes, docs in log:
        final.update(dict.fromkeys(deletes))
        final.update({d.id: d for d in docs})
    with engine.connect() as c:
        stored = set(c.execute(text(f"SELECT id, tenant_id, asset_id, body FROM {table}")))
    assert stored == {(d.id, d.tenant_id, d.asset_id, d.text) for d in final.values() if d}
    assert_stats_exact(engine, table)
    for index in indexes:
        index.close()


def test_concurrent_writers_sharing_tenants_and_moving_ids_never_deadlock(
    postgres_url: str, engine: Engine, table: str
) -> None:
    indexes = [PostgresKeywordIndex(postgres_url, table=table) for _ in range(2)]
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        rng = random.Random(worker)
        index = indexes[worker % 2]
        try:
            for _ in range(25):
                ids = rng.sample(range(30), k=5)
                tenants = rng.sample(["t0", "t1", "t2"], k=3)  # a different order each time
                index.upsert([KeywordDoc(i, tenants[n % 3], "a", f"flood river {rng.random()}")
                              for n, i in enumerate(ids)])
                index.delete(rng.sample(range(30), k=2))
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_stats_exact(engine, table)
    total = sum(indexes[0].count(t) for t in ("t0", "t1", "t2"))
    assert total == len(indexes[1].ids(-1, 100))  # ids from 0
    for index in indexes:
        index.close()


HOSTILE = [
    "a & | ! ( ) : * '",
    "flood:* & !river",
    "flood <-> river",
    "'flood' | 'x'",
    "\\",
    "\\' flood \\'",
    "flood\x00river",
    "''''",
    "!!!",
    "(((",
    "to_tsquery('simple', 'x'); DROP TABLE t; --",
    "$$ flood $$",
    "a" * 10_000,
    "é" * 3_000,  # 6,000 bytes: past a lexeme's 2,047
    "  \t\n ",
]


@pytest.mark.parametrize("query", HOSTILE, ids=lambda q: repr(q[:16]))
def test_hostile_queries_search_their_words_only(
    index: PostgresKeywordIndex, query: str
) -> None:
    index.upsert([KeywordDoc(1, "t", "a", "flood river warning a x"),
                  KeywordDoc(2, "t", "a", "to tsquery simple drop table"),
                  KeywordDoc(3, "t", "a", "a" * 10_000 + " " + "é" * 3_000),
                  KeywordDoc(4, "u", "a", "flood river a x")])
    hits = index.search("t", query, 10)
    words = " ".join(query_terms(query))
    assert hits == index.search("t", words, 10)  # the same search as the bare words
    assert 4 not in [h.id for h in hits]
    if words:
        assert hits, "every query here has a word that some document holds"
    else:
        assert hits == []


def test_nul_and_huge_texts_are_stored_as_searchable_words(
    index: PostgresKeywordIndex,
) -> None:
    index.upsert([KeywordDoc(1, "t", "a", "flood\x00warning <now>")])
    (hit,) = index.search("t", "warning", 5)
    assert hit.highlight == "flood <mark>warning</mark> &lt;now&gt;"  # NUL became a space
    # More distinct words than a tsvector holds: the first ones stay searchable.
    many = " ".join(f"x{i:07d}" for i in range(130_000))  # ~1.1 MB of terms
    index.upsert([KeywordDoc(2, "t", "a", many)])
    assert [h.id for h in index.search("t", "x0000001", 5)] == [2]
    assert index.search("t", "x0129999", 5) == []  # past the tsvector's 1 MiB
    assert index.count("t") == 2
    with pytest.raises(ValueError, match="NUL"):
        index.upsert([KeywordDoc(3, "t\x00", "a", "flood")])
    assert index.search("t\x00", "flood", 5) == []
    assert index.count("t\x00") == 0
    assert index.delete_asset("t", "a\x00") == 0


def test_tenants_are_isolated_in_results_statistics_and_deletes(
    index: PostgresKeywordIndex,
) -> None:
    index.upsert([KeywordDoc(1, "t1", "shared", "election results announced"),
                  KeywordDoc(2, "t1", "other", "weather report")])
    before = index.search("t1", "election", 5)[0].score
    index.upsert([KeywordDoc(10 + i, "t2", "shared", f"election day {i}") for i in range(30)])
    assert index.search("t1", "election", 5)[0].score == before
    assert {h.id for h in index.search("t2", "election", 50)} == set(range(10, 40))
    assert index.delete_asset("t2", "shared") == 30
    assert [h.id for h in index.search("t1", "election", 5)] == [1]
    assert index.ids(0, 100) == [1, 2]


@pytest.mark.parametrize("prefix", ["Bad", "k-1", "k; DROP TABLE x", "x" * 60])
def test_table_prefix_must_be_a_plain_name(postgres_url: str, prefix: str) -> None:
    with pytest.raises(ValueError, match="table prefix"):
        PostgresKeywordIndex(postgres_url, table=prefix)


def test_titles_cjk_and_stopwords_rank_as_the_embedded_index(
    index: PostgresKeywordIndex,
) -> None:
    rng = random.Random(5)
    vocab = ["flood", "river", "in", "the", "Waldbrände", "und", "山火", "澳大利亚", "的",
             "森林火災", "road", "storm", "die", "über", "bridge"]
    docs = [KeywordDoc(i, "t", f"a{i % 7}", " ".join(rng.choices(vocab, k=rng.randint(1, 40))),
                       title=" ".join(rng.choices(vocab, k=3)) if i % 3 == 0 else None)
            for i in range(200)]
    embedded = SQLiteKeywordIndex(":memory:")
    embedded.upsert(docs)
    index.upsert(docs)
    for query, language in [("flood in the river", "en"), ("Waldbrande in Australien", None),
                            ("澳大利亚山火", "zh"), ("森林火災", "ja"), ("die bridge", "de"),
                            ("the", "en"), ("storm", None)]:
        ours = index.search("t", query, 300, language=language)
        theirs = embedded.search("t", query, 300, language=language)
        assert ours, query
        assert {h.id: h.score for h in ours} == pytest.approx(
            {h.id: h.score for h in theirs}, rel=1e-9)
        assert [h.id for h in ours] == [h.id for h in theirs]
        assert [h.highlight for h in ours] == [h.highlight for h in theirs]
