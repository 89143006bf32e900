"""Schemathesis against the live OpenAPI document: every operation, with schema-valid
(positive) and schema-invalid (negative) data. No 5xx, no status code the document does
not declare, bodies and content types as declared.

Cases come from ``APIOperation.as_strategy`` under plain Hypothesis rather than from
``schemathesis.pytest.from_fixture``: the lazy pytest loader of schemathesis 4.32 sets
``Function._nodeid``, which pytest 9.2 no longer has. The operation list is explicit, and
a guard test fails when the live document grows an operation this list does not fuzz.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.live import LiveServer, Seeded, fuzz_settings

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance,
          content_type_conformance]

OPERATIONS = [
    "GET /healthz", "GET /readyz", "GET /metrics",
    "POST /v1/assets", "POST /v1/assets/batch",
    "GET /v1/assets/{asset_id}", "DELETE /v1/assets/{asset_id}",
    "GET /v1/assets/{asset_id}/segments", "GET /v1/assets/{asset_id}/thumbnail",
    "GET /v1/assets/{asset_id}/keyframes/{n}",
    "GET /v1/jobs/{job_id}", "POST /v1/search", "POST /v1/similar",
    "GET /v1/admin/queues", "GET /v1/admin/dead-letters", "POST /v1/admin/dead-letters",
    "GET /v1/audit", "GET /v1/matching", "PUT /v1/matching",
    "GET /v1/clusters", "GET /v1/clusters/{cluster_id}",
    "POST /v1/matches/{asset_a}/{asset_b}", "GET /v1/matches/{asset_a}/{asset_b}",
    "GET /v1/banks", "PUT /v1/banks/{name}", "GET /v1/banks/{name}", "DELETE /v1/banks/{name}",
    "POST /v1/banks/{name}/items", "DELETE /v1/banks/{name}/items/{asset_id}",
    "POST /v1/events", "GET /v1/events",
    "GET /v1/authors/{author_id}/discovery", "GET /v1/recommendations/exposure",
    "GET /v1/users/{reader_id}/recommendations",
    "POST /v1/recommendations/models", "GET /v1/recommendations/models",
    "GET /v1/recommendations/models/{model_id}",
]

NO_INPUT = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/admin/queues",
            "GET /v1/matching", "GET /v1/banks", "POST /v1/recommendations/models"}
"""Operations without parameters or body: there is nothing to make schema-invalid."""

CASES = [(label, GenerationMode.POSITIVE) for label in OPERATIONS] + [
    (label, GenerationMode.NEGATIVE) for label in OPERATIONS if label not in NO_INPUT
]

FUZZ = fuzz_settings(50)


@pytest.fixture(scope="module")
def api_schema(live: LiveServer, seeded: Seeded) -> schemathesis.BaseSchema:
    # ``seeded`` first, so ids exist before the document is fuzzed.
    config = SchemathesisConfig.from_dict({"headers": live.headers, "request-timeout": 60})
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json", config=config, timeout=30)


def test_every_live_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    labels = set()
    for result in api_schema.get_all_operations():
        operation = result.ok() if hasattr(result, "ok") else None
        labels.add(operation.label if operation is not None else str(result))
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize(("label", "mode"), CASES,
                         ids=[f"{label}-{mode.value}" for label, mode in CASES])
def test_openapi_conformance(
    live: LiveServer, api_schema: schemathesis.BaseSchema, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the live OpenAPI document"

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        case.call_and_validate(base_url=live.url, headers=live.headers, checks=CHECKS,
                               timeout=60)

    try:
        run()
    except Unsatisfiable:
        # A path of plain strings has no schema-invalid value; every other input is fuzzed.
        if mode is not GenerationMode.NEGATIVE:
            raise
        pytest.skip(f"{label} has no input that can be made schema-invalid")
