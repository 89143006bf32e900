"""Blob storage: content-addressed bytes behind the :class:`BlobStore` protocol."""

from kenning.stores.blobs.local import LocalBlobStore
from kenning.stores.blobs.protocol import BlobStore, InvalidBlobKey, validate_key

__all__ = ["BlobStore", "InvalidBlobKey", "LocalBlobStore", "validate_key"]
