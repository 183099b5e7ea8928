"""What the application's lifespan starts and every request uses, and the ledger it needs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException

from wattledger.collector.accounting.history import ClosableHistory, MeasuredHistory
from wattledger.collector.ingest.intake import BatchIngest
from wattledger.collector.ingest.periodic import PeriodicWork
from wattledger.collector.ingest.remotewrite import RemoteWriteIngest
from wattledger.collector.ingest.writer import BatchWriter, IngestResultLike
from wattledger.collector.store.base import GroupBy
from wattledger.wire import BatchError, ValidBatch


class PlanHistory(MeasuredHistory, ClosableHistory, Protocol):
    """The ledger's history for one plan: read, then closed."""


class LedgerService(Protocol):
    """What the HTTP service needs of ``wattledger.collector.service.Ledger``."""

    def ingest(self, batches: Sequence[ValidBatch]) -> Sequence[IngestResultLike | BatchError]: ...
    def collector(self) -> Collector: ...
    def spend(self, *, site: str | None, month: str | None, group_by: GroupBy) -> list[dict[str, Any]]: ...
    def jobs(self, *, site: str, since: float, until: float,
             team: str | None = None) -> list[dict[str, Any]]: ...
    def nodes(self) -> list[dict[str, Any]]: ...
    def node_names(self) -> list[str]: ...
    def plan_history(self) -> PlanHistory: ...
    def ping(self) -> None: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class Runtime:
    ledger: LedgerService
    ingest: BatchIngest
    writer: BatchWriter
    periodic: PeriodicWork
    metrics: Callable[[], bytes]  # the text of /metrics
    remote_write: RemoteWriteIngest  # POST /api/v1/write


class RuntimeHolder:
    """The running parts, once the lifespan has started them (None before and after)."""

    def __init__(self) -> None:
        self.current: Runtime | None = None

    def get(self) -> Runtime:
        if self.current is None:  # a request before start-up finished or after shutdown began
            raise HTTPException(503, "not ready")
        return self.current
