"""Banks of known items: a tenant's named sets of assets (already fact-checked images or
claims) that every newly matched asset is checked against.

A hit (the new asset is a near-duplicate of, or confirmed the same as, a bank item) is an
audit event ``bank.hit`` and, when the bank has a ``webhook_url``, a signed ``bank.hit``
webhook (the same delivery rows, signature and retries as ``asset.*`` webhooks), written
in the matcher's transaction. Only assets matched after an item joined a bank are checked
against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from kenning.errors import NotFound
from kenning.ingest.urlfetch import check_url_allowed
from kenning.principal import Principal
from kenning.services.scope import owned_asset
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.database import insert_ignore
from kenning.stores.metadata.tables import Bank, BankItem, WebhookDelivery, utcnow

BANK_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""A bank's name: 1-100 letters, digits, '.', '_' or '-', not starting with punctuation."""
MAX_ITEMS_PER_CALL = 1000
HIT_ACTOR = "system:matching"


class BankIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = Field(
        None, max_length=4096, description="Called (signed, retried) on every hit; null: none.")


class BankItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    asset_ids: list[Annotated[str, StringConstraints(max_length=100)]] = Field(
        min_length=1, max_length=MAX_ITEMS_PER_CALL)
    label: str | None = Field(None, max_length=2000,
                              description="What is known about them (e.g. a fact-check URL).")


class BankItemView(BaseModel):
    asset_id: str
    label: str | None
    added_at: datetime


class BankView(BaseModel):
    name: str
    webhook_url: str | None
    items: int
    created_at: datetime


class BankDetail(BankView):
    item_list: list[BankItemView] = Field(description="Newest first, at most `limit`.")


@dataclass
class Hits:
    count: int = 0
    deliveries: list[str] = field(default_factory=list)


def check_banks(s: Session, tenant_id: str, asset_id: str, cluster_id: str,
                neighbours: dict[str, tuple[str, float, dict[str, Any]]]) -> Hits:
    """Record a hit for each bank item among ``neighbours`` (other asset -> method,
    score, evidence) of the newly matched ``asset_id``; returns the deliveries created."""
    hits = Hits()
    if not neighbours:
        return hits
    rows = s.execute(select(BankItem.asset_id, BankItem.label, Bank.name, Bank.webhook_url)
                     .join(Bank, Bank.id == BankItem.bank_id)
                     .where(BankItem.tenant_id == tenant_id,
                            BankItem.asset_id.in_(list(neighbours)))
                     .order_by(Bank.name, BankItem.asset_id))
    for item, label, bank, url in rows:
        method, score, evidence = neighbours[item]
        payload = {"event": "bank.hit", "asset_id": asset_id, "cluster_id": cluster_id,
                   "bank": bank, "item_asset_id": item, "label": label, "method": method,
                   "score": score, "evidence": evidence}
        record(s, tenant_id=tenant_id, actor=HIT_ACTOR, action="bank.hit",
               subject_type="asset", subject_id=asset_id, after=payload)
        hits.count += 1
        if url:
            delivery = WebhookDelivery(tenant_id=tenant_id, asset_id=asset_id, url=url,
                                       event="bank.hit", payload=payload)
            s.add(delivery)
            s.flush()
            hits.deliveries.append(delivery.id)
    return hits


class BankService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def put(self, who: Principal, name: str, body: BankIn) -> BankView:
        """Create the bank or change its webhook (audited)."""
        if body.webhook_url:
            check_url_allowed(body.webhook_url, self.settings)
        with self.db.session() as s:
            bank = self._lookup(s, who, name)
            before = None if bank is None else {"webhook_url": bank.webhook_url}
            if bank is None:
                bank = Bank(tenant_id=who.tenant_id, name=name)
                s.add(bank)
            bank.webhook_url = body.webhook_url
            s.flush()
            record(s, tenant_id=who.tenant_id, actor=who.actor, action="bank.put",
                   subject_type="bank", subject_id=name, before=before,
                   after={"webhook_url": body.webhook_url})
            return self._view(s, bank)

    def list(self, who: Principal) -> list[BankView]:
        with self.db.session(write=False) as s:
            banks = s.scalars(select(Bank).where(Bank.tenant_id == who.tenant_id)
                              .order_by(Bank.name))
            return [self._view(s, b) for b in banks]

    def get(self, who: Principal, name: str, limit: int = 100) -> BankDetail:
        with self.db.session(write=False) as s:
            bank = self._find(s, who, name)
            items = s.scalars(select(BankItem).where(BankItem.bank_id == bank.id)
                              .order_by(BankItem.added_at.desc(), BankItem.asset_id)
                              .limit(limit))
            return BankDetail(**self._view(s, bank).model_dump(), item_list=[
                BankItemView(asset_id=i.asset_id, label=i.label, added_at=i.added_at)
                for i in items])

    def delete(self, who: Principal, name: str) -> None:
        with self.db.session() as s:
            bank = self._find(s, who, name)
            s.delete(bank)
            record(s, tenant_id=who.tenant_id, actor=who.actor, action="bank.delete",
                   subject_type="bank", subject_id=name)

    def add_items(self, who: Principal, name: str, body: BankItemsIn) -> BankView:
        """Add assets of the caller's tenant (any other id is ``not_found``; nothing is
        added then); an item already there gets the new label."""
        ids = list(dict.fromkeys(body.asset_ids))
        with self.db.session() as s:
            bank = self._find(s, who, name)
            for asset_id in ids:
                owned_asset(s, who, asset_id)
            now = utcnow()
            insert_ignore(s, BankItem, [
                {"bank_id": bank.id, "asset_id": a, "tenant_id": who.tenant_id,
                 "label": body.label, "added_at": now} for a in ids],
                update={"label": body.label}, on=["bank_id", "asset_id"])
            record(s, tenant_id=who.tenant_id, actor=who.actor, action="bank.add_items",
                   subject_type="bank", subject_id=name,
                   after={"asset_ids": ids, "label": body.label})
            return self._view(s, bank)

    def remove_item(self, who: Principal, name: str, asset_id: str) -> None:
        with self.db.session() as s:
            bank = self._find(s, who, name)
            gone = s.execute(delete(BankItem).where(
                BankItem.bank_id == bank.id, BankItem.asset_id == asset_id)
                .returning(BankItem.asset_id)).first()
            if gone is None:
                raise NotFound(f"no item {asset_id} in bank {name}")
            record(s, tenant_id=who.tenant_id, actor=who.actor, action="bank.remove_item",
                   subject_type="bank", subject_id=name, before={"asset_id": asset_id})

    def _lookup(self, s: Session, who: Principal, name: str) -> Bank | None:
        return s.scalar(select(Bank).where(Bank.tenant_id == who.tenant_id, Bank.name == name))

    def _find(self, s: Session, who: Principal, name: str) -> Bank:
        bank = self._lookup(s, who, name)
        if bank is None:
            raise NotFound(f"no bank {name}")
        return bank

    def _view(self, s: Session, bank: Bank) -> BankView:
        count = s.scalar(select(func.count()).select_from(BankItem)
                         .where(BankItem.bank_id == bank.id))
        return BankView(name=bank.name, webhook_url=bank.webhook_url, items=int(count or 0),
                        created_at=bank.created_at)
