"""The group-commit writer: ONE thread that commits queued batches in groups.

A valid batch goes on a bounded queue to the writer thread, which takes every batch waiting
(up to ``max_group_batches``) and hands them to the ledger in one transaction: under load, many
requests share one commit (group commit), and each request is answered only once its own
batch is committed. A full queue is answered 429 with ``Retry-After``.

A remote-write request is one item of several batches (one per node, ``submit_all``): they go
into one transaction together, so that a request is committed whole or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from wattledger.collector.ingest.checks import Refusal, ServerFault, overloaded
from wattledger.collector.store.base import StoreUnavailable
from wattledger.wire import BatchError, ValidBatch

log = logging.getLogger(__name__)

#: how long a transaction of 2+ batches waits, GIL released, for the event loop to check more
#: (docs/performance.md: ~+12 % batches/s under load; 1 ms was too long, 0 too short)
GATHER_SECONDS = 0.0003
#: how long a failed commit keeps /readyz "not ready" (unless a commit succeeds first)
FAULT_WINDOW_SECONDS = 30.0


class IngestResultLike(Protocol):
    @property
    def accepted(self) -> int: ...
    @property
    def duplicate(self) -> bool: ...


class LedgerWriter(Protocol):
    """The part of the Ledger the ingest path uses: one result per batch, an IngestResult or
    the BatchError that refuses that batch alone."""

    def ingest(self, batches: Sequence[ValidBatch]) -> Sequence[IngestResultLike | BatchError]: ...


@dataclass
class _Item:
    batches: Sequence[ValidBatch]
    future: asyncio.Future[Any]  # the one batch's IngestResultLike, or (bundle) the list of results
    loop: asyncio.AbstractEventLoop
    bundle: bool = False

    @property
    def key(self) -> tuple[str, int] | None:
        """(stream, seq) of an agent's batch; None for a bundle (remote-write: no seq)."""
        if self.bundle:
            return None
        b = self.batches[0].batch
        return b.stream, b.seq


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
        self._fault_at = 0.0  # monotonic time of the last fault

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
        result: IngestResultLike = await self._put((batch,), bundle=False)
        return result

    async def submit_all(self, batches: Sequence[ValidBatch]) -> list[IngestResultLike | BatchError]:
        """Queue batches to be committed in ONE transaction; their results, once it is (or raises
        why it was not: nothing of them is then committed)."""
        results: list[IngestResultLike | BatchError] = await self._put(tuple(batches), bundle=True)
        return results

    async def _put(self, batches: Sequence[ValidBatch], *, bundle: bool) -> Any:
        if not self.alive:
            raise Refusal(503, "shutting down", {"reason": "the collector is stopping; send again later"},
                          {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        try:
            self._queue.put_nowait(_Item(batches, future, loop, bundle))
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
                key = item.key
                (carry if key is not None and key in seen else now).append(item)
                if key is not None:
                    seen.add(key)
            if now:
                self._commit(now)
            if stopping and not carry and self._queue.empty():
                return

    def _commit(self, group: list[_Item]) -> None:
        try:
            batches = [vb for item in group for vb in item.batches]
            results = list(self._ledger.ingest(batches))
            if len(results) != len(batches):
                raise ServerFault(f"ledger gave {len(results)} results for {len(batches)} batches")
        except StoreUnavailable as exc:
            # the database does not answer: the whole group is refused at once (503, send again),
            # not tried one batch at a time against a database that is away
            log.warning("ledger: %d batches not committed: %s", len(group), exc)
            self._fault(exc)
            self._settle(group, [exc] * len(group))
            return
        except Exception as exc:
            if len(group) > 1:
                # find the batch that failed: the others still go in, one transaction each
                for item in group:
                    self._commit([item])
                return
            if not isinstance(exc, BatchError):
                log.exception("ledger: a batch of node %s could not be committed",
                              group[0].batches[0].batch.node if group[0].batches else "?")
                self._fault(exc)
            self._settle(group, [exc])
            return
        self.groups += 1
        self.last_fault = None
        outcomes: list[Any] = []
        at = 0
        for item in group:
            n = len(item.batches)
            outcomes.append(results[at:at + n] if item.bundle else results[at])
            at += n
        self._settle(group, outcomes)

    def _fault(self, exc: BaseException) -> None:
        self.last_fault = f"{type(exc).__name__}: {exc}"
        self._fault_at = time.monotonic()

    def recent_fault(self, window: float = FAULT_WINDOW_SECONDS) -> str | None:
        """The last fault, if it is younger than ``window`` and no commit succeeded since. Older
        ones stop counting: a collector that a load balancer took out of service for a fault
        gets no batch to prove it recovered, so its readiness must not wait for one."""
        if self.last_fault is not None and time.monotonic() - self._fault_at <= window:
            return self.last_fault
        return None

    @staticmethod
    def _settle(group: list[_Item], outcomes: Sequence[Any]) -> None:
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
