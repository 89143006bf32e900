"""Event write throughput (POST /v1/events) on the embedded SQLite profile, against a bare
``sqlite3`` ``executemany`` of the same rows in the same run.

Baseline ("bare sqlite3"): a table shaped like ``event`` (same columns, the same unique
key and three indexes) in its own database file with the store's pragmas (WAL,
synchronous=NORMAL), one transaction per batch, ``INSERT OR IGNORE`` of rows built from
the same event dicts (times as ISO text, type fields as orjson): what storing the events
costs with no validation, no tenant or asset checks, no ORM.

Sides, each over the same mix of events (70% impressions, then opens, reads, likes,
shares, hides, follows, reports; 200 stories with authors in metadata, 5,000 readers):

* ``service``: ``EventService.record_raw`` in process: validation, asset and author
  lookup, ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, one transaction per batch;
* ``service, resent``: the same batches again (every event a duplicate: the content
  comparison path);
* ``HTTP``: ``POST /v1/events`` through FastAPI's TestClient (strict JSON parsing, auth,
  the threadpool hop; the client's own encoding is done before the clock starts).

Batches of 100 and 1000; the sides run interleaved ``--rounds`` times; the table shows
medians. Run::

    .venv/bin/python bench/bench_events.py [--events 20000] [--rounds 3] [--batches 100 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import sqlite3
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.principal import Principal
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset

BASELINE_DDL = """
CREATE TABLE event (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id VARCHAR(32) NOT NULL,
    event_id VARCHAR(128) NOT NULL, type VARCHAR(16) NOT NULL,
    reader_id VARCHAR(128) NOT NULL, asset_id VARCHAR(32), author_id VARCHAR(128),
    at DATETIME NOT NULL, received_at DATETIME NOT NULL, data JSON NOT NULL,
    CONSTRAINT uq_event_tenant_event_id UNIQUE (tenant_id, event_id));
CREATE INDEX ix_event_tenant_reader_at ON event (tenant_id, reader_id, at);
CREATE INDEX ix_event_asset_at ON event (asset_id, at);
CREATE INDEX ix_event_tenant_author_at ON event (tenant_id, author_id, at);
"""
MIX = [("impression", 70), ("open", 10), ("read", 8), ("like", 4), ("share", 2),
       ("hide", 2), ("follow", 2), ("report", 2)]


def make_events(n: int, stories: list[str], tag: str, rng: random.Random) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    kinds = rng.choices([k for k, _ in MIX], [w for _, w in MIX], k=n)
    events = []
    for i, kind in enumerate(kinds):
        event: dict[str, Any] = {
            "event_id": f"{tag}-{i}", "type": kind, "reader_id": f"reader-{rng.randrange(5000)}",
            "at": (now - timedelta(seconds=rng.randrange(3600))).isoformat()}
        if kind == "follow":
            event["author_id"] = f"author-{rng.randrange(40)}"
        else:
            event["asset_id"] = rng.choice(stories)
        if kind == "impression":
            event.update(surface="home", position=rng.randrange(20), request_id=f"rq-{i // 20}")
        elif kind == "read":
            event.update(dwell_ms=rng.randrange(120_000), scroll_depth=rng.random())
        elif kind == "report":
            event["reason"] = "spam"
        events.append(event)
    return events


def batches(events: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [events[i:i + size] for i in range(0, len(events), size)]


class Baseline:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(BASELINE_DDL)

    def write(self, tenant: str, batch: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC).isoformat()
        rows = [(tenant, e["event_id"], e["type"], e["reader_id"], e.get("asset_id"),
                 e.get("author_id"), e["at"], now,
                 orjson.dumps({k: v for k, v in e.items() if k in (
                     "surface", "position", "request_id", "dwell_ms", "scroll_depth",
                     "reason")}).decode()) for e in batch]
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(
            "INSERT OR IGNORE INTO event (tenant_id, event_id, type, reader_id, asset_id, "
            "author_id, at, received_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self.conn.execute("COMMIT")


def timed(write: Callable[[list[dict[str, Any]]], None],
          chunks: list[list[dict[str, Any]]]) -> float:
    started = time.perf_counter()
    for chunk in chunks:
        write(chunk)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="Events per side and round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "kenning"
        kenning = Kenning(Settings(data_dir=data_dir, workers=0, run_workers=False,
                                   log_json=False))
        with TestClient(create_app(kenning)) as client:
            key = (data_dir / "bootstrap_api_key").read_text().strip()
            who = kenning.tenants.authenticate(key)
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            stories = seed_stories(kenning, who, 200)
            baseline = Baseline(Path(tmp) / "baseline.db")
            results: dict[tuple[int, str], list[float]] = {}

            def http(chunk: list[dict[str, Any]], bodies: dict[int, bytes]) -> None:
                response = client.post("/v1/events", content=bodies[id(chunk)],
                                       headers=headers)
                assert response.status_code == 200, response.text

            for round_ in range(args.rounds):
                for size in args.batches:
                    tag = f"r{round_}b{size}"
                    sides: dict[str, list[list[dict[str, Any]]]] = {
                        name: batches(make_events(args.events, stories, f"{tag}{name}", rng),
                                      size) for name in ("base", "svc", "http")}
                    bodies = {id(c): orjson.dumps({"events": c}) for c in sides["http"]}
                    record = results.setdefault
                    record((size, "bare sqlite3 executemany"), []).append(timed(
                        lambda c: baseline.write(who.tenant_id, c), sides["base"]))
                    record((size, "service (in process)"), []).append(timed(
                        lambda c: check(kenning.events.record_raw(who, {"events": c}),
                                        len(c), 0), sides["svc"]))
                    record((size, "service, resent (all duplicates)"), []).append(timed(
                        lambda c: check(kenning.events.record_raw(who, {"events": c}),
                                        0, len(c)), sides["svc"]))
                    record((size, "HTTP POST /v1/events (TestClient)"), []).append(timed(
                        lambda c, b=bodies: http(c, b), sides["http"]))
        report(results, args.events)


def check(out: Any, accepted: int, duplicates: int) -> None:
    assert (out.accepted, out.duplicates) == (accepted, duplicates), out


def seed_stories(kenning: Kenning, who: Principal, n: int) -> list[str]:
    with kenning.stores.db.session() as s:
        assets = [Asset(tenant_id=who.tenant_id, kind="text", mime="text/plain", bytes=1,
                        sha256=hashlib.sha256(str(i).encode()).hexdigest(), source="text",
                        meta={"author": f"author-{i % 40}", "desk": "news"})
                  for i in range(n)]
        s.add_all(assets)
        s.flush()
        return [a.id for a in assets]


def report(results: dict[tuple[int, str], list[float]], events: int) -> None:
    print("| batch | side | events/s (median) | vs bare sqlite3 |")
    print("|---:|---|---:|---:|")
    for size in sorted({s for s, _ in results}):
        base = events / statistics.median(results[(size, "bare sqlite3 executemany")])
        for (s, side), seconds in results.items():
            if s != size:
                continue
            rate = events / statistics.median(seconds)
            print(f"| {size} | {side} | {rate:,.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
