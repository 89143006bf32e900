"""Clusters of near-duplicates kept as assets arrive, and decisions that stick.

:meth:`MatchingService.run_once` (a periodic job in the serving process) takes ready
assets that are not yet matched, oldest first, asks the similarity service for each
one's near-duplicates (PDQ for images, word shingles for texts, sampled frames aligned
in time for videos; never merely similar texts) at the tenant's thresholds, and, per
tenant in one transaction:

- drops pairs a person rejected and adds pairs a person confirmed, whatever the
  thresholds say; records each pair as an edge (method, score, evidence);
- puts the asset in a cluster: alone (a new cluster, the asset its first seen), in its
  matches' cluster, or merging their clusters (see :mod:`.clustering` for which id
  survives; a merged id resolves to the survivor);
- checks it against the tenant's banks of known items (:mod:`.banks`).

Crash safety: cluster membership is the "matched" marker and is written in the same
transaction as the edges, the clusters, the audit events and the webhook deliveries, so
a crash before the commit leaves the asset unmatched and the next run does it whole
(``Asset.match_pending``, which the run's query seeks, follows membership by trigger in
the same transaction: :func:`.match_clusters.unmatched`);
a delivery row is committed before the broker hears of it, and the reconciler re-sends
pending ones. Concurrency: one writer per tenant (:func:`.match_clusters.lock_tenant`);
matches are looked up before the lock, and an asset another runner matched meanwhile
is skipped.

Deletions: rows go with their asset (foreign keys). Deleting a cluster's first-seen asset
dissolves it (its other members are matched again on the next run, keeping their edges
and verdicts); deleting another member leaves the cluster's size stale, and the next run
recomputes it (the member may have been what held two parts together).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from kenning.errors import BadInput
from kenning.principal import Principal
from kenning.services import match_clusters as mc
from kenning.services.banks import check_banks
from kenning.services.match_views import (
    ClusterPage,
    ClusterView,
    PairView,
    VerdictIn,
    cluster_view,
    list_clusters,
    pair_view,
)
from kenning.services.scope import owned_asset
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.database import insert_ignore
from kenning.stores.metadata.tables import (
    Asset,
    MatchEdge,
    MatchVerdict,
    utcnow,
)

if TYPE_CHECKING:  # similarity imports rejected_with from here: no import cycle at runtime
    from kenning.services.similarity import Match

log = logging.getLogger(__name__)

DuplicateFinder = Callable[[Principal, Sequence[str]], "dict[str, list[Match]]"]
"""``SimilarityService.duplicates_many``: each asset's near-duplicates at the tenant's
thresholds, for a batch of one tenant's assets (those not found are left out)."""
Notify = Callable[[Sequence[str]], None]
"""Sends committed webhook deliveries (``Dispatcher.webhooks``)."""
DUPLICATE_METHODS = frozenset({"pdq", "text_near_duplicate", "video_pdq"})
MATCHER = "system:matching"
"""The actor of what the matcher records (bank hits)."""


def rejected_with(s: Session, tenant_id: str, asset_id: str) -> set[str]:
    """Assets a person said are not the same as ``asset_id``: never proposed again."""
    return _verdict_partners(s, tenant_id, asset_id, mc.DIFFERENT)


def confirmed_with(s: Session, tenant_id: str, asset_id: str) -> set[str]:
    """Assets a person said are the same as ``asset_id``: matched whatever the thresholds."""
    return _verdict_partners(s, tenant_id, asset_id, mc.SAME)


def _verdict_partners(s: Session, tenant_id: str, asset_id: str, verdict: str) -> set[str]:
    rows = s.execute(select(MatchVerdict.asset_a, MatchVerdict.asset_b).where(
        MatchVerdict.tenant_id == tenant_id, MatchVerdict.verdict == verdict,
        or_(MatchVerdict.asset_a == asset_id, MatchVerdict.asset_b == asset_id)))
    return {b if a == asset_id else a for a, b in rows}


@dataclass
class MatchRun:
    """What one :meth:`MatchingService.run_once` did."""

    matched: int = 0
    edges: int = 0
    bank_hits: int = 0
    repaired: int = 0


@dataclass(frozen=True)
class _Placed:
    deliveries: list[str]
    linked: set[str]
    """Assets the placed asset's new edges touch."""


def _linked(s: Session, tenant_id: str, asset_ids: list[str]) -> set[str]:
    """Those of ``asset_ids`` with an edge or a verdict already: not matched alone."""
    if not asset_ids:
        return set()
    out: set[str] = set()
    for table in (MatchEdge, MatchVerdict):
        for column in (table.asset_a, table.asset_b):
            out.update(s.scalars(select(column).where(
                table.tenant_id == tenant_id, column.in_(asset_ids))))
    return out


@dataclass(frozen=True)
class _Neighbour:
    method: str
    score: float
    evidence: dict[str, object]


class MatchingService:
    def __init__(self, db: Database, duplicates: DuplicateFinder, notify: Notify,
                 settings: Settings) -> None:
        self.db = db
        self.duplicates = duplicates
        self.notify = notify
        self.settings = settings

    # --- the matcher ----------------------------------------------------------------------
    def run_once(self, limit: int | None = None) -> MatchRun:
        """Match up to ``limit`` (default ``matching_batch``) ready, unmatched assets and
        recompute clusters that lost a member; safe to run anywhere, any number of times."""
        run = MatchRun()
        limit = limit or self.settings.matching_batch
        with self.db.session(write=False) as s:
            stale = list(s.execute(mc.stale(limit)).tuples())
            pending = list(s.execute(mc.unmatched(limit)).tuples())
        for tenant_id, cluster_id in stale:
            with self.db.session() as s:
                mc.lock_tenant(s, tenant_id)
                run.repaired += mc.repair(s, tenant_id, cluster_id)
        by_tenant: dict[str, list[str]] = {}
        for tenant_id, asset_id in pending:
            by_tenant.setdefault(tenant_id, []).append(asset_id)
        for tenant_id, asset_ids in by_tenant.items():
            self._match_tenant(tenant_id, asset_ids, run)
        return run

    def _match_tenant(self, tenant_id: str, asset_ids: list[str], run: MatchRun) -> None:
        who = Principal(tenant_id=tenant_id, key_id="matcher")
        # The index lookups happen before the lock, for the whole batch at once.
        found = {asset_id: [m for m in matches if m.method in DUPLICATE_METHODS]
                 for asset_id, matches in self.duplicates(who, asset_ids).items()}
        deliveries: list[str] = []
        with self.db.session() as s:
            mc.lock_tenant(s, tenant_id)
            done = set(mc.cluster_of(s, list(found)))
            alive = set(s.scalars(select(Asset.id).where(Asset.id.in_(list(found)))))
            linked = _linked(s, tenant_id, [a for a in found if a in alive and a not in done])
            alone: list[str] = []  # singletons to found, written before anything reads them
            for asset_id in asset_ids:  # oldest first: the first seen founds the cluster
                if asset_id not in found or asset_id not in alive or asset_id in done:
                    continue
                if asset_id not in linked and all(m.asset_id == asset_id
                                                  for m in found[asset_id]):
                    alone.append(asset_id)  # no match, edge or verdict: a cluster of its own
                    run.matched += 1
                    continue
                mc.found_singletons(s, tenant_id, alone)
                alone = []
                placed = self._place(s, tenant_id, asset_id, found[asset_id], run)
                deliveries += placed.deliveries
                linked |= placed.linked
            mc.found_singletons(s, tenant_id, alone)
        self.notify(deliveries)

    def _place(self, s: Session, tenant_id: str, asset_id: str, matches: list[Match],
               run: MatchRun) -> _Placed:
        """Record the asset's edges, put it in a cluster, check the banks."""
        rejected = rejected_with(s, tenant_id, asset_id)
        neighbours: dict[str, _Neighbour] = {}
        edges = []
        touched: set[str] = set()
        for m in matches:
            if m.asset_id in rejected or m.asset_id == asset_id:
                continue
            lo, hi = mc.pair(asset_id, m.asset_id)
            touched.update((lo, hi))
            edges.append({"tenant_id": tenant_id, "asset_a": lo, "asset_b": hi,
                          "method": m.method, "score": m.score, "evidence": m.evidence,
                          "created_at": utcnow()})
            neighbours.setdefault(m.asset_id, _Neighbour(m.method, m.score, m.evidence))
        insert_ignore(s, MatchEdge, edges)
        run.edges += len(edges)
        # Edges recorded when the other asset was matched (lookups need not be symmetric)
        # and a person's confirmations count too.
        for a, b, method, score, evidence in s.execute(
            select(MatchEdge.asset_a, MatchEdge.asset_b, MatchEdge.method, MatchEdge.score,
                   MatchEdge.evidence).where(
                or_(MatchEdge.asset_a == asset_id, MatchEdge.asset_b == asset_id))):
            other = b if a == asset_id else a
            if other not in rejected:
                neighbours.setdefault(other, _Neighbour(method, score, evidence))
        for other in confirmed_with(s, tenant_id, asset_id):
            neighbours[other] = _Neighbour(mc.VERDICT, 1.0, {"verdict": mc.SAME})
        clusters = set(mc.cluster_of(s, list(neighbours)).values())
        if clusters:
            cluster_id = mc.recluster(s, tenant_id, clusters, [asset_id])[asset_id]
        else:
            cluster_id = mc.found_singleton(s, tenant_id, asset_id)
        run.matched += 1
        hits = check_banks(s, tenant_id, asset_id, cluster_id, {
            other: (n.method, n.score, n.evidence) for other, n in neighbours.items()})
        run.bank_hits += hits.count
        return _Placed(hits.deliveries, touched)

    # --- verdicts -------------------------------------------------------------------------
    def set_verdict(self, who: Principal, a: str, b: str, body: VerdictIn) -> PairView:
        """Record a person's verdict on a pair (audited) and apply it to the clusters now:
        ``different`` splits their cluster, ``same`` merges theirs."""
        if a == b:
            raise BadInput("a verdict is about two different assets", code="same_asset")
        lo, hi = mc.pair(a, b)
        with self.db.session() as s:
            owned_asset(s, who, lo)
            owned_asset(s, who, hi)
            mc.lock_tenant(s, who.tenant_id)
            row = s.get(MatchVerdict, (lo, hi))
            before = None if row is None else {"verdict": row.verdict, "note": row.note}
            if row is None:
                row = MatchVerdict(asset_a=lo, asset_b=hi, tenant_id=who.tenant_id,
                                   verdict=body.verdict, actor=who.actor)
                s.add(row)
            row.verdict, row.note, row.actor, row.at = body.verdict, body.note, who.actor, utcnow()
            s.flush()
            record(s, tenant_id=who.tenant_id, actor=who.actor, action="match.verdict",
                   subject_type="match", subject_id=f"{lo}:{hi}", before=before,
                   after={"verdict": body.verdict, "note": body.note})
            clusters = mc.cluster_of(s, [lo, hi])
            if body.verdict == mc.SAME:
                insert_ignore(s, MatchEdge, [{
                    "tenant_id": who.tenant_id, "asset_a": lo, "asset_b": hi,
                    "method": mc.VERDICT, "score": 1.0, "evidence": {"actor": who.actor},
                    "created_at": utcnow()}])
                if len(clusters) == 2 and clusters[lo] != clusters[hi]:
                    mc.recluster(s, who.tenant_id, set(clusters.values()))
            else:
                mc.drop_verdict_edge(s, lo, hi)
                if len(clusters) == 2 and clusters[lo] == clusters[hi]:
                    mc.recluster(s, who.tenant_id, [clusters[lo]])
            return pair_view(s, who.tenant_id, lo, hi)

    def pair(self, who: Principal, a: str, b: str) -> PairView:
        """The pair's verdict (if any), its edges and the assets' clusters."""
        if a == b:
            raise BadInput("a verdict is about two different assets", code="same_asset")
        lo, hi = mc.pair(a, b)
        with self.db.session(write=False) as s:
            owned_asset(s, who, lo)
            owned_asset(s, who, hi)
            return pair_view(s, who.tenant_id, lo, hi)

    # --- clusters -------------------------------------------------------------------------
    def clusters(self, who: Principal, *, min_size: int = 2, limit: int = 50,
                 cursor: str | None = None) -> ClusterPage:
        """The tenant's clusters (default: of two or more), latest change first."""
        with self.db.session(write=False) as s:
            return list_clusters(s, who.tenant_id, min_size=min_size, limit=limit,
                                 cursor=cursor)

    def cluster(self, who: Principal, cluster_id: str, limit: int = 1000) -> ClusterView:
        """A cluster with its members and edges; a merged id answers with its survivor."""
        with self.db.session(write=False) as s:
            return cluster_view(s, who.tenant_id, cluster_id, limit)
