"""How the CLI shows answers as tables (``--json`` prints them as they came).

Moments inside audio and video read as ``mm:ss`` (``h:mm:ss`` past an hour); JSON output
keeps the seconds. Search highlights become terminal styling, never raw tags.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

from rich.table import Table
from rich.text import Text

__all__ = [
    "highlighted",
    "moment",
    "search_table",
    "segments_table",
    "similar_table",
    "span",
    "status_table",
]


def moment(seconds: float) -> str:
    """``42.7`` -> ``00:42``, ``70`` -> ``01:10``, ``3725`` -> ``1:02:05`` (whole seconds,
    rounded down: the moment a thing starts is the second it is in)."""
    total = max(0, math.floor(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def span(start_s: float | None, end_s: float | None) -> str:
    """``00:42-00:45`` for a timed segment, ``00:42`` without an end, ``""`` untimed."""
    if start_s is None:
        return ""
    return moment(start_s) if end_s is None else f"{moment(start_s)}-{moment(end_s)}"


def segments_table(segments: list[dict[str, Any]]) -> Table:
    """``GET /v1/assets/{id}/segments``'s answer: kind, producer, number, moment, text."""
    table = Table("kind", "producer", "seq", "at", "text")
    for g in segments:
        text = Text(" ".join((g.get("text") or "").split()))
        text.truncate(120, overflow="ellipsis")
        table.add_row(g["kind"], g["producer"], str(g["seq"]),
                      span(g.get("start_s"), g.get("end_s")), text)
    return table


_MARK = re.compile(r"<mark>(.*?)</mark>", re.DOTALL)


def highlighted(snippet: str) -> Text:
    """A search highlight (HTML-escaped, terms in ``<mark>``) as terminal text: marks in
    bold reverse, entities unescaped, no tag left."""
    out, left = Text(), 0
    for m in _MARK.finditer(snippet):
        out.append(html.unescape(snippet[left:m.start()]))
        out.append(html.unescape(m.group(1)), style="bold reverse")
        left = m.end()
    out.append(html.unescape(snippet[left:].replace("<mark>", "").replace("</mark>", "")))
    return out


def search_table(result: dict[str, Any]) -> Table:
    """``POST /v1/search``'s answer as a table: score, kind, asset, the moment inside audio
    or video (segment kind and ``mm:ss``), title over snippet."""
    table = Table("score", "kind", "asset", "at", "title / text")
    for hit in result["hits"]:
        cell = Text(hit.get("title") or "", style="bold")
        snippet = highlighted(" ".join((hit.get("highlight") or hit.get("text") or "").split()))
        snippet.truncate(160, overflow="ellipsis")
        cell.append("\n").append_text(snippet)
        at = span(hit.get("start_s"), hit.get("end_s"))
        table.add_row(f"{hit['score']:.4f}", hit["kind"], hit["asset_id"],
                      f"{hit.get('segment_kind') or ''} {at}" if at else "", cell)
    return table


def similar_table(result: dict[str, Any]) -> Table:
    """``POST /v1/similar``'s answer as a table, strongest match first."""
    table = Table("score", "method", "kind", "asset", "title", "evidence")
    for match in result["matches"]:
        evidence = ", ".join(f"{k}={v}" for k, v in (match.get("evidence") or {}).items())
        table.add_row(f"{match['score']:.4f}", match["method"], match.get("kind") or "",
                      match["asset_id"], match.get("title") or "", evidence)
    return table


def status_table(ready: dict[str, Any], queues: list[dict[str, Any]]) -> Table:
    """Readiness checks, then each queue's depths."""
    state = "[green]ready[/green]" if ready.get("ready") else "[red]not ready[/red]"
    checks = ", ".join(f"{k}: {v}" for k, v in (ready.get("checks") or {}).items())
    table = Table("queue", "ready", "delayed", "in flight", "dead",
                  title=f"{state}  {checks}")
    for q in queues:
        table.add_row(q["queue"], str(q["ready"]), str(q["delayed"]), str(q["in_flight"]),
                      f"[red]{q['dead']}[/red]" if q["dead"] else "0")
    return table
