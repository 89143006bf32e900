"""The one owner of a blob's lifetime: hold under a lock, release, collect after a grace.

Blob bytes are content-addressed and shared: assets of any tenant with the same bytes,
and derived blobs (thumbnails), point at one stored object. Nobody deletes bytes
directly; instead:

* a writer (ingest, a stage writing a derived blob) puts the bytes, then :func:`hold` s
  the key inside the transaction that writes its reference row: the ``blob_ref`` row is
  upserted (which locks it and clears ``released_at``) and, should the bytes have been
  collected in between, they are put again under that lock;
* whoever removes a reference (an asset delete, a stage replacing its thumbnail)
  :func:`release` s the key in its transaction (``released_at = now``);
* the :class:`BlobCollector` takes keys released longer ago than the grace period,
  locks their rows, keeps those that an asset or derived blob still references, and
  deletes the bytes and the rows of the rest before it commits. Bytes with no row (a
  crash between put and commit) are registered as released at the grace cutoff, and
  abandoned temporary files go too.

"Still referenced?" and "delete the bytes" happen under the row lock that every writer
takes before it commits a reference, so a delete racing an ingest of the same bytes, in
any tenant and with any grace, can never destroy bytes the ingest is about to reference.
The grace only spares work: bytes put moments ago (an ingest between its put and its
commit) are not taken just to be put again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from kenning.stores.blobs.protocol import BlobStore
from kenning.stores.metadata import Database
from kenning.stores.metadata.database import insert_ignore
from kenning.stores.metadata.tables import Asset, BlobRef, DerivedBlob, utcnow

log = logging.getLogger(__name__)


class BlobMissing(LookupError):
    """A writer holds a key whose bytes are gone and it has no bytes to put again."""


def hold(s: Session, blobs: BlobStore, key: str, data: bytes | None = None) -> None:
    """Pin ``key`` for a reference the caller's transaction is writing.

    Call inside the write transaction that commits the reference row, after putting the
    bytes. ``data`` re-puts them if the collector took them meanwhile.
    """
    insert_ignore(s, BlobRef, [{"key": key, "created_at": utcnow(), "released_at": None}],
                  update={"released_at": None}, on=["key"])
    if not blobs.exists(key):
        if data is None:
            raise BlobMissing(key)
        blobs.put(data)


def hold_many(s: Session, blobs: BlobStore, items: Sequence[tuple[str, bytes | None]]) -> None:
    """:func:`hold` for many keys: one statement pins them all (in key order, so two
    writers lock rows in the same order), then bytes the collector took meanwhile are
    put again (``BlobMissing`` for one without bytes)."""
    if not items:
        return
    data = dict(items)
    now = utcnow()
    insert_ignore(s, BlobRef, [{"key": key, "created_at": now, "released_at": None}
                               for key in sorted(data)],
                  update={"released_at": None}, on=["key"])
    gone = [key for key in sorted(data) if not blobs.exists(key)]
    if missing := [key for key in gone if data[key] is None]:
        raise BlobMissing(missing[0])
    blobs.put_many([data[key] for key in gone])  # type: ignore[misc]


def release(s: Session, keys: Iterable[str]) -> None:
    """Mark ``keys`` as possibly unreferenced (the collector decides after the grace)."""
    chosen = sorted(set(keys))
    if chosen:
        s.execute(
            update(BlobRef).where(BlobRef.key.in_(chosen)).values(released_at=utcnow())
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True)
class Collected:
    deleted: int
    kept: int
    orphans_registered: int
    temp_removed: int


class BlobCollector:
    """Deletes the bytes of released, unreferenced blobs once the grace period is over."""

    def __init__(self, db: Database, blobs: BlobStore, *, grace_s: float,
                 batch: int = 500) -> None:
        self.db = db
        self.blobs = blobs
        self.grace = timedelta(seconds=grace_s)
        self.batch = batch

    def collect(self) -> Collected:
        """One full pass: register orphans, drop temp files, delete what is unreferenced."""
        cutoff = utcnow() - self.grace
        orphans = self._register_orphans(cutoff)
        temp = self.blobs.sweep_temp(cutoff.timestamp())
        deleted = kept = 0
        while True:
            with self.db.session() as s:
                keys = list(s.scalars(
                    select(BlobRef.key)
                    .where(BlobRef.released_at.is_not(None), BlobRef.released_at <= cutoff)
                    .order_by(BlobRef.key).limit(self.batch)
                    .with_for_update(skip_locked=True)
                ))
                if not keys:
                    break
                used = set(s.scalars(select(Asset.sha256).where(Asset.sha256.in_(keys))))
                used |= set(s.scalars(
                    select(DerivedBlob.blob_key).where(DerivedBlob.blob_key.in_(keys))
                ))
                gone = [k for k in keys if k not in used]
                if used:
                    s.execute(update(BlobRef).where(BlobRef.key.in_(sorted(used)))
                              .values(released_at=None)
                              .execution_options(synchronize_session=False))
                # Bytes go while the rows are locked; a crash before commit leaves rows
                # whose bytes are gone, which the next pass simply deletes.
                for key in gone:
                    self.blobs.delete(key)
                if gone:
                    s.execute(delete(BlobRef).where(BlobRef.key.in_(gone))
                              .execution_options(synchronize_session=False))
            deleted += len(gone)
            kept += len(used)
            if len(keys) < self.batch:
                break
        result = Collected(deleted, kept, orphans, temp)
        if deleted or orphans or temp:
            log.info("blobs collected", extra=result.__dict__)
        return result

    def _register_orphans(self, cutoff: datetime) -> int:
        """Give stored bytes without a row (a crash before commit) a released row."""
        registered = 0
        keys = self.blobs.scan(cutoff.timestamp())
        while chunk := list(islice(keys, self.batch)):
            with self.db.session() as s:
                known = set(s.scalars(select(BlobRef.key).where(BlobRef.key.in_(chunk))))
                new = [k for k in chunk if k not in known]
                insert_ignore(s, BlobRef, [
                    {"key": k, "created_at": utcnow(), "released_at": cutoff} for k in new
                ])
            registered += len(new)
        return registered
