"""POST /v1/batches, from request bytes to a committed batch: :class:`BatchIngest` judges one push
(``checks.py``) and, when it is good, waits for the writer to commit it (``writer.py``).

Nothing here knows FastAPI: :meth:`BatchIngest.handle` takes the request's headers and an
async iterator of body chunks and returns an :class:`Answer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Protocol

from starlette.requests import ClientDisconnect

from wattledger.collector.ingest.auth import TokenBook
from wattledger.collector.ingest.checks import (
    Answer,
    IngestLimits,
    PendingBytes,
    Refusal,
    RequestHead,
    check_content_encoding,
    check_content_type,
    content_length,
    overloaded,
    read_body,
    too_large,
    why,
)
from wattledger.collector.ingest.refusals import AuthFailures
from wattledger.collector.ingest.writer import IngestResultLike
from wattledger.collector.store.base import StoreUnavailable
from wattledger.wire import BatchError, ValidBatch, check_batch, parse_batch

log = logging.getLogger(__name__)

class BatchSink(Protocol):
    """Where a checked batch goes: the writer thread (``writer.BatchWriter``)."""

    capacity: int
    groups: int

    @property
    def alive(self) -> bool: ...
    def full(self) -> bool: ...
    def queued(self) -> int: ...
    async def submit(self, batch: ValidBatch) -> IngestResultLike: ...


class BatchIngest:
    """Judges one push and, when it is good, waits for its commit."""

    def __init__(self, tokens: TokenBook, writer: BatchSink, limits: IngestLimits,
                 clock: Callable[[], float] = time.time,
                 precheck: Callable[[ValidBatch], None] | None = None,
                 known_nodes: Iterable[str] = ()) -> None:
        self.tokens = tokens
        # a cheap check that needs no lock (an unknown site: 422), before the batch joins a group
        self.precheck = precheck
        self.writer = writer
        self.limits = limits
        self.clock = clock
        self.pending = PendingBytes(limits.max_pending_bytes, limits.max_node_pending_bytes)
        #: nodes whose batches were accepted (the ledger's, given at start, and each since):
        #: with the tokens' nodes, the node names a refused push may be counted under
        self.known_nodes: set[str] = set(known_nodes)
        self.auth_failures = AuthFailures(lambda node: node in self.known_nodes or tokens.knows(node))

    def gauges(self) -> dict[str, float]:
        return {"wattledger_ingest_queue_batches": float(self.writer.queued()),
                "wattledger_ingest_queue_capacity_batches": float(self.writer.capacity),
                "wattledger_ingest_pending_bytes": float(self.pending.used)}

    def counters(self) -> dict[str, float]:
        return {"wattledger_ingest_transactions": float(self.writer.groups)}

    async def handle(self, head: RequestHead, chunks: AsyncIterator[bytes]) -> Answer:
        try:
            return await self._handle(head, chunks)
        except Refusal as refusal:
            if refusal.status in (401, 403):
                reason = refusal.detail.get("reason") if isinstance(refusal.detail, dict) else None
                self.auth_failures.record(head.node, refusal.status, str(reason or refusal.error), head.peer)
            return refusal.answer()
        except BatchError as exc:
            return Answer(exc.status, exc.to_json())
        except ClientDisconnect:
            raise
        except Exception:  # a fault of the collector: answered (and counted) as what it is
            log.exception("POST /v1/batches failed")
            return Answer(500, {"error": "internal error",
                                "detail": {"reason": "a fault of the collector; see its log"}})

    async def _handle(self, head: RequestHead, chunks: AsyncIterator[bytes]) -> Answer:
        limits = self.limits
        try:
            identity = self.tokens.identify(head.authorization)
            if identity.status:
                raise Refusal(identity.status, "unauthorized", why("Authorization", identity.reason),
                              {"WWW-Authenticate": 'Bearer realm="wattledger"'})
            check_content_type(head.content_type)
            gzip = check_content_encoding(head.content_encoding)
            declared = content_length(head.content_length)
        except Refusal as refusal:
            # answered without reading the body: close rather than let the client send it all
            refusal.headers.setdefault("Connection", "close")
            raise
        if declared is not None and declared > limits.max_body_bytes:
            raise too_large(limits.max_body_bytes, f"Content-Length {declared} is")
        if self.writer.full():
            raise overloaded("the ingest queue is full", limits.retry_after_seconds)
        # the token's node; unauthenticated (allowed by configuration), the node it says it is
        hold = self.pending.reserve(identity.node if identity.node is not None else head.node)
        try:
            body = await read_body(chunks, limit=limits.max_body_bytes, gzip=gzip, hold=hold)
            if len(body) <= limits.inline_check_bytes:
                valid = self._check(body, identity.node)
            else:  # a big body would stall every other request on the event loop meanwhile
                valid = await asyncio.to_thread(self._check, body, identity.node)
            del body
            return await self.commit(valid)
        finally:
            hold.release()

    async def commit(self, valid: ValidBatch) -> Answer:
        """Hand a checked batch to the writer; the answer once it is committed (or why not)."""
        try:
            result = await self.writer.submit(valid)
        except Refusal as refusal:
            return refusal.answer()
        except BatchError as exc:  # refused, this batch alone (409: two agents for one node)
            return Answer(exc.status, exc.to_json(), dict(getattr(exc, "headers", {})))
        except StoreUnavailable as exc:
            return Answer(503, {"error": "store unavailable",
                                "detail": {"reason": f"the batch was not stored: {exc}; send it again"}},
                          {"Retry-After": str(self.limits.retry_after_seconds)})
        except Exception:
            return Answer(500, {"error": "internal error",
                                "detail": {"reason": "the batch was not stored; send it again later"}})
        self.known_nodes.add(valid.batch.node)
        return Answer(200, {"accepted": int(result.accepted), "duplicate": bool(result.duplicate)},
                      duplicate=bool(result.duplicate))

    def _check(self, body: bytes, token_node: str | None) -> ValidBatch:
        batch = parse_batch(body)
        status, reason = TokenBook.check_node_name(token_node, batch.node)
        if status:
            raise Refusal(status, "forbidden", why("node", reason))
        valid = ValidBatch(batch, check_batch(batch, self.clock()))
        if self.precheck is not None:
            self.precheck(valid)
        return valid
