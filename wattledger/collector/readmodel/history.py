"""The ledger as a plan's measured history: ``MeasuredHistory`` over the ``plan_days`` rows.

The ledger adds the plan's statistics at ingest (``accounting/profiles.py``), per (site, GPU
model, local day); this read model only sums rows, it never reads a raw reading back. It reads
a day's sums and bins (a few dozen rows per model and day, whatever the fleet's size) and lets
the database count the per-GPU and per-node rows (millions a year on a big site), once per site
and plan:

- ``model_days``: a day's ``all`` row, its ``util`` and ``power`` bins (the histograms), and the
  number of its ``gpu`` rows (distinct GPUs);
- ``node_overhead_days``: a day's node-meter sums (the meters' intervals that every part of the
  node covers) and the number of its ``node`` rows (distinct metered nodes);
- ``fleet``: the window's whole local days (from the day that holds ``since``): distinct GPUs
  and their nodes, mean utilization, the GPUs' energy and their nodes' IT energy (their parts,
  plus the overhead the node meters measured);
- ``site_months``: per local month, the site's IT energy (the bill's ``usage`` rows and its
  nodes' overhead, ``node_usage``), the idle-but-powered GPU-hours and energy, and from its site
  minutes the cooling and facility meters' energy and the mean outdoor temperature of the minutes
  the chiller had its sensor's reading (None where the site has no such meter or sensor).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
from wattledger.collector.store.sql import PLAN_VALUES

#: positions in a row of sql.PLAN_ROWS: model, day, part, bin, the value columns
_AT = {name: 4 + i for i, name in enumerate(PLAN_VALUES)}


@dataclass
class _Day:
    """One (model, day) as its rows add up."""

    all: Row | None = None
    util_n: list[int] | None = None
    util_sum_p: list[float] | None = None
    power_hist: list[int] | None = None
    gpus: int = 0  # distinct GPUs of the day
    nodes: int = 0  # distinct metered nodes of the day

    def stats(self) -> PowerStats:
        a = self.all
        if a is None or not a[_AT["n"]]:
            return PowerStats()

        def value(name: str) -> float:
            return float(a[_AT[name]])

        return PowerStats(int(a[_AT["n"]]), value("sum_u"), value("sum_p"), value("sum_uu"), value("sum_up"),
                          value("sum_pp"), int(a[_AT["idle_n"]]), value("idle_sum_p"),
                          a[_AT["first_ts"]], a[_AT["last_ts"]],
                          tuple(self.util_n or (0,) * UTIL_BINS),
                          tuple(self.util_sum_p or (0.0,) * UTIL_BINS),
                          tuple(self.power_hist or (0,) * (POWER_BINS + 1)))


class LedgerHistory:
    """A site's measured history from its ledger (``PlanReads``: a store or a read-only
    connection), the sites' clocks given; each site's rows are read once."""

    def __init__(self, reads: PlanReads, zones: Mapping[str, ZoneInfo],
                 closing: Callable[[], None] | None = None) -> None:
        self._reads = reads
        self._zones = dict(zones)
        self._days: dict[str, dict[tuple[str, date], _Day]] = {}
        self._closing = closing

    def close(self) -> None:
        """Close the connection this history was given to own (none: nothing to do)."""
        closing, self._closing = self._closing, None
        if closing is not None:
            closing()

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
                held.util_n[bin_] += int(row[_AT["n"]])
                held.util_sum_p[bin_] += float(row[_AT["sum_p"]])
            elif part == "power" and 0 <= bin_ <= POWER_BINS:
                held.power_hist = held.power_hist or [0] * (POWER_BINS + 1)
                held.power_hist[bin_] += int(row[_AT["n"]])
        for model, day_text, part, count in self._reads.plan_counts(site):
            held = days.setdefault((str(model), date.fromisoformat(str(day_text))), _Day())
            if part == "gpu":
                held.gpus = int(count)
            elif part == "node":
                held.nodes = int(count)
        self._days[site] = days
        return days

    def _zone(self, site: str) -> ZoneInfo:
        return self._zones.get(site, ZoneInfo("UTC"))

    # ---- MeasuredHistory ------------------------------------------------------------------

    def span(self, site: str) -> LedgerSpan | None:
        rows = [d.all for d in self._site_days(site).values() if d.all is not None]
        firsts = [r[_AT["first_ts"]] for r in rows if r[_AT["first_ts"]] is not None]
        lasts = [r[_AT["last_ts"]] for r in rows if r[_AT["last_ts"]] is not None]
        if not firsts or not lasts:
            return None
        return LedgerSpan(float(min(firsts)), float(max(lasts)))

    def model_days(self, site: str) -> Sequence[ModelDay]:
        return [ModelDay(model, day, held.gpus, held.stats())
                for (model, day), held in sorted(self._site_days(site).items())
                if held.all is not None and held.all[_AT["n"]]]

    def node_overhead_days(self, site: str) -> Sequence[NodeOverheadDay]:
        out = []
        for (model, day), held in sorted(self._site_days(site).items()):
            a = held.all
            if a is None or not a[_AT["meter_s"]]:
                continue
            out.append(NodeOverheadDay(model, day, nodes=held.nodes,
                                       metered_seconds=float(a[_AT["meter_s"]]),
                                       node_energy_j=float(a[_AT["meter_j"]]),
                                       gpu_energy_j=float(a[_AT["meter_gpu_j"]]),
                                       gpu_seconds=float(a[_AT["meter_gpu_s"]])))
        return out

    def fleet(self, site: str, since: float, until: float) -> MeasuredFleet:
        zone = self._zone(site)
        first_day = datetime.fromtimestamp(since, zone).date()
        last_day = datetime.fromtimestamp(until, zone).date()
        models: dict[str, list[float]] = {}
        earliest: float | None = None
        for (model, day), held in self._site_days(site).items():
            if not first_day <= day <= last_day or held.all is None:
                continue
            a = held.all
            sums = models.setdefault(model, [0.0, 0.0, 0.0, 0.0, 0.0])
            sums[0] += float(a[_AT["n"]])
            sums[1] += float(a[_AT["sum_u"]])
            sums[2] += float(a[_AT["gpu_j"]])
            sums[3] += float(a[_AT["it_j"]])
            sums[4] += float(a[_AT["meter_j"]]) - float(a[_AT["meter_parts_j"]])
            if a[_AT["first_ts"]] is not None:
                first = float(a[_AT["first_ts"]])
                earliest = first if earliest is None else min(earliest, first)
        counted = {str(model): (int(gpus), int(servers)) for model, gpus, servers in
                   self._reads.plan_fleet(site, first_day.isoformat(), last_day.isoformat())}
        out = []
        for model in sorted(models):
            n, sum_u, gpu_j, parts_j, metered_overhead_j = models[model]
            # a node's IT: its parts, and where a node meter measured it, the meter: the measured
            # overhead added, never below the parts
            it_j = parts_j + max(metered_overhead_j, 0.0)
            gpus, servers = counted.get(model, (0, 0))
            out.append(FleetModel(model=model, gpus=gpus, servers=servers,
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
                sums[1] += float(held.all[_AT["idle_s"]])
                sums[2] += float(held.all[_AT["idle_j"]])
        for month, it_j, _cooling_j in self._reads.usage_months(site):
            months.setdefault(str(month), [0.0, 0.0, 0.0])[0] += float(it_j)
        for month, overhead_j in self._reads.overhead_months(site):  # the nodes' IT beyond their parts
            months.setdefault(str(month), [0.0, 0.0, 0.0])[0] += float(overhead_j)
        return [self._month(site, month, len(days.get(month, ())), *sums)
                for month, sums in sorted(months.items())]

    def _month(self, site: str, month: str, days: int, it_j: float, idle_s: float,
               idle_j: float) -> SiteMonth:
        """One local month: its sums, and its site minutes' meters and outdoor sensor (None where
        the site has none: no cooling meter energy, no facility meter seconds, no sensor minute)."""
        zone = self._zone(site)
        year, number = int(month[:4]), int(month[5:7])
        start = datetime(year, number, 1, tzinfo=zone)
        end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
        cooling_j, facility_j, facility_s, outdoor_sum, outdoor_minutes = self._reads.site_minute_sums(
            site, int(start.timestamp()) // 60, int(end.timestamp()) // 60)
        minutes = int(outdoor_minutes)
        return SiteMonth(month=month, days=days, it_kwh=it_j / JOULES_PER_KWH,
                         cooling_kwh=float(cooling_j) / JOULES_PER_KWH if float(cooling_j) > 0 else None,
                         facility_kwh=float(facility_j) / JOULES_PER_KWH if float(facility_s) > 0 else None,
                         outdoor_mean_c=float(outdoor_sum) / minutes if minutes else None,
                         outdoor_hours=minutes / 60.0,
                         idle_gpu_hours=idle_s / 3600.0, idle_energy_kwh=idle_j / JOULES_PER_KWH)
