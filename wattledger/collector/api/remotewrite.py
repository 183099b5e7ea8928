"""POST /api/v1/write: Prometheus remote-write (``ingest/remotewrite.py`` judges and commits it).
Served by the FastAPI application: a Prometheus sends a request every few seconds, not the
thousands a second agents push, so it needs no fast path."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from wattledger.collector.api.errors import json_response
from wattledger.collector.api.httpstats import ServiceStats
from wattledger.collector.api.openapi import WRITE_OPENAPI
from wattledger.collector.api.runtime import RuntimeHolder
from wattledger.collector.ingest.checks import Answer
from wattledger.collector.ingest.remotewrite import PATH, WriteHead


def remote_write_router(holder: RuntimeHolder, stats: ServiceStats) -> APIRouter:
    router = APIRouter(tags=["ingest"])

    @router.post(PATH, summary="Prometheus remote-write 1.0 (dcgm-exporter's and the agent's series)",
                 openapi_extra=WRITE_OPENAPI, response_model=None)
    async def write(request: Request) -> Response:
        started = time.perf_counter()
        rt = holder.current
        h = request.headers
        client = request.client
        head = WriteHead(h.get("authorization"), h.get("content-type"), h.get("content-encoding"),
                         h.get("content-length"), f"{client.host}:{client.port}" if client else None)
        if rt is None:
            answer = Answer(503, {"error": "not ready", "detail": {"reason": "starting or stopping"}},
                            {"Retry-After": "1"})
        else:
            try:
                answer = await rt.remote_write.handle(head, request.stream())
            except ClientDisconnect:  # nobody is left to read the answer
                answer = Answer(400, {"error": "client disconnected", "detail": None})
        stats.observe(PATH, time.perf_counter() - started)
        return json_response(answer.payload, answer.status, answer.headers)

    return router
