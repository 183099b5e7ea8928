"""The ASGI application the server runs: POST /v1/batches answered straight on ASGI, every other
request handed to the FastAPI application.

Agents push thousands of batches a second; FastAPI's per-request machinery (routing, the
Request object, dependency solving, the Response object, its middleware stack) costs more than
checking a batch does. So :class:`FastPath` — ONE explicit wrapper, the outermost layer of
the collector (``api/app.py``) — answers exactly ``POST /v1/batches`` with the same handler
that the FastAPI route uses (which stays, so the OpenAPI document describes the endpoint) and
passes everything else, lifespan included, to the FastAPI application untouched. A middleware
added to the FastAPI application does not see pushes: wrap it around this one instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from fastapi import FastAPI
from starlette.datastructures import State
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from wattledger.collector.api.server import body_timed_out
from wattledger.collector.ingest.checks import Answer, Refusal, RequestHead, why

log = logging.getLogger(__name__)

PATH = "/v1/batches"
Push = Callable[[RequestHead, AsyncIterator[bytes]], Awaitable[Answer]]
_WANTED = {b"authorization": 0, b"content-type": 1, b"content-encoding": 2, b"content-length": 3,
           b"x-wattledger-node": 4}


def head_of(scope: Scope) -> RequestHead:
    values: list[str | None] = [None, None, None, None, None]
    for name, value in scope["headers"]:
        slot = _WANTED.get(name)  # ASGI servers give header names in lower case
        if slot is not None and values[slot] is None:
            values[slot] = value.decode("latin-1")
    client = scope.get("client")
    auth, media, coding, length, node = values
    return RequestHead(auth, media, coding, length, node, f"{client[0]}:{client[1]}" if client else None)


async def body_chunks(receive: Receive, scope: Scope | None = None) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            if scope is not None and body_timed_out(scope):  # the server answered 408 and closed
                raise Refusal(408, "request timeout", why("body", "the body stalled"),
                              {"Connection": "close"})
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def encode_answer(answer: Answer) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps(answer.payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
    return headers, body


def is_push(scope: Scope) -> bool:
    return bool(scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST")


class FastPath:
    """``POST /v1/batches`` to ``push``; everything else to ``app`` (the FastAPI application)."""

    def __init__(self, app: FastAPI, push: Push) -> None:
        self.app = app
        self.push = push

    @property
    def state(self) -> State:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_push(scope):
            await self.app(scope, receive, send)
            return
        try:
            answer = await self.push(head_of(scope), body_chunks(receive, scope))
        except Exception:  # a fault of the collector: what the app's error handler would answer
            log.exception("POST %s failed", PATH)
            answer = Answer(500, {"error": "internal error",
                                  "detail": {"reason": "a fault of the collector; see its log"}})
        headers, body = encode_answer(answer)
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
