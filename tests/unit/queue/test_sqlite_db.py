"""The SQLite queue database: processes that open a new file at the same moment all
get it (the WAL switch races, and SQLite answers the losers "locked" without waiting)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from kenning.queue.sqlite_db import SQLiteDatabase

PROCESSES, ROUNDS = 4, 20


def _open(path: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    try:
        db = SQLiteDatabase(Path(path))
        mode = db.connection().execute("PRAGMA journal_mode").fetchone()[0]
        out.put(mode)
    except Exception as exc:  # reported to the test, which names it
        out.put(repr(exc))


def test_processes_opening_a_new_file_together_all_get_it(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    for i in range(ROUNDS):  # before the fix: a "database is locked" in ~1 round of 10
        barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
        path = tmp_path / f"queue-{i}.db"
        procs = [ctx.Process(target=_open, args=(str(path), barrier, out))
                 for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert results == ["wal"] * PROCESSES, results
