"""Backpressure: admit new work unless the tenant is over its own bound or its fair share.

The measure is a kept counter per tenant, ``tenant_load.unfinished_stages``: stage runs
that are pending, queued or running. Whoever creates runs or moves them into or out of
those states adds to it in the same transaction (:func:`kenning.pipeline.jobs.adjust_load`:
ingest adds the runs it creates, the pipeline takes finished runs off, a redrive puts
them back, an asset delete takes off the runs it removes). A request therefore reads one
small table, only the tenants that hold work, instead of counting stage runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from kenning.errors import Backpressure
from kenning.settings import Settings
from kenning.stores.metadata.tables import TenantLoad


def read_load(s: Session) -> dict[str, int]:
    """Unfinished stage runs per tenant, tenants without any left out (one small query)."""
    rows = s.execute(
        select(TenantLoad.tenant_id, TenantLoad.unfinished_stages)
        .where(TenantLoad.unfinished_stages > 0)
    )
    return {tenant: int(n) for tenant, n in rows}


def check_admission(load: Mapping[str, int], tenant_id: str, settings: Settings) -> None:
    """Admit unless the tenant is over its own bound or over its fair share.

    Each tenant may hold up to ``max_queued_stages_per_tenant`` unfinished stages. Once
    all tenants together hold ``max_queued_stages``, a tenant is admitted only while it
    holds less than a fair share: the bound divided by the number of tenants with
    unfinished work (the asker included). One tenant's flood therefore answers 429 to
    that tenant, never to the others.

    A batch is one request: the rule is applied once, to the tenant's count before the
    batch, and admits or refuses the batch as a whole. A tenant under its bound may so
    pass it by one batch's stages (at most ``max_batch_items`` assets), as a single item
    passes it by its own stages; splitting a batch item by item instead would answer part
    of it and leave the client to work out which part to send again. Requests admitted
    at the same moment each read the count before the others commit, so concurrent
    requests may pass the bound together by their stages (bounded by the server's
    request concurrency): the check runs before any decode or upload, where refusing is
    cheap, not under the counter's row lock at commit.

    Raises:
        Backpressure: with ``retry_after_s`` (the API answers 429 and ``Retry-After``).
    """
    mine, total = load.get(tenant_id, 0), sum(load.values())
    own_bound = settings.max_queued_stages_per_tenant or settings.max_queued_stages
    if mine >= own_bound:
        raise _refuse(f"your tenant has {mine} unfinished stages (bound {own_bound})",
                      settings)
    if total >= settings.max_queued_stages:
        share = settings.max_queued_stages / len(load.keys() | {tenant_id})
        if mine >= share:
            raise _refuse(
                f"{total} stages are unfinished in all (bound {settings.max_queued_stages}) "
                f"and your tenant holds {mine}, its fair share is {share:.0f}",
                settings,
            )


def _refuse(why: str, settings: Settings) -> Backpressure:
    return Backpressure(f"{why}; retry later", retry_after=settings.retry_after_s)
