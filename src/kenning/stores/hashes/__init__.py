"""Binary fingerprint search behind the :class:`HashIndex` protocol.

``FaissBinaryHashIndex`` is imported lazily: faiss is the optional ``index`` extra.
"""

from typing import TYPE_CHECKING

from kenning.stores.hashes.protocol import HashHit, HashIndex

if TYPE_CHECKING:
    from kenning.stores.hashes.faiss_binary import FaissBinaryHashIndex

__all__ = ["FaissBinaryHashIndex", "HashHit", "HashIndex"]


def __getattr__(name: str) -> object:
    if name == "FaissBinaryHashIndex":
        from kenning.stores.hashes.faiss_binary import FaissBinaryHashIndex

        return FaissBinaryHashIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
