"""Webhooks to ``callback_url`` when an asset finishes: signed, retried, recorded.

Signature: ``X-Kenning-Signature: sha256=<hex>`` where hex is HMAC-SHA256 with the
tenant's webhook secret over ``"<X-Kenning-Timestamp>.<raw body>"``. Receivers should
reject stale timestamps. Each attempt is recorded on the delivery row, which
``GET /v1/assets/{id}`` shows.

The POST goes through :func:`kenning.ingest.urlfetch.post_url`, the SSRF guard of URL
ingest: the target is vetted on every attempt and the connection pinned to the vetted
address (no DNS rebinding to loopback), proxies from the environment are ignored,
redirects are not followed and the receiver's response body is never read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

from kenning.ingest.urlfetch import post_url
from kenning.observability.metrics import WEBHOOKS
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Tenant, WebhookDelivery, utcnow

log = logging.getLogger(__name__)


class WebhookFailed(Exception):
    """Raised so the broker retries the delivery with backoff."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def deliver(self, delivery_id: str) -> str:
        """One attempt. Returns the new state; raises WebhookFailed to ask for a retry."""
        with self.db.session() as s:
            d = s.get(WebhookDelivery, delivery_id)
            if d is None or d.state != "pending":
                return d.state if d else "gone"
            tenant = s.get(Tenant, d.tenant_id)
            assert tenant is not None
            d.attempts += 1
            attempt, url, payload, secret = d.attempts, d.url, d.payload, tenant.webhook_secret
        body = json.dumps({**payload, "delivery_id": delivery_id}, sort_keys=True).encode()
        ts = str(int(time.time()))
        status, error = None, None
        try:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "kenning-webhooks/1",
                "X-Kenning-Delivery": delivery_id,
                "X-Kenning-Timestamp": ts,
                "X-Kenning-Signature": sign(secret, ts, body),
            }
            status = post_url(
                url, body, headers, self.settings, timeout_s=self.settings.webhook_timeout_s
            )
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        final = attempt >= self.settings.webhook_max_attempts
        state = "delivered" if error is None else ("failed" if final else "pending")
        with self.db.session() as s:
            d = s.get(WebhookDelivery, delivery_id)
            if d is not None:
                d.state, d.last_status, d.last_error = state, status, error
                if state == "delivered":
                    d.delivered_at = utcnow()
        WEBHOOKS.labels(state).inc()
        if state == "pending":
            raise WebhookFailed(f"delivery {delivery_id} attempt {attempt}: {error}")
        return state
