"""TantivyKeywordIndex specifics: one directory shared by several instances (processes),
the writer lock, reopening, the copy of an existing FTS5 file, ties, hostile queries."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tantivy

from kenning.stores.keyword import KeywordDoc, SQLiteKeywordIndex, query_terms
from kenning.stores.keyword.tantivy_index import TantivyKeywordIndex
from tests.conftest import migrated_database
from tests.fixtures.index_world import World, counts, make_world
from tests.unit.stores.keyword.test_format_upgrade import format_1_file


def ids(hits: list) -> list[int]:  # type: ignore[type-arg]
    return [h.id for h in hits]


def test_two_instances_on_one_directory_see_each_others_writes(tmp_path: Path) -> None:
    one = TantivyKeywordIndex(tmp_path / "kw")
    two = TantivyKeywordIndex(tmp_path / "kw")
    assert one.log_mark() == two.log_mark() == 0
    assert one.apply_log(delete=[], upsert=[KeywordDoc(1, "t", "a", "bushfire smoke")],
                         expect=0, mark=4)
    assert two.log_mark() == 4  # reloads: the documents come with the mark
    assert ids(two.search("t", "bushfire", 5)) == [1]
    two.upsert([KeywordDoc(2, "t", "b", "bushfire season")])
    assert one.log_mark() == 4
    assert sorted(ids(one.search("t", "bushfire", 5))) == [1, 2]
    assert two.delete([1, 99]) == 1
    assert one.apply_log(delete=[], upsert=[], expect=4, mark=4)  # reloads under the lock
    assert ids(one.search("t", "bushfire", 5)) == [2]
    assert one.count("t") == two.count("t") == 1


def test_apply_log_check_and_set_never_moves_the_mark_backwards(tmp_path: Path) -> None:
    one = TantivyKeywordIndex(tmp_path / "kw")
    two = TantivyKeywordIndex(tmp_path / "kw")
    assert one.apply_log(delete=[], upsert=[KeywordDoc(1, "t", "a", "flood")], expect=0, mark=9)
    # ``two`` still believes the mark is 0: refused, nothing written.
    assert not two.apply_log(delete=[1], upsert=[KeywordDoc(2, "t", "a", "flood")],
                             expect=0, mark=5)
    assert two.log_mark() == 9 and ids(two.search("t", "flood", 5)) == [1]
    assert two.apply_log(delete=[], upsert=[], expect=9, mark=12)
    assert one.log_mark() == 12

    # Racing followers in threads over two instances: every move is from the mark read.
    seen: list[int] = []
    moved = [0, 0]

    def follow(index: TantivyKeywordIndex, slot: int) -> None:
        for _ in range(15):
            mark = index.log_mark()
            seen.append(mark)
            if index.apply_log(delete=[], upsert=[KeywordDoc(100 + mark, "t", "r", "race")],
                               expect=mark, mark=mark + 1):
                moved[slot] += 1

    threads = [threading.Thread(target=follow, args=(ix, n)) for n, ix in enumerate((one, two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert one.log_mark() == 12 + sum(moved)
    assert one.count("t") == 1 + sum(moved)  # one document per accepted move, none lost
    assert min(seen) >= 12


def test_a_busy_writer_is_waited_for_then_refused(tmp_path: Path) -> None:
    index = TantivyKeywordIndex(tmp_path / "kw", lock_timeout_s=0.3)
    other = tantivy.Index.open(str(tmp_path / "kw"))  # another process holding the writer
    held = other.writer(heap_size=15_000_000, num_threads=1)
    with pytest.raises(TimeoutError, match="another process held the writer"):
        index.upsert([KeywordDoc(1, "t", "a", "locked out")])
    released = threading.Timer(0.1, held.wait_merging_threads)  # let go within the wait
    released.start()
    index.upsert([KeywordDoc(1, "t", "a", "let in")])
    released.join()
    assert ids(index.search("t", "let", 5)) == [1]


def test_reopening_keeps_documents_and_mark(tmp_path: Path) -> None:
    with TantivyKeywordIndex(tmp_path / "kw") as index:
        assert index.apply_log(delete=[], upsert=[
            KeywordDoc(3, "t", "a", "cyclone warning", title="Cyclone Alfred"),
            KeywordDoc(4, "u", "b", "cyclone in another tenant")], expect=0, mark=21)
    with pytest.raises(RuntimeError, match="closed"):
        index.search("t", "cyclone", 5)
    again = TantivyKeywordIndex(tmp_path / "kw")
    assert again.log_mark() == 21
    assert again.count("t") == 1 and again.count("u") == 1
    assert again.ids(0, 10) == [3, 4]  # the mark document is not a document
    assert ids(again.search("t", "alfred", 5)) == [3]
    assert again.stale(0, 10) == []


def test_ids_and_count_page_past_the_mark_document(tmp_path: Path) -> None:
    index = TantivyKeywordIndex(tmp_path / "kw")
    index.apply_log(delete=[], upsert=[KeywordDoc(i, "t", "a", f"doc {i}") for i in (7, 2, 5)],
                    expect=0, mark=3)
    assert index.ids(0, 2) == [2, 5] and index.ids(5, 2) == [7] and index.ids(7, 2) == []
    assert index.ids(0, 0) == []
    assert index.count("t") == 3 and index.count("") == 0
    assert index.delete_asset("t", "a") == 3 and index.count("t") == 0
    assert index.log_mark() == 3  # deleting an asset never touches the mark


def test_score_ties_go_to_the_lower_id_at_the_cut(tmp_path: Path) -> None:
    index = TantivyKeywordIndex(tmp_path / "kw")
    # Identical documents score alike; added in descending id order, over several
    # commits (segments), so tantivy's own order (by address) is not the id order.
    for start in (40, 20):
        index.upsert([KeywordDoc(i, "t", "a", "tornado touches down") for i in
                      range(start + 19, start - 1, -1)])
    assert ids(index.search("t", "tornado", 5)) == [20, 21, 22, 23, 24]
    # The any-word pass fills the rest, skipping what the first pass found, ties by id.
    index.upsert([KeywordDoc(1, "t", "b", "tornado siren test"),
                  KeywordDoc(2, "t", "b", "siren")])
    hits = index.search("t", "tornado siren", 4)
    assert ids(hits)[0] == 1  # every word: first, whatever its score
    rest = [(-h.score, h.id) for h in hits[1:]]
    assert rest == sorted(rest) and ids(hits)[1:] in ([2, 20, 21], [20, 21, 22])


def test_a_title_counts_three_times_and_goes_when_upserted_without(tmp_path: Path) -> None:
    index = TantivyKeywordIndex(tmp_path / "kw")
    index.upsert([KeywordDoc(1, "t", "a", "the harbour board met", title=None),
                  KeywordDoc(2, "t", "b", "the budget board met", title="Harbour")])
    assert ids(index.search("t", "harbour", 5)) == [2, 1]
    index.upsert([KeywordDoc(2, "t", "b", "the budget board met")])
    assert ids(index.search("t", "harbour", 5)) == [1]


HOSTILE = ['text:flood', 'tenant:u flood', 'kind:mark', 'id:[0 TO 9]', '"flood" AND river',
           "flood^9 river~2", "(flood OR river) -warning", "flo*d ?iver", "/fl.*/",
           "\x00flood\x00river", "flood " + "x" * 10_000, "a" * 10_240, "!!! ... ???",
           "‽ — …", "", "   ", "🌊🌊", "Flood\nRiver\t'WARNING'"]


@pytest.mark.parametrize("query", HOSTILE, ids=lambda q: repr(q[:16]))
def test_hostile_queries_search_their_bare_words(tmp_path: Path, query: str) -> None:
    index = TantivyKeywordIndex(tmp_path / "kw")
    index.upsert([KeywordDoc(1, "t", "a", "flood warning for the river"),
                  KeywordDoc(2, "t", "a", "text mark kind id"),
                  KeywordDoc(3, "u", "b", "flood warning for the river")])
    bare = " ".join(query_terms(query))
    hits = index.search("t", query, 10)
    assert [(h.id, h.score, h.highlight) for h in hits] == [
        (h.id, h.score, h.highlight) for h in index.search("t", bare, 10)]
    assert 3 not in ids(hits)
    if not bare:
        assert hits == []


def _fts5_install(path: Path) -> list[KeywordDoc]:
    docs = [
        KeywordDoc(1, "t", "a1", "Bushfires near Sydney: residents evacuate", title="Fires"),
        KeywordDoc(2, "t", "a2", "澳大利亚的山火已经持续了数周，烟雾笼罩悉尼。"),  # noqa: RUF001
        KeywordDoc(3, "t", "a3", "Ｆｕｌｌ－ｗｉｄｔｈ ｆｉｒｅ report"),  # noqa: RUF001  # NFKC folds it
        KeywordDoc(4, "u", "a4", "another tenant's fire"),
        KeywordDoc(5, "t", "a5", "Die Waldbrände in Australien wüten"),
    ]
    fts5 = SQLiteKeywordIndex(path)
    assert fts5.apply_log(delete=[], upsert=docs, expect=0, mark=42)
    fts5.close()
    return docs


@pytest.mark.parametrize("query", ["fire", "fires sydney", "山火", "full width",
                                   "waldbrande australien", "tenant"])
def test_a_new_directory_copies_the_fts5_file_of_an_install(tmp_path: Path, query: str) -> None:
    _fts5_install(tmp_path / "keyword.db")
    fts5 = SQLiteKeywordIndex(tmp_path / "keyword.db")
    index = TantivyKeywordIndex(tmp_path / "keyword-tantivy", upgrade_from=tmp_path / "keyword.db")
    assert index.log_mark() == 42
    assert index.count("t") == fts5.count("t") == 4 and index.count("u") == 1
    assert index.ids(0, 10) == fts5.ids(0, 10)
    for tenant in ("t", "u"):
        ours, theirs = index.search(tenant, query, 10), fts5.search(tenant, query, 10)
        assert [(h.id, h.asset_id, h.highlight, h.terms) for h in ours] == [
            (h.id, h.asset_id, h.highlight, h.terms) for h in theirs]
    assert index.stale(0, 10) == []


def test_the_fts5_copy_happens_once(tmp_path: Path) -> None:
    _fts5_install(tmp_path / "keyword.db")
    fts5 = tmp_path / "keyword.db"
    index = TantivyKeywordIndex(tmp_path / "keyword-tantivy", upgrade_from=fts5)
    assert ids(index.search("t", "fires", 5)) == [1]  # its title came along
    index.apply_log(delete=[1], upsert=[], expect=42, mark=43)
    second = TantivyKeywordIndex(tmp_path / "keyword-tantivy", upgrade_from=fts5)
    assert second.log_mark() == 43 and second.search("t", "sydney", 5) == []
    # A directory started without a file stays empty when one appears later.
    fresh = TantivyKeywordIndex(tmp_path / "new", upgrade_from=tmp_path / "missing.db")
    assert fresh.log_mark() == 0
    (tmp_path / "keyword.db").rename(tmp_path / "missing.db")
    assert TantivyKeywordIndex(tmp_path / "new", upgrade_from=tmp_path / "missing.db").count(
        "t") == 0


def test_a_format_1_fts5_file_is_copied_with_its_documents_stale(tmp_path: Path) -> None:
    path = tmp_path / "keyword.db"
    format_1_file(path, [(1, "t", "a", "bushfires near Sydney"), (2, "t", "b", "悉尼山火蔓延"),
                         (3, "u", "c", "river flood")], mark=7)
    index = TantivyKeywordIndex(tmp_path / "kt", upgrade_from=path)
    assert index.log_mark() == 7 and index.count("t") == 2
    assert ids(index.search("t", "山火", 5)) == [2]
    assert index.stale(0, 10) == [1, 2, 3] and index.stale(1, 1) == [2]
    index.upsert([KeywordDoc(2, "t", "b", "悉尼山火蔓延", title="山火")])  # the follower's refresh
    assert index.stale(0, 10) == [1, 3]
    with sqlite3.connect(path) as c:  # the FTS5 file was only read
        assert c.execute("PRAGMA user_version").fetchone()[0] == 0
    c.close()


def test_searches_run_while_another_instance_writes(tmp_path: Path) -> None:
    reader = TantivyKeywordIndex(tmp_path / "kw")
    writer = TantivyKeywordIndex(tmp_path / "kw")
    writer.upsert([KeywordDoc(i, "t", "a", f"storm report {i}") for i in range(1, 200)])
    reader.log_mark()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for n in range(10):
                mark = writer.log_mark()
                writer.apply_log(delete=[n + 1], upsert=[KeywordDoc(1000 + n, "t", "b", "storm")],
                                 expect=mark, mark=mark + 1)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    while thread.is_alive():
        reader.log_mark()  # reloads while merges collect files
        assert len(reader.search("t", "storm report", 50)) == 50
    thread.join()
    assert not errors
    assert reader.log_mark() == 10 and reader.count("t") == 199


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with migrated_database("sqlite", tmp_path) as db:
        yield make_world(db, tmp_path)


def test_two_followers_share_one_tantivy_directory(world: World) -> None:
    """Two processes' index followers on one directory: neither moves it backwards."""
    path = world.folder / "shared-keyword"
    one = world.indexes("one", persistent=False,
                        keyword=TantivyKeywordIndex(path))  # type: ignore[arg-type]
    two = world.indexes("two", persistent=False,
                        keyword=TantivyKeywordIndex(path))  # type: ignore[arg-type]
    one.load()
    two.load()
    with world.write() as (s, changes):
        rows = world.add(s, changes, 3)
    two.catch_up()
    with world.write() as (s, changes):
        world.remove(s, changes, rows[:1])
    with world.write() as (s, changes):
        more = world.add(s, changes, 2, seed=20)
    one.catch_up()  # applies the removal and the additions, moves the shared mark
    assert one.keyword.count(world.tenant) == 4
    two.catch_up()  # its view of the mark is stale: it must not re-apply older entries
    assert two.keyword.log_mark() == one.keyword.log_mark() == max(
        one.marks()["keyword"], two.marks()["keyword"])
    assert counts(world, two) == counts(world, one) == (4, 4, 4)
    hits = two.keyword.search(world.tenant, "number 20", 1)
    assert [h.id for h in hits] == [more[0][0]]


def test_the_embedded_profile_opens_tantivy_and_upgrades_an_fts5_install(
    tmp_path: Path,
) -> None:
    from kenning.settings import Settings
    from kenning.stores.bundle import make_keyword_index

    settings = Settings(data_dir=tmp_path, _env_file=None)
    docs = _fts5_install(settings.index_dir / "keyword.db")  # what an existing install has
    index = make_keyword_index(settings)
    assert isinstance(index, TantivyKeywordIndex)
    assert index.path == settings.index_dir / "keyword-tantivy"
    assert index.log_mark() == 42 and index.count("t") == len(docs) - 1
    fts5 = make_keyword_index(Settings(data_dir=tmp_path, keyword_engine="fts5",
                                       _env_file=None))
    assert isinstance(fts5, SQLiteKeywordIndex) and fts5.log_mark() == 42
