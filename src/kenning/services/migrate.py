"""Moving an installation to other stores (``kenning migrate``): every row of every table
and every blob, resumable, verified.

Rows are copied table by table in foreign-key order, in primary-key order, a batch at a
time, with ``INSERT ... ON CONFLICT DO NOTHING``: a run that was interrupted is simply run
again and copies what is missing. Integer id sequences are moved past the copied ids.
Blobs are copied unless the target has them; a blob's key is the sha256 of its bytes, so
the target's put checks every byte. Verification compares, per table, the row count and
a digest of every row in primary-key order (values in a canonical form), and the set of
blobs. The pipeline's state is in the tables (``stage_run``), so queued work resumes on
the target; its indexes are rebuilt from the tables by the first server that starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, func, select, text, tuple_

from kenning.stores.blobs import BlobStore
from kenning.stores.metadata import Database
from kenning.stores.metadata.database import insert_ignore
from kenning.stores.metadata.tables import Base

log = logging.getLogger(__name__)

__all__ = ["MigrationReport", "TableReport", "migrate"]

_BLOB_BATCH_BYTES = 32 << 20


@dataclass
class TableReport:
    name: str
    source_rows: int
    target_rows: int
    copied: int
    source_digest: str
    target_digest: str

    @property
    def ok(self) -> bool:
        return (self.source_rows == self.target_rows
                and self.source_digest == self.target_digest)


@dataclass
class MigrationReport:
    tables: list[TableReport] = field(default_factory=list)
    blobs_source: int = 0
    blobs_copied: int = 0
    blobs_missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and not self.blobs_missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tables": {t.name: {"rows": t.source_rows, "copied": t.copied, "ok": t.ok}
                       for t in self.tables},
            "blobs": {"source": self.blobs_source, "copied": self.blobs_copied,
                      "missing_on_target": self.blobs_missing[:20]},
        }


def migrate(
    source_db: Database, source_blobs: BlobStore, target_db: Database,
    target_blobs: BlobStore | None, *, batch_rows: int = 2_000,
    progress: Callable[[str, int], None] | None = None,
) -> MigrationReport:
    """Copy everything from the source stores to the target ones, then verify.

    ``target_blobs`` None keeps the blobs where they are (only the metadata moves).
    """
    target_db.upgrade()
    report = MigrationReport()
    copied: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        copied[table.name] = _copy_table(source_db, target_db, table, batch_rows)
        if progress:
            progress(table.name, copied[table.name])
    _advance_sequences(target_db)
    if target_blobs is not None:
        report.blobs_source, report.blobs_copied = _copy_blobs(source_blobs, target_blobs)
        if progress:
            progress("blobs", report.blobs_copied)
    for table in Base.metadata.sorted_tables:
        (src_rows, src_digest), (dst_rows, dst_digest) = (
            _digest(source_db, table), _digest(target_db, table))
        report.tables.append(TableReport(table.name, src_rows, dst_rows, copied[table.name],
                                         src_digest, dst_digest))
    if target_blobs is not None:
        report.blobs_missing = [k for k in source_blobs.scan(float("inf"))
                                if not target_blobs.exists(k)]
    return report


def _pk(table: Table) -> list[Any]:
    return list(table.primary_key.columns)


def _pages(db: Database, table: Table, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    """Every row in primary-key order, a page at a time (keyset pagination)."""
    pk = _pk(table)
    last: tuple[Any, ...] | None = None
    while True:
        query = select(table).order_by(*pk).limit(batch_rows)
        if last is not None:
            query = query.where(tuple_(*pk) > tuple_(*last))
        with db.session(write=False) as s:
            rows = [dict(row._mapping) for row in s.connection().execute(query)]
        if not rows:
            return
        yield rows
        last = tuple(rows[-1][c.name] for c in pk)


def _copy_table(source: Database, target: Database, table: Table, batch_rows: int) -> int:
    before = _count(target, table)
    for rows in _pages(source, table, batch_rows):
        with target.session() as s:
            insert_ignore(s, table, rows)
    return _count(target, table) - before


def _count(db: Database, table: Table) -> int:
    with db.session(write=False) as s:
        return int(s.connection().execute(select(func.count()).select_from(table)).scalar()
                   or 0)


def _advance_sequences(db: Database) -> None:
    """PostgreSQL: move each integer id's sequence past the ids copied in."""
    if db.dialect != "postgresql":
        return
    with db.session() as s:
        for table in Base.metadata.sorted_tables:
            pk = _pk(table)
            if len(pk) != 1 or pk[0].autoincrement is not True:
                continue
            column = pk[0].name
            s.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), "
                f"COALESCE((SELECT MAX({column}) FROM {table.name}), 0) + 1, false)"))


def _copy_blobs(source: BlobStore, target: BlobStore) -> tuple[int, int]:
    keys = list(source.scan(float("inf")))
    copied = 0
    batch: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal copied, size
        if batch:
            target.put_many(batch)
            copied += len(batch)
            batch.clear()
            size = 0

    for key in keys:
        if target.exists(key):
            continue
        data = source.get(key)
        if hashlib.sha256(data).hexdigest() != key:
            raise ValueError(f"blob {key} is damaged in the source store")
        batch.append(data)
        size += len(data)
        if size >= _BLOB_BATCH_BYTES:
            flush()
    flush()
    return len(keys), copied


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return hashlib.sha256(bytes(value)).hexdigest()
    return value


def _digest(db: Database, table: Table) -> tuple[int, str]:
    """Rows and a digest of every row, in primary-key order, values in canonical form."""
    digest = hashlib.sha256()
    rows = 0
    names = [c.name for c in table.columns]
    for page in _pages(db, table, 5_000):
        for row in page:
            digest.update(json.dumps([_canonical(row[n]) for n in names], sort_keys=True,
                                     default=str).encode())
            rows += 1
    return rows, digest.hexdigest()
