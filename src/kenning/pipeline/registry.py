"""Processor discovery: built-in and third-party processors register the same way.

A distribution exposes an entry point in the ``kenning.processors`` group whose value is
a builder ``(resources) -> list[Processor]``. Kenning's own text and image processors
are registered through exactly this hook (see ``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from kenning.media.kinds import MediaKind
from kenning.pipeline.dag import PlannedStage, plan
from kenning.pipeline.processor import Processor

ENTRY_POINT_GROUP = "kenning.processors"


Builder = Callable[[Any], Iterable[Processor]]
"""``(resources) -> processors``; ``resources`` is whatever the caller hands over (Kenning
passes :class:`kenning.inference.resources.Resources`)."""


class ProcessorRegistry:
    """Processors by name, plus the stage plan for each media kind."""

    def __init__(self, processors: Iterable[Processor]) -> None:
        self._by_name: dict[str, Processor] = {}
        for proc in processors:
            if proc.name in self._by_name:
                raise ValueError(f"processor {proc.name!r} registered twice")
            self._by_name[proc.name] = proc
        self._plans = {kind: plan(kind, self._by_name.values()) for kind in MediaKind}
        self._depends = {kind: {st.name: st.depends_on for st in stages}
                         for kind, stages in self._plans.items()}

    @classmethod
    def from_entry_points(cls, resources: Any) -> ProcessorRegistry:
        builders: list[Builder] = [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)]
        return cls(p for build in builders for p in build(resources))

    def get(self, name: str) -> Processor:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def plan(self, kind: MediaKind) -> list[PlannedStage]:
        return self._plans[kind]

    def depends_on(self, kind: MediaKind, name: str) -> tuple[str, ...]:
        """The stages ``name`` waits on for ``kind`` (none if it takes no part)."""
        return self._depends[kind].get(name, ())

    def queues(self) -> set[str]:
        return {p.queue for p in self._by_name.values()}
