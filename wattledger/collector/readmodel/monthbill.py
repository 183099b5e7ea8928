"""``wattledger_month_energy_cost{site,currency,part}``: this month's energy cost of each site, by
the bill's parts (docs/accounting.md, "The bill's parts"), so that a dashboard can hold what
the GPUs alone cost against the whole bill.

The GPU-only cost cannot be made in PromQL from energy and one price: prices change from minute
to minute (time-of-use bands), and the ledger prices each device-minute at the price of that
minute. So the parts are read, like the site rows of /v1/spend, from the store's sums of the
month (``Store.spend_sums``) and split by :func:`~wattledger.collector.readmodel.spend.bill_parts`:
the figures are those of ``GET /v1/spend?group_by=site`` for the current month, exactly.

The parts never overlap: ``gpu`` + ``cpu`` + ``overhead`` is the site's IT cost (the ``it`` part
of ``wattledger_energy_cost_total``), + ``cooling`` + ``other`` its energy cost this month, and
that + ``wattledger_demand_charge`` is ``wattledger_month_cost``. A gauge of the month, not a
counter: a node-minute first booked with estimated overhead and later measured may book a
little less, and a month's figure starts again at 0 when the month turns, as the site's other
month gauges do.

The sums are the store's (on SQLite a read of the disk, which no other family needs): they
are read again only when the ledger has committed since and ``refresh_seconds`` have passed, or
the month turned (on PostgreSQL, where other replicas commit too, every ``refresh_seconds``), so
a scrape of an idle ledger reads nothing and a busy one at most one query per site each
``refresh_seconds``. A store that cannot answer leaves the family as last read (absent until a
first read): one family late, never a failed scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from wattledger.collector.readmodel.spend import bill_parts
from wattledger.collector.readmodel.view import Terms
from wattledger.collector.store.base import Store
from wattledger.collector.store.sql import SPEND_VALUES

logger = logging.getLogger(__name__)

#: the parts, in the order a bill reads them
MONTH_BILL_PARTS = ("gpu", "cpu", "overhead", "cooling", "other")


def month_bill(store: Store, terms: Terms, site: str, now: float) -> dict[str, float]:
    """The site's energy cost this month (site local time), part -> money."""
    month = terms.current_month(site, now)
    rows = store.spend_sums(site, month, "site")
    if not rows:
        return dict.fromkeys(MONTH_BILL_PARTS, 0.0)
    values = dict(zip(SPEND_VALUES, (float(x) for x in rows[0][1:]), strict=True))
    parts = bill_parts(values)
    return {"gpu": parts["gpu_cost"], "cpu": parts["cpu_cost"], "overhead": parts["overhead_cost"],
            "cooling": values["cooling_cost"], "other": values["other_cost"]}


class MonthBills:
    """Each site's month bill by part, read from the store when it may have changed (above)."""

    def __init__(self, store: Store, terms: Terms, *, refresh_seconds: float, commits: Callable[[], int],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store, self.terms = store, terms
        self.refresh_seconds = refresh_seconds
        self._commits, self._monotonic = commits, monotonic
        self._read: tuple[dict[str, str], int, float] | None = None  # months, commits before, when
        self._bills: dict[str, dict[str, float]] = {}
        self._failing = False

    def bills(self, now: float) -> dict[str, dict[str, float]]:
        months = {site: self.terms.current_month(site, now) for site in self.terms.site_names}
        mark, at = self._commits(), self._monotonic()
        if self._read is not None:
            read_months, read_mark, read_at = self._read
            moved = mark > read_mark or self.store.shared
            if read_months == months and not (moved and at - read_at >= self.refresh_seconds):
                return self._bills
        try:
            self._bills = {site: month_bill(self.store, self.terms, site, now) for site in months}
        except Exception as exc:  # a store that cannot answer must not fail the scrape
            if not self._failing:
                logger.warning("wattledger_month_energy_cost left as last read: the store did not "
                               "answer (%s)", exc)
            self._failing = True
            return self._bills
        self._failing = False
        self._read = (months, mark, at)
        return self._bills


def month_bill_family(bills: MonthBills, now: float) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "wattledger_month_energy_cost",
        "Energy cost of this month so far by the bill's part: gpu, cpu (CPUs and host domains), "
        "overhead (node overhead, measured or estimated), cooling, other (a metered site's other "
        "facility load); they add up to the month's energy cost (docs/accounting.md).",
        labels=["site", "currency", "part"])
    for site, parts in sorted(bills.bills(now).items()):
        currency = bills.terms.sites[site].currency
        for part, cost in parts.items():
            family.add_metric([site, currency, part], cost)
    if family.samples:
        yield family
