"""LocalBlobStore specifics: on-disk layout and atomic writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kenning.stores.blobs import InvalidBlobKey, LocalBlobStore


def test_fan_out_layout(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.put(b"layout")
    path = tmp_path / key[:2] / key[2:4] / key
    assert path.read_bytes() == b"layout"
    assert store.path_for(key) == path


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 100)
    store.put(b"a")
    store.put(b"a")
    store.put_file(source)
    store.put_file(source)
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_failed_stream_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    with pytest.raises(IsADirectoryError):
        store.put_file(tmp_path)  # a folder cannot be read: the write fails midway
    with pytest.raises(FileNotFoundError):
        store.put_file(tmp_path / "missing")
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [".tmp"]


def test_existing_blob_is_not_rewritten(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.put(b"stable")
    path = store.path_for(key)
    inode = path.stat().st_ino
    store.put(b"stable")
    assert path.stat().st_ino == inode


def test_invalid_key_is_a_bad_input_error(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(InvalidBlobKey) as info:
        store.get("../" + "a" * 61)
    assert info.value.status == 422
    assert info.value.code == "invalid_blob_key"
    assert not (tmp_path.parent / ("a" * 61)).exists()


def test_key_is_the_digest_of_a_stream(tmp_path: Path) -> None:
    data = b"\x01" * (3 << 20) + b"tail"
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    assert LocalBlobStore(tmp_path / "s").put_file(source) == hashlib.sha256(data).hexdigest()
