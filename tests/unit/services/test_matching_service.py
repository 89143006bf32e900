"""The matching service on a migrated database with real photos and real PDQ hashes.

The near-duplicate lookup is the one piece stood in for: it compares the real PDQ hashes
of real images (an original, its JPEG re-encoding, a resized copy, an unrelated photo)
at a per-tenant threshold, as ``SimilarityService.duplicates`` does through the index.
Distances: astronaut vs its JPEG 2 bits, vs the resized copy 12, JPEG vs resized 12,
astronaut vs coffee 132.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from kenning.errors import BadInput, NotFound
from kenning.principal import Principal
from kenning.processors.image.pdq import hamming, pdq_hash
from kenning.services import matching as matching_module
from kenning.services.banks import BankIn, BankItemsIn, BankService
from kenning.services.match_views import VerdictIn
from kenning.services.matching import MatchingService, rejected_with
from kenning.services.scope import owned_asset
from kenning.services.similarity import Match
from kenning.services.tenants import TenantService
from kenning.services.webhooks import WebhookService, verify
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import (
    Asset,
    AuditEvent,
    MatchClusterMember,
    WebhookDelivery,
    new_id,
    utcnow,
)
from tests.conftest import migrated_database
from tests.fixtures import media
from tests.fixtures.net import serve_http


def _pdq(data: bytes) -> bytes:
    return pdq_hash(Image.open(io.BytesIO(data)).convert("RGB"))[0]


def _resized(name: str) -> bytes:
    image = Image.open(io.BytesIO(media.image_bytes(name))).convert("RGB").resize((256, 256))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


HASHES = {
    "astronaut": _pdq(media.image_bytes("astronaut.png")),
    "astronaut_jpeg": _pdq(media.jpeg_bytes("astronaut.png", quality=60)),
    "astronaut_small": _pdq(_resized("astronaut.png")),
    "coffee": _pdq(media.image_bytes("coffee.png")),
}


@dataclass
class World:
    db: Database
    service: MatchingService
    banks: BankService
    settings: Settings
    tenants: dict[str, Principal]
    threshold: dict[str, int]
    bits: dict[str, bytes] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    _clock: int = 0

    def add(self, tenant: str, image: str) -> str:
        """A ready image asset of ``tenant``, seen after every earlier one."""
        self._clock += 1
        asset_id = new_id()
        with self.db.session() as s:
            s.add(Asset(id=asset_id, tenant_id=self.tenants[tenant].tenant_id, kind="image",
                        sha256=new_id() * 2, mime="image/png", bytes=1, source="upload",
                        title=image, status="ready",
                        created_at=utcnow() + timedelta(seconds=self._clock)))
        self.bits[asset_id] = HASHES[image]
        return asset_id

    def duplicates_many(self, who: Principal, asset_ids: Sequence[str]) -> dict[str, list[Match]]:
        """The matcher's batch finder over :meth:`duplicates` (not-found assets left out)."""
        out = {}
        for asset_id in asset_ids:
            try:
                out[asset_id] = self.duplicates(who, asset_id)
            except NotFound:
                continue
        return out

    def duplicates(self, who: Principal, asset_id: str) -> list[Match]:
        with self.db.session(write=False) as s:
            owned_asset(s, who, asset_id)
            mine = set(s.scalars(select(Asset.id).where(Asset.tenant_id == who.tenant_id)))
        out = []
        for other in mine & set(self.bits) - {asset_id}:
            d = hamming(self.bits[asset_id], self.bits[other])
            if d <= self.threshold.get(who.tenant_id, 31):
                out.append(Match(asset_id=other, kind="image", title=None, score=1 - d / 256,
                                 method="pdq", evidence={"hamming_distance": d}))
        return out

    def cluster_of(self, asset_id: str) -> str | None:
        with self.db.session(write=False) as s:
            return s.scalar(select(MatchClusterMember.cluster_id)
                            .where(MatchClusterMember.asset_id == asset_id))

    def members(self, tenant: str, asset_id: str) -> list[str]:
        cluster_id = self.cluster_of(asset_id)
        assert cluster_id is not None
        view = self.service.cluster(self.tenants[tenant], cluster_id)
        return [m.asset_id for m in view.members]


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """Both metadata stores (PostgreSQL: skipped locally, required in CI, when none answers)."""
    settings = Settings(data_dir=tmp_path, allow_private_urls=True, webhook_max_attempts=1)
    with migrated_database(request.param, tmp_path) as db:
        tenants = TenantService(db)
        who = {name: Principal(tenants.create_tenant(name), "k-" + name)
               for name in ("one", "two")}
        w = World(db, None, BankService(db, settings), settings, who, {})  # type: ignore[arg-type]
        w.service = MatchingService(db, w.duplicates_many, w.sent.extend, settings)
        yield w


def _run(w: World) -> matching_module.MatchRun:
    return w.service.run_once()


def test_near_duplicates_form_one_cluster_founded_by_the_first_seen(world: World) -> None:
    w = world
    first, jpeg, coffee = (w.add("one", n) for n in ("astronaut", "astronaut_jpeg", "coffee"))
    run = _run(w)
    assert (run.matched, run.edges) == (3, 2)  # the pair, found from each side
    page = w.service.clusters(w.tenants["one"])
    assert [(c.size, c.first_asset_id) for c in page.clusters] == [(2, first)]
    cluster_id = page.clusters[0].id
    view = w.service.cluster(w.tenants["one"], cluster_id)
    assert [m.asset_id for m in view.members] == [first, jpeg]
    assert [(e.method, e.evidence["hamming_distance"]) for e in view.edges] == [("pdq", 2)]
    assert w.cluster_of(coffee) not in (None, cluster_id)  # a singleton of its own
    # A later copy joins; the id and the first-seen asset stay.
    small = w.add("one", "astronaut_small")
    assert _run(w).matched == 1 and _run(w).matched == 0  # idempotent
    view = w.service.cluster(w.tenants["one"], cluster_id)
    assert (view.id, view.first_asset_id, view.size) == (cluster_id, first, 3)
    assert {m.asset_id for m in view.members} == {first, jpeg, small}


def test_a_bridging_asset_merges_clusters_and_the_oldest_first_seen_wins(world: World) -> None:
    w = world
    w.threshold[w.tenants["one"].tenant_id] = 12
    small = w.add("one", "astronaut_small")  # the older of the two founders
    w.threshold[w.tenants["one"].tenant_id] = 0
    first = w.add("one", "astronaut")
    _run(w)  # at 0 bits, two singletons
    old_small, old_first = w.cluster_of(small), w.cluster_of(first)
    assert old_small != old_first
    w.threshold[w.tenants["one"].tenant_id] = 12
    jpeg = w.add("one", "astronaut_jpeg")  # 2 bits from one, 12 from the other
    _run(w)
    assert w.cluster_of(first) == w.cluster_of(jpeg) == w.cluster_of(small) == old_small
    merged = w.service.cluster(w.tenants["one"], old_first)  # the merged id resolves
    assert (merged.id, merged.first_asset_id, merged.size) == (old_small, small, 3)
    assert [c.id for c in w.service.clusters(w.tenants["one"], min_size=1).clusters] == [
        old_small]


def test_a_rejection_splits_the_cluster_and_holds_through_a_third(world: World) -> None:
    w = world
    one = w.tenants["one"]
    first, jpeg = w.add("one", "astronaut"), w.add("one", "astronaut_jpeg")
    _run(w)
    cluster_id = w.cluster_of(first)
    pair = w.service.set_verdict(one, jpeg, first, VerdictIn(verdict="different",
                                                             note="different shoot"))
    assert pair.verdict is not None and pair.verdict.verdict == "different"
    assert (pair.cluster_a, pair.cluster_b) != (cluster_id, cluster_id)
    assert w.cluster_of(first) == cluster_id  # the first seen keeps the id
    assert w.cluster_of(jpeg) not in (None, cluster_id)
    with w.db.session(write=False) as s:
        assert rejected_with(s, one.tenant_id, first) == {jpeg}
        audit = s.scalars(select(AuditEvent).where(AuditEvent.action == "match.verdict")).one()
    assert audit.actor == one.actor and audit.after == {"verdict": "different",
                                                        "note": "different shoot"}
    # A copy that looks like both joins one of them: the rejected pair stays apart.
    small = w.add("one", "astronaut_small")
    _run(w)
    assert w.cluster_of(first) != w.cluster_of(jpeg)
    assert w.cluster_of(small) in (w.cluster_of(first), w.cluster_of(jpeg))
    assert w.service.clusters(one).clusters[0].size == 2


def test_a_confirmation_holds_whatever_the_threshold(world: World) -> None:
    w = world
    one = w.tenants["one"]
    w.threshold[one.tenant_id] = 0
    first, small = w.add("one", "astronaut"), w.add("one", "astronaut_small")
    _run(w)
    assert w.cluster_of(first) != w.cluster_of(small)
    pair = w.service.set_verdict(one, first, small, VerdictIn(verdict="same"))
    assert pair.cluster_a == pair.cluster_b == w.cluster_of(first)
    assert "verdict" in [e.method for e in pair.edges]
    # Confirmed before either was matched: clustered at the strictest threshold too.
    a, b = w.add("one", "astronaut_jpeg"), w.add("one", "coffee")
    w.service.set_verdict(one, a, b, VerdictIn(verdict="same"))
    _run(w)
    assert w.cluster_of(a) == w.cluster_of(b) is not None
    # Changing one's mind splits again.
    w.service.set_verdict(one, small, first, VerdictIn(verdict="different"))
    assert w.cluster_of(first) != w.cluster_of(small)
    with pytest.raises(BadInput) as exc:
        w.service.set_verdict(one, a, a, VerdictIn(verdict="same"))
    assert exc.value.code == "same_asset"


@dataclass
class Receiver:
    port: int
    calls: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.state.calls.append({"headers": dict(self.headers), "body": body})
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve_http(_Handler, lambda port: Receiver(port=port))


def test_a_bank_hit_is_audited_and_delivered_signed(world: World, receiver: Receiver) -> None:
    w = world
    one = w.tenants["one"]
    known = w.add("one", "astronaut")
    w.banks.put(one, "fact-checked", BankIn(
        webhook_url=f"http://127.0.0.1:{receiver.port}/hits"))
    bank = w.banks.add_items(one, "fact-checked", BankItemsIn(asset_ids=[known],
                                                               label="debunked 2024"))
    assert bank.items == 1
    _run(w)
    assert w.sent == []  # the item itself is no hit
    copy, other = w.add("one", "astronaut_jpeg"), w.add("one", "coffee")
    assert _run(w).bank_hits == 1
    assert len(w.sent) == 1
    with w.db.session(write=False) as s:
        hit = s.scalars(select(AuditEvent).where(AuditEvent.action == "bank.hit")).one()
        delivery = s.get(WebhookDelivery, w.sent[0])
        assert delivery is not None and delivery.event == "bank.hit"
    assert (hit.subject_id, hit.after and hit.after["item_asset_id"]) == (copy, known)
    assert WebhookService(w.db, w.settings).deliver(w.sent[0]) == "delivered"
    call = receiver.calls[0]
    secret = TenantService(w.db).webhook_secret(one.tenant_id)
    assert verify(secret, call["headers"]["X-Kenning-Timestamp"], call["body"],
                  call["headers"]["X-Kenning-Signature"])
    payload = json.loads(call["body"])
    assert payload["event"] == "bank.hit" and payload["asset_id"] == copy
    assert (payload["bank"], payload["label"], payload["method"]) == (
        "fact-checked", "debunked 2024", "pdq")
    assert payload["evidence"]["hamming_distance"] == 2
    assert other not in json.dumps([c["body"].decode() for c in receiver.calls])
    # Removing the item ends the hits; an unknown one is not found.
    w.banks.remove_item(one, "fact-checked", known)
    with pytest.raises(NotFound):
        w.banks.remove_item(one, "fact-checked", known)


def test_tenants_see_nothing_of_each_other(world: World) -> None:
    w = world
    one, two = w.tenants["one"], w.tenants["two"]
    a1, b1 = w.add("one", "astronaut"), w.add("one", "astronaut_jpeg")
    a2 = w.add("two", "astronaut")
    _run(w)
    assert w.cluster_of(a2) not in (None, w.cluster_of(a1))  # same picture, other tenant
    assert w.service.clusters(two).clusters == []
    cluster_id = w.cluster_of(a1)
    assert cluster_id is not None
    for call in (lambda: w.service.cluster(two, cluster_id),
                 lambda: w.service.set_verdict(two, a1, b1, VerdictIn(verdict="different")),
                 lambda: w.service.set_verdict(two, a1, a2, VerdictIn(verdict="same")),
                 lambda: w.service.pair(two, a1, b1)):
        with pytest.raises(NotFound):
            call()
    w.banks.put(two, "mine", BankIn())
    with pytest.raises(NotFound):
        w.banks.add_items(two, "mine", BankItemsIn(asset_ids=[a2, a1]))
    assert w.banks.get(two, "mine").items == 0  # nothing added when one id is foreign
    with pytest.raises(NotFound):
        w.banks.get(one, "mine")
    assert w.service.cluster(one, cluster_id).size == 2  # untouched


def test_deletions_shrink_split_or_dissolve_clusters(world: World) -> None:
    w = world
    w.threshold[w.tenants["one"].tenant_id] = 12
    small = w.add("one", "astronaut_small")
    jpeg = w.add("one", "astronaut_jpeg")  # 12 bits from small
    first = w.add("one", "astronaut")  # 2 from jpeg, 12 from small
    _run(w)
    cluster_id = w.cluster_of(small)
    assert w.members("one", small) == [small, jpeg, first]

    def delete(asset_id: str) -> None:
        with w.db.session() as s:
            s.delete(s.get(Asset, asset_id))

    delete(jpeg)
    assert _run(w).repaired == 1
    assert w.service.cluster(w.tenants["one"], cluster_id).size == 2
    delete(small)  # the founder: the cluster dissolves, the rest is matched again
    with pytest.raises(NotFound):
        w.service.cluster(w.tenants["one"], cluster_id)
    assert w.cluster_of(first) is None
    assert _run(w).matched == 1
    assert w.members("one", first) == [first]


def test_a_crash_mid_batch_leaves_nothing_half_done(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world
    one = w.tenants["one"]
    known = w.add("one", "astronaut")
    w.banks.put(one, "b", BankIn(webhook_url="http://127.0.0.1:9/x"))
    w.banks.add_items(one, "b", BankItemsIn(asset_ids=[known]))
    _run(w)
    copy = w.add("one", "astronaut_jpeg")
    real = matching_module.check_banks

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("power cut")

    monkeypatch.setattr(matching_module, "check_banks", crash)
    with pytest.raises(RuntimeError):
        _run(w)
    assert w.cluster_of(copy) is None and w.sent == []
    monkeypatch.setattr(matching_module, "check_banks", real)
    assert _run(w).bank_hits == 1 and _run(w).bank_hits == 0
    assert len(w.sent) == 1 and w.cluster_of(copy) == w.cluster_of(known)


def test_concurrent_runs_match_each_asset_once(world: World) -> None:
    w = world
    ids = [w.add("one", n) for n in ("astronaut", "astronaut_jpeg", "astronaut_small",
                                     "coffee")]
    runs: list[matching_module.MatchRun] = []
    threads = [threading.Thread(target=lambda: runs.append(_run(w))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.matched for r in runs) == 4
    clusters = {w.cluster_of(a) for a in ids[:3]}
    assert len(clusters) == 1 and w.cluster_of(ids[3]) not in clusters
    sizes: Sequence[int] = [c.size for c in w.service.clusters(w.tenants["one"],
                                                                min_size=1).clusters]
    assert sorted(sizes) == [1, 3]
