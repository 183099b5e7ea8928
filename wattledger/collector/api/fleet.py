"""GET /v1/nodes: every node, last seen, stale or not, its devices and their latest readings."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from wattledger.collector.api.errors import json_response
from wattledger.collector.api.runtime import RuntimeHolder


def fleet_router(holder: RuntimeHolder) -> APIRouter:
    router = APIRouter(tags=["fleet"])

    @router.get("/v1/nodes", summary="Nodes: last seen, devices, latest readings", response_model=None)
    def get_nodes() -> Response:
        return json_response({"nodes": holder.get().ledger.nodes()})

    return router
