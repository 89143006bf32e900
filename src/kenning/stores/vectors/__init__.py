"""Dense vector search behind the :class:`VectorIndex` protocol.

``FaissVectorIndex`` is imported lazily: faiss is the optional ``index`` extra, and code
that only needs the protocol (or a pgvector implementation) must not require it.
"""

from typing import TYPE_CHECKING

from kenning.stores.vectors.protocol import VectorHit, VectorIndex

if TYPE_CHECKING:
    from kenning.stores.vectors.faiss_index import FaissVectorIndex, NamespaceStats

__all__ = ["FaissVectorIndex", "NamespaceStats", "VectorHit", "VectorIndex"]


def __getattr__(name: str) -> object:
    if name in {"FaissVectorIndex", "NamespaceStats"}:
        from kenning.stores.vectors import faiss_index

        return getattr(faiss_index, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
