"""Metadata filters match type for type on SQLite and PostgreSQL, whatever keys look like,
and no stored row makes a filtered query fail."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from kenning.errors import BadInput
from kenning.services.search import SearchFilters, check_filters, metadata_match
from kenning.services.tenants import TenantService
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset
from tests.conftest import migrated_database

KEYS = ["a b", "a.b", "a:b", "a-b", "Straße", "ключ", "鍵", "plain"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> (
    Iterator[Database]
):
    with migrated_database(request.param, tmp_path_factory.mktemp("filters")) as database:
        yield database


def _tenant(db: Database) -> str:
    return TenantService(db).create_tenant(f"filters-{uuid.uuid4().hex[:8]}")


def _asset(db: Database, tenant: str, meta: dict[str, Any]) -> str:
    asset = Asset(tenant_id=tenant, kind="text", sha256=hashlib.sha256(uuid.uuid4().bytes)
                  .hexdigest(), mime="text/plain", bytes=1, source="text", meta=meta)
    with db.session() as s:
        s.add(asset)
        s.flush()
        return asset.id


def _legacy_asset(db: Database, tenant: str, raw_metadata: str) -> str:
    """An asset whose metadata column holds ``raw_metadata`` verbatim."""
    asset_id = _asset(db, tenant, {})
    with db.session() as s:
        s.execute(text("UPDATE asset SET metadata = :raw WHERE id = :id"),
                  {"raw": raw_metadata, "id": asset_id})
    return asset_id


def _matching(db: Database, tenant: str, key: str, value: Any) -> set[str]:
    with db.session(write=False) as s:
        return set(s.scalars(select(Asset.id).where(
            Asset.tenant_id == tenant, metadata_match(db.dialect, key, value))))


@pytest.mark.parametrize("key", KEYS)
def test_keys_with_spaces_dots_colons_dashes_and_letters_store_and_find(
    db: Database, key: str
) -> None:
    tenant = _tenant(db)
    hit = _asset(db, tenant, {key: "news", "other": "x"})
    _asset(db, tenant, {key: "sport"})
    _asset(db, tenant, {"other": "news"})
    assert _matching(db, tenant, key, "news") == {hit}


def test_values_match_type_for_type(db: Database) -> None:
    tenant = _tenant(db)
    ids = {name: _asset(db, tenant, {"v": value}) for name, value in [
        ("int", 1), ("float", 1.0), ("true", True), ("false", False), ("str1", "1"),
        ("strtrue", "true"), ("zero", 0), ("text", "news"), ("none", None),
        ("list", [1]), ("obj", {"v": 1}), ("big", 10**30), ("half", 0.5),
    ]}
    _asset(db, tenant, {})
    assert _matching(db, tenant, "v", 1) == {ids["int"], ids["float"]}
    assert _matching(db, tenant, "v", 1.0) == {ids["int"], ids["float"]}
    assert _matching(db, tenant, "v", 0.5) == {ids["half"]}
    assert _matching(db, tenant, "v", 0) == {ids["zero"]}  # not "news", not false
    assert _matching(db, tenant, "v", True) == {ids["true"]}  # not 1, not "true"
    assert _matching(db, tenant, "v", False) == {ids["false"]}
    assert _matching(db, tenant, "v", "1") == {ids["str1"]}
    assert _matching(db, tenant, "v", "true") == {ids["strtrue"]}
    assert _matching(db, tenant, "v", 10**30) == {ids["big"]}


def test_rows_stored_before_validation_never_fail_a_filter(db: Database) -> None:
    tenant = _tenant(db)
    good = _asset(db, tenant, {"desk": "news"})
    if db.dialect == "sqlite":
        # Python's json wrote these before the gate: NaN is not JSON, and SQLite's JSON
        # functions refuse the whole document. (Written as json.dumps wrote them: the
        # store now writes NaN as null.)
        _legacy_asset(db, tenant, json.dumps({"desk": "news", "score": math.nan}))
        _legacy_asset(db, tenant, json.dumps({"desk": "a\ud800", "deep": _nested(300)}))
    _asset(db, tenant, {"desk": 10**400})  # a number no float holds
    assert _matching(db, tenant, "desk", "news") == {good}
    assert _matching(db, tenant, "desk", 1) == set()
    assert _matching(db, tenant, "score", 1.5) == set()


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("key", ['a"b', "a\\b", "a\nb", "a\x00b", "a\ud800", "", "k" * 129])
def test_bad_filter_keys_are_invalid_filter(key: str) -> None:
    with pytest.raises(BadInput) as caught:
        check_filters(SearchFilters(metadata={key: "x"}))
    assert (caught.value.code, caught.value.status) == ("invalid_filter", 422)


def test_filter_strings_hold_no_nul() -> None:
    with pytest.raises(BadInput) as caught:
        check_filters(SearchFilters(metadata={"desk": "a\x00"}))
    assert caught.value.code == "invalid_filter"
    check_filters(SearchFilters(metadata={k: "x" for k in KEYS}))


def test_filter_numbers_are_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        SearchFilters(metadata={"score": math.nan})
