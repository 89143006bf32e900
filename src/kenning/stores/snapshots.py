"""What an in-memory index that follows the index log persists: a snapshot and its mark."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Snapshotted(Protocol):
    """An index that saves snapshots together with the index-log position they include."""

    def save(self, mark: int | None = None) -> None:
        """Persist pending changes durably (a no-op for stores that write through).

        ``mark``, when given, is recorded with them: the index-log position that what is
        saved includes (see :mod:`kenning.stores.index_log`). It is never recorded ahead
        of the data, so a crash can only leave a mark older than the saved state.
        """
        ...

    def saved_mark(self) -> int | None:
        """The mark recorded by the last ``save(mark)``, also by an earlier process.

        ``None`` when nothing was saved with a mark (or nothing is persistent): the index
        follower then rebuilds the index from the database.
        """
        ...

    def clear(self) -> None:
        """Remove every entry of every namespace and any saved state (before a rebuild)."""
        ...
