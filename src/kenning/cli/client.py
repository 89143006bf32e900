"""HTTP client used by the CLI commands that talk to a running server.

The CLI goes through the same API as every other client, so the CLI and the API share
one code path into the services.
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from kenning.settings import Settings


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def resolve_key(settings: Settings) -> str | None:
    if settings.api_key:
        return settings.api_key
    path = settings.bootstrap_key_path
    return path.read_text().strip() if path.exists() else None


class Client:
    def __init__(self, settings: Settings, *, timeout: float = 120.0) -> None:
        key = resolve_key(settings)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.settings = settings
        self.base = settings.api_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _unreachable(self) -> ApiError:
        return ApiError(0, "unreachable",
                        f"no Kenning server at {self.base} (start `kenning serve`)")

    def readiness(self) -> dict[str, Any]:
        """The body of GET /readyz, whether the server is ready (200) or not (503)."""
        try:
            response = self.http.get("/readyz")
        except httpx.ConnectError as exc:
            raise self._unreachable() from exc
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise ApiError(response.status_code, "http_error",
                           f"{self.base}/readyz did not answer JSON; is this a Kenning server?"
                           ) from None
        return body

    def _call(self, method: str, path: str, *, retries: int = 20, **kw: Any) -> Any:
        for _ in range(retries):
            try:
                response = self.http.request(method, path, **kw)
            except httpx.ConnectError as exc:
                raise self._unreachable() from exc
            if response.status_code == 429:
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            if response.status_code >= 400:
                try:
                    err = response.json()["error"]
                    raise ApiError(response.status_code, err["code"], err["message"])
                except (ValueError, KeyError, TypeError):
                    raise ApiError(response.status_code, "http_error", response.text) from None
            return response.json() if response.content else None
        raise ApiError(429, "backpressure", "server stayed busy; try again later")

    def ingest_files(
        self, paths: Sequence[Path], metadata: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """POST /v1/assets/batch (multipart): one result per path, in order.

        Files are streamed from disk, not read into memory; ``metadata`` goes with every
        file (the ``items`` field).
        """
        with ExitStack() as stack:
            files = [
                ("file", (path.name, stack.enter_context(path.open("rb")),
                          mimetypes.guess_type(path.name)[0] or "application/octet-stream"))
                for path in paths
            ]
            data = {"items": json.dumps([{"metadata": metadata}] * len(paths))} if (
                metadata) else {}
            body = self._call("POST", "/v1/assets/batch", files=files, data=data)
        return list(body["results"])

    def ingest_urls(
        self, urls: Sequence[str], metadata: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """POST /v1/assets/batch (JSON): the server fetches each URL; results in order."""
        items = [{"url": url, **({"metadata": metadata} if metadata else {})} for url in urls]
        body = self._call("POST", "/v1/assets/batch", json={"items": items})
        return list(body["results"])

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json=body)

    def similar_file(self, path: Path, threshold: float | None) -> Any:
        data = {"threshold": str(threshold)} if threshold is not None else {}
        with path.open("rb") as fh:
            return self._call("POST", "/v1/similar", files={"file": (path.name, fh)}, data=data)


def wait_ready(
    url: str, *, alive: Callable[[], bool] = lambda: True, timeout_s: float = 180,
    poll_s: float = 0.2,
) -> None:
    """Block until ``url``/readyz answers 200; fail early when ``alive()`` turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for {url} exited during startup")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise RuntimeError(f"{url}/readyz did not answer 200 within {timeout_s} s")


MULTIPART_FIELD_BYTES = 1024 * 1024
"""The server's bound on one text field of a form (the ``items`` field of a batch)."""


def plan_batches(
    items: Iterable[str | Path], *, size: int, budget_bytes: int,
    metadata: dict[str, Any] | None = None, first: int | None = None,
) -> list[list[str | Path]]:
    """Group items for POST /v1/assets/batch: files with files, URLs with URLs.

    A batch of files holds at most ``size`` files and, with its ``items`` field, about
    ``budget_bytes`` (the server's upload limit bounds a whole multipart body); a file
    larger than that goes alone, so only it is refused. URLs go ``size`` at a time.
    ``first``: the first batch of files holds at most that many.
    """
    entry = len(json.dumps({"metadata": metadata})) + 2 if metadata else 0
    if entry:
        size = max(1, min(size, MULTIPART_FIELD_BYTES // entry))
    batches: list[list[str | Path]] = []
    files: list[str | Path] = []
    urls: list[str | Path] = []
    used = 0
    for item in items:
        if not isinstance(item, Path):
            urls.append(item)
            if len(urls) == size:
                batches.append(urls)
                urls = []
            continue
        try:
            weight = item.stat().st_size + entry
        except OSError:
            weight = entry  # unreadable: the batch call reports it
        limit = size if batches or first is None else min(size, max(1, first))
        if files and (len(files) >= limit or used + weight > budget_bytes):
            batches.append(files)
            files, used = [], 0
        files.append(item)
        used += weight
    batches.extend(batch for batch in (files, urls) if batch)
    return batches
