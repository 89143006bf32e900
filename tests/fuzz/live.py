"""A real ``kenning serve`` subprocess on a loopback port, and the checks every fuzz test
applies to its answers (no 5xx, the error envelope on every 4xx, a live process)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from PIL import Image

from kenning.cli.client import wait_ready
from kenning.services.tenants import TenantService
from kenning.stores.metadata import Database
from tests.fixtures import media

# Small limits make "near the limit" inputs cheap to send; the rules are the same.
LIMITS = {
    "KENNING_MAX_UPLOAD_BYTES": 1_000_000,
    "KENNING_MAX_TEXT_CHARS": 50_000,
    "KENNING_MAX_IMAGE_PIXELS": 4_000_000,
    "KENNING_MAX_BATCH_ITEMS": 20,
}
SERVER_ENV = {
    **{name: str(value) for name, value in LIMITS.items()},
    "KENNING_LOG_JSON": "true",
    "KENNING_RECONCILE_INTERVAL_S": "1",
    # Timing must not decide a status code: no 429 because the pipeline lags behind.
    "KENNING_MAX_QUEUED_STAGES": "1000000",
    "KENNING_MAX_RETRIES": "1",
    "KENNING_RETRY_MIN_BACKOFF_MS": "20",
    "KENNING_RETRY_MAX_BACKOFF_MS": "100",
    # Fuzzed URLs and callback URLs must fail fast in a sandbox without network.
    "KENNING_URL_FETCH_TIMEOUT_S": "2",
    "KENNING_WEBHOOK_TIMEOUT_S": "1",
    "KENNING_WEBHOOK_MAX_ATTEMPTS": "1",
}
SEED_METADATA = {"desk": "news", "rank": 1, "wire": True}


def fuzz_settings(max_examples: int) -> settings:
    """Bounded, reproducible Hypothesis settings; ``KENNING_FUZZ_SCALE=10`` runs ten times
    the examples (a deeper run than ``make test`` can afford)."""
    scale = max(1, int(os.environ.get("KENNING_FUZZ_SCALE", "1")))
    return settings(max_examples=max_examples * scale, deadline=None, derandomize=True,
                    database=None, suppress_health_check=list(HealthCheck))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def small_png(name: str = "camera", side: int = 48) -> bytes:
    """A real sample image, shrunk to ``side`` pixels and saved as PNG."""
    with Image.open(media.image_path(name)) as im:
        im.load()
        small = im.convert("RGB").resize((side, side))
    out = io.BytesIO()
    small.save(out, format="PNG")
    return out.getvalue()


@dataclass
class Seeded:
    """Assets of one tenant that exist when a test starts."""

    text_asset: str
    image_asset: str
    text_job: str
    image_job: str

    @property
    def asset_ids(self) -> list[str]:
        return [self.text_asset, self.image_asset]


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    key: str
    other_key: str
    process: subprocess.Popen[bytes]
    http: httpx.Client = field(repr=False)
    _db: Database | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ requests
    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def other_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.other_key}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def post_raw(self, path: str, body: bytes, headers: dict[str, str],
                 content_type: str = "application/json") -> httpx.Response:
        return self.http.post(path, content=body,
                              headers={**headers, "Content-Type": content_type})

    # ------------------------------------------------------------------ tenants
    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(f"sqlite:///{self.data_dir / 'kenning.db'}")
        return self._db

    def new_tenant(self, prefix: str = "fuzz") -> dict[str, str]:
        """Headers of a key for a brand-new tenant (so one example cannot taint the next)."""
        service = TenantService(self.db)
        tenant_id = service.create_tenant(f"{prefix}-{uuid.uuid4().hex[:12]}")
        return {"Authorization": f"Bearer {service.create_key(tenant_id, 'fuzz').key}"}

    def seed(self, headers: dict[str, str]) -> Seeded:
        """A text and a small PNG, with metadata, ingested through the API."""
        tag = uuid.uuid4().hex
        text = self.http.post("/v1/assets", headers=headers, json={
            "text": f"Bushfires threaten homes west of Sydney. Firefighters report {tag}.",
            "title": "Fires", "external_id": f"seed-{tag}", "metadata": SEED_METADATA})
        assert text.status_code == 202, text.text
        image = self.http.post("/v1/assets", headers=headers, files={
            "file": ("camera.png", small_png(side=40 + len(tag) % 16)),
        }, data={"metadata": json.dumps(SEED_METADATA), "title": "Camera"})
        assert image.status_code == 202, image.text
        return Seeded(text.json()["asset_id"], image.json()["asset_id"],
                      text.json()["job_id"], image.json()["job_id"])

    # ------------------------------------------------------------------ server log
    def log_offset(self) -> int:
        path = self.data_dir / "server.log"
        return path.stat().st_size if path.exists() else 0

    def log_errors_since(self, offset: int, limit: int = 6000) -> str:
        """Error records and tracebacks the server logged after ``offset``."""
        path = self.data_dir / "server.log"
        if not path.exists():
            return ""
        with path.open("rb") as fh:
            fh.seek(offset)
            tail = fh.read().decode("utf-8", errors="replace")
        picked = []
        for line in tail.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if line.strip():
                    picked.append(line)
                continue
            if isinstance(record, dict) and record.get("level") in ("error", "critical"):
                exc = str(record.get("exc") or "").strip().splitlines()
                picked.append(f"{record.get('logger')}: {record.get('msg')} "
                              + " | ".join(exc[-3:]))
        return "\n".join(picked)[-limit:]

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        self.http.close()
        if self._db is not None:
            self._db.engine.dispose()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def start_server(data_dir: Path) -> LiveServer:
    """Start ``kenning serve`` (one worker) on a free loopback port and wait until ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data_dir / "server.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "kenning.cli.main", "serve", "--data-dir", str(data_dir),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **SERVER_ENV},
    )
    log.close()
    try:
        wait_ready(url, alive=lambda: process.poll() is None, timeout_s=90)
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        other_key = _cli_api_key(data_dir, tenant="other")
    except BaseException:
        process.kill()
        process.wait(timeout=20)
        raise
    # No keep-alive: after an unhandled error uvicorn drops the connection, and the next
    # example must not inherit that reset.
    http = httpx.Client(base_url=url, timeout=60,
                        limits=httpx.Limits(max_keepalive_connections=0))
    return LiveServer(url, data_dir, key, other_key, process, http)


def _cli_api_key(data_dir: Path, tenant: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kenning.cli.main", "apikey", "create", "--tenant", tenant,
         "--name", "fuzz", "--data-dir", str(data_dir)],
        capture_output=True, check=True, timeout=120, env={**os.environ, **SERVER_ENV},
    )
    return str(json.loads(done.stdout)["api_key"])


# ---------------------------------------------------------------------- assertions


def describe(response: httpx.Response) -> str:
    request = response.request
    try:
        body = request.read()
    except (httpx.RequestNotRead, httpx.StreamConsumed, RuntimeError):
        body = b"<streamed body>"
    shown = body[:300] + (b"...(%d bytes)" % len(body) if len(body) > 300 else b"")
    return (f"{request.method} {request.url.raw_path.decode('latin-1')} body={shown!r} -> "
            f"{response.status_code} {response.text[:400]!r}")


def assert_clean(live: LiveServer, response: httpx.Response, offset: int | None = None) -> None:
    """No 5xx; every 4xx is ``{"error": {"code": <non-empty str>, "message": <str>}}``."""
    where = describe(response)
    if response.status_code >= 500:
        log = live.log_errors_since(offset) if offset is not None else ""
        raise AssertionError(f"server error: {where}\nserver log:\n{log}")
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"a 4xx without a JSON body: {where}") from None
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict), f"a 4xx without the error envelope: {where}"
        assert isinstance(error.get("code"), str) and error["code"], f"no error code: {where}"
        assert isinstance(error.get("message"), str), f"no error message: {where}"


def error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def assert_healthy(live: LiveServer) -> None:
    assert live.process.poll() is None, "the server process died"
    r = live.http.get("/healthz")
    assert r.status_code == 200, describe(r)


def assert_stored_asset_reads(
    live: LiveServer, route: str, response: httpx.Response, headers: dict[str, str]
) -> None:
    """An asset the fuzzed request stored must read back (200) for its tenant."""
    if response.status_code != 202:
        return
    if route == "/v1/assets":
        stored = [response.json()["asset_id"]]
    elif route == "/v1/assets/batch":
        stored = [r["accepted"]["asset_id"] for r in response.json()["results"]
                  if r.get("accepted")]
    else:
        return
    for asset_id in stored:
        got = live.request("GET", f"/v1/assets/{asset_id}", headers=headers)
        assert got.status_code == 200, describe(got)
