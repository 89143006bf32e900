"""What the matching API answers: clusters, their members and edges, a pair's verdict."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from kenning.errors import BadInput, NotFound
from kenning.stores.metadata.tables import (
    Asset,
    MatchCluster,
    MatchClusterMember,
    MatchEdge,
    MatchVerdict,
)

MAX_MEMBERS = 5000
"""Most members (and edges) one cluster answer lists."""


class VerdictIn(BaseModel):
    """``POST /v1/matches/{a}/{b}``: a person's decision on a pair."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["same", "different"] = Field(
        description="same: match them whatever the thresholds; different: never again.")
    note: str | None = Field(None, max_length=2000, description="Why, for the audit trail.")


class VerdictView(BaseModel):
    verdict: str
    note: str | None
    actor: str
    at: datetime


class EdgeView(BaseModel):
    asset_a: str
    asset_b: str
    method: str = Field(description="pdq, text_near_duplicate, or verdict (confirmed).")
    score: float
    evidence: dict[str, Any]
    created_at: datetime


class PairView(BaseModel):
    asset_a: str = Field(description="The smaller of the two ids.")
    asset_b: str
    verdict: VerdictView | None
    edges: list[EdgeView]
    cluster_a: str | None = Field(description="asset_a's cluster (null: not matched yet).")
    cluster_b: str | None


class ClusterSummary(BaseModel):
    id: str
    size: int
    first_asset_id: str = Field(description="The cluster's first-seen asset.")
    created_at: datetime
    updated_at: datetime


class ClusterPage(BaseModel):
    clusters: list[ClusterSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class MemberView(BaseModel):
    asset_id: str
    kind: str
    title: str | None
    created_at: datetime
    joined_at: datetime


class ClusterView(ClusterSummary):
    members: list[MemberView] = Field(description="Oldest first.")
    edges: list[EdgeView] = Field(description="Strongest first.")
    truncated: bool = Field(description="More members or edges than listed.")


def _edge(e: MatchEdge) -> EdgeView:
    return EdgeView(asset_a=e.asset_a, asset_b=e.asset_b, method=e.method, score=e.score,
                    evidence=e.evidence, created_at=e.created_at)


def _summary(c: MatchCluster) -> ClusterSummary:
    return ClusterSummary(id=c.id, size=c.size, first_asset_id=c.first_asset_id,
                          created_at=c.created_at, updated_at=c.updated_at)


def pair_view(s: Session, tenant_id: str, lo: str, hi: str) -> PairView:
    v = s.get(MatchVerdict, (lo, hi))
    edges = s.scalars(select(MatchEdge).where(
        MatchEdge.tenant_id == tenant_id, MatchEdge.asset_a == lo, MatchEdge.asset_b == hi)
        .order_by(MatchEdge.score.desc(), MatchEdge.method))
    clusters = dict(s.execute(select(MatchClusterMember.asset_id, MatchClusterMember.cluster_id)
                              .where(MatchClusterMember.asset_id.in_([lo, hi]))).tuples().all())
    verdict = None if v is None or v.tenant_id != tenant_id else VerdictView(
        verdict=v.verdict, note=v.note, actor=v.actor, at=v.at)
    return PairView(asset_a=lo, asset_b=hi, verdict=verdict, edges=[_edge(e) for e in edges],
                    cluster_a=clusters.get(lo), cluster_b=clusters.get(hi))


def _cursor(c: MatchCluster) -> str:
    raw = json.dumps([c.updated_at.isoformat(), c.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, cluster_id = json.loads(raw)
        return datetime.fromisoformat(at), str(cluster_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadInput("the cursor is not one this API gave", code="bad_cursor") from exc


def list_clusters(s: Session, tenant_id: str, *, min_size: int, limit: int,
                  cursor: str | None) -> ClusterPage:
    """The tenant's clusters of at least ``min_size`` members, latest change first."""
    query = select(MatchCluster).where(
        MatchCluster.tenant_id == tenant_id, MatchCluster.merged_into.is_(None),
        MatchCluster.size >= min_size)
    if cursor:
        at, cluster_id = _after(cursor)
        query = query.where(or_(MatchCluster.updated_at < at, and_(
            MatchCluster.updated_at == at, MatchCluster.id < cluster_id)))
    rows = list(s.scalars(query.order_by(MatchCluster.updated_at.desc(),
                                         MatchCluster.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    return ClusterPage(clusters=[_summary(c) for c in rows[:limit]],
                       next_cursor=_cursor(rows[limit - 1]) if more else None)


def cluster_view(s: Session, tenant_id: str, cluster_id: str, limit: int) -> ClusterView:
    """The cluster, or the one it was merged into; ``not_found`` for another tenant's."""
    c = s.get(MatchCluster, cluster_id)
    for _ in range(64):  # merged ids point at their survivor (chains are kept short)
        if c is None or c.merged_into is None:
            break
        c = s.get(MatchCluster, c.merged_into)
    if c is None or c.tenant_id != tenant_id or c.merged_into is not None:
        raise NotFound(f"no cluster {cluster_id}")
    members = list(s.execute(
        select(Asset, MatchClusterMember.joined_at)
        .join(MatchClusterMember, MatchClusterMember.asset_id == Asset.id)
        .where(MatchClusterMember.cluster_id == c.id)
        .order_by(Asset.created_at, Asset.id).limit(limit + 1)).tuples().all())
    ids = select(MatchClusterMember.asset_id).where(MatchClusterMember.cluster_id == c.id)
    edges = list(s.scalars(select(MatchEdge).where(
        MatchEdge.asset_a.in_(ids), MatchEdge.asset_b.in_(ids))
        .order_by(MatchEdge.score.desc(), MatchEdge.id).limit(limit + 1)))
    return ClusterView(
        **_summary(c).model_dump(),
        members=[MemberView(asset_id=a.id, kind=a.kind, title=a.title, created_at=a.created_at,
                            joined_at=joined) for a, joined in members[:limit]],
        edges=[_edge(e) for e in edges[:limit]],
        truncated=len(members) > limit or len(edges) > limit,
    )
