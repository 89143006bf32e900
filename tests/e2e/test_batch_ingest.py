"""A multipart batch end to end: stored in one go, processed by the workers, searchable;
the tenant's load counter goes up by the stages created and back to zero when they end."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PROFILES, Api
from tests.fixtures import media

pytestmark = [pytest.mark.slow, PROFILES]


def test_a_batch_is_processed_and_its_load_drains(api: Api) -> None:
    headers = api.new_tenant("batch-e2e")
    articles = media.news(4)
    files = [("file", (f"{a.id}.txt", a.text.encode())) for a in articles]
    files.append(("file", ("coffee.png", media.image_bytes("coffee.png"))))
    items = '[{"title": "first"}, {}, {}, {}, {"metadata": {"desk": "photo"}}]'
    r = api.client.post("/v1/assets/batch", headers=headers, files=files,
                        data={"items": items})
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (5, 0)
    tenant = api.kenning.tenants.authenticate(headers["Authorization"][7:]).tenant_id
    assert api.kenning.ingest.load_by_tenant()[tenant] > 0
    api.wait()
    ids = [x["accepted"]["asset_id"] for x in body["results"]]
    statuses = [api.client.get(f"/v1/assets/{i}", headers=headers).json()["status"]
                for i in ids]
    assert statuses == ["ready"] * 5
    assert tenant not in api.kenning.ingest.load_by_tenant()  # every stage taken off
    hits = api.client.post("/v1/search", headers=headers, json={
        "query": articles[0].text.split(".")[0], "mode": "keyword", "limit": 3}).json()["hits"]
    assert ids[0] in [h["asset_id"] for h in hits]
