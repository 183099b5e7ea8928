"""The collector's ledger as a plan's measured history.

A plan reads the ledger through :class:`wattledger.collector.accounting.history.MeasuredHistory`:
the additive per-(site, GPU model, local day) statistics that the ledger keeps at ingest (table
``plan_days``), summed by the collector's read model
(:class:`wattledger.collector.readmodel.history.LedgerHistory`) over a read-only connection to
the ledger the collector configuration's ``db`` names (SQLite file or PostgreSQL). Nothing is
written to it, so a plan may run beside a live collector, or on a copy of its file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from wattledger.collector.accounting.history import MeasuredHistory
from wattledger.collector.sites import SiteConfig
from wattledger.collector.store.base import StoreError
from wattledger.config import ConfigError

if TYPE_CHECKING:
    from wattledger.collector.store.reader import LedgerReader

HINT = (
    "give each fleet entry an explicit power: {idle_w, max_w, node_overhead_w} instead of "
    "power: measured, and leave out measured: true entries"
)


class HistoryUnavailable(ConfigError):
    """The plan needs measured history that it cannot have; one line."""


class LedgerOpener:
    """Opens the ledger when the plan first needs it (``__call__``), and closes it (``close``)."""

    def __init__(self, db_url: str, configured: bool, sites: Mapping[str, SiteConfig]) -> None:
        self.db_url = db_url
        self.configured = configured
        self.sites = sites
        self._reader: LedgerReader | None = None

    def __call__(self) -> MeasuredHistory:
        from wattledger.collector.readmodel.history import LedgerHistory
        from wattledger.collector.store.reader import LedgerReader

        if not self.configured:
            raise HistoryUnavailable(
                f"measured entries need the collector's ledger: give --config COLLECTOR_YAML, or {HINT}"
            )
        try:
            reader = LedgerReader(self.db_url)
        except StoreError as exc:
            raise HistoryUnavailable(f"{exc}; measured entries need it, or {HINT}") from None
        self._reader = reader
        return LedgerHistory(reader, {name: site.zone for name, site in self.sites.items()})

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
