"""Writing clusters: found a singleton, join or merge, recompute under rejections.

Functions over the caller's session (and its transaction): the matching service holds
the tenant's matching lock (:func:`lock_tenant`) around every call, so that one writer
at a time changes a tenant's clusters.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from kenning.services.clustering import Link, assign, components
from kenning.stores.metadata.tables import (
    Asset,
    MatchCluster,
    MatchClusterMember,
    MatchEdge,
    MatchVerdict,
    new_id,
    utcnow,
)

VERDICT = "verdict"
"""The method of an edge a person confirmed (``same``): it outweighs any measured one."""
SAME, DIFFERENT = "same", "different"


def lock_tenant(s: Session, tenant_id: str) -> None:
    """One matching writer per tenant: a transaction-scoped advisory lock on PostgreSQL;
    on SQLite the write transaction (``BEGIN IMMEDIATE``) already serialises writers."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                  {"key": f"kenning.matching:{tenant_id}"})


def pair(a: str, b: str) -> tuple[str, str]:
    """A pair is stored once, smaller id first."""
    return (a, b) if a < b else (b, a)


def cluster_of(s: Session, asset_ids: Collection[str]) -> dict[str, str]:
    """Asset id -> cluster id, for those of ``asset_ids`` that are matched."""
    if not asset_ids:
        return {}
    return dict(s.execute(select(MatchClusterMember.asset_id, MatchClusterMember.cluster_id)
                          .where(MatchClusterMember.asset_id.in_(list(asset_ids)))).tuples().all())


def found_singleton(s: Session, tenant_id: str, asset_id: str) -> str:
    return found_singletons(s, tenant_id, [asset_id])[asset_id]


def found_singletons(s: Session, tenant_id: str, asset_ids: Collection[str]) -> dict[str, str]:
    """A cluster of its own for each of ``asset_ids`` (each its first seen), in two
    inserts; returns asset id -> cluster id."""
    if not asset_ids:
        return {}
    now = utcnow()
    ids = {asset_id: new_id() for asset_id in asset_ids}
    s.execute(insert(MatchCluster), [
        {"id": cluster_id, "tenant_id": tenant_id, "first_asset_id": asset_id, "size": 1,
         "created_at": now, "updated_at": now} for asset_id, cluster_id in ids.items()])
    s.execute(insert(MatchClusterMember), [
        {"asset_id": asset_id, "tenant_id": tenant_id, "cluster_id": cluster_id,
         "joined_at": now} for asset_id, cluster_id in ids.items()])
    return ids


def rejections_within(
    s: Session, cluster_ids: Collection[str], extra: Collection[str]
) -> list[tuple[str, str]]:
    """Rejected pairs with both assets among the members of ``cluster_ids`` and ``extra``."""
    scope = _in_scope(cluster_ids, extra)
    return list(s.execute(select(MatchVerdict.asset_a, MatchVerdict.asset_b).where(
        MatchVerdict.verdict == DIFFERENT, scope(MatchVerdict.asset_a),
        scope(MatchVerdict.asset_b))).tuples().all())


def recluster(
    s: Session, tenant_id: str, cluster_ids: Collection[str], extra: Collection[str] = ()
) -> dict[str, str]:
    """Rebuild the clusters ``cluster_ids`` plus the unmatched assets ``extra`` from their
    edges, never joining a rejected pair; returns asset -> cluster id for all of them.

    Without a rejection among them the result is one cluster (each old cluster is
    connected and every ``extra`` asset links to one of them), and no edge is read.
    Otherwise components are recomputed from the edges (see :mod:`.clustering`).
    """
    cannot = rejections_within(s, cluster_ids, extra)
    firsts = dict(s.execute(select(MatchCluster.id, MatchCluster.first_asset_id)
                            .where(MatchCluster.id.in_(list(cluster_ids)))).tuples().all())
    scope = _in_scope(cluster_ids, extra)
    members = set(extra) | set(s.scalars(select(MatchClusterMember.asset_id).where(
        MatchClusterMember.cluster_id.in_(list(cluster_ids)))))
    created = dict(s.execute(select(Asset.id, Asset.created_at).where(
        Asset.id.in_(list(members)))).tuples().all())

    def seen(asset_id: str) -> tuple[datetime, str]:
        return created[asset_id], asset_id

    if cannot or not cluster_ids:
        links = [Link(a, b, score + (1.0 if method == VERDICT else 0.0))
                 for a, b, method, score in s.execute(
                     select(MatchEdge.asset_a, MatchEdge.asset_b, MatchEdge.method,
                            MatchEdge.score).where(scope(MatchEdge.asset_a),
                                                   scope(MatchEdge.asset_b)))]
        comps = components(members, links, cannot)
    else:
        comps = [members]
    plan = assign(comps, firsts, seen)
    now = utcnow()
    out: dict[str, str] = {}
    for old, survivor in plan.merged.items():
        s.execute(update(MatchCluster).where(
            or_(MatchCluster.id == old, MatchCluster.merged_into == old)).values(
            merged_into=survivor, size=0, updated_at=now))
    for planned in plan.clusters:
        cluster_id = planned.cluster_id
        if cluster_id is None:
            cluster_id = new_id()
            s.add(MatchCluster(id=cluster_id, tenant_id=tenant_id, size=len(planned.members),
                               first_asset_id=planned.first_asset_id, created_at=now,
                               updated_at=now))
            s.flush()
        else:
            s.execute(update(MatchCluster).where(MatchCluster.id == cluster_id).values(
                size=len(planned.members), updated_at=now))
        _place(s, tenant_id, cluster_id, planned.members, now)
        out.update(dict.fromkeys(planned.members, cluster_id))
    return out


def _place(s: Session, tenant_id: str, cluster_id: str, members: set[str],
           now: datetime) -> None:
    """Make ``members`` the members of ``cluster_id`` (moved ones get a new joined_at)."""
    current = cluster_of(s, members)
    moved = [a for a, c in current.items() if c != cluster_id]
    if moved:
        s.execute(update(MatchClusterMember).where(MatchClusterMember.asset_id.in_(moved))
                  .values(cluster_id=cluster_id, joined_at=now)
                  .execution_options(synchronize_session=False))
    for asset_id in sorted(members - set(current)):
        s.add(MatchClusterMember(asset_id=asset_id, tenant_id=tenant_id,
                                 cluster_id=cluster_id, joined_at=now))
    s.flush()


def unmatched(limit: int) -> Select[str, str]:
    """(tenant, asset) of ready assets in no cluster yet, oldest first: a seek in a
    partial index (``Asset.match_pending``, kept by the database), not a scan."""
    return (select(Asset.tenant_id, Asset.id)
            .where(Asset.match_pending, Asset.status == "ready")
            .order_by(Asset.created_at, Asset.id).limit(limit))


def stale(limit: int) -> Select[str, str]:
    """(tenant, cluster) of clusters that lost a member since the matcher last looked
    (``MatchCluster.stale``, set by the database when a membership goes)."""
    return select(MatchCluster.tenant_id, MatchCluster.id).where(MatchCluster.stale).limit(limit)


def repair(s: Session, tenant_id: str, cluster_id: str) -> bool:
    """Recompute a stale cluster if it is live and its size says more than its members
    (a split might be due); clear its flag either way. Returns whether it recomputed.

    The flag is cleared first: that write holds the cluster's row (PostgreSQL), so a
    member deleted while this runs sets the flag again after this commits (its trigger
    waits for the row), and the next run looks again. Cleared last, it could overwrite
    that newer mark."""
    s.execute(update(MatchCluster).where(MatchCluster.id == cluster_id).values(stale=False))
    live = (select(func.count()).select_from(MatchClusterMember)
            .where(MatchClusterMember.cluster_id == MatchCluster.id).scalar_subquery())
    due = s.scalar(select(func.count()).select_from(MatchCluster).where(
        MatchCluster.id == cluster_id, MatchCluster.merged_into.is_(None),
        MatchCluster.size >= 2, MatchCluster.size != live))
    if due:
        recluster(s, tenant_id, [cluster_id])
    return bool(due)


def drop_verdict_edge(s: Session, a: str, b: str) -> None:
    lo, hi = pair(a, b)
    s.execute(delete(MatchEdge).where(MatchEdge.asset_a == lo, MatchEdge.asset_b == hi,
                                      MatchEdge.method == VERDICT))


Scope = Callable[[SQLColumnExpression[str]], ColumnElement[bool]]


def _in_scope(cluster_ids: Collection[str], extra: Collection[str]) -> Scope:
    """``scope(column)``: the column is a member of ``cluster_ids`` or one of ``extra``."""
    members = select(MatchClusterMember.asset_id).where(
        MatchClusterMember.cluster_id.in_(list(cluster_ids)))

    def scope(column: SQLColumnExpression[str]) -> ColumnElement[bool]:
        return or_(column.in_(members), column.in_(list(extra)))

    return scope
