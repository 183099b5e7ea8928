"""POST /api/v1/write: a Prometheus remote-write 1.0 request, from its bytes to its committed
readings (DESIGN.md, "Intake from an existing Prometheus"; docs/remote-write.md).

In the order that makes a bad request cheapest: the token (401, before one byte of the body is
read), the headers (415: not ``application/x-protobuf`` with ``Content-Encoding: snappy``; 413: a
``Content-Length`` over the limit), then the body, bounded while it arrives (413), its snappy
length header bounded before anything is decompressed (413: a snappy bomb never inflates), the
snappy block (400) and the protobuf ``prometheus.WriteRequest`` (400). Its series become
batches (``remotemap.py``) that the writer commits in ONE transaction: the request is booked
whole or not at all. What Prometheus sends in normal life — stale markers, NaN, samples of
series not taken, samples at or before a device's last committed reading (late: a re-sent
request) — is skipped, counted (``wattledger_remote_write_samples_total{outcome}``) and
answered 200, because Prometheus drops a request that is answered 4xx. A busy or unavailable
ledger is 503 with ``Retry-After`` (Prometheus retries 5xx; 429 only when configured to).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import cramjam
import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect

from wattledger.collector.ingest.auth import TokenBook
from wattledger.collector.ingest.checks import (
    Answer,
    IngestLimits,
    PendingBytes,
    Refusal,
    content_length,
    too_large,
    why,
)
from wattledger.collector.ingest.prompb.remote_pb2 import WriteRequest
from wattledger.collector.ingest.remotemap import OUTCOMES, Mapped, Source, map_request
from wattledger.collector.ingest.writer import IngestResultLike
from wattledger.collector.store.base import StoreUnavailable
from wattledger.wire import BatchError, ValidBatch

log = logging.getLogger(__name__)

PATH = "/api/v1/write"
#: bodies bigger than this are decoded in a worker thread, not on the event loop
INLINE_DECODE_BYTES = 256 * 1024
#: what a request comes to (``wattledger_remote_write_requests_total{outcome}``)
REQUEST_OUTCOMES = {200: "accepted", 400: "malformed", 401: "unauthorized", 403: "forbidden", 408: "timeout",
                    413: "too_large", 415: "unsupported", 422: "unknown_site", 503: "unavailable",
                    500: "error"}


class BundleSink(Protocol):
    """Where a request's batches go: the writer thread (``writer.BatchWriter.submit_all``)."""

    def full(self) -> bool: ...
    async def submit_all(self, batches: Sequence[ValidBatch]) -> list[IngestResultLike | BatchError]: ...


@dataclass(frozen=True)
class WriteHead:
    """The headers of a remote-write request that matter before its body is read."""

    authorization: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    content_length: str | None = None
    peer: str | None = None


class RemoteWriters:
    """The ``remote_write_tokens``: which Prometheus a token is, and the site it writes to."""

    def __init__(self, sources: Mapping[str, tuple[bytes, Source]]) -> None:
        self.book = TokenBook(hashed={name: digest for name, (digest, _) in sources.items()})
        self.sources = {name: source for name, (_, source) in sources.items()}

    def identify(self, authorization: str | None) -> Source | str:
        """The Source of the token, or why there is none."""
        identity = self.book.identify(authorization)
        if identity.status or identity.node is None:
            return identity.reason or "unknown token"
        return self.sources[identity.node]


class RemoteWriteStats(Collector):
    """Requests by outcome and samples by outcome, per Prometheus (the token's name). Updated
    from the event loop; a scrape reads a copy."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.samples: Counter[tuple[str, str]] = Counter()

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily("wattledger_remote_write_requests",
                                       "POST /api/v1/write requests by outcome, per Prometheus (token name; "
                                       "'unknown' before a token is known)", labels=["prometheus", "outcome"])
        for (name, outcome), value in sorted(self.requests.copy().items()):
            requests.add_metric([name, outcome], value)
        yield requests
        samples = CounterMetricFamily("wattledger_remote_write_samples",
                                      "remote-write samples by what became of them: accepted, late (at or "
                                      "before the device's last committed reading), agent (its device fed "
                                      "by a live agent), stale (marker), nan, invalid, duplicate, ignored "
                                      "(series not taken)",
                                      labels=["prometheus", "outcome"])
        for (name, outcome), value in sorted(self.samples.copy().items()):
            samples.add_metric([name, outcome], value)
        yield samples


def check_media(head: WriteHead) -> None:
    """415 unless the body is remote-write 1.0: protobuf ``prometheus.WriteRequest``, snappy."""
    media, _, params = (head.content_type or "").partition(";")
    proto = next((value.strip().strip('"') for key, _, value in (p.partition("=") for p in params.split(";"))
                  if key.strip().lower() == "proto"), None)
    if media.strip().lower() != "application/x-protobuf" or proto not in (None, "prometheus.WriteRequest"):
        raise Refusal(415, "unsupported media type",
                      why("Content-Type", f"must be application/x-protobuf (remote-write 1.0, "
                          f"prometheus.WriteRequest), not {head.content_type or 'missing'!r}"))
    if (head.content_encoding or "").strip().lower() != "snappy":
        raise Refusal(415, "unsupported content encoding",
                      why("Content-Encoding", f"must be snappy, not {head.content_encoding or 'missing'!r}"))


def snappy_length(data: bytes) -> int:
    """The uncompressed length a snappy block declares (its varint header), read before anything
    is decompressed: a bomb is refused by what it says it holds."""
    length = 0
    for shift, byte in zip(range(0, 35, 7), data[:5], strict=False):
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length
    raise Refusal(400, "malformed snappy", why("body", "the snappy block's length header is broken"))


def decode(body: bytes, limit: int) -> WriteRequest:
    """The WriteRequest of a snappy-compressed body; 413 when it would inflate past ``limit``."""
    declared = snappy_length(body)
    if declared > limit:
        raise too_large(limit, f"the body after snappy ({declared} bytes) is")
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body, declared))
    except cramjam.DecompressionError as exc:
        raise Refusal(400, "malformed snappy", why("body", str(exc)[:200])) from None
    if len(raw) != declared:
        raise Refusal(400, "malformed snappy", why("body", "the block is not as long as it says"))
    try:
        return WriteRequest.FromString(raw)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise Refusal(400, "malformed protobuf",
                      why("body", f"not a prometheus.WriteRequest: {str(exc)[:200]}")) from None


class RemoteWriteIngest:
    """Judges one remote-write request and, when it is good, waits for its commit."""

    def __init__(self, writers: RemoteWriters, sink: BundleSink, limits: IngestLimits, pending: PendingBytes,
                 sites: Iterable[str], clock: Callable[[], float] = time.time) -> None:
        self.writers = writers
        self.sink = sink
        self.limits = limits
        self.pending = pending
        self.sites = frozenset(sites)
        self.clock = clock
        self.stats = RemoteWriteStats()

    async def handle(self, head: WriteHead, chunks: AsyncIterator[bytes]) -> Answer:
        name = "unknown"
        try:
            source = self.writers.identify(head.authorization)
            if isinstance(source, str):
                raise Refusal(401, "unauthorized", why("Authorization", source),
                              {"WWW-Authenticate": 'Bearer realm="wattledger"', "Connection": "close"})
            name = source.name
            answer = await self._handle(source, head, chunks)
        except Refusal as refusal:
            answer = refusal.answer()
        except BatchError as exc:
            answer = Answer(exc.status, exc.to_json())
        except ClientDisconnect:
            raise
        except Exception:  # a fault of the collector (a broken database): nothing was stored
            log.exception("POST %s from %s failed", PATH, name)
            answer = Answer(500, {"error": "internal error", "detail": {
                "reason": "a fault of the collector (see its log): nothing was stored; send it again"}})
        self.stats.requests[(name, REQUEST_OUTCOMES.get(answer.status, str(answer.status)))] += 1
        if answer.status >= 400 and answer.status not in (401, 503):
            log.warning("remote-write from %s (%s) refused %d: %s", name, head.peer or "?", answer.status,
                        answer.payload.get("detail"))
        return answer

    async def _handle(self, source: Source, head: WriteHead, chunks: AsyncIterator[bytes]) -> Answer:
        limit = self.limits.max_body_bytes
        try:
            check_media(head)
            declared = content_length(head.content_length)
            if declared is not None and declared > limit:
                raise too_large(limit, f"Content-Length {declared} is")
            if self.sink.full():
                raise busy("the ingest queue is full", self.limits.retry_after_seconds)
        except Refusal as refusal:
            refusal.headers.setdefault("Connection", "close")  # its body is not read
            raise
        hold = self.pending.reserve(f"remote-write:{source.name}")
        try:
            body = bytearray()
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    raise too_large(limit, "the body is")
                try:
                    hold.ensure(len(body))
                except Refusal as refusal:  # 429 to an agent; Prometheus retries 503
                    raise busy(str(refusal.detail), self.limits.retry_after_seconds) from None
            if not body:
                raise Refusal(400, "malformed snappy", why("body", "the body is empty"))
            now = self.clock()
            if len(body) <= INLINE_DECODE_BYTES:
                mapped = self._map(bytes(body), source, now)
            else:
                mapped = await asyncio.to_thread(self._map, bytes(body), source, now)
            del body
            return await self._commit(source, mapped)
        finally:
            hold.release()

    def _map(self, body: bytes, source: Source, now: float) -> Mapped:
        request = decode(body, self.limits.max_body_bytes)
        return map_request(request.timeseries, source, self.sites, now)

    async def _commit(self, source: Source, mapped: Mapped) -> Answer:
        counts = mapped.counts
        if mapped.batches:
            try:
                results = await self.sink.submit_all(mapped.batches)
            except Refusal as refusal:
                if refusal.status == 429:
                    raise busy("the ingest queue is full", self.limits.retry_after_seconds) from None
                raise
            except StoreUnavailable as exc:
                raise busy(f"the samples were not stored: {exc}; send them again",
                           self.limits.retry_after_seconds) from None
            for result, samples in zip(results, mapped.samples, strict=True):
                if isinstance(result, BatchError):  # not expected: remote batches are never refused
                    raise result
                late_samples = _marked(samples, getattr(result, "late", None))
                agent_samples = _marked(samples, getattr(result, "agent_fed", None))
                counts["accepted"] += sum(samples) - late_samples - agent_samples
                counts["late"] += late_samples
                counts["agent"] += agent_samples
        for outcome in OUTCOMES:
            if counts.get(outcome):
                self.stats.samples[(source.name, outcome)] += counts[outcome]
        return Answer(200, {"samples": {outcome: counts.get(outcome, 0) for outcome in OUTCOMES}})


def _marked(samples: Sequence[int], mask: npt.NDArray[np.bool_] | None) -> int:
    """The samples of the readings ``mask`` marks (None: none)."""
    if mask is None:
        return 0
    return sum(n for n, marked in zip(samples, mask.tolist(), strict=True) if marked)


def busy(reason: str, retry_after: int) -> Refusal:
    """503 with Retry-After: Prometheus sends the request again (a 429 it would drop, unless its
    queue_config says retry_on_http_429)."""
    return Refusal(503, "unavailable", {"reason": reason, "retry_after_seconds": retry_after},
                   {"Retry-After": str(retry_after)})
