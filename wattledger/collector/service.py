"""The collector's ledger as the HTTP service uses it: one store, the ingest transaction that
writes to it, the read model that shows it, and the periodic upkeep (docs/collector.md).

- ``ingest`` -> ``ingest/transaction.py`` (dedupe, accounting, one transaction per group);
- ``collector()``, ``nodes()`` -> ``readmodel/`` views; ``spend()`` -> the store's sums;
- ``refresh()`` -> the periodic work: roll-up of old quarter-hours, billing-month and
  stale-node lines, on one replica at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client.registry import Collector

from wattledger.collector.accounting.siteclock import month_text
from wattledger.collector.ingest.transaction import Bookkeeper, IngestResult
from wattledger.collector.readmodel.chargeback import job_rows
from wattledger.collector.readmodel.exposition import LedgerCollector
from wattledger.collector.readmodel.history import LedgerHistory
from wattledger.collector.readmodel.nodes import node_rows
from wattledger.collector.readmodel.spend import spend_rows
from wattledger.collector.readmodel.view import FleetView, ReadModel, Terms
from wattledger.collector.sites import PlanEntry, SiteConfig
from wattledger.collector.store import open_store
from wattledger.collector.store.base import KEEP_QUARTERS_SECONDS, GroupBy, Store
from wattledger.collector.store.reader import LedgerReader
from wattledger.wire import BatchError, ValidBatch

log = logging.getLogger(__name__)

#: the roll-up never touches the last two days (forecasts read the trailing 24 h)
MIN_ROLLUP_DAYS = 2.0


class Ledger:
    """Energy, cost and carbon per device, site and month, in a store that survives restarts."""

    def __init__(self, db_url: str, sites: Mapping[str, SiteConfig], plan: Sequence[PlanEntry], *,
                 max_gap_seconds: float = 30.0, clock: Callable[[], float] = time.time,
                 stale_after_seconds: float = 120.0, rollup_after_days: float | None = None,
                 metrics_refresh_seconds: float = 5.0, store: Store | None = None,
                 teams: Mapping[str, list[dict[str, str]]] | None = None) -> None:
        if rollup_after_days is not None and rollup_after_days < MIN_ROLLUP_DAYS:
            raise ValueError(f"rollup_after_days must be at least {MIN_ROLLUP_DAYS} "
                             "(forecasts read the last 24 h of quarter-hours)")
        self.clock = clock
        self.rollup_after_days = rollup_after_days
        self.stale_after_seconds = stale_after_seconds
        self._db_url = db_url
        self.store = store if store is not None else open_store(db_url, clock)
        self.bookkeeper = Bookkeeper(self.store, sites, max_gap_seconds=max_gap_seconds,
                                     stale_after_seconds=stale_after_seconds, clock=clock, teams=teams)
        self.terms = Terms(sites, plan, clock=clock, stale_after_seconds=stale_after_seconds)
        self.reads = ReadModel(self.store, self.terms, refresh_seconds=metrics_refresh_seconds,
                               commits=lambda: self.bookkeeper.commits)
        self._months_seen: dict[str, int] = {}
        self._stale_seen: set[str] = set()

    @property
    def sites(self) -> dict[str, SiteConfig]:
        return self.terms.sites

    # ---- ingest -----------------------------------------------------------------------------

    def check(self, batch: ValidBatch) -> None:
        self.bookkeeper.check(batch)

    def ingest(self, batches: Sequence[ValidBatch]) -> list[IngestResult | BatchError]:
        return self.bookkeeper.ingest(batches)

    # ---- reading ----------------------------------------------------------------------------

    def view(self) -> FleetView:
        return self.reads.view()

    def collector(self) -> Collector:
        """A prometheus_client custom collector over the read model."""
        return LedgerCollector(self.reads)

    def spend(self, *, site: str | None, month: str | None, group_by: GroupBy) -> list[dict[str, Any]]:
        """Spend rows for finance (JSON-ready); see wattledger.collector.readmodel.spend."""
        return spend_rows(self.store, self.terms, site=site, month=month, group_by=group_by, now=self.clock())

    def jobs(self, *, site: str, since: float, until: float, team: str | None = None) -> list[dict[str, Any]]:
        """Allocations held at some instant of [since, until] (docs/chargeback.md, "GET /v1/jobs")."""
        return job_rows(self.store, self.terms, site, since, until, team)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node: site, cluster, labels, last seen, stale, devices and their latest readings."""
        return node_rows(self.reads.view())

    def node_names(self) -> list[str]:
        return self.store.node_names()

    def plan_history(self) -> LedgerHistory:
        """The ledger as a plan's measured history (POST /v1/plan: readmodel/history.py); close it
        when the plan is made. On a SQLite file it reads over a read-only connection of its own
        (WAL: never waiting for, nor holding up, the ledger's writer); else through the store."""
        zones = {name: site.zone for name, site in self.sites.items()}
        if self.store.backend == "sqlite" and not self._db_url.endswith(":memory:"):
            reader = LedgerReader(self._db_url)
            return LedgerHistory(reader, zones, closing=reader.close)
        return LedgerHistory(self.store, zones)

    # ---- upkeep -----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Periodic upkeep: share the chiller and metered sites' changed minutes out by their
        holders' IT (ingest/sharing.py), roll old quarter-hours up, note month roll-overs and
        stale nodes.

        Months, plan to date and forecasts need no recomputation here: every reading is filed
        under the month of its own minute, and the read model derives the rest from the clock.
        With replicas, one at a time does this (the others skip the round).
        """
        shared = self.bookkeeper.share_cooling()
        if shared:
            log.debug("shared %d site-minutes' cooling out by IT", shared)
        now = self.clock()
        done = self.store.upkeep(self._rollup_before(now), (now - KEEP_QUARTERS_SECONDS) / 60.0)
        if done is None:
            return
        if done.rolled_up:
            log.info("roll-up: %d quarter-hour rows older than %g days summed into hours", done.rolled_up,
                     self.rollup_after_days)
        months = {site: self.terms.clocks[site].month_at(now) for site in self.terms.site_names}
        for site, month in months.items():
            if self._months_seen.get(site, month) != month:
                log.info("site %s: billing month %s begins", site, month_text(month))
        self._months_seen = months
        stale = {node for node, seen in done.nodes.items() if now - seen > self.stale_after_seconds}
        for node in sorted(stale - self._stale_seen):
            log.warning("node %s is stale: no batch for over %.0f s", node, self.stale_after_seconds)
        self._stale_seen = stale

    def _rollup_before(self, now: float) -> int | None:
        if self.rollup_after_days is None:
            return None
        cutoff_minute = (now - self.rollup_after_days * 86400.0) / 60.0
        return int(cutoff_minute // 60) * 60

    def roll_up(self) -> int:
        """Roll quarter-hours older than ``rollup_after_days`` up into hours (docs/accounting.md,
        "Roll-up"); returns the quarter rows rolled up. Totals, spend, demand peaks, plan and
        forecast read the same afterwards."""
        before = self._rollup_before(self.clock())
        if before is None:
            return 0
        done = self.store.upkeep(before, float("-inf"))
        return 0 if done is None else done.rolled_up

    def ping(self) -> None:
        """Raise StoreUnavailable when the database does not answer now."""
        self.store.ping()

    def close(self) -> None:
        self.store.close()
