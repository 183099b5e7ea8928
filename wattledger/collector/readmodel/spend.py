"""Month summaries, spend rows (GET /v1/spend) and node rows (GET /v1/nodes) over a Ledger.

Finance reads money per site and month against plan. The demand charge, the plan and the
forecast belong to sites (plans also to clusters): node and device rows carry energy and
energy cost only, so that rows of one level always add up to the level above's energy cost.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wattledger.collector.accounting.siteclock import month_text, parse_month

if TYPE_CHECKING:
    from wattledger.collector.ingest.ledger import GroupBy, Ledger

JOULES_PER_KWH = 3.6e6
QUARTER_SECONDS = 900.0
DAY_SECONDS = 86400.0
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


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


def plan_of(ledger: Ledger, site: str, month: str, cluster: str | None
            ) -> tuple[float | None, float | None]:
    """(budget, planned IT kWh) of a site (cluster None) or one of its clusters for a month.

    A site without a site-wide entry is budgeted the sum of its clusters' entries.
    """
    entries = [e for e in ledger.plan if e.site == site and e.month == month]
    exact = [e for e in entries if e.cluster == cluster]
    if cluster is None and not exact:
        exact = [e for e in entries if e.cluster is not None]
    if not exact:
        return None, None
    kwh = [e.it_energy_kwh for e in exact]
    return (sum(e.cost for e in exact),
            None if any(k is None for k in kwh) else sum(k for k in kwh if k is not None))


def plan_demand_charge(ledger: Ledger, site: str, month: str) -> float | None:
    """The demand-charge budget of a site's month: its site entry's ``demand_charge``, if any."""
    return next((e.demand_charge for e in ledger.plan
                 if e.site == site and e.month == month and e.cluster is None), None)


def energy_budget(plan: float, demand_budget: float | None, demand_so_far: float) -> float:
    """The month's budget for energy: the budget less its demand-charge part. Without a
    demand-charge budget of its own the demand charge booked so far is paid out of the month's
    budget first, so the rest is what energy may cost; either way the energy part never
    counts the (whole, not prorated) demand charge against a prorated plan."""
    return max(plan - (demand_so_far if demand_budget is None else demand_budget), 0.0)


def elapsed_ratio(ledger: Ledger, site: str, month: str, now: float) -> tuple[float, float]:
    """Fraction of the month elapsed at ``now`` (site local time) and seconds left in it."""
    start, end = ledger.site_clock(site).month_bounds(parse_month(month))
    if now <= start:
        return 0.0, end - start
    if now >= end:
        return 1.0, 0.0
    return (now - start) / (end - start), end - now


def trailing_day_cost(ledger: Ledger, site: str, now: float) -> float:
    """Energy cost of the site's quarter-hours that start in the 24 h before ``now``."""
    since = (now - DAY_SECONDS) / 60.0
    return sum(cost for (s, start), (_, cost) in ledger.quarters.items()
               if s == site and since <= start <= now / 60.0)


def month_summary(ledger: Ledger, site: str, month: str, now: float) -> MonthSummary:
    config = ledger.sites[site]
    from wattledger.collector.ingest.ledger import SiteMonth
    sums = ledger.site_months.get((site, parse_month(month)), SiteMonth())
    peak_kw = sums.peak_quarter_facility_j / QUARTER_SECONDS / 1000.0
    demand = peak_kw * config.demand_charge_per_kw
    total = sums.energy_cost + demand
    plan, plan_kwh = plan_of(ledger, site, month, None)
    ratio, left = elapsed_ratio(ledger, site, month, now)
    forecast: float | None = total
    if ratio == 0.0:
        forecast = None
    elif ratio < 1.0:
        forecast = total + trailing_day_cost(ledger, site, now) / DAY_SECONDS * left
    demand_budget = plan_demand_charge(ledger, site, month)
    energy_plan = None if plan is None else energy_budget(plan, demand_budget, demand)
    return MonthSummary(site, month, config.currency, sums.energy_cost, peak_kw, demand, total,
                        plan, plan_kwh, None if plan is None else plan * ratio, forecast, ratio,
                        demand_budget, energy_plan,
                        None if energy_plan is None else energy_plan * ratio)


def current_month(ledger: Ledger, site: str, now: float) -> str:
    return month_text(ledger.site_clock(site).month_at(now))


_KEYS: dict[str, tuple[str, ...]] = {
    "site": ("u.site",),
    "cluster": ("u.site", "u.cluster"),
    "node": ("u.site", "u.cluster", "d.node"),
    "device": ("u.site", "u.cluster", "d.node", "d.device", "d.kind", "d.idx", "d.model"),
}
_KEY_NAMES = {"u.site": "site", "u.cluster": "cluster", "d.node": "node", "d.device": "device",
              "d.kind": "kind", "d.idx": "index", "d.model": "model"}


def spend_rows(ledger: Ledger, *, site: str | None, month: str | None, group_by: GroupBy,
               now: float) -> list[dict[str, Any]]:
    """Rows of /v1/spend; ValueError for an unknown site, a malformed month or group_by."""
    if group_by not in _KEYS:
        raise ValueError(f"group_by must be one of site, cluster, node, device (not {group_by!r})")
    if month is not None and not _MONTH.match(month):
        raise ValueError(f"month must look like 2026-12 (not {month!r})")
    if site is not None and site not in ledger.sites:
        raise ValueError(f"site {site!r} is not configured")
    rows: list[dict[str, Any]] = []
    for name in [site] if site is not None else ledger.site_names:
        the_month = month or current_month(ledger, name, now)
        rows.extend(_site_rows(ledger, name, the_month, group_by, now))
    return rows


def _site_rows(ledger: Ledger, site: str, month: str, group_by: GroupBy,
               now: float) -> list[dict[str, Any]]:
    keys = _KEYS[group_by]
    join = " JOIN devices d ON d.slot = u.slot" if group_by in ("node", "device") else ""
    found = ledger.store.query(
        f"SELECT {', '.join(keys)}, SUM(u.it_j), SUM(u.cooling_j), SUM(u.it_cost), "
        f"SUM(u.cooling_cost), SUM(u.carbon_g), SUM(u.unmeasured_s) FROM usage u{join} "
        f"WHERE u.month = ? AND u.site = ? GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}",
        (month, site))
    summary = month_summary(ledger, site, month, now)
    if group_by == "site" and not found:
        found = [(site, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    if group_by == "cluster":  # clusters with a plan but no use yet are rows too
        used = {row[1] for row in found}
        planned = {e.cluster for e in ledger.plan
                   if e.site == site and e.month == month and e.cluster is not None}
        found = sorted([*found, *((site, c, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0) for c in planned - used)],
                       key=lambda row: row[1])
    cluster_day_cost = _cluster_day_cost(ledger, site, now) if group_by == "cluster" else {}
    rows = []
    for row in found:
        labels = dict(zip((_KEY_NAMES[k] for k in keys), row[:len(keys)], strict=True))
        it_j, cooling_j, it_cost, cooling_cost, carbon_g, unmeasured = (float(v) for v in row[len(keys):])
        out: dict[str, Any] = {**labels, "month": month, "currency": summary.currency,
                               "it_energy_j": it_j,
                               "it_energy_kwh": it_j / JOULES_PER_KWH,
                               "cooling_energy_kwh": cooling_j / JOULES_PER_KWH,
                               "facility_energy_kwh": (it_j + cooling_j) / JOULES_PER_KWH,
                               "it_cost": it_cost, "cooling_cost": cooling_cost,
                               "energy_cost": it_cost + cooling_cost,
                               "carbon_kg": carbon_g / 1000.0, "unmeasured_seconds": unmeasured}
        if group_by == "site":
            out.update(peak_demand_kw=summary.peak_kw, demand_charge=summary.demand_charge,
                       total_cost=summary.total_cost, plan_cost=summary.plan_cost,
                       plan_it_energy_kwh=summary.plan_it_energy_kwh,
                       plan_to_date=summary.plan_to_date, forecast_cost=summary.forecast_cost,
                       plan_energy_cost=summary.plan_energy_cost,
                       plan_energy_to_date=summary.plan_energy_to_date,
                       plan_demand_charge=summary.plan_demand_charge)
        elif group_by == "cluster":
            plan, plan_kwh = plan_of(ledger, site, month, str(labels["cluster"]))
            ratio, left = elapsed_ratio(ledger, site, month, now)
            energy_cost = it_cost + cooling_cost
            forecast: float | None = energy_cost
            if ratio == 0.0:
                forecast = None
            elif ratio < 1.0:
                forecast = energy_cost + cluster_day_cost.get(str(labels["cluster"]), 0.0) \
                    / DAY_SECONDS * left
            # a cluster's budget is energy only: the demand charge is the site's
            to_date = None if plan is None else plan * ratio
            out.update(demand_charge=None, total_cost=energy_cost, plan_cost=plan,
                       plan_it_energy_kwh=plan_kwh, plan_to_date=to_date, forecast_cost=forecast,
                       plan_energy_cost=plan, plan_energy_to_date=to_date, plan_demand_charge=None)
        else:
            out.update(demand_charge=None, total_cost=it_cost + cooling_cost, plan_cost=None,
                       plan_it_energy_kwh=None, plan_to_date=None, forecast_cost=None,
                       plan_energy_cost=None, plan_energy_to_date=None, plan_demand_charge=None)
        rows.append(out)
    return rows


def _cluster_day_cost(ledger: Ledger, site: str, now: float) -> dict[str, float]:
    since = math.ceil((now - DAY_SECONDS) / 60.0)
    return {str(cluster): float(cost) for cluster, cost in ledger.store.query(
        "SELECT cluster, SUM(cost) FROM quarters WHERE site = ? AND start_minute >= ? "
        "AND start_minute <= ? GROUP BY cluster", (site, since, now / 60.0))}


def _num(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def node_rows(ledger: Ledger, now: float) -> list[dict[str, Any]]:
    """Rows of /v1/nodes: every node with its devices and their latest readings."""
    dev = ledger.devices
    slots: dict[str, list[int]] = {}
    for slot in range(dev.size):
        slots.setdefault(dev.node[slot], []).append(slot)
    rows = []
    for node in sorted(ledger.node_states):
        state = ledger.node_states[node]
        devices = []
        for slot in sorted(slots.get(node, []), key=lambda s: dev.index[s]):
            f = dev.floats
            latest = {name: _num(f[name][slot]) for name in
                      ("temp_c", "mem_temp_c", "util", "mem_util", "sm_clock_hz", "mem_used_bytes")}
            events = int(dev.clock_events[slot]) if dev.has_clock_events[slot] else None
            devices.append({
                "id": dev.device[slot], "kind": dev.kind[slot], "index": dev.index[slot],
                "model": dev.model[slot], "power_limit_w": _num(f["power_limit_w"][slot]),
                "slowdown_c": dev.slowdown_c[slot], "shutdown_c": dev.shutdown_c[slot],
                "latest": {"ts": _num(f["last_ts"][slot]), "power_w": _num(f["last_power_w"][slot]),
                           "energy_j": _num(f["last_energy_j"][slot]), **latest,
                           "clock_events": events},
                "energy_j_total": float(f["energy_j"][slot]),
                "unmeasured_seconds_total": float(f["unmeasured_s"][slot]),
                "counter_resets_total": int(dev.counts["resets"][slot]),
                "energy_anomalies_total": int(dev.counts["anomalies"][slot]),
                "late_readings_total": int(dev.counts["late"][slot]),
            })
        rows.append({"node": node, "site": state.site, "cluster": state.cluster,
                     "labels": state.labels, "last_seen": state.last_seen,
                     "stale": ledger.is_stale(state, now), "readings_total": state.readings,
                     "devices": devices})
    return rows
