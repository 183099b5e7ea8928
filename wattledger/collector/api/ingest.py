"""POST /v1/batches: the push handler (served by ``fastpath.FastPath``) and its FastAPI route
(the same handler; it is there so the OpenAPI document describes the endpoint, and answers when
the fast path is off)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from wattledger.collector.api.errors import json_response
from wattledger.collector.api.fastpath import Push
from wattledger.collector.api.httpstats import ServiceStats, outcome_of
from wattledger.collector.api.openapi import BATCH_OPENAPI
from wattledger.collector.api.runtime import RuntimeHolder
from wattledger.collector.ingest.checks import Answer, RequestHead


def push_handler(holder: RuntimeHolder, stats: ServiceStats) -> Push:
    """One push, from its headers and body chunks to its answer, counted and timed."""

    async def push(head: RequestHead, chunks: AsyncIterator[bytes]) -> Answer:
        started = time.perf_counter()
        rt = holder.current
        if rt is None:
            answer = Answer(503, {"error": "not ready", "detail": {"reason": "starting or stopping"}},
                            {"Retry-After": "1"})
        else:
            try:
                answer = await rt.ingest.handle(head, chunks)
            except ClientDisconnect:  # nobody is left to read the answer
                answer = Answer(400, {"error": "client disconnected", "detail": None})
        stats.count(outcome_of(answer.status, answer.duplicate))
        stats.observe("/v1/batches", time.perf_counter() - started)
        return answer

    return push


def ingest_router(push: Push) -> APIRouter:
    router = APIRouter(tags=["ingest"])

    @router.post("/v1/batches", summary="Push one batch of readings (agents)", openapi_extra=BATCH_OPENAPI,
                 response_model=None)
    async def post_batch(request: Request) -> Response:
        h = request.headers
        head = RequestHead(h.get("authorization"), h.get("content-type"), h.get("content-encoding"),
                           h.get("content-length"), h.get("x-wattledger-node"))
        answer = await push(head, request.stream())
        return json_response(answer.payload, answer.status, answer.headers)

    return router
