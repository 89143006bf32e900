"""The one strict JSON dialect of the API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kenning.api.bodies import is_json, is_multipart, parse_json

REFUSED = [
    (b'{"a": NaN}', "NaN"),
    (b'{"a": Infinity}', "Infinity"),
    (b'{"a": -Infinity}', "-Infinity"),
    (b'{"a": 1e400}', "a number that overflows to infinity"),
    (b'{"a": "\\ud800"}', "lone high surrogate"),
    (b'{"a": "\\udc00"}', "lone low surrogate"),
    (b'{"\\ud800": 1}', "lone surrogate in a key"),
    (b'{"a": "\xed\xa0\x80"}', "a surrogate encoded as UTF-8 bytes"),
    (b'{"a": "x\\u0000y"}', "NUL in a value"),
    (b'{"a\\u0000": 1}', "NUL in a key"),
    (b'[[{"deep": ["\\u0000"]}]]', "NUL nested in lists"),
    (b"[" * 65 + b"]" * 65, "nesting past 64"),
    (b"[" * 1024 + b"]" * 1024, "nesting to orjson's own bound"),
    (b'{"a": ' * 65 + b"1" + b"}" * 65, "objects nested past 64"),
    (b"[" * 10_000 + b"]" * 10_000, "nesting 10,000 deep"),
    (b'{"a": "raw \x00 byte"}', "a raw control byte in a string"),
    (b"{not json", "malformed"),
]


@pytest.mark.parametrize(("raw", "why"), REFUSED, ids=[r[1] for r in REFUSED])
def test_strict_json_refuses(raw: bytes, why: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json(raw)


ACCEPTED = [
    (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),
    (b'{"a": "\\\\u0000"}', {"a": "\\u0000"}),  # an escaped backslash: the text \u0000
    (b'{"a": 1.5, "b": -0.0, "c": 12345678901234}', {"a": 1.5, "b": -0.0, "c": 12345678901234}),
    (b"[" * 64 + b"]" * 64, None),
]


@pytest.mark.parametrize(("raw", "value"), ACCEPTED, ids=range(len(ACCEPTED)))
def test_strict_json_accepts(raw: bytes, value: Any) -> None:
    parsed = parse_json(raw)
    if value is not None:
        assert parsed == value


@pytest.mark.parametrize(("kind", "json_", "multipart"), [
    ("", True, False),
    ("application/json", True, False),
    ("application/problem+json", True, False),
    ("multipart/form-data", False, True),
    ("text/plain", False, False),
    ("application/x-www-form-urlencoded", False, False),
])
def test_content_types(kind: str, json_: bool, multipart: bool) -> None:
    assert (is_json(kind), is_multipart(kind)) == (json_, multipart)
