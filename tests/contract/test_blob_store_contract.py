"""Contract for every BlobStore: add a factory to FACTORIES to run it against a new one.

A factory takes a folder private to the test and returns a store; calling it again with
the same folder must reopen the same store (an S3 factory would map it to a key prefix).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kenning.stores.blobs import BlobStore, LocalBlobStore
from kenning.stores.blobs.s3 import S3BlobStore
from tests.fixtures.s3 import s3_server

BlobStoreFactory = Callable[[Path], BlobStore]

def make_s3(root: Path) -> BlobStore:
    """A key prefix of its own per test folder in the test S3 server's bucket."""
    server = s3_server()
    prefix = hashlib.sha256(str(root).encode()).hexdigest()[:16] + "/"
    return S3BlobStore(server.bucket, prefix=prefix, endpoint_url=server.endpoint_url,
                       access_key=server.access_key, secret_key=server.secret_key)


FACTORIES = [
    pytest.param(lambda root: LocalBlobStore(root / "blobs"), id="local"),
    pytest.param(make_s3, id="s3"),
]

AGE_RESOLUTION_S = 1.05
"""Ages (the last put of a blob) are compared at the store's clock resolution: S3 keeps
an object's ``LastModified`` to the second."""

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.fixture(params=FACTORIES)
def factory(request: pytest.FixtureRequest) -> BlobStoreFactory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store(factory: BlobStoreFactory, tmp_path: Path) -> BlobStore:
    return factory(tmp_path)


def test_put_returns_sha256_and_get_roundtrips(store: BlobStore) -> None:
    data = b"\x00kenning\xffbytes" * 100
    key = store.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    assert store.get(key) == data
    assert store.exists(key)
    assert store.size(key) == len(data)


def test_put_is_idempotent(store: BlobStore) -> None:
    first = store.put(b"same content")
    second = store.put(b"same content")
    assert first == second
    assert store.get(first) == b"same content"
    assert store.put(b"other content") != first


def test_empty_blob(store: BlobStore) -> None:
    assert store.put(b"") == EMPTY_SHA256
    assert store.get(EMPTY_SHA256) == b""
    assert store.size(EMPTY_SHA256) == 0


def test_put_file_streams_to_the_same_key(store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 12_289  # ~3 MiB: more than one read chunk
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    key = store.put_file(source)
    assert key == hashlib.sha256(data).hexdigest()
    assert store.put(data) == key
    assert store.size(key) == len(data)
    with store.open(key) as fh:
        assert fh.read(256) == bytes(range(256))
        assert fh.read() == data[256:]


def test_missing_key(store: BlobStore) -> None:
    absent = "0" * 64
    assert not store.exists(absent)
    assert store.delete(absent) is False
    with pytest.raises(KeyError):
        store.get(absent)
    with pytest.raises(KeyError):
        store.size(absent)
    with pytest.raises(KeyError):
        store.open(absent)


def test_delete(store: BlobStore) -> None:
    key = store.put(b"to be deleted")
    keep = store.put(b"to be kept")
    assert store.delete(key) is True
    assert not store.exists(key)
    assert store.delete(key) is False
    with pytest.raises(KeyError):
        store.get(key)
    assert store.get(keep) == b"to be kept"


@pytest.mark.parametrize(
    "key",
    [
        "../" * 10 + "etc/passwd",
        "ab/cd/" + "a" * 58,
        "/" + "a" * 63,
        "." * 64,
        "A" * 64,  # keys are lowercase hex
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "",
        "a" * 63 + "\x00",
        "a" * 63 + "\n",
    ],
)
def test_malformed_keys_are_rejected(store: BlobStore, key: str) -> None:
    for call in (store.get, store.exists, store.delete, store.size, store.open):
        with pytest.raises(ValueError):
            call(key)


def test_blobs_survive_reopen(factory: BlobStoreFactory, tmp_path: Path) -> None:
    key = factory(tmp_path).put(b"durable")
    reopened = factory(tmp_path)
    assert reopened.get(key) == b"durable"


def test_concurrent_puts_of_the_same_content(store: BlobStore) -> None:
    data = b"raced" * 50_000
    keys: list[str] = []

    def put() -> None:
        keys.append(store.put(data))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(keys) == {hashlib.sha256(data).hexdigest()}
    assert store.get(keys[0]) == data


def test_scan_lists_keys_last_put_before_a_time_and_a_reput_refreshes_them(
    store: BlobStore,
) -> None:
    import time

    old = store.put(b"old bytes")
    time.sleep(AGE_RESOLUTION_S)
    cutoff = time.time()
    time.sleep(AGE_RESOLUTION_S)
    new = store.put(b"new bytes")
    assert set(store.scan(cutoff)) == {old}
    assert new not in set(store.scan(cutoff))
    store.put(b"old bytes")  # a writer about to reference them: their age starts again
    assert set(store.scan(cutoff)) == set()
    assert set(store.scan(time.time() + 2)) == {old, new}


def test_sweep_temp_removes_only_abandoned_partial_writes(
    store: BlobStore, tmp_path: Path
) -> None:
    import time

    key = store.put(b"complete")
    assert store.sweep_temp(time.time() + 1) == 0  # a finished put leaves nothing behind
    assert store.exists(key)


# --- put_many: put's contract for every item, one call ------------------------------------
def test_put_many_returns_the_keys_in_order_and_stores_every_item(store: BlobStore) -> None:
    datas = [b"first blob", b"second blob", b"", bytes(range(256)) * 4_000]
    keys = store.put_many(datas)
    assert keys == [hashlib.sha256(d).hexdigest() for d in datas]
    for key, data in zip(keys, datas, strict=True):
        assert store.get(key) == data
        assert store.size(key) == len(data)
    assert store.put_many([]) == []


def test_put_many_takes_repeats_and_known_bytes(store: BlobStore) -> None:
    known = store.put(b"already stored")
    keys = store.put_many([b"new bytes", b"already stored", b"new bytes"])
    assert keys == [hashlib.sha256(b"new bytes").hexdigest(), known,
                    hashlib.sha256(b"new bytes").hexdigest()]
    assert store.get(keys[0]) == b"new bytes"
    assert store.put(b"new bytes") == keys[0]


def test_put_many_refreshes_the_age_of_known_bytes(store: BlobStore) -> None:
    import time

    old = store.put(b"old bytes of a batch")
    time.sleep(AGE_RESOLUTION_S)
    cutoff = time.time()
    time.sleep(AGE_RESOLUTION_S)
    assert set(store.scan(cutoff)) == {old}
    store.put_many([b"fresh bytes of a batch", b"old bytes of a batch"])
    assert set(store.scan(cutoff)) == set()


def test_put_many_is_durable_across_reopen(factory: BlobStoreFactory, tmp_path: Path) -> None:
    datas = [f"durable batch item {i}".encode() for i in range(20)]
    keys = factory(tmp_path).put_many(datas)
    reopened = factory(tmp_path)
    assert [reopened.get(k) for k in keys] == datas
    assert reopened.sweep_temp(float("inf")) == 0  # nothing half written is left


def test_a_failing_put_many_leaves_each_item_whole_or_absent(store: BlobStore) -> None:
    datas: list[object] = [b"batch item before the failure", b"another one", 42]
    with pytest.raises(TypeError):
        store.put_many(datas)  # type: ignore[arg-type]
    for data in datas[:2]:
        assert isinstance(data, bytes)
        key = hashlib.sha256(data).hexdigest()
        assert not store.exists(key) or store.get(key) == data
    assert store.sweep_temp(float("inf")) == 0


def test_concurrent_put_many_of_overlapping_batches(store: BlobStore) -> None:
    datas = [f"overlap {i}".encode() * 10_000 for i in range(6)]
    results: list[list[str]] = []

    def put(offset: int) -> None:
        results.append(store.put_many(datas[offset:] + datas[:offset]))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    for key, data in ((hashlib.sha256(d).hexdigest(), d) for d in datas):
        assert store.get(key) == data
