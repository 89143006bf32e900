"""Contract for every KeywordIndex: add a factory to FACTORIES to run it against a new one.

A factory takes a folder private to the test and returns an index; calling it again with
the same folder must reopen the same data (the PostgreSQL factory maps the folder to a
table prefix in one database).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from kenning.stores.keyword import KeywordDoc, KeywordHit, KeywordIndex, SQLiteKeywordIndex
from kenning.stores.keyword.postgres_index import PostgresKeywordIndex
from kenning.stores.keyword.tantivy_index import TantivyKeywordIndex
from kenning.stores.keyword.words import highlight

KeywordIndexFactory = Callable[[Path], KeywordIndex]

FACTORIES = ["sqlite-fts5", "tantivy", "postgres"]

FILLER = [
    "the council met on tuesday to discuss the budget",
    "a new bakery opened downtown selling bread and cakes",
    "the football team won the match in extra time",
    "researchers published a study about sleep and memory",
    "the museum reopened after a long renovation",
    "traffic was heavy on the motorway this morning",
]


@pytest.fixture(params=FACTORIES)
def factory(request: pytest.FixtureRequest) -> Iterator[KeywordIndexFactory]:
    if request.param == "sqlite-fts5":
        yield lambda root: SQLiteKeywordIndex(root / "keyword.db")
        return
    if request.param == "tantivy":
        yield lambda root: TantivyKeywordIndex(root / "keyword-tantivy")
        return
    url = request.getfixturevalue("postgres_url")
    opened: list[PostgresKeywordIndex] = []

    def postgres(root: Path) -> KeywordIndex:
        # The test's folder names its tables: reopening the folder reopens them.
        table = f"k_{hashlib.sha1(bytes(root)).hexdigest()[:12]}"
        opened.append(PostgresKeywordIndex(url, table=table))
        return opened[-1]

    yield postgres
    for index in opened:
        index.close()


@pytest.fixture
def index(factory: KeywordIndexFactory, tmp_path: Path) -> KeywordIndex:
    idx = factory(tmp_path)
    idx.upsert([KeywordDoc(900 + i, "t1", f"filler-{i}", text) for i, text in enumerate(FILLER)])
    return idx


def ids(hits: Sequence[KeywordHit]) -> list[int]:
    return [h.id for h in hits]


def test_more_matching_terms_rank_higher(index: KeywordIndex) -> None:
    index.upsert(
        [
            KeywordDoc(1, "t1", "a1", "flood waters rose along the river overnight"),
            KeywordDoc(2, "t1", "a2", "a flood warning was issued for the town"),
            KeywordDoc(3, "t1", "a3", "a river cruise departs every hour"),
        ]
    )
    hits = index.search("t1", "river flood", 10)
    assert ids(hits)[0] == 1
    assert set(ids(hits)) == {1, 2, 3}  # fewer than k match all words: any-word matches follow
    assert hits[0].score > 0
    assert hits[0].asset_id == "a1"


def test_term_frequency_ranks_higher_and_scores_descend(index: KeywordIndex) -> None:
    index.upsert(
        [
            KeywordDoc(1, "t1", "a1", "storm over the harbour"),
            KeywordDoc(2, "t1", "a1", "storm after storm after storm hit the harbour"),
        ]
    )
    hits = index.search("t1", "storm", 10)
    assert ids(hits) == [2, 1]
    assert hits[0].score > hits[1].score


def test_highlight_marks_terms_and_escapes_html(index: KeywordIndex) -> None:
    index.upsert([KeywordDoc(1, "t1", "a1", "Breaking: <b>Flood</b> & chaos downtown")])
    (hit,) = index.search("t1", "flood", 5)
    assert "<mark>Flood</mark>" in hit.highlight
    assert "&lt;b&gt;" in hit.highlight and "&amp;" in hit.highlight
    assert "<b>" not in hit.highlight


@pytest.mark.parametrize(
    ("stored", "query"),
    [("Zürich", "zurich"), ("Zurich", "ZÜRICH"), ("São Paulo café", "sao paulo cafe")],
)
def test_diacritics_and_case_are_folded(index: KeywordIndex, stored: str, query: str) -> None:
    index.upsert([KeywordDoc(1, "t1", "a1", f"protests in {stored} today")])
    assert ids(index.search("t1", query, 5)) == [1]


def test_tenants_are_isolated(index: KeywordIndex) -> None:
    index.upsert(
        [
            KeywordDoc(1, "t1", "shared-asset", "election results announced"),
            KeywordDoc(2, "t2", "shared-asset", "election results announced"),
        ]
    )
    assert ids(index.search("t1", "election results", 10)) == [1]
    assert ids(index.search("t2", "election results", 10)) == [2]
    assert index.search("t3", "election", 10) == []
    assert index.count("t1") == len(FILLER) + 1
    assert index.count("t2") == 1
    assert index.count("t3") == 0


def test_asset_filter(index: KeywordIndex) -> None:
    index.upsert([KeywordDoc(i, "t1", f"a{i % 3}", f"volcano report number {i}") for i in range(9)])
    hits = index.search("t1", "volcano", 20, asset_ids={"a1", "a2"})
    assert sorted(ids(hits)) == [1, 2, 4, 5, 7, 8]
    assert index.search("t1", "volcano", 20, asset_ids=[]) == []


HOSTILE = [
    '"',
    '""',
    "'",
    "*",
    "flood*",
    "NEAR(",
    "NEAR(flood river",
    "OR",
    "AND",
    "NOT",
    "flood OR",
    "-",
    "-flood",
    ":",
    "text:flood",
    "tenant_id:t2",
    '"unbalanced flood',
    "(flood",
    "flood)",
    "^flood",
    "{text}: flood",
    "a" * 10_000,
    "flood " + "x" * 10_240,
    "\x00flood",
    "🌊 flood",
    "%",
    "_",
    "\\",
    ";DROP TABLE keyword_fts;--",
    "   ",
    "",
]


@pytest.mark.parametrize("query", HOSTILE, ids=lambda q: repr(q[:20]))
def test_hostile_queries_never_raise(index: KeywordIndex, query: str) -> None:
    index.upsert([KeywordDoc(1, "t1", "a1", "flood warning for the river")])
    index.upsert([KeywordDoc(2, "t2", "a2", "flood warning for the river")])
    hits = index.search("t1", query, 5)
    assert 2 not in ids(hits)
    if "flood" in query:
        assert ids(hits)[:1] == [1]
    elif not any(c.isalnum() for c in query):
        assert hits == []


def test_query_syntax_is_searched_as_plain_words(index: KeywordIndex) -> None:
    index.upsert([KeywordDoc(1, "t1", "a1", "rock or roll near the coast")])
    assert set(ids(index.search("t1", "AND", 10))) == {901, 903}  # fillers with "and"
    assert ids(index.search("t1", "rock OR roll", 10)) == [1]
    assert ids(index.search("t1", "NEAR(rock coast)", 10)) == [1]
    assert index.search("t1", "text:rock", 10)[0].id == 1
    assert index.search("t1", "-rock", 10)[0].id == 1  # not a negation


def test_long_query_still_finds_partial_matches(index: KeywordIndex) -> None:
    index.upsert([KeywordDoc(1, "t1", "a1", "wildfire near the village")])
    query = "wildfire " + " ".join(f"word{i}" for i in range(2000))  # ~20 kB
    assert ids(index.search("t1", query, 5)) == [1]


def test_delete_asset(index: KeywordIndex) -> None:
    index.upsert(
        [
            KeywordDoc(1, "t1", "a1", "earthquake magnitude six"),
            KeywordDoc(2, "t1", "a1", "earthquake aftershocks"),
            KeywordDoc(3, "t1", "a2", "earthquake relief"),
            KeywordDoc(4, "t2", "a1", "earthquake in another tenant"),
        ]
    )
    assert index.delete_asset("t1", "a1") == 2
    assert index.delete_asset("t1", "a1") == 0
    assert ids(index.search("t1", "earthquake", 10)) == [3]
    assert ids(index.search("t2", "earthquake", 10)) == [4]


def test_delete_by_id(index: KeywordIndex) -> None:
    index.upsert([KeywordDoc(1, "t1", "a1", "tsunami alert"), KeywordDoc(2, "t1", "a1", "tsunami")])
    assert index.delete([1, 555]) == 1
    assert ids(index.search("t1", "tsunami", 10)) == [2]
    assert index.delete([]) == 0


def test_upsert_is_idempotent_and_replaces(index: KeywordIndex) -> None:
    doc = KeywordDoc(1, "t1", "a1", "heatwave warning")
    index.upsert([doc])
    index.upsert([doc])
    assert ids(index.search("t1", "heatwave", 10)) == [1]
    assert index.count("t1") == len(FILLER) + 1
    index.upsert([KeywordDoc(1, "t1", "a1", "cold snap")])
    assert index.search("t1", "heatwave", 10) == []
    assert ids(index.search("t1", "cold", 10)) == [1]
    assert index.count("t1") == len(FILLER) + 1


def test_k_limits_results(index: KeywordIndex) -> None:
    index.upsert([KeywordDoc(i, "t1", "a", f"drought day {i}") for i in range(20)])
    assert len(index.search("t1", "drought", 7)) == 7
    assert index.search("t1", "drought", 0) == []


def test_data_survives_reopen(factory: KeywordIndexFactory, tmp_path: Path) -> None:
    factory(tmp_path).upsert([KeywordDoc(1, "t1", "a1", "blizzard closes airport")])
    assert ids(factory(tmp_path).search("t1", "blizzard", 5)) == [1]


def test_ids_pages_through_every_tenant_in_order(index: KeywordIndex) -> None:
    index.upsert([KeywordDoc(5, "t2", "a", "five"), KeywordDoc(3, "t1", "b", "three")])
    everything = index.ids(0, 1000)
    assert everything == sorted(everything) and {3, 5} <= set(everything)
    pages, last = [], 0
    while page := index.ids(last, 2):
        assert len(page) <= 2
        pages.extend(page)
        last = page[-1]
    assert pages == everything
    index.delete([3])
    assert 3 not in index.ids(0, 1000)


def test_apply_log_moves_the_mark_with_the_documents(
    factory: KeywordIndexFactory, tmp_path: Path
) -> None:
    index = factory(tmp_path)
    assert index.log_mark() == 0
    index.upsert([KeywordDoc(1, "t1", "a1", "avalanche warning in the valley")])
    assert index.apply_log(delete=[1], upsert=[KeywordDoc(2, "t1", "a2", "avalanche drill")],
                           expect=0, mark=7)
    assert index.log_mark() == 7
    assert ids(index.search("t1", "avalanche", 5)) == [2]
    assert factory(tmp_path).log_mark() == 7  # kept in the index itself


def test_apply_log_changes_nothing_when_the_mark_moved(
    factory: KeywordIndexFactory, tmp_path: Path
) -> None:
    """Two processes on one index: the one with a stale view of the mark is refused."""
    one, two = factory(tmp_path), factory(tmp_path)
    assert one.apply_log(delete=[], upsert=[KeywordDoc(1, "t1", "a1", "heatwave")],
                         expect=0, mark=5)
    assert not two.apply_log(delete=[1], upsert=[KeywordDoc(3, "t1", "a3", "heatwave")],
                             expect=0, mark=4)
    assert two.log_mark() == 5
    assert ids(two.search("t1", "heatwave", 5)) == [1]


# --------------------------------------------------------------------------- stopwords


BUSHFIRES = [
    KeywordDoc(1, "t1", "cricket", "Australia won the test in Sydney"),
    KeywordDoc(2, "t1", "roads", "Road deaths rose in the holidays"),
    KeywordDoc(3, "t1", "fires", "Die Waldbrände in Australien wüten seit Wochen"),
    KeywordDoc(4, "t1", "smoke", "Rauch der Waldbrände zieht über Sydney"),
]


@pytest.mark.parametrize("language", ["de", None])
def test_a_stopword_alone_never_makes_a_document_match(
    index: KeywordIndex, language: str | None
) -> None:
    index.upsert(BUSHFIRES)
    hits = index.search("t1", "Waldbrände in Australien", 10, language=language)
    # Every word but "in", then any of those: never "in" alone (documents 1 and 2 hold
    # "in" only), and "in" is not asked for, so no highlight marks it.
    assert ids(hits) == [3, 4]
    assert "<mark>Waldbrände</mark>" in hits[0].highlight  # the words of its pass
    assert "<mark>Australien</mark>" in hits[0].highlight
    assert all("<mark>in</mark>" not in hit.highlight for hit in hits)


def test_stopwords_follow_the_query_language(index: KeywordIndex) -> None:
    index.upsert([KeywordDoc(1, "t1", "a", "die hard returns to the cinema"),
                  KeywordDoc(2, "t1", "b", "hard choices for the council"),
                  KeywordDoc(3, "t1", "c", "rock stars who die young")])
    # "die" is a German stopword, not an English one: in German it matches nothing alone.
    assert sorted(ids(index.search("t1", "die hard", 10, language="en"))) == [1, 2, 3]
    assert sorted(ids(index.search("t1", "die hard", 10, language="de"))) == [1, 2]


def test_a_query_of_stopwords_only_keeps_its_words(index: KeywordIndex) -> None:
    hits = index.search("t1", "in the", 10, language="en")
    # Every word: filler holding both "in" and "the"; then either.
    both = [900 + i for i, text in enumerate(FILLER) if {"in", "the"} <= set(text.split())]
    assert ids(hits)[: len(both)] == both
    assert len(hits) == sum(1 for text in FILLER if {"in", "the"} & set(text.split()))


# --------------------------------------------------------------------------- titles


def test_a_title_word_outranks_the_same_word_in_a_body(index: KeywordIndex) -> None:
    body = "officials met again on monday to talk about next year"
    index.upsert([
        KeywordDoc(1, "t1", "a1", body + " and the harbour", title=None),
        KeywordDoc(2, "t1", "a2", body + " and the budget", title="Harbour plans"),
    ])
    hits = index.search("t1", "harbour", 10)
    assert ids(hits) == [2, 1]
    assert hits[0].score > hits[1].score
    # Highlights come from the text, never the title.
    assert "<mark>" not in hits[0].highlight and "Harbour plans" not in hits[0].highlight
    assert "<mark>harbour</mark>" in hits[1].highlight


def test_upserting_without_a_title_drops_it(index: KeywordIndex) -> None:
    index.upsert([KeywordDoc(1, "t1", "a1", "nothing here", title="Zebra crossing")])
    assert ids(index.search("t1", "zebra", 10)) == [1]
    index.upsert([KeywordDoc(1, "t1", "a1", "nothing here")])
    assert index.search("t1", "zebra", 10) == []


# --------------------------------------------------------------------------- CJK


def test_chinese_and_japanese_queries_find_their_documents(index: KeywordIndex) -> None:
    index.upsert([
        KeywordDoc(1, "t1", "zh", "澳大利亚的山火已经持续了数周，烟雾笼罩悉尼。"),  # noqa: RUF001
        KeywordDoc(2, "t1", "ja", "オーストラリアで森林火災が続いている。"),
        KeywordDoc(3, "t1", "zh2", "中国足球队昨天赢得了比赛。"),
        KeywordDoc(4, "t1", "mixed", "新款iPhone手机在东京发售"),
    ])
    zh = index.search("t1", "澳大利亚山火", 10, language="zh")
    assert ids(zh) == [1]  # every bigram but 亚山 is in it: found by the looser pass
    assert "<mark>澳大利亚</mark>的<mark>山火</mark>" in zh[0].highlight
    assert ids(index.search("t1", "森林火災", 10, language="ja")) == [2]
    assert ids(index.search("t1", "山火", 10)) == [1]
    assert ids(index.search("t1", "iphone 东京", 10)) == [4]
    assert ids(index.search("t1", "足球", 10)) == [3]


@pytest.mark.parametrize(("stored", "query"), [("Waldbrände", "waldbrande"),
                                                ("WALDBRANDE", "Waldbrände"),
                                                ("São Paulo", "sao paulo")])
def test_diacritics_fold_both_ways(index: KeywordIndex, stored: str, query: str) -> None:
    index.upsert([KeywordDoc(1, "t1", "a", f"news from {stored} today")])
    assert ids(index.search("t1", query, 10)) == [1]


# --------------------------------------------------------------------------- highlights later

LATER = [
    KeywordDoc(1, "t1", "a1", "Flood <b>warning</b> & evacuation for the river towns. " * 3),
    KeywordDoc(2, "t1", "a2", "The council met on the flood levy; residents asked about "
               "insurance, the river and what the warning sirens mean at night.",
               title="River plans"),
    KeywordDoc(3, "t1", "a3", "澳大利亚的山火已经持续了数周，烟雾笼罩悉尼。"),  # noqa: RUF001
    KeywordDoc(4, "t1", "a4", "Die Waldbrände in Australien wüten seit Wochen"),
    *[KeywordDoc(900 + i, "t1", f"f{i}", text) for i, text in enumerate(FILLER)],
]


@pytest.mark.parametrize("query", [
    "flood warning", "the river", "river plans", "澳大利亚山火", "Waldbrände in Australien",
    "evacuation insurance sirens",
])
def test_highlights_cut_later_from_terms_are_the_searchs_own(
    index: KeywordIndex, query: str
) -> None:
    """``highlights=False`` ranks alike and hands each hit the words of its pass; the
    highlight cut from the document's text with them (what search shows for the hits it
    keeps) is the one the search would have made."""
    index.upsert(LATER)
    texts = {doc.id: doc.text for doc in LATER}
    full = index.search("t1", query, 20)
    bare = index.search("t1", query, 20, highlights=False)
    assert full, query
    assert [(h.id, h.score, h.terms) for h in bare] == [(h.id, h.score, h.terms) for h in full]
    assert all(h.highlight == "" and h.terms for h in bare)
    for hit in full:
        assert highlight(texts[hit.id], hit.terms) == hit.highlight
