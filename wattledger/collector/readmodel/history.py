"""The ledger as a plan's measured history: ``MeasuredHistory`` over the ``plan_days`` rows.

The ledger adds the plan's statistics at ingest (``accounting/profiles.py``), per (site, GPU
model, local day); this read model only sums rows, it never reads a raw reading back, so a
year of a big site is a few hundred thousand rows, read once per site and plan:

- ``model_days``: a day's ``all`` row, its ``util`` and ``power`` bins (the histograms), and the
  number of its ``gpu`` rows (distinct GPUs);
- ``fleet``: the window's whole local days (from the day that holds ``since``): distinct GPUs
  and their nodes, mean utilization, the GPUs' energy and their nodes' IT energy;
- ``site_months``: per local month, the site's IT energy (the bill's ``usage`` rows) and the
  idle-but-powered GPU-hours and energy. Cooling and facility meters, the outdoor sensor and
  node meters are not booked per month by this version's ledger: those fields are None and
  ``node_overhead_days`` is empty (docs/planning.md, "From the ledger").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from wattledger.collector.accounting.history import (
    POWER_BINS,
    UTIL_BINS,
    FleetModel,
    LedgerSpan,
    MeasuredFleet,
    ModelDay,
    NodeOverheadDay,
    PowerStats,
    SiteMonth,
)
from wattledger.collector.accounting.pricing import JOULES_PER_KWH
from wattledger.collector.store.base import PlanReads, Row

_NODE = 19  # the position of a gpu row's node in sql.PLAN_ROWS


@dataclass
class _Day:
    """One (model, day) as its rows add up."""

    all: Row | None = None
    util_n: list[int] | None = None
    util_sum_p: list[float] | None = None
    power_hist: list[int] | None = None
    gpus: dict[int, str | None] | None = None

    def stats(self) -> PowerStats:
        a = self.all
        if a is None or not a[4]:
            return PowerStats()
        return PowerStats(int(a[4]), float(a[5]), float(a[6]), float(a[7]), float(a[8]), float(a[9]),
                          int(a[10]), float(a[11]), a[17], a[18],
                          tuple(self.util_n or (0,) * UTIL_BINS),
                          tuple(self.util_sum_p or (0.0,) * UTIL_BINS),
                          tuple(self.power_hist or (0,) * (POWER_BINS + 1)))


class LedgerHistory:
    """A site's measured history from its ledger (``PlanReads``: a store or a read-only
    connection), the sites' clocks given; each site's rows are read once."""

    def __init__(self, reads: PlanReads, zones: Mapping[str, ZoneInfo]) -> None:
        self._reads = reads
        self._zones = dict(zones)
        self._days: dict[str, dict[tuple[str, date], _Day]] = {}

    def _site_days(self, site: str) -> dict[tuple[str, date], _Day]:
        found = self._days.get(site)
        if found is not None:
            return found
        days: dict[tuple[str, date], _Day] = {}
        for row in self._reads.plan_rows(site):
            model, day_text, part, bin_ = str(row[0]), str(row[1]), str(row[2]), int(row[3])
            held = days.setdefault((model, date.fromisoformat(day_text)), _Day())
            if part == "all":
                held.all = row
            elif part == "util" and 0 <= bin_ < UTIL_BINS:
                held.util_n = held.util_n or [0] * UTIL_BINS
                held.util_sum_p = held.util_sum_p or [0.0] * UTIL_BINS
                held.util_n[bin_] += int(row[4])
                held.util_sum_p[bin_] += float(row[6])
            elif part == "power" and 0 <= bin_ <= POWER_BINS:
                held.power_hist = held.power_hist or [0] * (POWER_BINS + 1)
                held.power_hist[bin_] += int(row[4])
            elif part == "gpu":
                held.gpus = held.gpus or {}
                held.gpus[bin_] = None if row[_NODE] is None else str(row[_NODE])
        self._days[site] = days
        return days

    def _zone(self, site: str) -> ZoneInfo:
        return self._zones.get(site, ZoneInfo("UTC"))

    # ---- MeasuredHistory ------------------------------------------------------------------

    def span(self, site: str) -> LedgerSpan | None:
        rows = [d.all for d in self._site_days(site).values() if d.all is not None]
        firsts = [r[17] for r in rows if r[17] is not None]
        lasts = [r[18] for r in rows if r[18] is not None]
        if not firsts or not lasts:
            return None
        return LedgerSpan(float(min(firsts)), float(max(lasts)))

    def model_days(self, site: str) -> Sequence[ModelDay]:
        return [ModelDay(model, day, len(held.gpus or {}), held.stats())
                for (model, day), held in sorted(self._site_days(site).items())
                if held.all is not None and held.all[4]]

    def node_overhead_days(self, site: str) -> Sequence[NodeOverheadDay]:
        return ()  # the node meters' energy beside their GPUs' is not booked per model and day yet

    def fleet(self, site: str, since: float, until: float) -> MeasuredFleet:
        zone = self._zone(site)
        first_day = datetime.fromtimestamp(since, zone).date()
        last_day = datetime.fromtimestamp(until, zone).date()
        models: dict[str, list[float]] = {}
        gpus: dict[str, dict[int, str | None]] = {}
        earliest: float | None = None
        for (model, day), held in self._site_days(site).items():
            if not first_day <= day <= last_day or held.all is None:
                continue
            a = held.all
            sums = models.setdefault(model, [0.0, 0.0, 0.0, 0.0])
            sums[0] += float(a[4])
            sums[1] += float(a[5])
            sums[2] += float(a[13])
            sums[3] += float(a[16])
            gpus.setdefault(model, {}).update(held.gpus or {})
            if a[17] is not None:
                earliest = float(a[17]) if earliest is None else min(earliest, float(a[17]))
        out = []
        for model in sorted(models):
            n, sum_u, gpu_j, it_j = models[model]
            seen = gpus.get(model, {})
            out.append(FleetModel(model=model, gpus=len(seen),
                                  servers=len({node for node in seen.values() if node is not None}),
                                  mean_utilization=sum_u / n if n else 0.0,
                                  gpu_energy_kwh=gpu_j / JOULES_PER_KWH, it_energy_kwh=it_j / JOULES_PER_KWH))
        # the window's energy is of whole days from the day that holds `since`: so is its time
        start = datetime.combine(first_day, time(0), zone).timestamp()
        if earliest is not None:
            start = max(start, min(earliest, until))
        return MeasuredFleet(min(start, until), until, tuple(out))

    def site_months(self, site: str) -> Sequence[SiteMonth]:
        months: dict[str, list[float]] = {}
        days: dict[str, set[date]] = {}
        for (_, day), held in self._site_days(site).items():
            key = day.strftime("%Y-%m")
            sums = months.setdefault(key, [0.0, 0.0, 0.0])
            days.setdefault(key, set()).add(day)
            if held.all is not None:
                sums[1] += float(held.all[14])
                sums[2] += float(held.all[15])
        for month, it_j, _cooling_j in self._reads.usage_months(site):
            months.setdefault(str(month), [0.0, 0.0, 0.0])[0] += float(it_j)
        return [SiteMonth(month=month, days=len(days.get(month, ())), it_kwh=it_j / JOULES_PER_KWH,
                          cooling_kwh=None, facility_kwh=None, outdoor_mean_c=None, outdoor_hours=0.0,
                          idle_gpu_hours=idle_s / 3600.0, idle_energy_kwh=idle_j / JOULES_PER_KWH)
                for month, (it_j, idle_s, idle_j) in sorted(months.items())]
