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


def test_sweep_temp_removes_partial_writes_of_a_crash_after_their_age(tmp_path: Path) -> None:
    import os
    import time

    store = LocalBlobStore(tmp_path)
    partial = tmp_path / ".tmp" / "put-crashed"
    partial.write_bytes(b"half a file")
    fresh = tmp_path / ".tmp" / "put-inflight"
    fresh.write_bytes(b"being written")
    os.utime(partial, (time.time() - 100, time.time() - 100))
    assert store.sweep_temp(time.time() - 50) == 1
    assert not partial.exists() and fresh.exists()
    assert list(store.scan(time.time() + 1)) == []  # temp files are never blobs


def test_sweep_temp_never_removes_a_write_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from kenning.stores.blobs import local

    store = LocalBlobStore(tmp_path)
    source = tmp_path / "big.bin"
    source.write_bytes(b"y" * 100)
    started, release = threading.Event(), threading.Event()

    def slow_open(path: Path, mode: str = "r") -> object:
        handle = open(path, mode)  # noqa: SIM115 - handed to the store, which closes it
        if path == source:
            started.set()  # the temp file exists and the source is being read: mid-put
            release.wait(5)
        return handle

    monkeypatch.setattr(local, "open", slow_open, raising=False)
    writer = threading.Thread(target=store.put_file, args=(source,))
    writer.start()
    try:
        assert started.wait(5)
        assert len(list((tmp_path / ".tmp").iterdir())) == 1
        assert store.sweep_temp(time.time() + 60) == 0  # held by the live writer
    finally:
        release.set()
        writer.join(5)
    assert store.get(hashlib.sha256(b"y" * 100).hexdigest()) == b"y" * 100


def test_a_sweep_between_a_temp_files_creation_and_its_lock_loses_no_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep runs in the instant after ``mkstemp`` and before the writer's ``flock``
    (the file is then unlocked, so it looks abandoned): the put starts again on a new
    temporary file and its bytes are stored (found by the delete/ingest race e2e)."""
    import fcntl
    import time

    from kenning.stores.blobs import local

    store = LocalBlobStore(tmp_path)
    real_flock = fcntl.flock
    swept: list[int] = []

    class Fcntl:
        LOCK_EX, LOCK_NB = fcntl.LOCK_EX, fcntl.LOCK_NB

        @staticmethod
        def flock(fd: int, op: int) -> None:
            if op == fcntl.LOCK_EX and not swept:  # the writer, first time: sweep first
                swept.append(store.sweep_temp(time.time() + 60))
            real_flock(fd, op)

    monkeypatch.setattr(local, "fcntl", Fcntl)
    keys = store.put_many([b"first bytes", b"second bytes"])
    assert swept == [1]  # the sweep did remove the unlocked temporary file
    assert [store.get(k) for k in keys] == [b"first bytes", b"second bytes"]
    assert list((tmp_path / ".tmp").iterdir()) == []


def _same_folder_datas(count: int) -> list[bytes]:
    """``count`` distinct contents whose keys share one fan-out folder (``ab/cd``)."""
    by_folder: dict[str, list[bytes]] = {}
    i = 0
    while True:
        data = f"folder mate {i}".encode()
        folder = by_folder.setdefault(hashlib.sha256(data).hexdigest()[:4], [])
        folder.append(data)
        if len(folder) == count:
            return folder
        i += 1


def test_put_many_fsyncs_each_blob_before_its_rename_and_each_folder_once_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from kenning.stores.blobs import local

    store = LocalBlobStore(tmp_path)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_fsync_dir = os.fsync, os.replace, local._fsync_dir

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Path, dst: Path) -> None:
        events.append(("rename", os.path.realpath(src)))
        real_replace(src, dst)

    def fsync_dir(path: Path) -> None:
        events.append(("folder", str(path)))
        real_fsync_dir(path)

    monkeypatch.setattr(local.os, "fsync", fsync)
    monkeypatch.setattr(local.os, "replace", replace)
    monkeypatch.setattr(local, "_fsync_dir", fsync_dir)
    mates = _same_folder_datas(3)
    other = b"a blob in another folder"
    keys = store.put_many([*mates, other, mates[0]])

    renamed = [name for kind, name in events if kind == "rename"]
    assert len(renamed) == 4  # the repeat is written once
    for name in renamed:
        assert events.index(("fsync", name)) < events.index(("rename", name))
    folders = [name for kind, name in events if kind == "folder"]
    assert len(folders) == len(set(folders))  # grouped: each folder once per call
    shared = str(store.path_for(keys[0]).parent)
    assert {shared, str(store.path_for(keys[3]).parent), str(tmp_path)} <= set(folders)
    last_rename = max(i for i, (kind, _) in enumerate(events) if kind == "rename")
    assert all(events.index(("folder", f)) > last_rename for f in folders)
    # Known bytes cost no write at all.
    events.clear()
    assert store.put_many([other, *mates]) == [keys[3], *keys[:3]]
    assert events == []
