"""POST /v1/batches, from request bytes to a committed batch (DESIGN.md, "Wire format").

The order of the checks is chosen so that a bad request costs the collector as little as
possible: the token (401) and the headers (415, a Content-Length over the limit: 413) are
judged before one byte of the body is read; the body limit while it is read and again while
it is un-gzipped (413, so a gzip bomb stops at the limit), and back-pressure (429) on the
bytes as they arrive; then parsing (400), the node of the token (403) and the contract's
rules (422). Slow and oversized headers, stalled bodies and broken HTTP framing never get
here: the server's protocol answers them (``wattledger.collector.api.server``).

A valid batch goes on a bounded queue to ONE writer thread, which takes every batch waiting
(up to ``max_group_batches``) and hands them to ``Ledger.ingest`` in one transaction: under
load, many requests share one commit (group commit), and each request is answered only once
its own batch is committed. A full queue, or more request bytes in flight than
``max_pending_bytes`` (in all) or ``max_node_pending_bytes`` (of one node), is answered 429
with ``Retry-After``, so memory stays bounded when a whole fleet reconnects at once.

Nothing here knows FastAPI: :meth:`BatchIngest.handle` takes the request's headers and an
async iterator of body chunks and returns an :class:`Answer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import ClientDisconnect

from wattledger.collector.api.httpstats import AuthFailures
from wattledger.collector.ingest.auth import TokenBook
from wattledger.wire import BatchError, ValidBatch, check_batch, parse_batch

log = logging.getLogger(__name__)

MIB = 1 << 20
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip framing only (not raw deflate or zlib)
#: how long a transaction of 2+ batches waits, GIL released, for the event loop to check more
#: (docs/performance.md: ~+12 % batches/s under load; 1 ms was too long, 0 too short)
GATHER_SECONDS = 0.0003


class IngestResultLike(Protocol):
    @property
    def accepted(self) -> int: ...
    @property
    def duplicate(self) -> bool: ...


class LedgerWriter(Protocol):
    """The part of the Ledger the ingest path uses."""

    def ingest(self, batches: Sequence[ValidBatch]) -> Sequence[IngestResultLike]: ...


@dataclass(frozen=True)
class IngestLimits:
    max_body_bytes: int = 8 * MIB  # before and after gzip
    max_queue_batches: int = 1024  # validated batches waiting for the writer
    max_pending_bytes: int = 128 * MIB  # body bytes (raw + un-gzipped) of requests in progress
    max_node_pending_bytes: int = 16 * MIB  # of those, held by the pushes of one node
    max_group_batches: int = 512  # batches in one ledger transaction
    inline_check_bytes: int = 256 * 1024  # bigger bodies are parsed in a worker thread
    retry_after_seconds: int = 1


@dataclass(frozen=True)
class RequestHead:
    """The headers of a push that matter before its body is read."""

    authorization: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    content_length: str | None = None
    node: str | None = None  # X-Wattledger-Node: the node the agent says it is (not trusted)
    peer: str | None = None  # the client's address, for the log


@dataclass(frozen=True)
class Answer:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    duplicate: bool = False


class Refusal(Exception):
    """A push refused before it reached the ledger: the HTTP status and the JSON error."""

    def __init__(self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}

    def answer(self) -> Answer:
        return Answer(self.status, {"error": self.error, "detail": self.detail}, self.headers)


def why(field: str, reason: str) -> dict[str, str]:
    """The ``detail`` of an error: which field and what is wrong with it."""
    return {"field": field, "reason": reason}


class ServerFault(Exception):
    """The ledger failed on a valid batch (a bug or a broken database): answered 500."""


# ---------------------------------------------------------------------------- headers and body


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def check_content_type(value: str | None) -> None:
    media = _media_type(value)
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise Refusal(415, "unsupported media type",
                      why("Content-Type", f"must be application/json, not {media or 'missing'!r}"))


def check_content_encoding(value: str | None) -> bool:
    """True when the body is gzip; refuses encodings other than gzip and identity."""
    codings = [c.strip().lower() for c in (value or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return False
    if codings in (["gzip"], ["x-gzip"]):
        return True
    raise Refusal(415, "unsupported content encoding",
                  why("Content-Encoding", f"{value!r}: only gzip is accepted"))


def too_large(limit: int, what: str) -> Refusal:
    # the rest of the body is not read: close the connection rather than drain it
    return Refusal(413, "body too large", why("body", f"{what} over the limit of {limit} bytes"),
                   {"Connection": "close"})


class PendingBytes:
    """Bytes held by requests in progress, against a bound in all and one per node. Used from
    the event loop only.

    Bytes are counted as they arrive (raw, then un-gzipped), never from a Content-Length up
    front: a push that sent its headers and stalled holds nothing. The pool in all and each
    node's share are bounded, so the stalled pushes of one node never keep the others out; a
    push alone (in the pool, or of its node) always passes, or a big one never could. One
    push holds at most its raw and its un-gzipped body, each under ``max_body_bytes``.
    """

    def __init__(self, limit: int, per_node: int | None = None) -> None:
        self.limit = limit
        self.per_node = limit if per_node is None else per_node
        self.used = 0
        self.by_node: dict[str | None, int] = {}

    def reserve(self, node: str | None = None, n: int = 0) -> Reservation:
        """A reservation for a push of ``node`` (None: unauthenticated)."""
        reservation = Reservation(self, node)
        reservation.ensure(n)
        return reservation


class Reservation:
    def __init__(self, pool: PendingBytes, node: str | None) -> None:
        self._pool = pool
        self.node = node
        self.held = 0

    def ensure(self, total: int) -> None:
        """Hold at least ``total`` bytes; 429 when the pool or the node's share cannot spare them."""
        extra = total - self.held
        if extra <= 0:
            return
        pool = self._pool
        node_used = pool.by_node.get(self.node, 0)
        # what the other pushes hold: alone, a push always passes (else it never could)
        if pool.used + extra > pool.limit and pool.used > self.held:
            raise overloaded("too many request bytes in progress")
        if node_used + extra > pool.per_node and node_used > self.held:
            raise overloaded("too many request bytes in progress for this node")
        pool.used += extra
        pool.by_node[self.node] = node_used + extra
        self.held += extra

    def release(self) -> None:
        if not self.held:
            return
        pool = self._pool
        pool.used -= self.held
        left = pool.by_node.get(self.node, 0) - self.held
        if left > 0:
            pool.by_node[self.node] = left
        else:
            pool.by_node.pop(self.node, None)
        self.held = 0


def overloaded(reason: str, retry_after: int = 1) -> Refusal:
    return Refusal(429, "overloaded", {"reason": reason, "retry_after_seconds": retry_after},
                   {"Retry-After": str(retry_after)})


async def read_body(chunks: AsyncIterator[bytes], *, limit: int, gzip: bool, hold: Reservation) -> bytes:
    """The whole body, un-gzipped, refusing (413) as soon as either size passes ``limit``."""
    raw_size = 0
    out = bytearray()
    inflater = zlib.decompressobj(GZIP_WBITS) if gzip else None
    async for chunk in chunks:
        if not chunk:
            continue
        raw_size += len(chunk)
        if raw_size > limit:
            raise too_large(limit, "the body is")
        if inflater is None:
            hold.ensure(raw_size)
            out += chunk
            continue
        try:
            # never let one chunk inflate past the limit: max_length stops it there
            out += inflater.decompress(chunk, limit + 1 - len(out))
        except zlib.error as exc:
            raise Refusal(400, "malformed gzip", why("body", str(exc))) from None
        if inflater.unused_data:  # bytes after the end of the stream (which ends it for zlib)
            raise Refusal(400, "malformed gzip", why("body", "data after the end of the gzip stream"))
        if len(out) > limit:
            raise too_large(limit, "the body after gzip is")
        hold.ensure(raw_size + len(out))
    if inflater is not None and raw_size and not inflater.eof:
        raise Refusal(400, "malformed gzip", why("body", "the gzip stream is cut short"))
    if not out:
        raise Refusal(400, "malformed JSON", why("body", "the body is empty"))
    return bytes(out)


# ---------------------------------------------------------------------------- the writer thread


@dataclass
class _Item:
    batch: ValidBatch
    future: asyncio.Future[IngestResultLike]
    loop: asyncio.AbstractEventLoop


_STOP = None


class BatchWriter:
    """One thread that commits queued batches to the ledger in groups."""

    def __init__(self, ledger: LedgerWriter, *, max_queue: int, max_group: int) -> None:
        self._ledger = ledger
        self._max_group = max_group
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._closing = False
        self.capacity = max_queue
        self.groups = 0  # ledger transactions made (for tests and logs)
        #: why the last transaction failed, when it failed for the server's own reasons (a broken
        #: database); cleared by the next one that succeeds. /readyz reports it.
        self.last_fault: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    def queued(self) -> int:
        return self._queue.qsize()

    def full(self) -> bool:
        return self._queue.full()

    async def submit(self, batch: ValidBatch) -> IngestResultLike:
        """Queue one batch; returns once it is committed (or raises why it was not)."""
        if not self.alive:
            raise Refusal(503, "shutting down", {"reason": "the collector is stopping; send again later"},
                          {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestResultLike] = loop.create_future()
        try:
            self._queue.put_nowait(_Item(batch, future, loop))
        except queue.Full:
            raise overloaded("the ingest queue is full") from None
        return await future

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then end the thread."""
        if self._thread is None or self._closing:
            return
        self._closing = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("ledger writer: queue still full after %.0f s at shutdown", timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        carry: list[_Item] = []
        stopping = False
        while True:
            group = carry
            carry = []
            if not group and not stopping:
                first = self._queue.get()
                if first is _STOP:
                    stopping = True
                else:
                    group.append(first)
            for gathering in (True, False):
                while len(group) < self._max_group:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                    else:
                        group.append(item)
                # Under load the loop holds requests it has read but not yet checked, while this
                # thread holds the GIL. A transaction costs ~330 us of CPU whatever its size, so
                # letting the loop run a moment makes one transaction of what would be two.
                # Alone (a quiet fleet: one batch at a time) a batch never waits.
                if gathering and 1 < len(group) < self._max_group and not stopping:
                    time.sleep(GATHER_SECONDS)
            # a re-sent batch queued twice goes to the next transaction, where it is a duplicate
            seen: set[tuple[str, int]] = set()
            now: list[_Item] = []
            for item in group:
                key = (item.batch.batch.stream, item.batch.batch.seq)
                (carry if key in seen else now).append(item)
                seen.add(key)
            if now:
                self._commit(now)
            if stopping and not carry and self._queue.empty():
                return

    def _commit(self, group: list[_Item]) -> None:
        try:
            results = list(self._ledger.ingest([item.batch for item in group]))
            if len(results) != len(group):
                raise ServerFault(f"ledger gave {len(results)} results for {len(group)} batches")
        except Exception as exc:
            if len(group) > 1:
                # find the batch that failed: the others still go in, one transaction each
                for item in group:
                    self._commit([item])
                return
            if not isinstance(exc, BatchError):
                log.exception("ledger: a batch of node %s could not be committed", group[0].batch.batch.node)
                self.last_fault = f"{type(exc).__name__}: {exc}"
            self._settle(group, [exc])
            return
        self.groups += 1
        self.last_fault = None
        self._settle(group, results)

    @staticmethod
    def _settle(group: list[_Item], outcomes: Sequence[IngestResultLike | BaseException]) -> None:
        """Hand each request its result, on the event loop it waits in."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Item, Any]]] = {}
        for item, outcome in zip(group, outcomes, strict=True):
            by_loop.setdefault(item.loop, []).append((item, outcome))
        for loop, pairs in by_loop.items():
            # a closed loop (shutdown) has nobody waiting for these answers any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[_Item, Any]]) -> None:
    for item, outcome in pairs:
        if item.future.done():
            continue
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)


# ---------------------------------------------------------------------------- the request path


class BatchSink(Protocol):
    """Where a checked batch goes: the writer thread (one process), or the link to the writer
    process (``wattledger.collector.workers``)."""

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
            declared = _content_length(head.content_length)
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
        except BatchError as exc:
            return Answer(exc.status, exc.to_json())
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


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise Refusal(400, "malformed request", why("Content-Length", "not a number")) from None
