"""The checks of a push before its batch reaches the writer (DESIGN.md, "Wire format").

The order of the checks is chosen so that a bad request costs the collector as little as
possible: the token (401) and the headers (415, a Content-Length over the limit: 413) are
judged before one byte of the body is read; the body limit while it is read and again while
it is un-gzipped (413, so a gzip bomb stops at the limit), and back-pressure (429) on the
bytes as they arrive; then parsing (400), the node of the token (403) and the contract's
rules (422). Slow and oversized headers, stalled bodies and broken HTTP framing never get
here: the server's protocol answers them (``wattledger.collector.api.server``).

More request bytes in flight than ``max_pending_bytes`` (in all) or
``max_node_pending_bytes`` (of one node) are answered 429 with ``Retry-After``, so memory
stays bounded when a whole fleet reconnects at once.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

MIB = 1 << 20
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip framing only (not raw deflate or zlib)


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


def content_length(value: str | None) -> int | None:
    """The Content-Length header's number (None: not given); 400 when it is not a number."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise Refusal(400, "malformed request", why("Content-Length", "not a number")) from None


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
