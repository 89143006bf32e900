"""Admin endpoints through the API: one tenant learns nothing about another's work or
failures, failure reasons carry no server internals, and every query bound holds."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.e2e.conftest import PROFILES, Api

pytestmark = [pytest.mark.slow, PROFILES]


def _queues(api: Api, headers: dict[str, str]) -> dict[str, tuple[int, int, int, int]]:
    r = api.client.get("/v1/admin/queues", headers=headers)
    assert r.status_code == 200
    return {q["queue"]: (q["ready"], q["delayed"], q["in_flight"], q["dead"]) for q in r.json()}


def _dead_letters(api: Api, headers: dict[str, str], want: int) -> list[dict[str, Any]]:
    dead: list[dict[str, Any]] = []
    for _ in range(200):
        dead = api.client.get("/v1/admin/dead-letters", headers=headers).json()
        if len(dead) >= want:
            break
        threading.Event().wait(0.05)
    return dead


def test_one_tenants_dead_letters_do_not_show_in_anothers_numbers(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = api.new_tenant("admin-a"), api.new_tenant("admin-b")
    r = api.client.post("/v1/assets", headers=b, json={"text": "Ferries cross Port Phillip."})
    assert r.status_code == 202
    api.wait()
    b_before = _queues(api, b)
    assert all(counts == (0, 0, 0, 0) for counts in b_before.values()), b_before

    language = api.kenning.registry.get("text.language")
    secret_path = api.data_dir / "blobs" / "ab" / "cd" / "internal.bin"

    def broken(batch: Any) -> Any:
        raise FileNotFoundError(f"cannot open {secret_path}\n  (second line with detail)")

    monkeypatch.setattr(language, "process", broken)  # test double: a failing processor
    asset_id = api.client.post("/v1/assets", headers=a, json={
        "text": "Cyclists rode the Great Ocean Road from Torquay to Apollo Bay."}
    ).json()["asset_id"]
    api.wait()
    dead = _dead_letters(api, a, want=1)
    assert [(d["stage"], d["asset_id"]) for d in dead] == [("text.language", asset_id)]
    reason = dead[0]["reason"]
    assert reason.startswith("FileNotFoundError: cannot open ")
    assert "Traceback" not in reason and "File \"" not in reason and "\n" not in reason
    assert str(api.data_dir) not in reason and "internal.bin" not in reason
    assert len(reason) <= 300

    a_queues = _queues(api, a)
    assert a_queues[language.queue][3] == 1  # A sees its own dead stage
    assert _queues(api, b) == b_before  # B sees nothing of it
    assert api.client.get("/v1/admin/dead-letters", headers=b).json() == []
    assert api.client.post("/v1/admin/dead-letters", headers=b, json={}).json() == {
        "redriven": []}

    monkeypatch.undo()
    redriven = api.client.post("/v1/admin/dead-letters", headers=a, json={}).json()
    assert redriven == {"redriven": [dead[0]["id"]]}
    api.wait()
    assert api.client.get(f"/v1/assets/{asset_id}", headers=a).json()["status"] == "ready"
    assert all(counts[3] == 0 for counts in _queues(api, a).values())


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "-907516395684407672832"},
        {"limit": "907516395684407672832"},
        {"limit": "-1"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"action": "a" * 51},
        {"subject_id": "s" * 101},
    ],
)
def test_audit_query_bounds(api: Api, params: dict[str, str]) -> None:
    r = api.client.get("/v1/audit", headers=api.headers, params=params)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


@pytest.mark.parametrize("limit", ["-907516395684407672832", "-1", "0", "1001"])
def test_dead_letter_limit_bounds(api: Api, limit: str) -> None:
    r = api.client.get("/v1/admin/dead-letters", headers=api.headers, params={"limit": limit})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


def test_limits_inside_the_bounds_work(api: Api) -> None:
    for _ in range(3):
        api.client.post("/v1/assets", headers=api.headers, json={"text": "x"})
    r = api.client.get("/v1/audit", headers=api.headers, params={"limit": 1})
    assert r.status_code == 200 and len(r.json()) == 1
    r = api.client.get("/v1/audit", headers=api.headers,
                       params={"limit": 1000, "action": "a" * 50, "subject_id": "s" * 100})
    assert (r.status_code, r.json()) == (200, [])
    r = api.client.get("/v1/admin/dead-letters", headers=api.headers, params={"limit": 1000})
    assert r.status_code == 200


@pytest.mark.parametrize("text", ["\u200b\u200c\u200d\u2060\ufeff", "\u00ad \u200b\n\u2060"])
def test_invisible_text_is_empty_inline_and_uploaded(api: Api, text: str) -> None:
    inline = api.client.post("/v1/assets", headers=api.headers, json={"text": text})
    upload = api.client.post("/v1/assets", headers=api.headers,
                             files={"file": ("blank.txt", text.encode())})
    for r in (inline, upload):
        assert (r.status_code, r.json()["error"]["code"]) == (422, "empty_content")
