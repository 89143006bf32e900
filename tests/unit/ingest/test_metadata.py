"""Metadata: the gate refuses what a store or an encoder cannot hold; the repair is total."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest

from kenning.errors import BadInput, TooLarge
from kenning.ingest.metadata import check_key, validate_metadata
from kenning.settings import Settings
from kenning.stores.metadata.repair import MAX_DEPTH, sanitize_metadata

SETTINGS = Settings(max_metadata_bytes=1024)


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """An object ``depth`` containers deep (the outer object counts), built without recursion."""
    value: Any = leaf
    for _ in range(depth):
        value = {"k": value}
    return value  # type: ignore[no-any-return]


GOOD = [
    {},
    {"desk": "news", "rank": 3, "score": 0.5, "wire": True, "note": None},
    {"tags": ["a", "b", {"x": [1, 2.5, False]}]},
    {"a b": 1, "a.b": 2, "a:b": 3, "a-b": 4, "Straße": 5, "ключ": 6, "鍵": 7},
    {"emoji": "\U0001f600", "newline": "line\nbreak\ttab"},
    {"k" * 128: "v"},
    {"big": 2**63 - 1, "small": -(2**63)},
    nested(MAX_DEPTH),
]


@pytest.mark.parametrize("value", GOOD, ids=range(len(GOOD)))
def test_valid_metadata_passes_unchanged(value: dict[str, Any]) -> None:
    assert validate_metadata(value, SETTINGS) is value


def test_none_is_no_metadata() -> None:
    assert validate_metadata(None, SETTINGS) == {}


BAD = [
    ([1, 2], "not an object"),
    ("text", "not an object"),
    ({"a": math.nan}, "NaN"),
    ({"a": [math.inf]}, "Infinity"),
    ({"a": {"b": -math.inf}}, "-Infinity"),
    ({"a": "x\ud800y"}, "lone surrogate in a value"),
    ({"a\udc00": 1}, "lone surrogate in a key"),
    ({"a": "x\x00y"}, "NUL in a value"),
    ({"a\x00": 1}, "NUL in a key"),
    ({"": 1}, "empty key"),
    ({"k" * 129: 1}, "long key"),
    ({'a"b': 1}, "quote in a key"),
    ({"a\\b": 1}, "backslash in a key"),
    ({"a\nb": 1}, "control character in a key"),
    ({"a\x85b": 1}, "C1 control character in a key"),
    ({"a": {"b\x7f": 1}}, "DEL in a nested key"),
    ({1: "x"}, "non-string key"),
    ({"a": b"bytes"}, "bytes value"),
    ({"a": (1, 2)}, "tuple value"),
    ({"a": 2**63}, "integer past 64 bits"),
    (nested(MAX_DEPTH + 1), "too deep"),
    (nested(10_000), "far too deep"),
]


@pytest.mark.parametrize(("value", "why"), BAD, ids=[b[1] for b in BAD])
def test_invalid_metadata_is_refused(value: Any, why: str) -> None:
    with pytest.raises(BadInput) as caught:
        validate_metadata(value, SETTINGS)
    assert caught.value.code == "invalid_metadata"
    assert caught.value.status == 422


def test_size_is_measured_as_compact_json() -> None:
    fits = {"k": "v" * (1024 - len('{"k":""}'))}
    assert len(orjson.dumps(fits)) == 1024
    assert validate_metadata(fits, SETTINGS) is fits
    over = {"k": "v" * (1025 - len('{"k":""}'))}
    with pytest.raises(TooLarge) as caught:
        validate_metadata(over, SETTINGS)
    assert (caught.value.code, caught.value.status) == ("metadata_too_large", 413)
    assert caught.value.details["limit"] == 1024


def test_many_small_values_are_refused_by_size_before_a_full_walk() -> None:
    huge = {"k": list(range(1_000_000))}
    with pytest.raises(TooLarge):
        validate_metadata(huge, SETTINGS)


def test_filter_keys_share_the_key_rule_with_their_own_code() -> None:
    assert check_key("a b.c:d-é", code="invalid_filter") == "a b.c:d-é"
    with pytest.raises(BadInput) as caught:
        check_key('a"', code="invalid_filter", what="metadata filter")
    assert caught.value.code == "invalid_filter"


# --- sanitize ----------------------------------------------------------------------------
def test_clean_metadata_comes_back_equal() -> None:
    for value in GOOD:
        assert sanitize_metadata(value) == value


def test_sanitize_repairs_what_old_rows_may_hold() -> None:
    stored: dict[str, Any] = {
        "nan": math.nan, "inf": math.inf, "list": [1, -math.inf, "ok"],
        "sur": "a\ud800b", "nul": "a\x00b", "k\x00ey": 1, "k\udfffey": 2,
        "obj": {"deep": nested(20)}, "odd": object(),
    }
    clean = sanitize_metadata(stored)
    assert clean["nan"] is None and clean["inf"] is None
    assert clean["list"] == [1, None, "ok"]
    assert clean["sur"] == "a\ufffdb"
    assert clean["nul"] == "ab"
    assert clean["key"] == 1 and clean["k\ufffdey"] == 2
    assert clean["odd"] is None
    # Whatever is left encodes as strict JSON, within the depth bound.
    encoded = orjson.dumps(clean)
    assert orjson.loads(encoded) == clean
    depth, node = 1, clean["obj"]
    while isinstance(node, dict):
        depth, node = depth + 1, node.get("deep", node.get("k"))
    assert depth <= MAX_DEPTH
    assert stored["nan"] is not None and "deep" in stored["obj"]  # input untouched


@pytest.mark.parametrize("value", [None, [], "x", 3, json.dumps({"a": 1})])
def test_sanitize_turns_a_non_object_into_an_empty_one(value: Any) -> None:
    assert sanitize_metadata(value) == {}


def test_sanitize_handles_nesting_past_the_recursion_limit() -> None:
    clean = sanitize_metadata(nested(50_000))
    assert orjson.loads(orjson.dumps(clean)) == clean
