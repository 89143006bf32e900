"""Every ``kenning`` command against a real server (uvicorn on loopback, real models).

The CLI runs in-process through Typer's ``CliRunner`` and talks HTTP to the server; it
finds the API key through ``--data-dir`` (the bootstrap key file) and the server through
``--api-url``, exactly as on a workstation.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from click.testing import Result
from typer.testing import CliRunner

from kenning.cli.client import Client
from kenning.cli.main import app
from kenning.settings import Settings
from kenning.stores.metadata.database import alembic_config
from tests.fixtures import media
from tests.unit.cli.conftest import LiveServer

# Images go through OCR in the pipeline.
pytestmark = pytest.mark.slow

IMAGES = ("coffee.png", "chelsea.png")
runner = CliRunner()


def kenning(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Run ``kenning ARGS`` in-process; a wide terminal so tables do not wrap ids."""
    return runner.invoke(app, list(args), env={"COLUMNS": "200", "KENNING_API_KEY": None,
                                               **(env or {})}, catch_exceptions=False)


def remote(server: LiveServer) -> list[str]:
    return ["--data-dir", str(server.data_dir), "--api-url", server.url]


def flat(text: str) -> str:
    """Whitespace collapsed, so a message rich wrapped at the terminal edge still matches."""
    return " ".join(text.split())


@dataclass
class Inbox:
    root: Path
    articles: dict[str, Path]
    images: dict[str, Path]

    def files(self) -> dict[str, Path]:
        return {**self.articles, **self.images}


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Inbox:
    """Five real news articles two folders down, two real photos at the top, one dotfile."""
    root = tmp_path_factory.mktemp("inbox")
    nested = root / "news" / "2001-12"
    nested.mkdir(parents=True)
    articles: dict[str, Path] = {}
    for article in media.news(5):
        path = nested / f"{article.id}.txt"
        path.write_text(article.text, encoding="utf-8")
        articles[article.id] = path
    images: dict[str, Path] = {}
    for name in IMAGES:
        images[name] = root / name
        images[name].write_bytes(media.image_bytes(name))
    (root / ".DS_Store").write_bytes(media.zip_bytes())  # hidden: the walk skips it
    return Inbox(root, articles, images)


@pytest.fixture(scope="module")
def first_ingest(live_server: LiveServer, inbox: Inbox) -> Result:
    return kenning("ingest", str(inbox.root), *remote(live_server))


def asset_ids(server: LiveServer, key: str | None = None) -> dict[str, str]:
    """sha256 -> asset id, from the tenant's audit trail."""
    with server.http(key) as http:
        r = http.get("/v1/audit", params={"action": "asset.create", "limit": 1000})
    assert r.status_code == 200, r.text
    return {e["after"]["sha256"]: e["subject_id"] for e in r.json()}


@pytest.fixture(scope="module")
def ids(live_server: LiveServer, inbox: Inbox, first_ingest: Result) -> dict[str, str]:
    """File name (article id or image name) -> asset id, once the pipeline is idle."""
    assert first_ingest.exit_code == 0, first_ingest.output
    live_server.wait()
    by_sha = asset_ids(live_server)
    return {name: by_sha[hashlib.sha256(path.read_bytes()).hexdigest()]
            for name, path in inbox.files().items()}


# --------------------------------------------------------------------------- ingest


def test_ingest_walks_the_folder_recursively(
    live_server: LiveServer, inbox: Inbox, first_ingest: Result
) -> None:
    assert first_ingest.exit_code == 0, first_ingest.output
    assert json.loads(first_ingest.stdout) == {"new": 7, "duplicate": 0, "rejected": 0}
    assert len(asset_ids(live_server)) == 7  # the dotfile was never sent


def test_ingesting_the_same_folder_again_gives_duplicates(
    live_server: LiveServer, inbox: Inbox, first_ingest: Result
) -> None:
    again = kenning("ingest", str(inbox.root), *remote(live_server))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {"new": 0, "duplicate": 7, "rejected": 0}


def test_a_bad_file_is_rejected_and_the_rest_ingested(
    live_server: LiveServer, tmp_path: Path, first_ingest: Result
) -> None:
    article = media.news(6)[5]
    good = tmp_path / "more" / f"{article.id}.txt"
    good.parent.mkdir()
    good.write_text(article.text, encoding="utf-8")
    (tmp_path / "more" / "holiday.jpg").write_bytes(media.zip_bytes())
    result = kenning("ingest", str(tmp_path / "more"), "--metadata", '{"batch": "cli-test"}',
                     *remote(live_server))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"new": 1, "duplicate": 0, "rejected": 1}
    assert "holiday.jpg: unsupported_media_type" in flat(result.stderr)
    asset_id = asset_ids(live_server)[hashlib.sha256(good.read_bytes()).hexdigest()]
    with live_server.http() as http:
        asset = http.get(f"/v1/assets/{asset_id}").json()
    assert asset["metadata"] == {"batch": "cli-test"}
    assert asset["filename"] == good.name
    assert asset["kind"] == "text"


def test_ingest_sends_batches_of_batch_size(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    real = Client.ingest_files

    def counting(self: Client, paths: Any, metadata: Any = None) -> Any:
        sent.append(len(paths))
        return real(self, paths, metadata)

    monkeypatch.setattr(Client, "ingest_files", counting)
    for article in media.news(12)[7:12]:
        (tmp_path / f"{article.id}.txt").write_text(article.text, encoding="utf-8")
    result = kenning("ingest", str(tmp_path), "--batch-size", "2", "--parallel", "1",
                     *remote(live_server))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"new": 5, "duplicate": 0, "rejected": 0}
    assert sent == [2, 2, 1]
    again = kenning("ingest", str(tmp_path), "--batch-size", "5", *remote(live_server))
    assert json.loads(again.stdout) == {"new": 0, "duplicate": 5, "rejected": 0}
    assert sent == [2, 2, 1, 5]


def test_only_bad_files_exit_1(live_server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "archive.jpg").write_bytes(media.zip_bytes({"a.txt": "not an image"}))
    result = kenning("ingest", str(tmp_path), *remote(live_server))
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {"new": 0, "duplicate": 0, "rejected": 1}


def test_a_missing_path_is_skipped_with_a_message(
    live_server: LiveServer, tmp_path: Path
) -> None:
    result = kenning("ingest", str(tmp_path / "nope"), *remote(live_server))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"new": 0, "duplicate": 0, "rejected": 0}
    assert f"skipped {tmp_path / 'nope'}: no such file or folder" in flat(result.stderr)


def test_a_url_the_server_refuses_is_rejected(live_server: LiveServer) -> None:
    # The server guards against SSRF (allow_private_urls is off): loopback is refused.
    result = kenning("ingest", "http://127.0.0.1:9/feed.txt", *remote(live_server))
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {"new": 0, "duplicate": 0, "rejected": 1}
    assert "http://127.0.0.1:9/feed.txt: url_not_allowed" in flat(result.stderr)


@pytest.mark.parametrize("metadata", ["{not json", "[1, 2]"])
def test_bad_metadata_is_a_usage_error(
    live_server: LiveServer, inbox: Inbox, metadata: str
) -> None:
    before = len(asset_ids(live_server))
    result = kenning("ingest", "http://127.0.0.1:9/feed.txt", str(inbox.root),
                     "--metadata", metadata, *remote(live_server))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--metadata" in result.stderr and "must be a JSON object" in flat(result.stderr)
    assert len(asset_ids(live_server)) == before


def test_ingest_against_a_dead_server_exits_2(inbox: Inbox, unused_port: int) -> None:
    url = f"http://127.0.0.1:{unused_port}"
    result = kenning("ingest", str(inbox.root), "--api-url", url,
                     "--data-dir", str(inbox.root / "no-key-here"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"error unreachable: no Kenning server at {url} (start `kenning serve`)" in flat(
        result.stderr)


# --------------------------------------------------------------------------- search, similar


def test_search_finds_an_article_by_a_distinctive_word(
    live_server: LiveServer, ids: dict[str, str]
) -> None:
    keyword = kenning("search", "Wollongong", "--mode", "keyword", *remote(live_server))
    assert keyword.exit_code == 0, keyword.output
    assert ids["lee-bg-0005"] in keyword.stdout
    assert "Wollongong" in keyword.stdout  # the highlighted snippet
    assert "<mark>" not in keyword.stdout and "&#x27;" not in keyword.stdout
    as_json = kenning("search", "Wollongong", "--mode", "keyword", "--json",
                      *remote(live_server))
    assert as_json.exit_code == 0, as_json.output
    hits = json.loads(as_json.stdout)["hits"]
    assert hits[0]["asset_id"] == ids["lee-bg-0005"]
    assert "<mark>Wollongong</mark>" in hits[0]["highlight"]
    others = [ids[a] for a in ("lee-bg-0001", "lee-bg-0002", "lee-bg-0003", "lee-bg-0004")]
    assert not any(other in keyword.stdout for other in others)

    hybrid = kenning("search", "midwives suspended at Wollongong Hospital", "--limit", "3",
                     *remote(live_server))
    assert hybrid.exit_code == 0, hybrid.output
    found = [i for i in ids.values() if i in hybrid.stdout]
    assert found and hybrid.stdout.index(ids["lee-bg-0005"]) == min(
        hybrid.stdout.index(i) for i in found)  # the first row


def test_search_filters_by_kind(live_server: LiveServer, ids: dict[str, str]) -> None:
    result = kenning("search", "Wollongong", "--mode", "keyword", "--kind", "image",
                     *remote(live_server))
    assert result.exit_code == 0, result.output
    assert ids["lee-bg-0005"] not in result.stdout


def test_similar_file_finds_a_jpeg_reencode_by_pdq(
    live_server: LiveServer, ids: dict[str, str], tmp_path: Path
) -> None:
    query = tmp_path / "coffee-q30.jpg"
    query.write_bytes(media.jpeg_bytes("coffee.png", 30))
    result = kenning("similar", str(query), "--json", *remote(live_server))
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["query"]["upload"] == "image"
    assert body["query"]["threshold"] == Settings().pdq_threshold
    assert [m["asset_id"] for m in body["matches"]] == [ids["coffee.png"]]
    match = body["matches"][0]
    assert match["method"] == "pdq"
    assert match["evidence"]["hamming_distance"] <= 31


def test_similar_image_asset_id(live_server: LiveServer, ids: dict[str, str]) -> None:
    result = kenning("similar", ids["coffee.png"], "--threshold", "256", "--json",
                     *remote(live_server))
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["query"] == {"asset_id": ids["coffee.png"], "threshold": 256}
    # Every PDQ hash is within 256 bits: the other photo, never the query itself.
    assert [(m["asset_id"], m["method"]) for m in body["matches"]] == [
        (ids["chelsea.png"], "pdq")]


def test_similar_text_asset_id(live_server: LiveServer, ids: dict[str, str]) -> None:
    query = ids["lee-bg-0001"]
    result = kenning("similar", query, "--threshold", "0", "--json", *remote(live_server))
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["query"]["asset_id"], body["query"]["threshold"]) == (query, 0.0)
    assert body["query"]["thresholds"]["text_semantic"] == 0.0
    found = [m["asset_id"] for m in body["matches"]]
    assert query not in found
    assert {ids[a] for a in ("lee-bg-0002", "lee-bg-0003", "lee-bg-0004", "lee-bg-0005")} <= (
        set(found))
    assert all(m["method"] == "text_semantic" for m in body["matches"])
    scores = [m["score"] for m in body["matches"]]
    assert scores == sorted(scores, reverse=True)


def test_similar_unknown_asset_exits_2(live_server: LiveServer, ids: dict[str, str]) -> None:
    result = kenning("similar", "0" * 32, *remote(live_server))
    assert result.exit_code == 2
    assert f"error not_found: no asset {'0' * 32}" in flat(result.stderr)


# --------------------------------------------------------------------------- operations


def test_status_reports_readiness_and_queues(
    live_server: LiveServer, ids: dict[str, str]
) -> None:
    table = kenning("status", *remote(live_server))
    assert table.exit_code == 0, table.output
    assert "ready" in table.stdout and "in flight" in table.stdout
    result = kenning("status", "--json", *remote(live_server))
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["ready"]["ready"] is True
    assert set(body["ready"]["checks"].values()) == {"ok"}
    queues = {q["queue"]: q for q in body["queues"]}
    assert set(queues) == set(live_server.kenning.queue_admin.queue_depths())
    assert live_server.kenning.registry.queues() <= set(queues)
    assert all(set(q) == {"queue", "ready", "delayed", "in_flight", "dead"}
               for q in queues.values())
    assert sum(q["dead"] for q in queues.values()) == 0


def test_status_of_a_dead_server_exits_2(tmp_path: Path, unused_port: int) -> None:
    url = f"http://127.0.0.1:{unused_port}"
    result = kenning("status", "--data-dir", str(tmp_path), "--api-url", url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"error unreachable: no Kenning server at {url}" in flat(result.stderr)


def test_dlq_list_and_redrive_when_nothing_failed(
    live_server: LiveServer, ids: dict[str, str]
) -> None:
    listed = kenning("dlq", "list", *remote(live_server))
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []
    redriven = kenning("dlq", "redrive", *remote(live_server))
    assert redriven.exit_code == 0, redriven.output
    assert json.loads(redriven.stdout) == {"redriven": []}


def test_apikey_create_for_another_tenant(live_server: LiveServer, ids: dict[str, str]) -> None:
    result = kenning("apikey", "create", "--tenant", "other", "--name", "ci",
                     "--data-dir", str(live_server.data_dir))
    assert result.exit_code == 0, result.output
    issued: dict[str, Any] = json.loads(result.stdout)
    assert issued["tenant"] == "other"
    key = issued["api_key"]
    assert isinstance(key, str) and len(key) > 30
    assert key != live_server.key

    with live_server.http(key) as http:
        audit = http.get("/v1/audit")
        assert audit.status_code == 200, audit.text
        assert http.get(f"/v1/assets/{ids['lee-bg-0005']}").status_code == 404
    events = {(e["action"], e["subject_id"]) for e in audit.json()}
    assert events == {("tenant.create", issued["tenant_id"]),
                      ("apikey.create", issued["key_id"])}
    assert next(e for e in audit.json() if e["action"] == "apikey.create")["actor"] == "cli"

    # The CLI honours KENNING_API_KEY over the bootstrap key: the other tenant sees nothing.
    search = kenning("search", "Wollongong", "--mode", "keyword", *remote(live_server),
                     env={"KENNING_API_KEY": key})
    assert search.exit_code == 0, search.output
    assert ids["lee-bg-0005"] not in search.stdout

    second = kenning("apikey", "create", "--tenant", "other",
                     "--data-dir", str(live_server.data_dir))
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["tenant_id"] == issued["tenant_id"]
    assert again["api_key"] != key


def test_db_upgrade_on_a_fresh_data_dir_is_idempotent(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    for _ in range(2):
        result = kenning("db", "upgrade", "--data-dir", str(data_dir))
        assert result.exit_code == 0, result.output
        assert "database is at the latest revision" in result.stderr
        with sqlite3.connect(data_dir / "kenning.db") as conn:
            versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert versions == [(head,)]
        assert {"tenant", "api_key", "asset", "job", "stage_run"} <= tables


def test_settings_lists_every_field_with_its_variable() -> None:
    result = kenning("settings", env={"KENNING_WORKERS": "3", "KENNING_LOG_JSON": "false"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    variables = {line.split("=", 1)[0]: line.split("=", 1)[1]
                 for line in lines if line.startswith("KENNING_")}
    assert set(variables) == {f"KENNING_{name.upper()}" for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        assert field.description
        line = lines.index(f"KENNING_{name.upper()}={variables[f'KENNING_{name.upper()}']}")
        assert lines[line + 1].strip() == field.description
    assert variables["KENNING_WORKERS"] == "3"
    assert variables["KENNING_LOG_JSON"] == "False"
    assert variables["KENNING_PORT"] == "8000"


# --------------------------------------------------------------------------- serve, demo


def test_serve_builds_the_app_from_its_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``serve`` wiring only (uvicorn.run recorded, not run); a real server runs in
    tests/e2e/test_crash_recovery.py."""
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: calls.append((application, kw)))
    monkeypatch.setattr("kenning.observability.logging.configure_logging", lambda *a, **k: None)
    result = kenning("serve", "--data-dir", str(tmp_path), "--host", "127.0.0.2",
                     "--port", "8123", "--workers", "1", "--worker-processes", "0")
    assert result.exit_code == 0, result.output
    [(application, kw)] = calls
    assert kw == {"host": "127.0.0.2", "port": 8123, "log_config": None, "access_log": False}
    served = application.state.kenning
    try:
        assert (served.settings.data_dir, served.settings.workers) == (tmp_path, 1)
        assert served.supervisor is None  # threads in the API process
    finally:
        served.close()
    assert "Kenning on http://127.0.0.2:8123" in flat(result.stderr)


def test_serve_starts_worker_processes_and_stops_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With worker processes the API process runs no pipeline threads; the workers are
    real `kenning worker` processes, and they are gone once serve returns."""
    import os

    import uvicorn

    seen: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: seen.append(application))
    monkeypatch.setattr("kenning.observability.logging.configure_logging", lambda *a, **k: None)
    result = kenning("serve", "--data-dir", str(tmp_path), "--port", "8124", "--workers", "3",
                     "--worker-processes", "2")
    assert result.exit_code == 0, result.output
    served = seen[0].state.kenning
    try:
        supervisor = served.supervisor
        assert served.settings.workers == 0
        assert (supervisor.count, supervisor.threads, len(supervisor.pids())) == (2, 3, 2)
        for pid in supervisor.pids():  # stopped and reaped
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        served.close()
    assert "2 worker processes" in flat(result.stderr)


def test_demo_passes_its_options_and_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``demo`` wiring only; the demo itself downloads a corpus and serves for minutes."""
    seen: list[tuple[Path, int, bool]] = []

    def fake_run_demo(settings: Settings, *, articles: int, keep_serving: bool) -> int:
        seen.append((settings.data_dir, articles, keep_serving))
        return 3

    monkeypatch.setattr("kenning.cli.demo.run_demo", fake_run_demo)
    result = kenning("demo", "--data-dir", str(tmp_path), "--articles", "7", "--no-serve")
    assert result.exit_code == 3
    assert seen == [(tmp_path, 7, False)]
