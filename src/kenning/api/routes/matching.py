"""/v1/clusters, /v1/matches and /v1/banks: near-duplicate clusters, verdicts, banks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from kenning.api.bodies import StrictJSONRoute
from kenning.api.deps import App, Who
from kenning.api.errors import error_responses
from kenning.services.banks import BANK_NAME, BankDetail, BankIn, BankItemsIn, BankView
from kenning.services.match_views import (
    MAX_MEMBERS,
    ClusterPage,
    ClusterView,
    PairView,
    VerdictIn,
)

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)

AssetId = Annotated[str, Path(max_length=100, description="An asset id of your tenant.")]
BankName = Annotated[str, Path(pattern=BANK_NAME, description="1-100 letters, digits, "
                                                               "'.', '_' or '-'.")]


@router.get("/clusters", response_model=ClusterPage, tags=["matching"],
            responses=error_responses(401, 422),
            summary="Clusters of near-duplicates, latest change first")
def clusters(
    app: App, who: Who,
    min_size: Annotated[int, Query(ge=1, le=1_000_000,
                                   description="Least members (1: singletons too).")] = 2,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500,
                                        description="next_cursor of the previous page.")] = None,
) -> ClusterPage:
    return app.matching.clusters(who, min_size=min_size, limit=limit, cursor=cursor)


@router.get("/clusters/{cluster_id}", response_model=ClusterView, tags=["matching"],
            responses=error_responses(401, 404, 422),
            summary="A cluster: first-seen asset, members, edges with evidence")
def cluster(
    cluster_id: Annotated[str, Path(max_length=100)], app: App, who: Who,
    limit: Annotated[int, Query(ge=1, le=MAX_MEMBERS,
                                description="Most members and edges listed.")] = 1000,
) -> ClusterView:
    return app.matching.cluster(who, cluster_id, limit)


@router.post("/matches/{asset_a}/{asset_b}", response_model=PairView, tags=["matching"],
             responses=error_responses(401, 404, 422),
             summary="A person's verdict on a pair (same / different): audited, sticky")
def set_verdict(asset_a: AssetId, asset_b: AssetId, body: VerdictIn, app: App,
                who: Who) -> PairView:
    return app.matching.set_verdict(who, asset_a, asset_b, body)


@router.get("/matches/{asset_a}/{asset_b}", response_model=PairView, tags=["matching"],
            responses=error_responses(401, 404, 422),
            summary="A pair: its verdict, its edges, the assets' clusters")
def get_pair(asset_a: AssetId, asset_b: AssetId, app: App, who: Who) -> PairView:
    return app.matching.pair(who, asset_a, asset_b)


@router.get("/banks", response_model=list[BankView], tags=["banks"],
            responses=error_responses(401), summary="This tenant's banks of known items")
def banks(app: App, who: Who) -> list[BankView]:
    return app.banks.list(who)


@router.put("/banks/{name}", response_model=BankView, tags=["banks"],
            responses=error_responses(401, 422),
            summary="Create a bank or set its webhook (called on every hit)")
def put_bank(name: BankName, body: BankIn, app: App, who: Who) -> BankView:
    return app.banks.put(who, name, body)


@router.get("/banks/{name}", response_model=BankDetail, tags=["banks"],
            responses=error_responses(401, 404, 422), summary="A bank and its newest items")
def get_bank(name: BankName, app: App, who: Who,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> BankDetail:
    return app.banks.get(who, name, limit)


@router.delete("/banks/{name}", status_code=204, response_class=Response, tags=["banks"],
               responses=error_responses(401, 404, 422), summary="Delete a bank")
def delete_bank(name: BankName, app: App, who: Who) -> Response:
    app.banks.delete(who, name)
    return Response(status_code=204)


@router.post("/banks/{name}/items", response_model=BankView, tags=["banks"],
             responses=error_responses(401, 404, 422),
             summary="Add assets of this tenant to a bank (new assets are checked against it)")
def add_items(name: BankName, body: BankItemsIn, app: App, who: Who) -> BankView:
    return app.banks.add_items(who, name, body)


@router.delete("/banks/{name}/items/{asset_id}", status_code=204, response_class=Response,
               tags=["banks"], responses=error_responses(401, 404, 422),
               summary="Remove an item from a bank")
def remove_item(name: BankName, asset_id: AssetId, app: App, who: Who) -> Response:
    app.banks.remove_item(who, name, asset_id)
    return Response(status_code=204)
