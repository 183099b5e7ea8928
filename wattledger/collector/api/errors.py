"""Every answer of the service is JSON: ``{"error": ..., "detail": ...}`` for every error, and
only a fault of the collector itself is a 500 (logged with its traceback). A read while the
database does not answer (PostgreSQL down, restarting, unreachable) is no fault of the
collector: 503 ``store unavailable`` with ``Retry-After``, logged in one line."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from wattledger.collector.ingest.checks import why
from wattledger.collector.store.base import StoreUnavailable
from wattledger.wire import plain_reason

log = logging.getLogger(__name__)

#: seconds a reader is told to wait when the database does not answer (the pool's own wait,
#: up to 10 s, has already passed by then)
STORE_RETRY_AFTER_SECONDS = 5


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, headers,
                    media_type="application/json")


def error_response(status: int, error: str, detail: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": error, "detail": detail}, status, headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(part) for part in first.get("loc", ()))
        # in words a person reads (no regex, no pydantic wording): the batch path's sentences
        reason = plain_reason(first) if errors else "invalid request"
        return error_response(422, "invalid request", why(field or "request", reason))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), None, dict(exc.headers or {}))

    async def on_store_away(request: Request, exc: Exception) -> Response:
        log.warning("%s %s: 503, the database does not answer: %s", request.method, request.url.path, exc)
        reason = f"the database does not answer now ({exc}); ask again later"
        return error_response(503, "store unavailable", {"reason": reason},
                              {"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})

    async def on_fault(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error", {"reason": "a fault of the collector; see its log"})

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(StoreUnavailable, on_store_away)
    app.add_exception_handler(Exception, on_fault)
