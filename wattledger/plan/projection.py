"""The projection: per month and fleet entry, energy, cooling, money and carbon.

Pure arithmetic on resolved inputs (docs/planning.md, "Formulas"): an :class:`EntryPlan` per
fleet entry (its power already taken from the scenario or the measured profile) and a
:class:`MonthConditions` per month (real local hours, time-weighted price, outdoor temperature
or measured cooling ratio). Per month:

- GPU power = ``idle_w + (max_w - idle_w) x utilization``; node power = ``gpus_per_server x GPU
  power + node_overhead_w``; IT kWh = ``servers x node power x hours / 1000`` (the measured
  entry: its measured mean IT power x hours);
- cooling: ``pue``: IT x (pue - 1); ``chiller``: the chiller formula on the site's whole IT power
  of the month at the month's mean outdoor temperature, x hours, shared among entries by IT kWh;
  ``metered``: IT x the month's measured cooling ratio (and the measured *other* ratio: lights,
  UPS losses, where a facility meter measured them);
- facility = IT + cooling + other; energy cost = facility x price x ``(1 + escalation)^floor(k /
  12)`` (k = months since start); demand charge = facility kW (kWh / hours: a steady load's peak
  is its mean) x ``demand_charge_per_kw``; carbon = facility x g/kWh / 1000;
- capex = servers x ``capex_per_server`` / ``depreciation_months`` in each of the entry's first
  ``depreciation_months`` months; total = energy cost + demand charge + capex;
- gpu_hours = GPUs x hours; cost per GPU-hour = total / gpu_hours (totals: ratio of totals);
  cloud = gpu_hours x ``cloud_price_per_gpu_hour``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from wattledger.collector.accounting.cooling import (
    ChillerCooling,
    Cooling,
    MeteredCooling,
    PueCooling,
    chiller_cooling,
)
from wattledger.collector.accounting.siteclock import month_text

#: the contract's keys of a month row, in order (also the CSV's columns)
MONTH_KEYS = (
    "month",
    "gpus",
    "it_kwh",
    "cooling_kwh",
    "facility_kwh",
    "energy_cost",
    "demand_charge",
    "capex",
    "total_cost",
    "carbon_kg",
    "gpu_hours",
    "cost_per_gpu_hour",
    "cloud_cost",
)
#: the keys whose totals are sums (the others: see totals_of)
SUMMED_KEYS = tuple(k for k in MONTH_KEYS if k not in ("month", "gpus", "cost_per_gpu_hour", "cloud_cost"))


@dataclass(frozen=True, slots=True)
class EntryPlan:
    """One fleet entry resolved to numbers."""

    name: str
    measured: bool
    model: str | None
    first_index: int  # the plan month (0 = start) it starts in
    servers: int
    gpus_per_server: int
    utilization: float | None
    idle_w: float | None  # the GPU power line: idle_w at 0 %, max_w at 100 %
    max_w: float | None
    node_overhead_w: float | None
    #: the measured entry's mean IT and GPU power (kW); projected entries compute theirs
    measured_it_kw: float | None = None
    measured_gpu_kw: float | None = None
    measured_gpus: int = 0
    capex_per_server: float = 0.0
    depreciation_months: int | None = None
    power_source: str = "explicit"

    @property
    def gpus(self) -> int:
        return self.measured_gpus if self.measured else self.servers * self.gpus_per_server

    @property
    def gpu_power_w(self) -> float | None:
        if self.idle_w is None or self.max_w is None or self.utilization is None:
            return None
        return self.idle_w + (self.max_w - self.idle_w) * self.utilization

    @property
    def node_power_w(self) -> float | None:
        gpu = self.gpu_power_w
        return None if gpu is None else self.gpus_per_server * gpu + (self.node_overhead_w or 0.0)

    @property
    def it_kw(self) -> float:
        if self.measured:
            return self.measured_it_kw or 0.0
        node = self.node_power_w
        return self.servers * (node or 0.0) / 1000.0

    @property
    def gpu_kw(self) -> float:
        """The GPUs' own share of the entry's IT power."""
        if self.measured:
            return self.measured_gpu_kw or 0.0
        return self.gpus * (self.gpu_power_w or 0.0) / 1000.0

    def capex_in(self, index: int) -> float:
        """Depreciation booked in plan month ``index``."""
        if self.measured or self.capex_per_server <= 0 or self.depreciation_months is None:
            return 0.0
        age = index - self.first_index
        if not 0 <= age < self.depreciation_months:
            return 0.0
        return self.servers * self.capex_per_server / self.depreciation_months

    def with_utilization(self, factor: float) -> EntryPlan:
        if self.measured or self.utilization is None:
            return self
        return replace(self, utilization=min(max(self.utilization * factor, 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class MonthConditions:
    month: int  # yyyymm
    hours: float
    price_per_kwh: float  # time-weighted, before escalation
    outdoor_c: float | None = None  # chiller sites
    outdoor_source: str | None = None
    cooling_ratio: float | None = None  # metered sites: measured cooling / IT
    other_ratio: float = 0.0  # metered sites with a facility meter: (facility - IT - cooling) / IT
    ratio_source: str | None = None


@dataclass(frozen=True, slots=True)
class SiteTerms:
    name: str
    currency: str
    timezone: str
    cooling: Cooling
    demand_charge_per_kw: float
    carbon_g_per_kwh: float


@dataclass(frozen=True, slots=True)
class EntryMonth:
    it_kwh: float
    gpu_kwh: float
    cooling_kwh: float
    facility_kwh: float
    energy_cost: float
    demand_charge: float
    capex: float
    gpus: int
    gpu_hours: float


@dataclass(frozen=True)
class MonthResult:
    row: dict[str, Any]  # the contract's month row
    entries: tuple[EntryMonth | None, ...]  # per fleet entry; None before its first month
    escalation: float
    chiller_plr: float | None
    over_capacity: bool


@dataclass(frozen=True)
class Projection:
    site: SiteTerms
    entries: tuple[EntryPlan, ...]
    conditions: tuple[MonthConditions, ...]
    months: tuple[MonthResult, ...]
    totals: dict[str, Any]
    cloud_price_per_gpu_hour: float | None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [m.row for m in self.months]


def _cooling_kwh(
    cooling: Cooling, it_kwh: float, hours: float, cond: MonthConditions
) -> tuple[float, float | None, bool]:
    """The site's cooling kWh of the month, the chiller's part-load ratio, over capacity."""
    if isinstance(cooling, PueCooling):
        return it_kwh * (cooling.pue - 1.0), None, False
    if isinstance(cooling, ChillerCooling):
        assert cond.outdoor_c is not None  # resolved with the month (inputs.py)
        point = chiller_cooling(cooling, it_kwh / hours, cond.outdoor_c)
        return point.cooling_kw * hours, point.plr, point.over_capacity
    assert cond.cooling_ratio is not None
    return it_kwh * cond.cooling_ratio, None, False


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def project(
    site: SiteTerms,
    entries: Sequence[EntryPlan],
    conditions: Sequence[MonthConditions],
    escalation_per_year: float,
    cloud_price_per_gpu_hour: float | None,
    price_factor: float = 1.0,
) -> Projection:
    """The month rows and totals of the plan (``price_factor`` scales the tariff: sensitivity)."""
    months: list[MonthResult] = []
    for k, cond in enumerate(conditions):
        active = [e if k >= e.first_index else None for e in entries]
        it_by = [e.it_kw * cond.hours if e is not None else 0.0 for e in active]
        it_kwh = sum(it_by)
        cooling_kwh, plr, over = (
            _cooling_kwh(site.cooling, it_kwh, cond.hours, cond) if it_kwh > 0 else (0.0, None, False)
        )
        other_kwh = it_kwh * cond.other_ratio if isinstance(site.cooling, MeteredCooling) else 0.0
        facility_kwh = it_kwh + cooling_kwh + other_kwh
        escalation = (1.0 + escalation_per_year) ** (k // 12)
        energy_cost = facility_kwh * cond.price_per_kwh * price_factor * escalation
        demand_charge = facility_kwh / cond.hours * site.demand_charge_per_kw
        per_entry: list[EntryMonth | None] = []
        for e, it in zip(active, it_by, strict=True):
            if e is None:
                per_entry.append(None)
                continue
            share = it / it_kwh if it_kwh > 0 else 0.0
            per_entry.append(
                EntryMonth(
                    it_kwh=it,
                    gpu_kwh=e.gpu_kw * cond.hours,
                    cooling_kwh=cooling_kwh * share,
                    facility_kwh=facility_kwh * share,
                    energy_cost=energy_cost * share,
                    demand_charge=demand_charge * share,
                    capex=e.capex_in(k),
                    gpus=e.gpus,
                    gpu_hours=e.gpus * cond.hours,
                )
            )
        capex = sum((m.capex for m in per_entry if m is not None), 0.0)
        gpus = sum(m.gpus for m in per_entry if m is not None)
        gpu_hours = gpus * cond.hours
        total = energy_cost + demand_charge + capex
        row = {
            "month": month_text(cond.month),
            "gpus": gpus,
            "it_kwh": it_kwh,
            "cooling_kwh": cooling_kwh,
            "facility_kwh": facility_kwh,
            "energy_cost": energy_cost,
            "demand_charge": demand_charge,
            "capex": capex,
            "total_cost": total,
            "carbon_kg": facility_kwh * site.carbon_g_per_kwh / 1000.0,
            "gpu_hours": gpu_hours,
            "cost_per_gpu_hour": _ratio(total, gpu_hours),
            "cloud_cost": gpu_hours * cloud_price_per_gpu_hour
            if cloud_price_per_gpu_hour is not None
            else None,
        }
        months.append(MonthResult(row, tuple(per_entry), escalation, plr, over))
    return Projection(
        site,
        tuple(entries),
        tuple(conditions),
        tuple(months),
        totals_of([m.row for m in months]),
        cloud_price_per_gpu_hour,
    )


def totals_of(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The rows' sums; ``gpus`` is the largest month's (GPUs summed over months would be
    GPU-months), ``cost_per_gpu_hour`` the ratio of the totals, ``cloud_cost`` summed."""
    totals: dict[str, Any] = {key: sum(float(r[key]) for r in rows) for key in SUMMED_KEYS}
    totals["gpus"] = max((int(r["gpus"]) for r in rows), default=0)
    totals["cost_per_gpu_hour"] = _ratio(totals["total_cost"], totals["gpu_hours"])
    clouds = [r["cloud_cost"] for r in rows]
    totals["cloud_cost"] = None if any(c is None for c in clouds) else sum(clouds)
    return {key: totals[key] for key in MONTH_KEYS if key != "month"}


def proposed_plan(projection: Projection) -> list[dict[str, Any]]:
    """Each month's energy cost + demand charge and IT kWh, as the collector's ``plan:`` entries
    (with the demand charge's part named, as a plan entry may)."""
    return [
        {
            "site": projection.site.name,
            "month": r["month"],
            "cost": r["energy_cost"] + r["demand_charge"],
            "it_energy_kwh": r["it_kwh"],
            "demand_charge": r["demand_charge"],
        }
        for r in projection.rows
    ]


@dataclass(frozen=True, slots=True)
class BreakEven:
    #: the first month from which the cumulative cloud cost stays at or above the cumulative
    #: on-prem cash spend; None when owning still costs more at the plan's end
    month: str | None
    onprem_cash: tuple[float, ...]  # cumulative: capex paid when the servers arrive + energy + demand
    cloud: tuple[float, ...]  # cumulative cloud cost


def break_even(projection: Projection) -> BreakEven | None:
    """On-prem cash spend (each entry's servers paid in full in its first month, the energy and
    demand charge monthly) against the cloud, cumulative; None without a cloud price."""
    if projection.cloud_price_per_gpu_hour is None:
        return None
    onprem: list[float] = []
    cloud: list[float] = []
    spent = rented = 0.0
    for k, month in enumerate(projection.months):
        purchases = sum(
            e.servers * e.capex_per_server
            for e in projection.entries
            if not e.measured and e.first_index == k
        )
        spent += month.row["energy_cost"] + month.row["demand_charge"] + purchases
        rented += month.row["cloud_cost"]
        onprem.append(spent)
        cloud.append(rented)
    # from the month after the last one in which owning had cost more, owning stays cheaper; a
    # plan in which it never cost more breaks even at once, one that ends above never does
    above = [k for k, (own, rent) in enumerate(zip(onprem, cloud, strict=True)) if own > rent]
    at = 0 if not above else above[-1] + 1
    found = projection.months[at].row["month"] if at < len(projection.months) else None
    return BreakEven(found, tuple(onprem), tuple(cloud))
