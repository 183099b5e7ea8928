"""What the demo's view shows at one moment, independent of where it came from.

:mod:`wattledger.demo.fetch` fills a :class:`Snapshot` from the collector's ``/v1/nodes`` and
``/v1/spend`` and Prometheus' ``/api/v1/alerts``; :mod:`wattledger.demo.view` draws it.
Base units: W, °C, J; money in the site's currency.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuHeat:
    node: str
    gpu: str  # the GPU's index (or id when it has none)
    temp_c: float
    slowdown_c: float | None

    @property
    def margin_c(self) -> float | None:
        return None if self.slowdown_c is None else self.slowdown_c - self.temp_c


def hottest_of(heats: Iterable[GpuHeat]) -> GpuHeat | None:
    """The GPU closest to its slowdown threshold (highest temperature where none is known)."""
    return min(heats, key=lambda h: (h.margin_c if h.margin_c is not None else 1e9, -h.temp_c),
               default=None)


@dataclass(frozen=True)
class ServerRow:
    node: str
    cluster: str | None
    workload: str | None
    gpus: int
    power_w: float | None  # sum of the latest power of its GPUs
    util: float | None  # mean of the latest utilization, 0..1
    hottest: GpuHeat | None
    last_seen: float | None  # unix seconds of its latest reading
    stale: bool = False


@dataclass(frozen=True)
class SiteRow:
    site: str
    currency: str
    it_energy_j: float
    cost: float  # month to date: energy (IT + cooling) and the demand charge so far
    plan_cost: float | None  # the month's budget
    plan_to_date: float | None
    forecast: float | None
    demand_charge: float | None = None
    carbon_g: float | None = None
    #: the two parts apart: energy accrues and is held against the energy part of the plan
    #: prorated; the demand charge is owed whole and held against its own budget, whole
    energy_cost: float | None = None
    plan_energy_to_date: float | None = None
    plan_demand_charge: float | None = None  # None: the plan gives no demand budget

    @property
    def used_of_plan_to_date(self) -> float | None:
        if not self.plan_to_date:
            return None
        return self.cost / self.plan_to_date

    @property
    def energy_of_plan_to_date(self) -> float | None:
        """Energy cost / energy plan to date: what EnergyCostOverPlan compares."""
        if self.energy_cost is None or not self.plan_energy_to_date:
            return None
        return self.energy_cost / self.plan_energy_to_date

    @property
    def demand_of_budget(self) -> float | None:
        """Demand charge / its budget: what DemandChargeOverPlan compares."""
        if self.demand_charge is None or not self.plan_demand_charge:
            return None
        return self.demand_charge / self.plan_demand_charge


@dataclass(frozen=True)
class AlertRow:
    name: str
    state: str  # "firing" | "pending"
    severity: str | None
    subject: str  # node / gpu / site it is about
    summary: str | None = None


@dataclass(frozen=True)
class AlertGroup:
    """Alerts of one name and state together (eight GPUs of one hot server are one line)."""

    name: str
    state: str
    severity: str | None
    subjects: tuple[str, ...]
    summary: str | None

    @property
    def where(self) -> str:
        if len(self.subjects) == 1:
            return self.subjects[0]
        # "dc-east demo-gpu-02 GPU 3" x 8 -> "dc-east demo-gpu-02 (8)"
        nodes = sorted({s.split(" GPU ")[0] for s in self.subjects})
        return ", ".join(nodes) + f" ({len(self.subjects)})"


def group_alerts(alerts: list[AlertRow]) -> list[AlertGroup]:
    groups: dict[tuple[str, str], list[AlertRow]] = {}
    for a in alerts:
        groups.setdefault((a.state, a.name), []).append(a)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0] != "firing", kv[0][1]))
    return [AlertGroup(name, state, rows[0].severity, tuple(r.subject for r in rows),
                       rows[0].summary if len(rows) == 1 else None)
            for (state, name), rows in ordered]


@dataclass(frozen=True)
class Urls:
    collector: str
    prometheus: str | None  # None when Prometheus does not run
    grafana_provisioning: str | None  # the folder of provisioning files, when present


@dataclass(frozen=True)
class BackfillState:
    fraction: float
    readings: int
    done: bool
    error: str | None = None
    until: float | None = None  # unix seconds the history reaches so far


@dataclass(frozen=True)
class Snapshot:
    at: float
    urls: Urls
    servers: list[ServerRow] = field(default_factory=list)
    sites: list[SiteRow] = field(default_factory=list)
    #: None when no Prometheus runs; else the alerts it has pending or firing
    alerts: list[AlertRow] | None = None
    backfill: BackfillState | None = None
    #: one-line notes: a child that died, a source that does not answer, how to get Prometheus
    notes: list[str] = field(default_factory=list)

    @property
    def fleet_power_w(self) -> float | None:
        known = [s.power_w for s in self.servers if s.power_w is not None]
        return sum(known) if known else None

    @property
    def hottest(self) -> GpuHeat | None:
        """The GPU closest to its slowdown threshold (highest temperature where none is known)."""
        return hottest_of(s.hottest for s in self.servers if s.hottest is not None)
