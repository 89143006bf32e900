"""Blobs in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph RGW...).

One object per key, at ``<prefix><k[0:2]>/<k[2:4]>/<k>`` in one bucket. An S3 PUT is
atomic (an object is visible whole or not at all) and durable when it returns, so there
is no temporary file to rename; a large file goes up in parts (a multipart upload), and
a part-way crash leaves an incomplete upload that :meth:`S3BlobStore.sweep_temp` aborts.
A put of known bytes uploads them again, which is what refreshes their age (the object's
``LastModified``, which S3 keeps to the second: ages are compared at that resolution).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from kenning.errors import Unavailable
from kenning.stores.blobs.protocol import validate_key

__all__ = ["S3BlobStore"]

_UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError,
                ReadTimeoutError)


@contextmanager
def _reachable(what: str) -> Iterator[None]:
    """The store not answering (or answering 5xx) is :class:`Unavailable`: a client gets
    503 with Retry-After, a pipeline stage fails and is retried with backoff."""
    try:
        yield
    except _UNREACHABLE as exc:
        raise Unavailable(f"blob store unreachable ({what}): {type(exc).__name__}") from exc
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status >= 500 or exc.response.get("Error", {}).get("Code") == "SlowDown":
            raise Unavailable(f"blob store unavailable ({what}): HTTP {status}") from exc
        raise

_CHUNK = 1 << 20
_MISSING = ("404", "NoSuchKey", "NotFound")


class _Body(io.RawIOBase):
    """A streaming object body as a readable binary file."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class S3BlobStore:
    """A :class:`~kenning.stores.blobs.protocol.BlobStore` on an S3 bucket.

    ``client`` is a boto3 S3 client (made from ``endpoint_url`` and the keys when not
    given). ``parallel``: uploads of one :meth:`put_many` in flight at once (the round
    trips are what a batch groups). Files above ``multipart_bytes`` go up in parts.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        client: Any = None,
        parallel: int = 8,
        multipart_bytes: int = 64 << 20,
    ) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key,
                aws_secret_access_key=secret_key, region_name=region or "us-east-1",
                config=Config(s3={"addressing_style": "path"},
                              retries={"max_attempts": 3, "mode": "standard"},
                              connect_timeout=2, read_timeout=30,
                              max_pool_connections=max(parallel, 10)),
            )
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self._parallel = max(1, parallel)
        self._multipart_bytes = multipart_bytes

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (for a fresh installation)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}{key[:2]}/{key[2:4]}/{key}"

    @staticmethod
    def _missing(exc: Exception) -> bool:
        error = getattr(exc, "response", {}).get("Error", {})
        return str(error.get("Code")) in _MISSING

    # --- writes ------------------------------------------------------------------------
    def put(self, data: bytes) -> str:
        return self.put_many([data])[0]

    def put_many(self, datas: Sequence[bytes]) -> list[str]:
        """Every item is uploaded (known bytes too: that refreshes their age), several at
        a time; the keys come back once every upload has returned."""
        keys = [hashlib.sha256(data).hexdigest() for data in datas]
        distinct = dict(zip(keys, datas, strict=True))
        if len(distinct) <= 1:
            for key, data in distinct.items():
                self._upload(key, data)
            return keys
        with ThreadPoolExecutor(min(self._parallel, len(distinct))) as pool:
            list(pool.map(lambda item: self._upload(*item), distinct.items()))
        return keys

    def _upload(self, key: str, data: bytes) -> None:
        with _reachable("put"):
            self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data)

    def put_file(self, path: Path) -> str:
        """Hash the file, then stream it up (in parts when large)."""
        digest = hashlib.sha256()
        with open(path, "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
        key = digest.hexdigest()
        with _reachable("put"):
            self._upload_file(path, key)
        return key

    def _upload_file(self, path: Path, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        self.client.upload_file(
            str(path), self.bucket, self._name(key),
            Config=TransferConfig(multipart_threshold=self._multipart_bytes,
                                  multipart_chunksize=max(self._multipart_bytes // 8, 8 << 20)),
        )

    # --- reads -------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def open(self, key: str) -> BinaryIO:
        name = self._name(key)
        try:
            with _reachable("get"):
                body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
        except ClientError as exc:
            if self._missing(exc):
                raise KeyError(key) from None
            raise
        return io.BufferedReader(_Body(body), buffer_size=_CHUNK)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            with _reachable("head"):
                return dict(self.client.head_object(Bucket=self.bucket, Key=self._name(key)))
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise KeyError(key)
        return int(head["ContentLength"])

    def delete(self, key: str) -> bool:
        if self._head(key) is None:
            return False
        with _reachable("delete"):
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        return True

    # --- housekeeping ------------------------------------------------------------------
    def scan(self, older_than: float) -> Iterator[str]:
        """Keys whose last put is older than ``older_than``, to the second (S3's clock)."""
        pages = iter(self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix))
        while True:
            with _reachable("list"):
                page = next(pages, None)
            if page is None:
                return
            for obj in page.get("Contents", []):
                key = obj["Key"].rsplit("/", 1)[-1]
                if len(key) == 64 and obj["LastModified"].timestamp() < older_than:
                    yield key

    def sweep_temp(self, older_than: float) -> int:
        """Abort multipart uploads begun before ``older_than`` (a crash part way)."""
        aborted = 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix)
        with _reachable("sweep"):
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < older_than:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        aborted += 1
        return aborted
