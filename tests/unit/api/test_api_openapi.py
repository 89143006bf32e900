"""The OpenAPI document defines what it references and documents every answer the door gives."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.unit.api.conftest import Door

ERROR_REF = "#/components/schemas/ErrorResponse"

# Every status each operation can answer besides its success.
EXPECTED = {
    ("get", "/healthz"): {"200"},
    ("get", "/readyz"): {"200", "503"},
    ("get", "/metrics"): {"200"},
    ("post", "/v1/assets"): {"202", "401", "413", "415", "422", "429", "503"},
    ("post", "/v1/assets/batch"): {"202", "401", "413", "415", "422", "429", "503"},
    ("get", "/v1/assets/{asset_id}"): {"200", "401", "404", "422", "503"},
    ("delete", "/v1/assets/{asset_id}"): {"204", "401", "404", "422", "503"},
    ("get", "/v1/assets/{asset_id}/segments"): {"200", "401", "404", "422", "503"},
    ("get", "/v1/assets/{asset_id}/thumbnail"): {"200", "401", "404", "422", "503"},
    ("get", "/v1/assets/{asset_id}/keyframes/{n}"): {"200", "401", "404", "422", "503"},
    ("get", "/v1/jobs/{job_id}"): {"200", "401", "404", "422", "503"},
    ("post", "/v1/search"): {"200", "401", "404", "413", "422", "503"},
    ("post", "/v1/similar"): {"200", "401", "404", "413", "415", "422", "429", "503"},
    ("get", "/v1/matching"): {"200", "401", "422", "503"},
    ("put", "/v1/matching"): {"200", "401", "413", "422", "503"},
    ("get", "/v1/clusters"): {"200", "401", "422", "503"},
    ("get", "/v1/clusters/{cluster_id}"): {"200", "401", "404", "422", "503"},
    ("post", "/v1/matches/{asset_a}/{asset_b}"): {"200", "401", "404", "413", "422", "503"},
    ("get", "/v1/matches/{asset_a}/{asset_b}"): {"200", "401", "404", "422", "503"},
    ("get", "/v1/banks"): {"200", "401", "422", "503"},
    ("put", "/v1/banks/{name}"): {"200", "401", "413", "422", "503"},
    ("get", "/v1/banks/{name}"): {"200", "401", "404", "422", "503"},
    ("delete", "/v1/banks/{name}"): {"204", "401", "404", "422", "503"},
    ("post", "/v1/banks/{name}/items"): {"200", "401", "404", "413", "422", "503"},
    ("delete", "/v1/banks/{name}/items/{asset_id}"): {"204", "401", "404", "422", "503"},
    ("get", "/v1/admin/queues"): {"200", "401", "422", "503"},
    ("get", "/v1/admin/dead-letters"): {"200", "401", "422", "503"},
    ("post", "/v1/admin/dead-letters"): {"200", "401", "413", "422", "503"},
    ("get", "/v1/audit"): {"200", "401", "422", "503"},
    ("post", "/v1/events"): {"200", "401", "409", "413", "415", "422", "503"},
    ("get", "/v1/events"): {"200", "401", "422", "503"},
    ("get", "/v1/authors/{author_id}/discovery"): {"200", "401", "404", "422", "503"},
    ("get", "/v1/recommendations/exposure"): {"200", "401", "422", "503"},
    ("get", "/v1/users/{reader_id}/recommendations"): {"200", "401", "422", "501", "503"},
    ("post", "/v1/recommendations/models"): {"202", "401", "409", "413", "422", "501", "503"},
    ("get", "/v1/recommendations/models"): {"200", "401", "422", "501", "503"},
    ("get", "/v1/recommendations/models/{model_id}"): {"200", "401", "404", "422", "501",
                                                       "503"},
}


@pytest.fixture(scope="module")
def doc(door: Door) -> dict[str, Any]:
    response = door.client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("$ref"), str):
                found.add(item["$ref"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_every_reference_is_defined(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    refs = _refs(doc)
    assert {"#/components/schemas/AssetIn", "#/components/schemas/SimilarRequest",
            "#/components/schemas/BatchIn", ERROR_REF} <= refs
    missing = {r for r in refs if r.removeprefix("#/components/schemas/") not in schemas}
    assert missing == set()
    # FastAPI's own validation-error body is never sent, so it is not described.
    assert "HTTPValidationError" not in schemas


def test_every_operation_documents_each_status_it_can_answer(doc: dict[str, Any]) -> None:
    operations = {(method, path): op for path, ops in doc["paths"].items()
                  for method, op in ops.items()}
    assert set(operations) == set(EXPECTED)
    for key, op in operations.items():
        assert set(op["responses"]) == EXPECTED[key], key
        for status, response in op["responses"].items():
            if int(status) >= 400 and key[1] != "/readyz":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_REF}, (key, status)


def test_the_error_body_schema(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorResponse"]["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message"}
    assert "details" in schemas["ErrorDetail"]["properties"]


def test_non_json_answers_are_described(doc: dict[str, Any]) -> None:
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [
        "text/plain"]
    thumbnail = doc["paths"]["/v1/assets/{asset_id}/thumbnail"]["get"]["responses"]["200"]
    assert list(thumbnail["content"]) == ["image/jpeg"]
    assert "content" not in doc["paths"]["/v1/assets/{asset_id}"]["delete"]["responses"]["204"]
    ready = doc["paths"]["/readyz"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"] == ready["200"]["content"][
        "application/json"]["schema"]


HOSTILE = [
    ("post", "/v1/assets", {"content": b"[" * 5000, "json": True}),
    ("post", "/v1/assets/batch", {"content": b'{"items": [{"text": NaN}]}', "json": True}),
    ("post", "/v1/search", {"content": b'{"query": "\\ud800"}', "json": True}),
    ("post", "/v1/search", {"content": b"not json", "json": True}),
    ("post", "/v1/similar", {"content": b'{"text": "x", "threshold": 9}', "json": True}),
    ("post", "/v1/admin/dead-letters", {"content": b"[" * 5000, "json": True}),
    ("post", "/v1/assets", {"content": b"<a/>", "headers": {"Content-Type": "text/xml"}}),
    ("get", "/v1/assets/none", {}),
    ("get", "/v1/assets/none/segments?kind=%00", {}),
    ("get", "/v1/admin/dead-letters?limit=many", {}),
    ("get", "/v1/jobs/none", {"auth": False}),
]


@pytest.mark.parametrize(("method", "url", "how"), HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_answers_are_documented(
    door: Door, doc: dict[str, Any], method: str, url: str, how: dict[str, Any]
) -> None:
    headers = dict(door.json_headers if how.get("json") else door.headers)
    if how.get("auth") is False:
        headers.pop("Authorization")
    headers.update(how.get("headers", {}))
    response: httpx.Response = door.client.request(method, url, headers=headers,
                                                   content=how.get("content"))
    template = _template(doc, url.split("?")[0])
    assert str(response.status_code) in doc["paths"][template][method]["responses"], (
        response.status_code, response.text)
    assert response.status_code < 500
    assert set(response.json()) == {"error"}


def _template(doc: dict[str, Any], path: str) -> str:
    parts = path.strip("/").split("/")
    for template in map(str, doc["paths"]):
        pattern = template.strip("/").split("/")
        if len(pattern) == len(parts) and all(
            p.startswith("{") or p == q for p, q in zip(pattern, parts, strict=True)
        ):
            return template
    raise AssertionError(f"no operation for {path}")
