"""A billing month against its plan: demand charge, plan to date and forecast (DESIGN.md,
"Accounting"; docs/accounting.md, "Plan, plan to date, forecast").

- demand charge = the month's highest 15-minute average facility kW x ``demand_charge_per_kw``;
- plan to date = the month's budget x the elapsed fraction of the month (site local time);
- forecast = month-to-date cost + the trailing 24 h cost rate x the time left in the month.

Pure functions of the month's sums, the plan and the clock: /metrics, /v1/spend and the plan
alerts all read these, so a figure is computed one way only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wattledger.collector.accounting.pricing import QUARTER_SECONDS, SiteSums
from wattledger.collector.accounting.siteclock import SiteClock, parse_month
from wattledger.collector.sites import PlanEntry, SiteConfig

DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class MonthSummary:
    """A site's billing month as of ``now``: what /metrics and the site rows of /v1/spend show."""

    site: str
    month: str
    currency: str
    energy_cost: float
    peak_kw: float           # highest quarter-hour average facility power
    demand_charge: float
    total_cost: float        # energy cost + demand charge (month to date)
    plan_cost: float | None
    plan_it_energy_kwh: float | None
    plan_to_date: float | None
    forecast_cost: float | None
    elapsed_ratio: float     # 0 before the month, 1 after it
    #: the plan's part for the demand charge: the entry's ``demand_charge``, None when not given
    plan_demand_charge: float | None = None
    #: the plan's part for energy: ``plan_cost`` less the demand charge's part (the entry's, or
    #: else the demand charge booked so far), and that x the elapsed fraction
    plan_energy_cost: float | None = None
    plan_energy_to_date: float | None = None


def plan_of(plan: Sequence[PlanEntry], site: str, month: str, cluster: str | None, team: str | None = None
            ) -> tuple[float | None, float | None]:
    """(budget, planned IT kWh) of a site (cluster None), one of its clusters or one of its teams
    for a month.

    A site without a site-wide entry is budgeted the sum of its clusters' entries (teams'
    budgets are shares of the site's, never added to it).
    """
    entries = [e for e in plan if e.site == site and e.month == month and e.team == team]
    exact = [e for e in entries if e.cluster == cluster]
    if cluster is None and not exact:
        exact = [e for e in entries if e.cluster is not None]
    if not exact:
        return None, None
    kwh = [e.it_energy_kwh for e in exact]
    return (sum(e.cost for e in exact),
            None if any(k is None for k in kwh) else sum(k for k in kwh if k is not None))


def plan_demand_charge(plan: Sequence[PlanEntry], site: str, month: str) -> float | None:
    """The demand-charge budget of a site's month: its site entry's ``demand_charge``, if any."""
    return next((e.demand_charge for e in plan
                 if e.site == site and e.month == month and e.cluster is None and e.team is None), None)


def energy_budget(plan: float, demand_budget: float | None, demand_so_far: float) -> float:
    """The month's budget for energy: the budget less its demand-charge part. Without a
    demand-charge budget of its own the demand charge booked so far is paid out of the month's
    budget first, so the rest is what energy may cost; either way the energy part never
    counts the (whole, not prorated) demand charge against a prorated plan."""
    return max(plan - (demand_so_far if demand_budget is None else demand_budget), 0.0)


def elapsed_ratio(clock: SiteClock, month: str, now: float) -> tuple[float, float]:
    """Fraction of the month elapsed at ``now`` (site local time) and seconds left in it."""
    start, end = clock.month_bounds(parse_month(month))
    if now <= start:
        return 0.0, end - start
    if now >= end:
        return 1.0, 0.0
    return (now - start) / (end - start), end - now


def forecast(cost_so_far: float, day_cost: float, ratio: float, left: float) -> float | None:
    """Month-to-date cost + the trailing 24 h cost rate x the time left; None before the month."""
    if ratio == 0.0:
        return None
    if ratio < 1.0:
        return cost_so_far + day_cost / DAY_SECONDS * left
    return cost_so_far


def month_summary(site: str, config: SiteConfig, plan: Sequence[PlanEntry], clock: SiteClock,
                  month: str, sums: SiteSums, day_cost: float, now: float) -> MonthSummary:
    """The month of ``sums`` (the site's usage in it and its peak quarter-hour) as of ``now``;
    ``day_cost`` is the energy cost of the site's 24 h before ``now``."""
    peak_kw = sums.peak_quarter_facility_j / QUARTER_SECONDS / 1000.0
    demand = peak_kw * config.demand_charge_per_kw
    total = sums.energy_cost + demand
    budget, plan_kwh = plan_of(plan, site, month, None)
    ratio, left = elapsed_ratio(clock, month, now)
    demand_budget = plan_demand_charge(plan, site, month)
    energy_plan = None if budget is None else energy_budget(budget, demand_budget, demand)
    return MonthSummary(site, month, config.currency, sums.energy_cost, peak_kw, demand, total,
                        budget, plan_kwh, None if budget is None else budget * ratio,
                        forecast(total, day_cost, ratio, left), ratio, demand_budget, energy_plan,
                        None if energy_plan is None else energy_plan * ratio)
