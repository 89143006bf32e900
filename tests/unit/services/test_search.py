"""Search candidates: unfiltered vector hits take their segment and asset from the index
follower's owner map (no candidate statement), never across tenants, and fall back to the
database for an id the map does not hold; on a real pipeline with the real model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kenning.container import Kenning
from kenning.ingest.service import IngestItem, IngestResult
from kenning.principal import Principal
from kenning.services.search import SearchMode, SearchRequest
from kenning.settings import Settings
from tests.fixtures.statements import recorded

TEXTS = (
    "Bushfires burned across New South Wales as firefighters battled the flames.",
    "The central bank raised interest rates to fight inflation this quarter.",
    "A cricket match in Sydney was interrupted by rain in the afternoon.",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kenning, Principal,
                                                                     list[str]]]:
    data_dir: Path = tmp_path_factory.mktemp("search")
    kenning = Kenning(Settings(data_dir=data_dir, workers=1, log_json=False, _env_file=None))
    tenant = kenning.tenants.create_tenant("t")
    who = Principal(tenant, kenning.tenants.create_key(tenant).key_id)
    kenning.start()
    try:
        outcomes = kenning.ingest.ingest_many(who, [IngestItem.text(t) for t in TEXTS])
        kenning.join(timeout_s=600)
        yield kenning, who, [o.asset_id for o in outcomes if isinstance(o, IngestResult)]
    finally:
        kenning.close()


def _semantic(kenning: Kenning, who: Principal, **filters: Any) -> tuple[list[str], list[str]]:
    """Asset ids of a semantic search for fires, and the statements it ran that read
    the embedding table."""
    with recorded(kenning.stores.db.engine) as statements:
        found = kenning.search.search(who, SearchRequest(
            query="wildfires burning in Australia", mode=SearchMode.SEMANTIC,
            filters=filters))
    return [h.asset_id for h in found.hits], [s for s in statements if "embedding" in s]


def test_unfiltered_vector_hits_need_no_candidate_statement(
    world: tuple[Kenning, Principal, list[str]],
) -> None:
    kenning, who, assets = world
    found, reads = _semantic(kenning, who)
    assert found[0] == assets[0] and sorted(found) == sorted(assets)
    assert len(reads) <= 1  # the map is read on first use, once
    again, reads = _semantic(kenning, who)
    assert again == found and reads == []
    # Filtered, the candidates go through the database (filters are SQL): same answer.
    filtered, reads = _semantic(kenning, who, language=["en"])
    assert filtered == found and reads


def test_an_owner_the_map_lacks_is_read_and_another_tenants_is_dropped(
    world: tuple[Kenning, Principal, list[str]],
) -> None:
    kenning, who, assets = world
    found, _ = _semantic(kenning, who)
    follower = kenning.stores.follower
    owners = follower._owners
    assert owners is not None
    saved = dict(owners)
    fires = next(e for e, (_, asset, _) in owners.items() if asset == assets[0])
    try:
        del owners[fires]
        again, reads = _semantic(kenning, who)
        assert again == found and reads  # read from the database
        owners[fires] = (saved[fires][0], saved[fires][1], "another-tenant")
        assert _semantic(kenning, who)[0] == found[1:]
    finally:
        owners.clear()
        owners.update(saved)


def test_hybrid_weighs_keyword_hits_by_their_assets_language(
    world: tuple[Kenning, Principal, list[str]],
) -> None:
    """Vector candidates come from the owner map without a language; the fusion's
    cross-lingual rule still sees each keyword hit's asset language (from the database)."""
    kenning, who, assets = world
    weights = kenning.search.weights
    for query, language, keyword_weight in [
        ("Firefighters battled bushfires across New South Wales", "en", weights.keyword),
        ("Die Feuerwehr kämpfte gegen die Bushfires in New South Wales und im ganzen Land",
         "de", weights.keyword * weights.crosslingual_keyword),
    ]:
        found = kenning.search.search(who, SearchRequest(
            query=query, mode=SearchMode.HYBRID, explain=True))
        assert found.query_language == language
        top = found.hits[0]
        assert top.asset_id == assets[0] and top.explain is not None
        assert top.explain["keyword"].weight == pytest.approx(keyword_weight)
        assert top.explain["semantic"].weight == pytest.approx(weights.semantic)
