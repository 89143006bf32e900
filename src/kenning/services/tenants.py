"""Tenants and API keys. Keys are random, shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import bindparam, select

from kenning.errors import Conflict, Unauthorized
from kenning.principal import Principal
from kenning.stores.metadata import Database
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.tables import ApiKey, Tenant

KEY_PREFIX = "kn_"


@dataclass(frozen=True)
class IssuedKey:
    tenant_id: str
    key_id: str
    key: str
    """The plaintext key; it is not stored and cannot be shown again."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_REMEMBERED_KEYS = 10_000
"""Most verified keys held in memory at once (a flood of distinct valid keys is bounded)."""
_KEY_BY_HASH = select(ApiKey.id, ApiKey.tenant_id, ApiKey.key_hash, ApiKey.revoked_at).where(
    ApiKey.key_hash == bindparam("digest"))


class TenantService:
    def __init__(self, db: Database, *, remember_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.remember_s = remember_s
        """How long a verified key is answered from memory (``auth_cache_s``)."""
        self._clock = clock
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def create_tenant(self, name: str) -> str:
        with self.db.session() as s:
            if s.scalar(select(Tenant.id).where(Tenant.name == name)):
                raise Conflict(f"tenant {name!r} exists", code="tenant_exists")
            tenant = Tenant(name=name, webhook_secret=secrets.token_hex(32))
            s.add(tenant)
            s.flush()
            record(s, tenant_id=tenant.id, actor="system", action="tenant.create",
                   subject_type="tenant", subject_id=tenant.id, after={"name": name})
            return tenant.id

    def tenant_id(self, name: str) -> str | None:
        with self.db.session(write=False) as s:
            return s.scalar(select(Tenant.id).where(Tenant.name == name))

    def webhook_secret(self, tenant_id: str) -> str:
        with self.db.session(write=False) as s:
            tenant = s.get(Tenant, tenant_id)
            if tenant is None:
                raise LookupError(tenant_id)
            return tenant.webhook_secret

    def create_key(self, tenant_id: str, name: str = "default", *, actor: str = "system") -> (
        IssuedKey
    ):
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as s:
            if s.get(Tenant, tenant_id) is None:
                raise LookupError(f"no tenant {tenant_id}")
            key = ApiKey(tenant_id=tenant_id, name=name, prefix=secret[:10],
                         key_hash=hash_key(secret))
            s.add(key)
            s.flush()
            record(s, tenant_id=tenant_id, actor=actor, action="apikey.create",
                   subject_type="api_key", subject_id=key.id,
                   after={"name": name, "prefix": key.prefix})
            return IssuedKey(tenant_id, key.id, secret)

    def remembered(self, presented: str | None) -> Principal | None:
        """The caller of a key verified less than ``remember_s`` ago, without I/O (so the
        API answers it on its event loop); None: verify it with :meth:`authenticate`.

        A key revoked in the database keeps working here for at most ``remember_s``.
        """
        if not presented or self.remember_s <= 0:
            return None
        digest = hash_key(presented)
        with self._lock:
            found = self._verified.get(digest)
        if found is None or found[1] < self._clock():
            return None
        return found[0]

    def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        digest = hash_key(presented)
        with self.db.reading() as conn:  # every request: a prebuilt Core statement
            key = conn.execute(_KEY_BY_HASH, {"digest": digest}).first()
        # compare_digest keeps the final check constant-time even though lookup is by hash.
        if key is None or key.revoked_at is not None or not hmac.compare_digest(
            key.key_hash, digest
        ):
            with self._lock:
                self._verified.pop(digest, None)
            raise Unauthorized("invalid API key")
        who = Principal(key.tenant_id, key.id)
        if self.remember_s > 0:
            now = self._clock()
            with self._lock:
                if len(self._verified) >= _REMEMBERED_KEYS:  # keys seen long ago go first
                    self._verified = {d: v for d, v in self._verified.items() if v[1] >= now}
                    if len(self._verified) >= _REMEMBERED_KEYS:
                        self._verified.clear()
                self._verified[digest] = (who, now + self.remember_s)
        return who

    def bootstrap(self, name: str, key_path: Path) -> IssuedKey | None:
        """On first start: create the default tenant and a key, saved to ``key_path``.

        Returns the key when one was created now; None when the tenant existed already.
        """
        if self.tenant_id(name) is not None:
            return None
        tenant_id = self.create_tenant(name)
        issued = self.create_key(tenant_id, "bootstrap")
        key_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(issued.key + "\n")
        return issued
