"""The collector's ledger: dedupe, accounting and store behind one small interface.

(First landing: the interface the HTTP service is built against; the body follows.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.registry import Collector

from wattledger.collector.sites import PlanEntry, SiteConfig
from wattledger.wire import BatchError, ValidBatch

GroupBy = Literal["site", "cluster", "node", "device"]


@dataclass(frozen=True)
class IngestResult:
    """The answer to one batch: readings committed, or a re-sent batch already committed."""

    accepted: int
    duplicate: bool


class UnknownSite(BatchError):
    """A batch whose ``site`` label (default ``default``) names no configured site: 422."""

    def __init__(self, site: str) -> None:
        super().__init__(422, "unknown site", "labels.site",
                         f"site {site!r} is not configured on this collector")


class StreamOfAnotherNode(BatchError):
    """A batch on a stream that another node already uses: 422 (dedupe is per stream)."""

    def __init__(self, stream: str, owner: str) -> None:
        super().__init__(422, "invalid batch", "stream",
                         f"stream {stream!r} belongs to node {owner!r}")


class Ledger:
    """Energy, cost and carbon per device, site and month, kept in a store that survives restarts."""

    def __init__(self, db_url: str, sites: Mapping[str, SiteConfig], plan: Sequence[PlanEntry], *,
                 max_gap_seconds: float = 30.0, clock: Callable[[], float] = time.time,
                 stale_after_seconds: float = 120.0) -> None:
        self._db_url = db_url
        self._sites = dict(sites)
        self._plan = list(plan)
        self._max_gap = max_gap_seconds
        self._clock = clock
        self._stale_after = stale_after_seconds

    def check(self, batch: ValidBatch) -> None:
        """Raise the BatchError that ingest() would raise for this batch (cheap, in memory)."""
        raise NotImplementedError("ledger being built")

    def ingest(self, batches: Sequence[ValidBatch]) -> list[IngestResult]:
        """Dedupe, account and commit the batches in ONE transaction; one result per batch."""
        raise NotImplementedError("ledger being built")

    def collector(self) -> Collector:
        raise NotImplementedError("ledger being built")

    def spend(self, *, site: str | None, month: str | None, group_by: GroupBy) -> list[dict[str, Any]]:
        raise NotImplementedError("ledger being built")

    def nodes(self) -> list[dict[str, Any]]:
        raise NotImplementedError("ledger being built")

    def refresh(self) -> None:
        raise NotImplementedError("ledger being built")

    def close(self) -> None:
        raise NotImplementedError("ledger being built")
