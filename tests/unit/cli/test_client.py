"""How the CLI groups items into batch requests (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

from kenning.cli.client import MULTIPART_FIELD_BYTES, plan_batches


def files(root: Path, sizes: list[int]) -> list[Path]:
    out = []
    for i, size in enumerate(sizes):
        path = root / f"{i}.txt"
        path.write_bytes(b"x" * size)
        out.append(path)
    return out


def test_files_go_size_at_a_time_and_urls_apart(tmp_path: Path) -> None:
    paths = files(tmp_path, [10] * 5)
    urls = ["https://example.org/a", "https://example.org/b", "https://example.org/c"]
    batches = plan_batches([paths[0], urls[0], *paths[1:], *urls[1:]], size=2,
                           budget_bytes=1000)
    assert batches == [[paths[0], paths[1]], [paths[2], paths[3]], [urls[0], urls[1]],
                       [paths[4]], [urls[2]]]


def test_a_batch_of_files_stays_within_the_byte_budget(tmp_path: Path) -> None:
    paths = files(tmp_path, [400, 400, 400, 5000, 10])
    batches = plan_batches(paths, size=100, budget_bytes=1000)
    assert batches == [[paths[0], paths[1]], [paths[2]], [paths[3]], [paths[4]]]


def test_metadata_for_every_file_counts_against_the_items_field(tmp_path: Path) -> None:
    meta = {"desk": "d" * 20_000}
    entry = len(json.dumps({"metadata": meta})) + 2
    paths = files(tmp_path, [1] * 200)
    batches = plan_batches(paths, size=100, budget_bytes=10**9, metadata=meta)
    assert {len(b) for b in batches[:-1]} == {MULTIPART_FIELD_BYTES // entry}
    assert sum(len(b) for b in batches) == 200


def test_a_missing_file_still_gets_a_batch(tmp_path: Path) -> None:
    gone = tmp_path / "gone.txt"
    assert plan_batches([gone], size=10, budget_bytes=100) == [[gone]]
