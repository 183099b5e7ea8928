"""A site's teams in a billing month: their sums, demand-charge shares, plans and forecasts
(DESIGN.md "Teams, budgets and chargeback"; docs/chargeback.md).

- energy, energy cost and carbon: the team's holders' sums (booked at ingest, ``ingest/chargeback.py``);
- demand charge: the site's, in proportion to the team's facility energy in the month's peak
  quarter-hour (the quarter-hour whose facility energy, summed over teams, is highest; the
  earliest of equal ones), so the shares add up to the site's demand charge;
- total cost = energy cost + demand-charge share (not prorated), as ``wattledger_month_cost``;
- plan to date and forecast: the site's formulas (``plan.py``) on the team's entry and the
  team's own trailing-24 h cost; the energy plan to date: the budget less the team's
  demand-charge share, prorated (as a site's without a ``demand_charge`` budget).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wattledger.collector.accounting.plan import MonthSummary, elapsed_ratio, energy_budget, forecast, plan_of
from wattledger.collector.accounting.pricing import JOULES_PER_KWH
from wattledger.collector.accounting.siteclock import SiteClock
from wattledger.collector.sites import PlanEntry

HOUR_SECONDS = 3600.0
#: the sums of a team's month, in the store's order (``store.sql.TEAM_MONTHS``)
SUMS = ("gpu_j", "it_j", "cooling_j", "it_cost", "cooling_cost", "carbon_g", "gpu_s", "idle_gpu_s", "waste_j",
        "waste_cost")


@dataclass(frozen=True)
class TeamMonth:
    """One team's month as of ``now``: a team row of /v1/spend and the team gauges."""

    team: str
    gpu_j: float
    it_j: float
    cooling_j: float
    it_cost: float
    cooling_cost: float
    carbon_g: float
    gpu_s: float
    idle_gpu_s: float  # held while utilization was under 5 %
    waste_j: float
    waste_cost: float
    demand_charge: float
    plan_cost: float | None
    plan_to_date: float | None
    forecast_cost: float | None
    #: the budget less the team's demand-charge share, x the elapsed fraction: what the team's
    #: energy cost is held against (the demand charge is owed whole from the month's peak on)
    plan_energy_to_date: float | None = None

    @property
    def energy_cost(self) -> float:
        return self.it_cost + self.cooling_cost

    @property
    def total_cost(self) -> float:
        return self.energy_cost + self.demand_charge

    def row(self) -> dict[str, float | str | None]:
        """The row's figures (without site, month and currency)."""
        return {"team": self.team, "gpu_energy_kwh": self.gpu_j / JOULES_PER_KWH,
                "it_energy_kwh": self.it_j / JOULES_PER_KWH,
                "cooling_energy_kwh": self.cooling_j / JOULES_PER_KWH,
                "facility_energy_kwh": (self.it_j + self.cooling_j) / JOULES_PER_KWH,
                "it_cost": self.it_cost, "cooling_cost": self.cooling_cost, "energy_cost": self.energy_cost,
                "demand_charge": self.demand_charge, "total_cost": self.total_cost,
                "carbon_kg": self.carbon_g / 1000.0, "gpu_hours": self.gpu_s / HOUR_SECONDS,
                "idle_gpu_hours": self.idle_gpu_s / HOUR_SECONDS, "waste_cost": self.waste_cost,
                "plan_cost": self.plan_cost, "plan_to_date": self.plan_to_date,
                "plan_energy_to_date": self.plan_energy_to_date, "forecast_cost": self.forecast_cost}


def demand_shares(quarters: Sequence[tuple[int, str, float, float]]) -> dict[str, float]:
    """Each team's fraction of the month's peak quarter-hour (fractions add up to 1; none when
    the month has no facility energy)."""
    per_quarter: dict[int, float] = defaultdict(float)
    for start, _, facility_j, _ in quarters:
        per_quarter[int(start)] += float(facility_j)
    if not per_quarter:
        return {}
    peak = min(per_quarter, key=lambda q: (-per_quarter[q], q))
    if per_quarter[peak] <= 0.0:
        return {}
    shares: dict[str, float] = defaultdict(float)
    for start, team, facility_j, _ in quarters:
        if int(start) == peak:
            shares[str(team)] += float(facility_j) / per_quarter[peak]
    return dict(shares)


def team_months(site: str, plan: Sequence[PlanEntry], clock: SiteClock, month: str, summary: MonthSummary,
                months: Sequence[Sequence[Any]], quarters: Sequence[Sequence[Any]],
                day_cost: Mapping[str, float], now: float) -> list[TeamMonth]:
    """Every team of the site's month with use or a plan, sorted by name, from the store's
    rows (``store.base.TeamData``: the month's sums per team, its quarter-hours per team, each
    team's cost in the trailing 24 h)."""
    sums = {str(row[0]): [float(v or 0.0) for v in row[1:]] for row in months}
    planned = {e.team for e in plan if e.site == site and e.month == month and e.team is not None}
    shares = demand_shares([(int(q[0]), str(q[1]), float(q[2]), float(q[3])) for q in quarters])
    ratio, left = elapsed_ratio(clock, month, now)
    out = []
    for team in sorted(set(sums) | planned):
        v = sums.get(team, [0.0] * len(SUMS))
        demand = summary.demand_charge * shares.get(team, 0.0)
        budget, _ = plan_of(plan, site, month, None, team)
        total = v[3] + v[4] + demand
        out.append(TeamMonth(team, **dict(zip(SUMS, v, strict=True)), demand_charge=demand, plan_cost=budget,
                             plan_to_date=None if budget is None else budget * ratio,
                             forecast_cost=forecast(total, day_cost.get(team, 0.0), ratio, left),
                             plan_energy_to_date=None if budget is None else
                             energy_budget(budget, None, demand) * ratio))
    return out
