"""Shared by the pipeline v2 benches: a real ``kenning serve`` subprocess, and reading
the end state and stage timings from its metadata database (read only).

Not a bench itself. ``bench_pipeline_text.py`` and ``bench_pipeline_images.py`` use it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from kenning.cli.client import wait_ready
from kenning.hosts import pid_alive
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, StageRun

UNFINISHED = ("pending", "queued", "running")
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kenning_command() -> list[str]:
    """The installed ``kenning`` script beside this interpreter (else ``-m``)."""
    script = Path(sys.executable).parent / "kenning"
    return [str(script)] if script.exists() else [sys.executable, "-m", "kenning.cli.main"]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return sorted(out)


@dataclass
class WorkerLog:
    """Sums of the worker processes' "workers stopped" lines."""

    processes: int = 0
    deliveries: int = 0
    noop_deliveries: int = 0
    doorbells_rung: int = 0

    @property
    def noop_fraction(self) -> float:
        return self.noop_deliveries / self.deliveries if self.deliveries else 0.0


class Server:
    """``kenning serve`` on a free loopback port with JSON logs in ``data_dir/server.log``."""

    def __init__(self, data_dir: Path, args: Sequence[str] = (),
                 env: dict[str, str] | None = None,
                 command: Sequence[str] | None = None) -> None:
        self.data_dir = data_dir
        self.command = list(command) if command else kenning_command()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self.args = list(args)
        self.env = {**os.environ, "KENNING_LOG_JSON": "true", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.db = Database(f"sqlite:///{(data_dir / 'kenning.db').resolve()}")
        self.http: httpx.Client | None = None
        self.serve_returncode: int | None = None

    def start(self, timeout_s: float = 300) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.command, "serve", "--data-dir", str(self.data_dir),
                 "--port", str(self.port), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )
        proc = self.proc
        wait_ready(self.url, alive=lambda: proc.poll() is None, timeout_s=timeout_s)
        key = (self.data_dir / "bootstrap_api_key").read_text().strip()
        self.http = httpx.Client(base_url=self.url, timeout=600,
                                 headers={"Authorization": f"Bearer {key}"})

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> list[int]:
        """Pids of the worker processes (the server's children)."""
        return children(self.pid)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the API process and its worker processes together."""
        return {"api": cpu_seconds(self.pid),
                "workers": sum(cpu_seconds(p) for p in self.workers())}

    def post_batch(self, **kw: Any) -> list[str]:
        """POST /v1/assets/batch; every item must be accepted as new; their asset ids."""
        assert self.http is not None
        response = self.http.post("/v1/assets/batch", **kw)
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/assets/batch: {response.status_code} "
                               f"{response.text[:500]}")
        body = response.json()
        ids = []
        for result in body["results"]:
            accepted = result.get("accepted")
            if not accepted or accepted.get("duplicate_of"):
                raise RuntimeError(f"batch item not accepted as new: {result}")
            ids.append(accepted["asset_id"])
        return ids

    def stop(self, timeout_s: float = 120) -> WorkerLog:
        """SIGTERM, wait, and read the worker processes' "workers stopped" lines."""
        if self.http is not None:
            self.http.close()
        workers: list[int] = []
        if self.proc is not None and self.proc.poll() is None:
            workers = self.workers()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            # uvicorn re-raises the SIGTERM it caught once it has shut down, so `serve`
            # dies before its `finally` stops the supervisor; the workers then stop on
            # their parent-death signal, after it: wait for them to write their line.
            self.serve_returncode = self.proc.returncode
            deadline = time.monotonic() + 60
            while any(pid_alive(p) for p in workers) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in workers:  # a worker that hangs on SIGTERM must not outlive the bench
                if pid_alive(pid):
                    print(f"warning: worker process {pid} still alive 60 s after its "
                          "server stopped; SIGKILL", flush=True)
                    os.kill(pid, signal.SIGKILL)
        self.db.dispose()
        stats = self.worker_log()
        if self.proc is not None and stats.processes != len(workers):
            tail = [line for line in self.log_path.read_text(errors="replace").splitlines()
                    if "alembic" not in line][-8:]
            print(f"warning: {stats.processes} 'workers stopped' lines for {len(workers)} "
                  "worker processes; log tail:\n  " + "\n  ".join(tail), flush=True)
        return stats

    def worker_log(self) -> WorkerLog:
        stats = WorkerLog()
        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"workers stopped"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            stats.processes += 1
            stats.deliveries += int(entry.get("deliveries", 0))
            stats.noop_deliveries += int(entry.get("noop_deliveries", 0))
            stats.doorbells_rung += int(entry.get("doorbells_rung", 0))
        return stats


def unfinished(db: Database) -> int:
    with db.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(StageRun)
                            .where(StageRun.state.in_(UNFINISHED))) or 0)


def wait_idle(db: Database, *, timeout_s: float = 1800, poll_s: float = 0.02) -> None:
    """Until no stage run is pending, queued or running."""
    deadline = time.monotonic() + timeout_s
    while unfinished(db):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pipeline not idle after {timeout_s} s")
        time.sleep(poll_s)


def step_workers(db: Database) -> dict[str, set[int]]:
    """Pids of the processes that ran each step so far."""
    out: dict[str, set[int]] = defaultdict(set)
    with db.session(write=False) as s:
        for step, worker in s.execute(
            select(StageRun.step, StageRun.worker).distinct()
            .where(StageRun.worker.is_not(None))
        ):
            out[step].add(int(str(worker).rsplit(":", 1)[1]))
    return out


def warm_until_covered(server: Server, send: Any, steps: Iterable[str], *,
                       tries: int = 40) -> int:
    """Send warm-up items (``send(i)``) until every worker process ran every step.

    Models load lazily in each worker process, on its first batch of a step; a doorbell
    goes to whichever process asks first, so this repeats until all have had work.
    Returns the number of warm-up rounds.
    """
    wanted = set(steps)
    for i in range(tries):
        send(i)
        wait_idle(server.db, timeout_s=600)
        pids = set(server.workers())
        ran = step_workers(server.db)
        if pids and all(pids <= ran.get(step, set()) for step in wanted):
            return i + 1
    print(f"warning: after {tries} warm-up rounds not every worker process ran "
          f"every step of {sorted(wanted)}", flush=True)
    return tries


def asset_statuses(db: Database, asset_ids: Sequence[str]) -> dict[str, int]:
    with db.session(write=False) as s:
        return dict(s.execute(  # type: ignore[arg-type]
            select(Asset.status, func.count()).where(Asset.id.in_(asset_ids))
            .group_by(Asset.status)
        ).all())


@dataclass
class StepProfile:
    runs: int = 0
    batches: int = 0
    busy_s: float = 0.0
    """Sum over batches of claim (``started_at``) to settle (``finished_at``, which is
    stamped when the settle transaction begins, so the write itself is not in it)."""
    span_s: float = 0.0
    """First claim to last settle of the step."""
    processor_ms: dict[str, float] = field(default_factory=dict)
    """Sum of ``duration_ms`` per processor (the processor's own time)."""
    by_worker: dict[int, int] = field(default_factory=dict)
    """Assets per worker process (pid)."""
    first_s: float | None = None
    """First claim, seconds after the bench's clock started (when it passed ``t0``)."""
    timeline: list[tuple[float, float, int]] = field(default_factory=list)
    """Per batch (when ``t0`` was passed): claim and settle, seconds after ``t0``, and
    the runs it held."""

    def line(self, name: str) -> str:
        procs = ", ".join(f"{p} {ms / 1000:.2f}" for p, ms in self.processor_ms.items())
        mean = self.runs / self.batches if self.batches else 0.0
        split = "/".join(str(n) for n in sorted(self.by_worker.values(), reverse=True))
        return (f"  {name:<58} runs {self.runs:5d}  batches {self.batches:4d} "
                f"(~{mean:4.1f} runs)  assets per process {split}  claim->settle "
                f"{self.busy_s:6.2f} s  span {self.span_s:6.2f} s"
                + (f" from +{self.first_s:.2f} s" if self.first_s is not None else "")
                + f"  processors s: {procs}")


def step_profiles(db: Database, asset_ids: Sequence[str],
                  t0: datetime | None = None) -> dict[str, StepProfile]:
    """Per step, from ``stage_run`` rows of these assets: batches are the runs one
    worker claimed at one instant. ``t0``: when the clock started (aware UTC, like the
    database's timestamps), for each step's first claim."""
    rows: list[tuple[str, str, str, Any, Any, float | None]] = []
    with db.session(write=False) as s:
        for chunk in range(0, len(asset_ids), 500):
            rows += s.execute(
                select(StageRun.step, StageRun.processor, StageRun.worker,
                       StageRun.started_at, StageRun.finished_at, StageRun.duration_ms)
                .where(StageRun.asset_id.in_(asset_ids[chunk:chunk + 500]))
            ).all()  # type: ignore[arg-type]
    out: dict[str, StepProfile] = {}
    batches: dict[str, dict[tuple[str, Any], Any]] = defaultdict(dict)
    sizes: dict[str, dict[tuple[str, Any], int]] = defaultdict(dict)
    bounds: dict[str, list[Any]] = {}
    for step, proc, worker, started, finished, ms in rows:
        prof = out.setdefault(step, StepProfile())
        prof.runs += 1
        prof.processor_ms[proc] = prof.processor_ms.get(proc, 0.0) + (ms or 0.0)
        if started is None or finished is None:
            continue
        pid = int(str(worker).rsplit(":", 1)[1]) if worker else 0
        if proc == step.split(":", 1)[1].split("+")[0]:  # one run per asset and step
            prof.by_worker[pid] = prof.by_worker.get(pid, 0) + 1
        key = (worker, started)
        batches[step][key] = max(batches[step].get(key, finished), finished)
        sizes[step][key] = sizes[step].get(key, 0) + 1
        lo_hi = bounds.setdefault(step, [started, finished])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], started), max(lo_hi[1], finished)
    for step, prof in out.items():
        prof.batches = len(batches[step])
        prof.busy_s = sum((end - start).total_seconds()
                          for (_, start), end in batches[step].items())
        if step in bounds:
            prof.span_s = (bounds[step][1] - bounds[step][0]).total_seconds()
            if t0 is not None:
                prof.first_s = (bounds[step][0] - t0).total_seconds()
                prof.timeline = sorted(
                    ((start - t0).total_seconds(), (end - t0).total_seconds(),
                     sizes[step][(worker, start)])
                    for (worker, start), end in batches[step].items())
    return out


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def provenance() -> str:
    """When and on what code a bench ran: UTC time, HEAD, uncommitted files in src/, load."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=False)
        return done.stdout.strip()

    dirty = len([line for line in git("status", "--porcelain", "--", "src").splitlines()
                 if line.strip()])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, HEAD "
            f"{git('rev-parse', '--short', 'HEAD')} + {dirty} uncommitted files in src/, "
            f"{os.cpu_count()} CPUs, load average {load}")
