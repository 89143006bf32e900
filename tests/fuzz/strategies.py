"""Hypothesis strategies for hostile input: raw JSON text, metadata, filters, query values
and image headers. Bodies are built as text or bytes, never through a strict encoder, so
they can carry what a careless client (or an attacker) sends: NaN, lone surrogates, 10,000
levels of nesting, duplicate keys, non-UTF-8 bytes."""

from __future__ import annotations

import json
import re
import struct
import zlib
from typing import Any

from hypothesis import strategies as st

from tests.fixtures import media
from tests.fuzz.live import LIMITS

MAX_TEXT = LIMITS["KENNING_MAX_TEXT_CHARS"]
MAX_BODY = LIMITS["KENNING_MAX_UPLOAD_BYTES"]

# ---------------------------------------------------------------------- JSON values as text

NON_STANDARD = ["NaN", "Infinity", "-Infinity"]
"""Python's json module accepts these; JSON (RFC 8259) does not."""

LONE_SURROGATES = ['"\\ud800"', '"\\udfff"', '"a\\ud83d"', '"\\udc00\\ud800"']
"""Valid JSON escapes that decode to a string no UTF-8 encoder (or SQLite) accepts."""

HUGE_NUMBERS = [
    "1" + "0" * 30, "-907516395684407672832", str(2**63), str(-(2**63) - 1), str(2**64),
    "1e309", "-1e309", "1e-400", "-0", "123456789012345678901234567890.5",
]
ODD_LITERALS = [
    '"\\u0000"', '"a\\u0000b"', '""', '" "', '"\\n\\t"', "true", "false", "null", "0", "-1",
    "1.5", "[]", "{}", "[null]", '{"": null}', '"\\\\"', '"\\""', '"$.a"', "\"' OR 1=1 --\"",
]


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def string_of(n: int) -> str:
    return '"' + "x" * n + '"'


def json_text(value: Any) -> str:
    """JSON text of ``value`` the lenient way: NaN literals, surrogates as escapes."""
    return json.dumps(value, allow_nan=True, ensure_ascii=True)


depths = st.sampled_from([64, 100, 999, 1000, 1001, 5000, 10_000]) | st.integers(1, 10_000)
deep_values = st.builds(nested_array, depths) | st.builds(nested_object, depths)
big_strings = st.sampled_from([4000, 4001, 1000, 1001, 500, 501, MAX_TEXT, MAX_TEXT + 1,
                               100_000, 100_001, MAX_BODY - 64, MAX_BODY + 1]).map(string_of)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), finite_floats,
    st.text(max_size=30), st.sampled_from([10**30, -907516395684407672832, 2**63, -(2**63) - 1]),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
).map(json_text)

hostile_values = st.one_of(
    st.sampled_from(NON_STANDARD + LONE_SURROGATES + HUGE_NUMBERS + ODD_LITERALS),
    deep_values, big_strings, json_values,
)
"""JSON text of one value: what a field of a request body receives."""


def fill(template: str, value: str) -> bytes:
    return template.replace("§", value).encode("utf-8")


RAW_BODIES = [
    b"", b" ", b"\n\t ", b"null", b"[]", b'"text"', b"0", b"{", b"}", b'{"text": }',
    b"\xff\xfe\xfd", b'{"text": "\xff\xfe caf\xe9"}', b'{"text": "\xed\xa0\x80"}',
    b'{"text": "ok"} trailing', b'{"text": "ok"}{"text": "ok"}', b"\x00" * 16,
    '{"text": "ok"}'.encode("utf-16"), b'\xef\xbb\xbf{"text": "bom"}',
]


def hostile_bodies(templates: list[str]) -> st.SearchStrategy[bytes]:
    """Whole request bodies: templates with a hostile value at ``§``, or raw junk."""
    filled = st.builds(fill, st.sampled_from(templates), hostile_values)
    raw = st.one_of(
        st.sampled_from(RAW_BODIES),
        st.binary(max_size=64),
        st.builds(lambda b: b'{"text": "' + b + b'"}', st.binary(min_size=1, max_size=32)),
        deep_values.map(str.encode),
    )
    return st.integers(0, 3).flatmap(lambda n: filled if n < 3 else raw)


ENDPOINT_TEMPLATES: dict[str, list[str]] = {
    "/v1/assets": [
        '{"text": §}', '{"text": "hostile body §", "title": §}',
        '{"text": "hostile body", "external_id": §}', '{"text": "hostile meta", "metadata": §}',
        '{"text": "hostile meta", "metadata": {"k": §}}', '{"url": §}',
        '{"text": "hostile cb", "callback_url": §}', '{"text": "dup", "text": §}',
        '{"text": "dup", "metadata": {"k": 1, "k": §}}', "§",
    ],
    "/v1/assets/batch": [
        '{"items": §}', '{"items": [§]}', '{"items": [{"text": §}]}',
        '{"items": [{"text": "hostile batch", "metadata": §}]}',
        '{"items": [{"text": "hostile batch", "metadata": {"k": §}}]}',
        '{"items": [], "items": §}', "§",
    ],
    "/v1/similar": [
        '{"text": §}', '{"asset_id": §}', '{"text": "hostile", "threshold": §}',
        '{"text": "hostile", "limit": §}', '{"text": "hostile", "modality": §}',
        '{"threshold": §}', "§",
    ],
    "/v1/search": [
        '{"query": §}', '{"query": "fires", "limit": §}', '{"query": "fires", "mode": §}',
        '{"query": "fires", "filters": §}', '{"query": "fires", "filters": {"kind": §}}',
        '{"query": "fires", "filters": {"metadata": §}}',
        '{"query": "fires", "filters": {"metadata": {"desk": §}}}',
        '{"query": "fires", "filters": {"created_after": §}}', '{"asset_id": §}',
        '{"query": "fires", "image": §}', '{"query": "fires", "modalities": §}', "§",
    ],
}

# ---------------------------------------------------------------------- metadata

ODD_KEYS = [
    "", " ", '"', "'", "\\", '"]', "$", "$.a", "a.b", "a[0]", "[0]", "*", "..", "a'b", 'a"b',
    "\x00", "a\x00b", "\ud800", "\udfff", "\n", "\u202e", "é", "日本", "k" * 5000,
    "' OR 1=1 --", "desk",
]
odd_keys = st.sampled_from(ODD_KEYS) | st.text(max_size=12)
odd_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), finite_floats,
    st.sampled_from([10**30, -907516395684407672832, 2**63, -(2**63) - 1, float("nan"),
                     float("inf"), float("-inf"), "\x00", "\ud800", "x" * 10_000, "", "NaN"]),
    st.text(max_size=20),
)
metadata_values = st.recursive(
    odd_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_keys, inner, max_size=4),
    max_leaves=16,
)
metadata_objects = st.dictionaries(odd_keys, metadata_values, max_size=6).map(json_text)
deep_metadata = st.one_of(
    st.builds(lambda depth: '{"deep": ' + nested_array(depth) + "}", depths),
    st.builds(nested_object, depths),
)
odd_metadata = st.sampled_from([
    '{"k": NaN}', '{"k": Infinity}', '{"k": -Infinity}', '{"\\ud800": 1}',
    '{"k": "\\udfff"}', '{"k": 1, "k": 2}', '{"k": ' + "1" + "0" * 30 + "}",
    '{"k": -907516395684407672832}', '{"k": 1e309}', '{"big": ' + string_of(500_000) + "}",
    '{"": ""}', '{"\\u0000": "\\u0000"}', "[]", "1", '"text"', "null", "", " ", "{",
])
# Weighted by hand (one_of merges equal branches): mostly objects that parse, so the
# checks behind the parser (storage, reads, filters) see them.
metadata_texts = st.integers(0, 9).flatmap(
    lambda n: metadata_objects if n < 6 else deep_metadata if n < 8 else odd_metadata
)
"""JSON text of a metadata object (or of something that is not one)."""

_NON_STANDARD_TOKEN = re.compile(r"(?<![\w\"])-?(NaN|Infinity)(?![\w\"])")


def violates_strict_json(text: str) -> bool:
    """True when ``text`` parses only under Python's lenient rules: a NaN or Infinity
    token, or a string holding a lone surrogate (valid escapes, but no UTF-8 exists)."""
    def reject(_: str) -> float:
        raise ValueError("non-standard constant")

    try:
        value = json.loads(text, parse_constant=reject, parse_float=lambda _: 0.0)
    except (ValueError, RecursionError):
        return bool(_NON_STANDARD_TOKEN.search(text))
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:
        return False
    return False


# ---------------------------------------------------------------------- filters and queries

dates = st.one_of(
    st.sampled_from([
        "2026-01-01T00:00:00Z", "0000-00-00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
        "+275760-09-13T00:00:00Z", "2026-13-45T25:61:61Z", "2026-01-01T00:00:00+25:00", "-1",
        "now", "", "\x00", "1e20", "2026-01-01T00:00:00.123456789123Z",
    ]),
    st.integers(), st.floats(), st.none(),
)
string_lists = st.one_of(st.none(), st.lists(odd_keys, max_size=4), odd_scalars)
filter_metadata = st.one_of(
    st.none(),
    st.dictionaries(odd_keys, odd_scalars, max_size=4),
    st.dictionaries(odd_keys, metadata_values, max_size=3),
    odd_scalars,
)
limits = st.one_of(
    st.integers(), st.sampled_from([0, -1, 1, 100, 101, 10**30, -907516395684407672832]),
    st.floats(), st.text(max_size=5), st.none(),
)
search_bodies = st.fixed_dictionaries(
    {"query": st.one_of(st.just("fires"), st.text(max_size=30), st.sampled_from(["\x00", ""]))},
    optional={
        "mode": st.sampled_from(["keyword", "semantic", "hybrid", "KEYWORD", "", "sql"]),
        "limit": limits,
        "modalities": string_lists,
        "filters": st.fixed_dictionaries({}, optional={
            "kind": string_lists, "language": string_lists, "segment_kind": string_lists,
            "metadata": filter_metadata, "created_after": dates, "created_before": dates,
        }),
    },
).map(json_text)
"""JSON text of a search request with hostile filters, kinds, languages, dates, limits."""

query_values = st.one_of(
    st.integers(), st.sampled_from(["-1", "0", "1", "100", "1" + "0" * 30,
                                    "-907516395684407672832", "9223372036854775808", "1e3",
                                    "NaN", "inf", "", " ", "abc", "1.5", "0x10", "\x00",
                                    "\uff11\uff12"]),
    st.text(max_size=12),
)

# ---------------------------------------------------------------------- image headers

DIMENSIONS = [0, 1, 2, 255, 65_535, 20_001, 2_001 * 2_001, 2**31 - 1, 2**32 - 1]
dimensions = st.sampled_from(DIMENSIONS) | st.integers(0, 2**32 - 1)


def png(width: int, height: int, *, depth: int = 8, color: int = 2, good_crc: bool = True,
        idat: bytes = b"\x00", cut: int | None = None) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    chunk = media.png_chunk(b"IHDR", ihdr)
    if not good_crc:
        chunk = chunk[:-4] + b"\x00\x00\x00\x00"
    data = (media.PNG_SIGNATURE + chunk + media.png_chunk(b"IDAT", zlib.compress(idat, 9))
            + media.png_chunk(b"IEND", b""))
    return data if cut is None else data[:cut]


def jpeg(width: int, height: int, *, cut: int | None = None, tail: bytes = b"") -> bytes:
    """SOI, JFIF APP0, a DQT, and a baseline SOF0 declaring ``width`` x ``height``."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    sof = (b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height & 0xFFFF, width & 0xFFFF, 3)
           + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00")
    data = b"\xff\xd8" + app0 + dqt + sof + tail + b"\xff\xd9"
    return data if cut is None else data[:cut]


def gif(width: int, height: int, *, tail: bytes = b"") -> bytes:
    screen = struct.pack("<HHBBB", width & 0xFFFF, height & 0xFFFF, 0xF0, 0, 0)
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width & 0xFFFF, height & 0xFFFF, 0)
    return b"GIF89a" + screen + b"\x00\x00\x00\xff\xff\xff" + image + b"\x02\x02\x44\x01\x00" \
        + tail + b"\x3b"


def tiff(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (279, 4, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries
    ) + b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8 + 1) + b"\x00" + ifd


MAGICS = [b"\xff\xd8\xff", media.PNG_SIGNATURE, b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*",
          b"RIFF\x00\x00\x00\x00WEBP", b"BM"]

media_files = st.one_of(
    st.builds(png, dimensions, dimensions),
    st.builds(png, dimensions, dimensions, depth=st.sampled_from([0, 1, 3, 8, 16, 255]),
              color=st.sampled_from([0, 1, 2, 3, 4, 6, 7, 255]), good_crc=st.booleans(),
              idat=st.binary(max_size=64), cut=st.none() | st.integers(0, 80)),
    st.builds(jpeg, dimensions, dimensions, cut=st.none() | st.integers(0, 200),
              tail=st.binary(max_size=64)),
    st.builds(gif, dimensions, dimensions, tail=st.binary(max_size=32)),
    st.builds(tiff, dimensions, dimensions),
    st.builds(lambda magic, rest: magic + rest, st.sampled_from(MAGICS), st.binary(max_size=512)),
    st.builds(lambda cut: media.truncated_jpeg()[:cut], st.integers(0, 4096)),
)
"""Bytes that look like an image from their first bytes and may be anything after."""
