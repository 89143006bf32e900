"""Issue 10, item 8 end to end: stories ingested over HTTP through the pipeline (the real
USE model), readers' events posted to ``POST /v1/events``, ``GET
/v1/users/{id}/recommendations`` answered with reasons, and the impressions of what was
shown posted back with the response's request id. Refusals with codes, tenant isolation,
and an install without the ``recs`` extra (a child Python that cannot import scipy)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.stores.metadata.tables import Event, RecServed
from tests.e2e.conftest import Api, e2e_settings
from tests.fixtures import media

pytestmark = pytest.mark.slow

FIRES = ("lee-bg-0001", "lee-bg-0009", "lee-bg-0010", "lee-bg-0020")
_ids = itertools.count()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir: Path = tmp_path_factory.mktemp("kenning")
    # No exploration: the tests assert the ranked order (exploration: the unit tests).
    kenning = Kenning(e2e_settings(data_dir, recs_snapshot_max_age_s=0, recs_explore=0.0))
    with TestClient(create_app(kenning)) as client:
        yield Api(client, kenning, (data_dir / "bootstrap_api_key").read_text().strip(),
                  data_dir)


@pytest.fixture(scope="module")
def stories(api: Api) -> dict[str, str]:
    """30 ABC news stories of the bootstrap tenant, article id -> asset id."""
    ids = {}
    for n, art in enumerate(media.news(30)):
        r = api.client.post("/v1/assets", headers=api.headers, json={
            "text": art.text, "title": art.title,
            "metadata": {"author": f"writer-{n % 5}"}})
        assert r.status_code == 202, r.text
        ids[art.id] = r.json()["asset_id"]
    api.wait()
    return ids


def _events(api: Api, events: list[dict[str, Any]],
            headers: dict[str, str] | None = None) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    body = {"events": [{"event_id": f"ev-{next(_ids)}", "at": now, **e} for e in events]}
    r = api.client.post("/v1/events", headers=headers or api.headers, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _recs(api: Api, reader: str, headers: dict[str, str] | None = None,
          **params: Any) -> dict[str, Any]:
    r = api.client.get(f"/v1/users/{reader}/recommendations",
                       headers=headers or api.headers, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_reader_gets_stories_with_reasons_and_logs_what_was_shown(
        api: Api, stories: dict[str, str]) -> None:
    _events(api, [{"type": "read", "reader_id": "reader-1", "asset_id": stories[a],
                   "dwell_ms": 90_000} for a in FIRES[:2]])
    found = _recs(api, "reader-1", surface="home", limit=6)
    assert found["reader_id"] == "reader-1" and found["surface"] == "home"
    assert found["policy"] == "blend" and len(found["request_id"]) == 32
    items = found["items"]
    assert len(items) == 6 and [i["position"] for i in items] == list(range(6))
    read = {stories[a] for a in FIRES[:2]}
    assert not read & {i["asset_id"] for i in items}
    for item in items:
        assert item["explanation"] and item["reasons"], item
        assert item["explanation"] == item["reasons"][0]["text"]
    # Other bushfire reports come first, "because you read" one of them.
    assert {i["asset_id"] for i in items[:3]} & {stories[a] for a in FIRES[2:]}
    assert items[0]["explanation"].startswith("because you read “")

    # The client shows them and reports impressions with the request id; then a read.
    accepted = _events(api, [{
        "type": "impression", "reader_id": "reader-1", "asset_id": i["asset_id"],
        "surface": "home", "position": i["position"], "request_id": found["request_id"]}
        for i in items] + [{"type": "read", "reader_id": "reader-1",
                            "asset_id": items[0]["asset_id"], "dwell_ms": 40_000}])
    assert accepted == {"accepted": 7, "duplicates": 0}
    with api.kenning.stores.db.session(write=False) as s:
        served = s.execute(select(RecServed.asset_id, RecServed.position).where(
            RecServed.request_id == found["request_id"]).order_by(RecServed.position)).all()
        shown = s.execute(select(Event.asset_id, Event.data).where(
            Event.reader_id == "reader-1", Event.type == "impression")).all()
    assert [tuple(r) for r in served] == [(i["asset_id"], i["position"]) for i in items]
    assert {(a, d["request_id"], d["position"]) for a, d in shown} == {
        (i["asset_id"], found["request_id"], i["position"]) for i in items}
    # What was read since is not served again.
    again = _recs(api, "reader-1", limit=6)
    assert items[0]["asset_id"] not in {i["asset_id"] for i in again["items"]}
    assert again["request_id"] != found["request_id"]


def test_a_new_reader_gets_popular_stories(api: Api, stories: dict[str, str]) -> None:
    _events(api, [{"type": "like", "reader_id": f"fan-{n}", "asset_id": stories["lee-bg-0005"]}
                  for n in range(3)])
    found = _recs(api, "newcomer", limit=5, language="en")
    assert found["items"] and found["items"][0]["asset_id"] == stories["lee-bg-0005"]
    codes = {r["code"] for r in found["items"][0]["reasons"]}
    assert codes & {"trending:engagement", "cold_start:popular"}
    assert any(r["text"].startswith(("popular", "trending"))
               for r in found["items"][0]["reasons"])


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("/v1/users/r/recommendations", {"surface": "bad surface"}, 422, "invalid_request"),
    ("/v1/users/r/recommendations", {"surface": "x" * 33}, 422, "invalid_request"),
    ("/v1/users/r/recommendations", {"limit": 0}, 422, "invalid_request"),
    ("/v1/users/r/recommendations", {"limit": 101}, 422, "invalid_request"),
    ("/v1/users/r/recommendations", {"limit": 60}, 422, "invalid_limit"),
    ("/v1/users/r/recommendations", {"limit": "ten"}, 422, "invalid_request"),
    ("/v1/users/r/recommendations", {"language": "english!"}, 422, "invalid_request"),
    (f"/v1/users/{'r' * 129}/recommendations", {}, 422, "invalid_request"),
    ("/v1/users/%00/recommendations", {}, 404, "not_found"),  # the middleware refuses NUL
    ("/v1/users/a%01b/recommendations", {}, 422, "invalid_request"),
    ("/v1/users//recommendations", {}, 404, "not_found"),
])
def test_bad_parameters_get_a_4xx_with_a_code(api: Api, path: str, params: dict[str, Any],
                                              status: int, code: str) -> None:
    r = api.client.get(path, headers=api.headers, params=params)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text


def test_without_a_key_it_is_401(api: Api) -> None:
    r = api.client.get("/v1/users/r/recommendations")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")


def test_another_tenant_sees_none_of_the_stories_or_the_log(
        api: Api, stories: dict[str, str]) -> None:
    other = api.new_tenant("recs-other")
    _events(api, [{"type": "read", "reader_id": "reader-1", "asset_id": stories[FIRES[0]],
                   "dwell_ms": 1000}])
    found = _recs(api, "reader-1", headers=other, limit=5)
    assert found["items"] == []  # the other tenant has no stories
    mine = _recs(api, "reader-1", limit=5)
    r = api.client.post("/v1/events", headers=other, json={"events": [{
        "event_id": "x-1", "type": "impression", "reader_id": "reader-1",
        "asset_id": mine["items"][0]["asset_id"], "surface": "home", "position": 0,
        "request_id": mine["request_id"], "at": datetime.now(UTC).isoformat()}]})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_asset")
    other_tenant = api.kenning.tenants.authenticate(other["Authorization"].split()[1]).tenant_id
    with api.kenning.stores.db.session(write=False) as s:
        assert s.scalars(select(RecServed.id).where(
            RecServed.tenant_id == other_tenant)).all() == []


def test_an_install_without_the_recs_extra_answers_501(api: Api) -> None:
    saved = api.kenning.recommendations
    api.kenning.recommendations = None
    try:
        r = api.client.get("/v1/users/r/recommendations", headers=api.headers)
    finally:
        api.kenning.recommendations = saved
    assert (r.status_code, r.json()["error"]["code"]) == (501, "recs_unavailable")


CHILD = r'''
import importlib.abc, json, sys
from pathlib import Path


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] in {"scipy", "implicit"}:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, Refuse())
from kenning.container import Kenning
from kenning.settings import Settings

kenning = Kenning(Settings(data_dir=Path(sys.argv[1]), workers=0, log_json=False))
print(json.dumps({"recommendations": kenning.recommendations is None}))
kenning.close()
'''


def test_the_container_builds_without_scipy(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"recommendations": True}


def test_the_served_route_is_in_the_openapi_document(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    op = doc["paths"]["/v1/users/{reader_id}/recommendations"]["get"]
    assert {"200", "401", "422", "501"} <= set(op["responses"])
    assert {p["name"] for p in op["parameters"]} == {"reader_id", "surface", "limit",
                                                     "language", "topics"}
    assert api.client.get("/v1/users/r/recommendations",
                          headers=api.headers).status_code == 200
