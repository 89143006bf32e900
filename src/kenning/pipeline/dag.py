"""Stage order derived from what processors declare.

For an asset kind, a processor takes part when it accepts the kind and everything it
requires is produced by another participant (or is the innate ``source``). Each artifact
must have exactly one producer per kind; cycles are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import SOURCE, Processor


class PipelineError(ValueError):
    """The declared processors do not form a valid DAG for some media kind."""


@dataclass(frozen=True)
class PlannedStage:
    name: str
    version: str
    queue: str
    depends_on: tuple[str, ...]


def plan(kind: MediaKind, processors: Iterable[Processor]) -> list[PlannedStage]:
    """Stages for ``kind`` in a topological order (dependencies first)."""
    candidates = [p for p in processors if kind in p.media]
    chosen: dict[str, Processor] = {}
    available = {SOURCE}
    changed = True
    while changed:
        changed = False
        for proc in candidates:
            if proc.name not in chosen and proc.requires <= available:
                chosen[proc.name] = proc
                available |= proc.produces
                changed = True

    # A processor left out waits on an artifact nobody makes for this kind (fine: it
    # does not take part) or on itself through others: a declaration error, refused.
    left_out = [p for p in candidates if p.name not in chosen]
    makers: dict[str, set[str]] = {}
    for proc in left_out:
        for artifact in proc.produces:
            makers.setdefault(artifact, set()).add(proc.name)
    _topological(kind, {
        p.name: tuple(sorted({m for a in p.requires for m in makers.get(a, ())}))
        for p in left_out
    })

    producer: dict[str, str] = {}
    for proc in chosen.values():
        for artifact in proc.produces:
            if artifact in producer:
                raise PipelineError(
                    f"{kind}: artifact {artifact!r} produced by both "
                    f"{producer[artifact]} and {proc.name}"
                )
            producer[artifact] = proc.name

    deps = {
        name: tuple(sorted({producer[a] for a in proc.requires if a != SOURCE}))
        for name, proc in chosen.items()
    }
    return [
        PlannedStage(n, chosen[n].version, chosen[n].queue, deps[n])
        for n in _topological(kind, deps)
    ]


def _topological(kind: MediaKind, deps: dict[str, tuple[str, ...]]) -> list[str]:
    """Names with dependencies first (ties by name); raises on a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise PipelineError(f"{kind}: dependency cycle through {name}")
        state[name] = 1
        for dep in deps[name]:
            visit(dep)
        state[name] = 2
        order.append(name)

    for name in sorted(deps):
        visit(name)
    return order


def dependents(stages: Iterable[PlannedStage], name: str) -> set[str]:
    """Every stage that directly or transitively depends on ``name``."""
    stages = list(stages)
    found: set[str] = set()
    frontier = {name}
    while frontier:
        nxt = {s.name for s in stages if set(s.depends_on) & frontier} - found
        found |= nxt
        frontier = nxt
    return found
