"""Clusters of near-duplicates as pure functions: components under cannot-link
constraints, and which cluster id each component keeps.

No database here: :mod:`kenning.services.matching` loads members, edges and rejected
pairs, calls these, and writes the plan back.

Rules:

- Components: edges are unioned strongest first (a person's confirmation before any
  measured score; ties by asset ids, so the result is deterministic); a union that would
  put a rejected pair (cannot-link) into one component is skipped. With no rejections
  this is plain connected components.
- Ids: a component keeps the id of the old cluster whose first-seen asset it holds; when
  it holds several (a merge), the one whose first-seen asset is oldest survives and the
  others are merged into it. A component holding no old first-seen asset (split off, or
  new) gets a new cluster whose first-seen asset is its oldest member.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Pair = tuple[str, str]


@dataclass(frozen=True)
class Link:
    """An edge between two assets; ``weight`` orders unions (higher first)."""

    a: str
    b: str
    weight: float


def components(
    members: Iterable[str], links: Iterable[Link], cannot: Iterable[Pair] = ()
) -> list[set[str]]:
    """Connected components of ``members`` under ``links`` that never join a pair of
    ``cannot``; sorted by their smallest member (links to non-members are ignored)."""
    parent: dict[str, str] = {m: m for m in members}
    sets: dict[str, set[str]] = {m: {m} for m in parent}
    forbidden: dict[str, set[str]] = {m: set() for m in parent}
    for a, b in cannot:
        if a in parent and b in parent and a != b:
            forbidden[a].add(b)
            forbidden[b].add(a)

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for link in sorted(links, key=lambda e: (-e.weight, min(e.a, e.b), max(e.a, e.b))):
        if link.a not in parent or link.b not in parent:
            continue
        ra, rb = root(link.a), root(link.b)
        if ra == rb or forbidden[ra] & sets[rb]:
            continue
        if len(sets[ra]) < len(sets[rb]):
            ra, rb = rb, ra
        parent[rb] = ra
        sets[ra] |= sets.pop(rb)
        forbidden[ra] |= forbidden.pop(rb)
    return sorted((sets[r] for r in sets), key=min)


@dataclass
class Planned:
    """One component's cluster: ``cluster_id`` None for a new one."""

    cluster_id: str | None
    first_asset_id: str
    members: set[str]


@dataclass
class Plan:
    clusters: list[Planned] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)
    """Old cluster id -> the id of the cluster it was merged into."""


def assign(
    comps: Iterable[set[str]], firsts: Mapping[str, str], seen: Callable[[str], Any]
) -> Plan:
    """Give each component a cluster id: ``firsts`` maps each old cluster id to its
    first-seen asset; ``seen(asset)`` orders assets oldest first (e.g. created_at, id).

    An old cluster whose first-seen asset is in no component is absent from the plan
    (the caller decides; it does not happen when every old member is in ``comps``).
    """
    by_first: dict[str, list[str]] = {}
    for cluster_id, first in firsts.items():
        by_first.setdefault(first, []).append(cluster_id)
    plan = Plan()
    for comp in comps:
        owners = sorted(
            ((seen(first), cluster_id) for first in comp for cluster_id in by_first.get(first, [])),
        )
        if not owners:
            plan.clusters.append(Planned(None, min(comp, key=seen), set(comp)))
            continue
        survivor = owners[0][1]
        plan.clusters.append(Planned(survivor, firsts[survivor], set(comp)))
        for _, other in owners[1:]:
            plan.merged[other] = survivor
    return plan
