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
    step: str = ""
    """The step it runs in (see :func:`steps`); its own ``queue:name`` until grouped."""


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
    order = _topological(kind, deps)
    step_of = _steps(order, deps, chosen)
    return [
        PlannedStage(n, chosen[n].version, chosen[n].queue, deps[n], step_of[n])
        for n in order
    ]


def _steps(
    order: list[str], deps: dict[str, tuple[str, ...]], chosen: dict[str, Processor]
) -> dict[str, str]:
    """Group stages into steps: connected stages on one queue that run in one claim.

    A stage joins the step of a direct upstream stage on its queue unless it opts out
    (``own_step``) or another of its upstream stages itself waits on that step (the
    step would then have to finish before, and after, that stage: a cycle); a stage
    with no upstream stage on its queue joins a sibling (same queue, same upstream
    stages) if there is one. The name is
    the queue and the members, so it is stable for a kind and a set of processors.
    """
    ancestors: dict[str, set[str]] = {}
    for name in order:
        ancestors[name] = set(deps[name]).union(*(ancestors[d] for d in deps[name]))
    group: dict[str, int] = {}
    members: list[list[str]] = []
    for name in order:
        proc = chosen[name]
        target = None
        if not getattr(proc, "own_step", False):
            for dep in deps[name]:
                g = group[dep]
                if chosen[dep].queue != proc.queue or getattr(chosen[dep], "own_step", False):
                    continue
                outside = [d for d in deps[name] if group[d] != g]
                if not any(ancestors[d] & set(members[g]) for d in outside):
                    target = g
                    break
            # Siblings: stages on one queue waiting on the same upstream run together.
            for g, stages in enumerate(members if target is None else ()):
                first = chosen[stages[0]]
                if (first.queue == proc.queue and not getattr(first, "own_step", False)
                        and deps[stages[0]] == deps[name]):
                    target = g
                    break
        if target is None:
            target = len(members)
            members.append([])
        members[target].append(name)
        group[name] = target
    names = [f"{chosen[m[0]].queue}:{'+'.join(m)}" for m in members]
    return {name: names[group[name]] for name in order}


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


def step_members(stages: Iterable[PlannedStage]) -> dict[str, list[PlannedStage]]:
    """Stages by step, each list in a topological order."""
    out: dict[str, list[PlannedStage]] = {}
    for stage in stages:
        out.setdefault(stage.step, []).append(stage)
    return out


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
