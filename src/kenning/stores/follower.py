"""Keeps one process's vector, hash and keyword indexes in line with the index log.

The follower is the only writer of the indexes (with the rebuild it runs itself). It
reads :mod:`kenning.stores.index_log` entries past its position, reads the rows the adds
name, applies them one call per namespace, and moves its marks.

Marks. Each index has a mark: every entry up to it is applied. The vector and hash marks
live in memory and are written with their snapshots (``save(mark)``), after the data, so
a snapshot's mark is never past what it holds; at start the follower loads the snapshots
and replays the log from their marks. The keyword index keeps its mark inside its own
database, changed in the same transaction as the documents and only if nobody moved it
meanwhile, so two processes following one keyword file never move it backwards. A mark
alone (entries of other indexes passed, no document changed) is written only once it lags
``keyword_mark_lag`` entries, or at a snapshot: a keyword commit can cost tens of
milliseconds (tantivy fsyncs and merges), and a search that catches up should not pay it
for vector entries. A lagging mark is safe: it only means replaying (idempotently) more
entries after a restart.

Holes (PostgreSQL). Sequence numbers are drawn at insert and become visible at commit,
so seq 12 can be visible while seq 11 is not yet. Entries past a hole are applied at
once, but no mark moves past the hole until it is closed: the entry appears (and is
applied), or every transaction that could still commit it has ended (``horizon``), or
``gap_timeout_s`` passes (a warning: something held a write transaction that long).
SQLite commits in seq order, so a hole there is always a truncated stretch.

Snapshots and truncation. :meth:`IndexFollower.snapshot` saves the vector and hash
indexes with their marks, then truncates the log below the lowest mark this process has
persisted (the keyword mark included) and older than ``retention_s``. A follower whose
mark is below a truncation (its snapshot is too old, or another process truncated while
it lagged) finds out from the truncation marker and rebuilds from the tables, reading
the log's top *before* the scan: entries after it are replayed, which is idempotent.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np
from sqlalchemy import select

from kenning.stores import index_log
from kenning.stores.hashes.protocol import HashIndex
from kenning.stores.index_log import KINDS, MARKER, LogEntry
from kenning.stores.keyword.protocol import KeywordDoc, KeywordIndex
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Embedding, Fingerprint, Segment, utcnow
from kenning.stores.namespaces import hash_namespace, vector_namespace
from kenning.stores.sync import matchable, rebuild_indexes
from kenning.stores.vectors.protocol import VectorIndex

__all__ = ["IndexFollower"]

log = logging.getLogger(__name__)

_IN_CHUNK = 1000  # ids per IN (...) list when reading the rows of adds


@dataclass(frozen=True)
class _Gap:
    """Seqs ``lo..hi`` not seen yet, first seen at ``seen``; ``horizon``: see above."""

    lo: int
    hi: int
    seen: float
    horizon: int | None
    closable: bool = False
    """Checked after the horizon passed (or too old): absent now means absent for good."""


class IndexFollower:
    """Applies the index log to ``vectors``, ``hashes`` and ``keyword``; thread-safe.

    Args:
        db: the metadata store holding the log and the rows.
        batch: log entries read and applied per step.
        gap_timeout_s: a hole in the sequence is skipped after this long even if a
            transaction that may fill it still runs (PostgreSQL).
        retention_s: the log is truncated only past entries at least this old.
        snapshot_entries: :meth:`maintain` snapshots after this many applied entries...
        snapshot_interval_s: ...or this long after the last snapshot, if anything changed.
        keyword_mark_lag: a keyword mark with no document change is written once it lags
            this many entries (0: always).
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        db: Database,
        vectors: VectorIndex,
        hashes: HashIndex,
        keyword: KeywordIndex,
        *,
        batch: int = 5000,
        gap_timeout_s: float = 300.0,
        retention_s: float = 3600.0,
        snapshot_entries: int = 100_000,
        snapshot_interval_s: float = 600.0,
        keyword_mark_lag: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db, self.vectors, self.hashes, self.keyword = db, vectors, hashes, keyword
        self.batch = batch
        self.gap_timeout_s = gap_timeout_s
        self.retention_s = retention_s
        self.snapshot_entries = snapshot_entries
        self.snapshot_interval_s = snapshot_interval_s
        self.keyword_mark_lag = keyword_mark_lag
        self.clock = clock
        self._lock = threading.RLock()
        self._loaded = False
        self._floor = dict.fromkeys(KINDS, 0)  # entries <= floor are in that index already
        self._read_to = 0  # every seq <= this was read, or is in a gap
        self._read_at: int | None = None  # the database's commit counter at that read
        self._gaps: list[_Gap] = []
        self._unsaved = 0  # entries read since the last snapshot
        self._saved_at = clock()
        self._rebuilds = 0
        self._rebuilt_unsaved = False  # a rebuild's result is not on disk yet
        self._owners: dict[int, tuple[int, str, str]] | None = None  # see owners()

    # --- public ------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` ran: the indexes follow the log from then on."""
        return self._loaded

    def marks(self) -> dict[str, int]:
        """Each index's mark: every log entry up to it is applied."""
        with self._lock:
            return {kind: self._mark(kind) for kind in KINDS}

    def load(self) -> dict[str, int]:
        """Load the snapshots (or rebuild from the tables), then catch up; once a process.

        Returns counts for the start-up log: ``rebuilt`` (rebuilds from the tables; 0 when
        the snapshots served), ``vectors`` and ``hashes`` read by a rebuild, ``applied``
        log entries, keyword documents of an older format ``refreshed`` and the lowest
        ``mark``.
        """
        with self._lock:
            if self._loaded:
                return {"rebuilt": 0, "applied": self._catch_up(), "mark": self._low_mark()}
            with self.db.session(write=False) as s:
                newest = index_log.top(s)
            counts, rebuilds = {}, self._rebuilds
            v, h = self.vectors.saved_mark(), self.hashes.saved_mark()
            if v is None or h is None or max(v, h) > newest:
                if (v or 0) > newest or (h or 0) > newest:
                    log.warning("index snapshot is ahead of the database's log, rebuilding",
                                extra={"marks": (v, h), "log_top": newest})
                counts.update(self._rebuild())
            else:
                self._floor["vector"], self._floor["hash"] = v, h
            self._floor["keyword"] = self._keyword_floor(newest)
            self._read_to = min(self._floor.values())
            self._read_at = None
            self._gaps = []
            self._loaded = True
            counts["applied"] = self._catch_up()
            counts["refreshed"] = self._refresh_keyword()
            counts["rebuilt"] = self._rebuilds - rebuilds
            if self._rebuilt_unsaved:
                self._save()  # the next start loads this instead of rebuilding again
            counts["mark"] = self._low_mark()
            return counts

    def catch_up(self, *, load: bool = True) -> int:
        """Apply every log entry committed so far; return how many were read.

        Readers call it before they query, so what committed before a search is found by
        it. Without :meth:`load` first it loads (``load=True``) or does nothing: a
        process that never searches need not hold indexes at all.
        """
        with self._lock:
            if not self._loaded:
                return self.load()["applied"] if load else 0
            return self._catch_up()

    def owners(self, ids: Iterable[int]) -> dict[int, tuple[int, str, str]]:
        """The segment, asset and tenant of each of ``ids`` (segment-level embedding ids,
        as the vector index returns them) that the follower knows; an unknown id is left
        out, for the caller to look up.

        A mirror of the embedding table's owner columns, read from it on first use (a
        process that never searches never holds it) and then kept by every vector entry
        applied, in the same step as the vector index: an id the index returns after a
        catch-up has its owner here. About 270 bytes per vector in memory (a dict of
        ints and asset-id strings; tenant ids are shared): 267 MB measured for a
        million, beside the vector index's 3.4 GB.
        """
        owners = self._owners
        if owners is None:
            with self._lock:
                if self._owners is None:
                    self._owners = self._read_owners()
                owners = self._owners
        get = owners.get
        return {i: found for i in ids if (found := get(i)) is not None}

    def maintain(self) -> None:
        """The background step: catch up, and snapshot when enough changed or time passed."""
        with self._lock:
            if not self._loaded:
                return
            self._catch_up()
            due = self._rebuilt_unsaved or self._unsaved >= self.snapshot_entries or (
                self._unsaved > 0 and self.clock() - self._saved_at >= self.snapshot_interval_s)
        if due:
            self.snapshot()

    def snapshot(self) -> int:
        """Save the vector and hash indexes with their marks, then truncate the log.

        Returns the highest seq truncated (0: none). The log is truncated only up to the
        lowest mark that this process has persisted, keyword mark included; while any
        index is memory-only (no saved mark) nothing is truncated.
        """
        with self._lock:
            if not self._loaded:
                return 0
            self._save()
            self._apply_keyword([], self._read_to, lazy=False)
            persisted = [self.vectors.saved_mark(), self.hashes.saved_mark()]
        if persisted[0] is None or persisted[1] is None:
            return 0
        low = min(persisted[0], persisted[1], self.keyword.log_mark())
        older = utcnow() - timedelta(seconds=self.retention_s)
        cut = index_log.truncate(self.db, low, older_than=older)
        if cut:
            log.info("index log truncated", extra={"upto": cut})
        return cut

    def close(self) -> None:
        """Catch up and snapshot one last time (at shutdown)."""
        with self._lock:
            if self._loaded:
                self._catch_up()
        if self._loaded:
            self.snapshot()

    # --- marks and gaps ----------------------------------------------------------------
    def _contiguous(self, read_to: int | None = None) -> int:
        position = self._read_to if read_to is None else read_to
        return min([g.lo - 1 for g in self._gaps] + [position])

    def _mark(self, kind: str, read_to: int | None = None) -> int:
        return max(self._floor[kind], self._contiguous(read_to))

    def _low_mark(self) -> int:
        return min(self._mark(kind) for kind in KINDS)

    def _save(self) -> None:
        self.vectors.save(mark=self._mark("vector"))
        self.hashes.save(mark=self._mark("hash"))
        self._unsaved, self._saved_at, self._rebuilt_unsaved = 0, self.clock(), False

    def _note_holes(self, entries: Sequence[LogEntry], horizon: int | None) -> None:
        expected, now = self._read_to + 1, self.clock()
        for entry in entries:
            if entry.seq > expected:
                self._gaps.append(_Gap(expected, entry.seq - 1, now, horizon))
            expected = entry.seq + 1

    def _fill_gaps(self) -> int:
        """Read what appeared inside the gaps, apply it, and flag the gaps now closable."""
        with self.db.session(write=False) as s:
            oldest = index_log.oldest_running(s)  # before the reads: see ``horizon``
            found: list[LogEntry] = []
            for gap in self._gaps:
                after = gap.lo - 1
                while page := index_log.read(s, after=after, upto=gap.hi, limit=self.batch):
                    found += page
                    after = page[-1].seq
        now, gaps = self.clock(), []
        for gap in self._gaps:
            closable = (
                oldest is None
                or (gap.horizon is not None and gap.horizon <= oldest)
                or now - gap.seen >= self.gap_timeout_s
            )
            gaps += _split(replace(gap, closable=closable), [e.seq for e in found])
        self._gaps = gaps
        if found:
            self._apply(sorted(found, key=lambda e: e.seq), read_to=self._read_to)
        return len(found)

    def _close_gaps(self, *, all_: bool) -> None:
        for gap in self._gaps:
            if (all_ or gap.closable) and self.clock() - gap.seen >= self.gap_timeout_s:
                log.warning("index log: seqs %s-%s never committed, skipped after %.0f s",
                            gap.lo, gap.hi, self.gap_timeout_s)
        self._gaps = [] if all_ else [g for g in self._gaps if not g.closable]

    # --- catching up -------------------------------------------------------------------
    def _catch_up(self) -> int:
        # SQLite: nothing committed since the last full read (and no gap waiting to
        # close) means nothing to read; every search starts here.
        counter = self.db.commit_counter()
        if counter is not None and counter == self._read_at and not self._gaps:
            return 0
        seen = self._catch_up_log()
        self._read_at = counter
        return seen

    def _catch_up_log(self) -> int:
        seen = self._fill_gaps() if self._gaps else 0
        while True:
            with self.db.reading() as conn:
                entries = index_log.read(conn, after=self._read_to, limit=self.batch)
                holes = bool(entries) and entries[-1].seq - self._read_to > len(entries)
                mark = index_log.horizon(conn) if holes else None
            if not entries:
                break
            self._note_holes(entries, mark)
            self._apply(entries, read_to=entries[-1].seq)
            seen += len(entries)
            if len(entries) < self.batch:
                break
        # Every entry committed before this point was read, truncation markers included:
        # SQLite holes are truncated stretches (a marker said whether that lost anything);
        # PostgreSQL ones close once checked after their horizon.
        self._close_gaps(all_=self.db.dialect != "postgresql")
        self._apply_keyword([], self._read_to)  # moves the keyword mark past closed gaps
        self._unsaved += seen
        return seen

    def _apply(self, entries: Sequence[LogEntry], *, read_to: int) -> None:
        """Apply ``entries`` (in seq order); ``read_to`` becomes the reader's position."""
        lost: set[str] = set()
        vector_ops: dict[tuple[str, int], str] = {}
        hash_ops: dict[tuple[str, int], str] = {}
        keyword: list[LogEntry] = []
        for e in entries:
            if e.kind == MARKER:
                lost |= self._lost_to(e)
            elif e.kind not in self._floor:
                log.warning("index log: unknown kind %r at seq %s, skipped", e.kind, e.seq)
            elif e.seq <= self._floor[e.kind]:
                continue
            elif e.kind == "vector":
                vector_ops[(e.namespace, e.item_id)] = e.op  # the last op on an item wins
            elif e.kind == "hash":
                hash_ops[(e.namespace, e.item_id)] = e.op
            else:
                keyword.append(e)
        self._apply_vectors(vector_ops)
        self._apply_hashes(hash_ops)
        self._apply_keyword(keyword, read_to)
        self._read_to = max(self._read_to, read_to)
        if lost & {"vector", "hash"}:
            log.warning("index log truncated past the vector/hash marks, rebuilding")
            self._rebuild()
        if "keyword" in lost:
            self._keyword_lost()

    def _lost_to(self, marker: LogEntry) -> set[str]:
        """Indexes whose position before ``marker`` is below its cut-off."""
        before = min([g.lo - 1 for g in self._gaps if g.lo < marker.seq] + [marker.seq - 1])
        return {kind for kind in KINDS if max(self._floor[kind], before) < marker.item_id}

    def _apply_vectors(self, ops: dict[tuple[str, int], str]) -> None:
        removes, adds = _split_ops(ops)
        owners = self._owners
        for namespace, ids in removes.items():
            self.vectors.remove(namespace, ids)
            if owners is not None:
                for emb_id in ids:
                    owners.pop(emb_id, None)
        groups: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        for chunk in _chunks(list(adds)):
            with self.db.session(write=False) as s:
                rows = s.execute(select(
                    Embedding.id, Embedding.tenant_id, Embedding.space, Embedding.segment_id,
                    Embedding.asset_id, Embedding.vector).where(Embedding.id.in_(chunk))).all()
            for emb_id, tenant, space, segment_id, asset_id, raw in rows:
                namespace = vector_namespace(tenant, space, asset_level=segment_id is None)
                if namespace in adds[emb_id]:
                    groups[namespace][0].append(emb_id)
                    groups[namespace][1].append(np.frombuffer(raw, dtype=np.float32))
                    if owners is not None and segment_id is not None:
                        # before the index has it
                        owners[emb_id] = (segment_id, asset_id, sys.intern(tenant))
        for namespace, (ids, vectors) in groups.items():
            try:
                self.vectors.add(namespace, ids, np.vstack(vectors))
            except ValueError as exc:  # one bad row must not stop every later search
                log.error("vectors not indexed", extra={"namespace": namespace,
                                                        "error": repr(exc)})

    def _apply_hashes(self, ops: dict[tuple[str, int], str]) -> None:
        removes, adds = _split_ops(ops)
        for namespace, ids in removes.items():
            self.hashes.remove(namespace, ids)
        groups: dict[str, tuple[list[int], list[bytes]]] = defaultdict(lambda: ([], []))
        for chunk in _chunks(list(adds)):
            with self.db.session(write=False) as s:
                rows = s.execute(select(
                    Fingerprint.id, Fingerprint.tenant_id, Fingerprint.algorithm,
                    Fingerprint.bits, Fingerprint.quality).where(Fingerprint.id.in_(chunk))).all()
            for fp_id, tenant, algorithm, bits, quality in rows:
                namespace = hash_namespace(tenant, algorithm)
                if namespace in adds[fp_id] and matchable(quality):  # low quality: never matched
                    groups[namespace][0].append(fp_id)
                    groups[namespace][1].append(bits)
        for namespace, (ids, codes) in groups.items():
            try:
                self.hashes.add(namespace, ids, codes)
            except ValueError as exc:
                log.error("codes not indexed", extra={"namespace": namespace,
                                                      "error": repr(exc)})

    def _apply_keyword(self, entries: Sequence[LogEntry], read_to: int, *,
                       lazy: bool = True) -> None:
        """Apply keyword entries and move the keyword mark, compare-and-set.

        When another process moved the mark meanwhile, only the entries past its new
        value are applied, then the mark is set again; documents are keyed by segment id
        alone, so the last op on an id wins whatever its tenant. With no document to
        change, a ``lazy`` mark moves only once it lags ``keyword_mark_lag`` entries.
        """
        while True:
            expect = self._floor["keyword"]
            last: dict[int, LogEntry] = {}
            for e in entries:
                if e.seq > expect:
                    last[e.item_id] = e
            removes = [i for i, e in last.items() if e.op == "remove"]
            docs = self._keyword_docs({i: e.namespace for i, e in last.items()
                                       if e.op == "add"})
            mark = self._mark("keyword", read_to)
            if not removes and not docs and (
                    mark == expect or (lazy and mark - expect < self.keyword_mark_lag)):
                return
            if self.keyword.apply_log(delete=removes, upsert=docs, expect=expect, mark=mark):
                self._floor["keyword"] = mark
                return
            self._floor["keyword"] = self.keyword.log_mark()

    def _keyword_docs(self, adds: dict[int, str | None]) -> list[KeywordDoc]:
        """The documents of segments ``adds`` (id -> the tenant its entry names; ``None``:
        any). The asset's title goes with its first segment (``seq`` 0) only: one
        document per asset is lifted by a title word, not every chunk of it."""
        docs = []
        for chunk in _chunks(list(adds)):
            with self.db.session(write=False) as s:
                rows = s.execute(
                    select(Segment.id, Segment.tenant_id, Segment.asset_id, Segment.text,
                           Segment.seq, Asset.title)
                    .outerjoin(Asset, Asset.id == Segment.asset_id)
                    .where(Segment.id.in_(chunk))).all()
            docs += [KeywordDoc(seg_id, tenant, asset_id, body, title if seq == 0 else None)
                     for seg_id, tenant, asset_id, body, seq, title in rows
                     if adds[seg_id] in (None, tenant) and body and body.strip()]
        return docs

    def _refresh_keyword(self) -> int:
        """Read again the keyword documents of an older format (the index lists them:
        ``stale``) and write them as they are now, title included; a document whose
        segment is gone or empty goes. Compare-and-set on the keyword mark, so a
        concurrent follower's changes are never undone. Returns how many were read."""
        done, after = 0, 0
        while ids := self.keyword.stale(after, self.batch):
            after = ids[-1]
            while True:
                expect = self.keyword.log_mark()
                docs = self._keyword_docs(dict.fromkeys(ids))
                found = {d.id for d in docs}
                gone = [i for i in ids if i not in found]
                if self.keyword.apply_log(delete=gone, upsert=docs, expect=expect,
                                          mark=expect):
                    break
            done += len(ids)
        if done:
            log.info("keyword documents of an older format indexed again",
                     extra={"documents": done})
        return done

    # --- recovery ----------------------------------------------------------------------
    def _read_owners(self) -> dict[int, tuple[int, str, str]]:
        """Every segment-level embedding's segment, asset and tenant (one scan of a
        covering index).

        Read at any point while the follower holds its lock: rows committed past its
        position are here early (their adds set the same values), rows deleted past it
        are missing early (the index may still return them: the caller's lookup then
        finds them gone, as it would without this map)."""
        owners: dict[int, tuple[int, str, str]] = {}
        with self.db.reading() as conn:
            result = conn.execute(select(Embedding.id, Embedding.segment_id, Embedding.asset_id,
                                         Embedding.tenant_id)
                                  .where(Embedding.segment_id.is_not(None)))
            for emb_id, segment_id, asset_id, tenant in result:
                if segment_id is not None:  # the query's condition
                    owners[emb_id] = (segment_id, asset_id, sys.intern(tenant))
        return owners

    def _rebuild(self) -> dict[str, int]:
        """Vector and hash indexes from the tables; their marks become the log's top,
        read before the scan (after every transaction that may hold a lower seq ended)."""
        started = self.clock()
        self._owners = None  # entries may have been lost: read again on next use
        self.vectors.clear()
        self.hashes.clear()
        mark = self._settled_top()
        counts = rebuild_indexes(self.db, self.vectors, self.hashes, batch=self.batch)
        self._floor["vector"] = self._floor["hash"] = mark
        self._rebuilds += 1
        self._rebuilt_unsaved = True
        log.info("vector and hash indexes rebuilt from the database",
                 extra={**counts, "mark": mark, "seconds": round(self.clock() - started, 3)})
        return counts

    def _settled_top(self) -> int:
        with self.db.session(write=False) as s:
            newest, horizon = index_log.top(s), index_log.horizon(s)
        deadline = self.clock() + self.gap_timeout_s
        while horizon is not None:
            with self.db.session(write=False) as s:
                oldest = index_log.oldest_running(s)
            if oldest is None or oldest >= horizon:
                break
            if self.clock() > deadline:
                log.warning("index rebuild: a write transaction older than %.0f s still runs",
                            self.gap_timeout_s)
                break
            time.sleep(0.02)
        return newest

    def _keyword_floor(self, newest: int) -> int:
        """The keyword mark at start; reset when it belongs to another database's log."""
        mark = self.keyword.log_mark()
        if mark > newest:
            log.warning("keyword index is ahead of the database's log: replaying the log",
                        extra={"mark": mark, "log_top": newest})
            self.keyword.apply_log(delete=[], upsert=[], expect=mark, mark=0)
            return self.keyword.log_mark()
        return mark

    def _keyword_lost(self) -> None:
        """The log was truncated past the keyword mark (the keyword file was lost, or
        another process truncated while this one lagged). Which segments were documents
        is recorded nowhere else, so lost additions cannot be recovered here (re-run the
        stages that index keywords); lost removals can: documents without rows go."""
        log.error("index log truncated past the keyword index's mark: documents added in "
                  "the truncated entries are missing until their stages run again")
        after = 0
        while ids := self.keyword.ids(after, self.batch):
            with self.db.session(write=False) as s:
                alive = set(s.scalars(select(Segment.id).where(Segment.id.in_(ids))))
            dead = [i for i in ids if i not in alive]
            if dead:
                self.keyword.delete(dead)
            after = ids[-1]


def _split_ops(
    ops: dict[tuple[str, int], str],
) -> tuple[dict[str, list[int]], dict[int, set[str]]]:
    """Removals by namespace; additions as id -> namespaces its entries name."""
    removes: dict[str, list[int]] = defaultdict(list)
    adds: dict[int, set[str]] = defaultdict(set)
    for (namespace, item), op in ops.items():
        if op == "remove":
            removes[namespace].append(item)
        else:
            adds[item].add(namespace)
    return removes, adds


def _split(gap: _Gap, seqs: Iterable[int]) -> list[_Gap]:
    """``gap`` minus ``seqs``, as the runs of seqs still missing."""
    out, lo = [], gap.lo
    for seq in sorted(s for s in seqs if gap.lo <= s <= gap.hi):
        if seq > lo:
            out.append(replace(gap, lo=lo, hi=seq - 1))
        lo = seq + 1
    if lo <= gap.hi:
        out.append(replace(gap, lo=lo))
    return out


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start:start + _IN_CHUNK]
