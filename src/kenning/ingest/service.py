"""Ingest: validate, content-address, store blobs, write assets + jobs in one transaction.

One code path for one item and for many: :meth:`IngestService.ingest_many` takes a
batch, and :meth:`~IngestService.ingest_bytes` (with ``ingest_text`` and ``ingest_url``)
is its one-item case. For a batch:

1. Each item alone: metadata and callback checks, the URL fetch, the sha256. A refused
   item gets its own error (the code the single path raises); the others go on.
2. Duplicates of the tenant's assets: one plain read for the batch, which also reads
   the load counters; only hits are confirmed under the write lock.
3. Backpressure, once for the batch (:mod:`kenning.ingest.backpressure`): admitted or
   refused as a whole, before anything is decoded.
4. Each remaining item is validated (sniffed, bounded, decoded); a copy of an earlier
   item of the batch resolves to it.
5. The accepted bytes are put with one ``put_many`` (folder fsyncs grouped), before the
   transaction (content-addressed, so a retry or a concurrent duplicate writes the same
   file), and held inside it (:mod:`kenning.stores.blobs.lifetime`).
6. ONE write transaction (:mod:`kenning.ingest.writer`): hits confirmed again under
   the lock, then assets, jobs, stage runs, audit events, blob holds and the tenant's
   load counter. If it loses a race (IntegrityError: the same bytes committed
   meanwhile), the items are written one by one instead, so nothing is lost.
7. After the commit, one ``dispatcher.stages`` call for every ready run (the reconciler
   re-sends them if the process dies in between).

Refused input leaves no trace: validation runs before anything is stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import func, select

from kenning.errors import BadInput, KenningError
from kenning.ingest.backpressure import check_admission, read_load
from kenning.ingest.items import (
    IngestItem,
    IngestRequest,
    IngestResult,
    ItemOutcome,
    Staged,
    attempt,
)
from kenning.ingest.metadata import validate_metadata
from kenning.ingest.urlfetch import check_url_allowed, fetch_url
from kenning.ingest.validate import Validated, validate_upload
from kenning.ingest.writer import BatchWriter, find_assets
from kenning.media.kinds import MediaKind
from kenning.media.sniff import sniff
from kenning.observability.metrics import INGESTED, REJECTED
from kenning.pipeline.registry import ProcessorRegistry
from kenning.principal import Principal
from kenning.queue.dispatch import Dispatcher
from kenning.settings import Settings
from kenning.stores.bundle import Stores
from kenning.stores.metadata.tables import Asset, StageRun

__all__ = ["IngestItem", "IngestRequest", "IngestResult", "IngestService", "ItemOutcome"]


class IngestService:
    def __init__(
        self,
        stores: Stores,
        registry: ProcessorRegistry,
        dispatcher: Dispatcher,
        settings: Settings,
    ) -> None:
        self.stores = stores
        self.registry = registry
        self.dispatcher = dispatcher
        self.settings = settings
        self.writer = BatchWriter(stores, registry)

    # --- one item: the batch of one -------------------------------------------------------
    def ingest_bytes(
        self,
        who: Principal,
        data: bytes,
        req: IngestRequest,
        *,
        source: str = "upload",
        source_url: str | None = None,
        force_text: bool = False,
    ) -> IngestResult:
        """Accept one item; the same bytes twice in a tenant return the first asset."""
        return self._one(who, IngestItem(data, req, source, source_url, force_text))

    def ingest_text(self, who: Principal, text: str, req: IngestRequest) -> IngestResult:
        """Accept text given inline; the same limits as an uploaded text file apply."""
        return self._one(who, IngestItem.text(text, req))

    def ingest_url(self, who: Principal, url: str, req: IngestRequest) -> IngestResult:
        """Fetch ``url`` (SSRF-guarded) and accept what it answers."""
        return self._one(who, IngestItem.url(url, req))

    def _one(self, who: Principal, item: IngestItem) -> IngestResult:
        (outcome,) = self.ingest_many(who, [item])
        if isinstance(outcome, KenningError):
            raise outcome
        return outcome

    # --- many items -----------------------------------------------------------------------
    def ingest_many(self, who: Principal, items: Sequence[IngestItem]) -> list[ItemOutcome]:
        """Accept a batch: one outcome per item, in input order (see the module docstring).

        Items are checked independently; the accepted ones are written in one
        transaction. Content is handled in groups of about ``max_upload_bytes`` (what
        one multipart request can carry, so an uploaded batch is one group) so that a
        batch of URLs is never held in memory whole; each group is its own transaction.
        Duplicates inside the batch resolve to the first.

        Raises:
            Backpressure: the tenant is over its bound; nothing of the batch was stored.
        """
        outcomes: list[ItemOutcome | None] = [None] * len(items)
        group: list[Staged] = []
        size, admitted = 0, False
        for index, item in enumerate(items):
            got = attempt(self._prepare, index, item)
            if isinstance(got, KenningError):
                outcomes[index] = got
                continue
            group.append(got)
            size += len(got.item.data)
            if size > self.settings.max_upload_bytes:
                admitted = self._ingest_group(who, group, outcomes, admitted)
                group, size = [], 0
        if group:
            self._ingest_group(who, group, outcomes, admitted)
        done = [outcome for outcome in outcomes if outcome is not None]
        assert len(done) == len(items), "every item has an outcome"
        return done

    def _prepare(self, index: int, item: IngestItem) -> Staged:
        """The item's own checks, cheapest first: nothing is fetched for bad metadata."""
        meta = dict(validate_metadata(item.req.metadata, self.settings))
        if item.req.callback_url:
            check_url_allowed(item.req.callback_url, self.settings)
        if item.fetch:
            assert item.source_url is not None
            fetched = fetch_url(item.source_url, self.settings)
            name = item.req.filename or (
                fetched.final_url.rstrip("/").rsplit("/", 1)[-1][:500] or None)
            item = replace(item, data=fetched.data, req=replace(item.req, filename=name),
                           fetch=False)
        return Staged(index, item, hashlib.sha256(item.data).hexdigest(), meta)

    def _ingest_group(
        self, who: Principal, group: list[Staged], outcomes: list[ItemOutcome | None],
        admitted: bool,
    ) -> bool:
        """Steps 2-7 for one group; fills ``outcomes``; returns whether it was admitted.

        The admission is decided once per batch, at its first group with new content,
        before anything of the batch is stored; later groups are admitted with it.
        """
        tenant = who.tenant_id
        # Cheap answers first: a duplicate needs no decode, and a refused tenant should
        # not make the server decode large images for nothing.
        with self.stores.db.session(write=False) as s:
            seen = set(s.scalars(select(Asset.sha256).where(
                Asset.tenant_id == tenant, Asset.sha256.in_({g.sha for g in group}))))
            load = {} if admitted else read_load(s)
        if seen:
            # Only a hit costs a write transaction: under the write lock, an asset being
            # deleted is waited for, so a duplicate never points at a deleted asset.
            with self.stores.db.session() as s:
                found = find_assets(s, tenant, seen)
            for g in group:
                if g.sha in found:
                    outcomes[g.index] = found[g.sha]
                    INGESTED.labels(sniff(g.item.data).kind.value, "duplicate").inc()
        fresh = [g for g in group if outcomes[g.index] is None]
        if not fresh:
            return admitted
        if not admitted:
            try:
                check_admission(load, tenant, self.settings)
            except KenningError as exc:
                REJECTED.labels(exc.code).inc(len(fresh))
                raise
        accepted, copies = self._validate(fresh, outcomes)
        if not accepted:
            return True
        self.stores.blobs.put_many([g.item.data for g in accepted])
        results, ready = self.writer.commit(who, accepted)
        for g in accepted:
            outcome = outcomes[g.index] = results[g.sha]
            if isinstance(outcome, IngestResult):
                assert g.checked is not None
                fate = "duplicate" if outcome.duplicate_of else "new"
                INGESTED.labels(g.checked.kind.value, fate).inc()
        for g, first in copies:
            outcome = outcomes[g.index] = _as_duplicate(results[first.sha])
            if isinstance(outcome, IngestResult):
                assert first.checked is not None
                INGESTED.labels(first.checked.kind.value, "duplicate").inc()
        if ready:
            self.dispatcher.stages(ready)
        return True

    def _validate(
        self, fresh: list[Staged], outcomes: list[ItemOutcome | None]
    ) -> tuple[list[Staged], list[tuple[Staged, Staged]]]:
        """Validate each item; returns those accepted and (copy, first) pairs of repeats.

        A repeat of an accepted item is not decoded again; a repeat of a refused one is
        checked on its own (it may differ in what it claims, e.g. to be text).
        """
        accepted: dict[str, Staged] = {}
        copies: list[tuple[Staged, Staged]] = []
        for g in fresh:
            first = accepted.get(g.sha)
            if first is not None:
                assert first.checked is not None
                if g.item.force_text and first.checked.kind != MediaKind.TEXT:
                    outcomes[g.index] = error = _not_text()
                    REJECTED.labels(error.code).inc()
                else:
                    copies.append((g, first))
                continue
            checked = attempt(self._check, g.item)
            if isinstance(checked, KenningError):
                outcomes[g.index] = checked
            else:
                g.checked = checked
                accepted[g.sha] = g
        return list(accepted.values()), copies

    def _check(self, item: IngestItem) -> Validated:
        checked = validate_upload(item.data, self.settings)
        if item.force_text and checked.kind != MediaKind.TEXT:
            raise _not_text()
        return checked

    # --- load (read by tests, ``Kenning.join`` and operators) -------------------------------
    def load_by_tenant(self) -> dict[str, int]:
        """Unfinished stages per tenant as backpressure sees them (the kept counters)."""
        with self.stores.db.session(write=False) as s:
            return read_load(s)

    def queued_by_tenant(self, states: tuple[str, ...] = ("queued", "running")) -> (
        dict[str, int]
    ):
        """Stage runs in ``states`` per tenant, counted row by row (not per request)."""
        with self.stores.db.session(write=False) as s:
            rows = s.execute(
                select(StageRun.tenant_id, func.count())
                .where(StageRun.state.in_(states))
                .group_by(StageRun.tenant_id)
            )
            return {tenant: int(n) for tenant, n in rows}

    def pending_stages(self, states: tuple[str, ...] = ("queued", "running")) -> int:
        """Stages waiting for or holding a worker, all tenants together."""
        with self.stores.db.session(write=False) as s:
            return int(
                s.scalar(
                    select(func.count()).select_from(StageRun).where(StageRun.state.in_(states))
                )
                or 0
            )

    def unfinished_stages(self) -> int:
        """Stage runs pending, queued or running, counted (``Kenning.join`` waits on it)."""
        return self.pending_stages(("pending", "queued", "running"))


def _not_text() -> BadInput:
    return BadInput("the text field must hold text", code="invalid_text")


def _as_duplicate(outcome: ItemOutcome) -> ItemOutcome:
    """What a later copy of an item in the same batch answers: the first's asset."""
    if isinstance(outcome, KenningError):
        return outcome
    return replace(outcome, duplicate_of=outcome.asset_id)
