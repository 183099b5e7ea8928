"""Spend rows (GET /v1/spend): energy, cost and carbon of a site's month, by site, cluster, node
or device, held against the plan.

Finance reads money per site and month against plan. The demand charge, the plan and the
forecast belong to sites (plans also to clusters): node and device rows carry energy and
energy cost only, so that rows of one level always add up to the level above's energy cost.
Read from the store at each request (the sums of a month, not a cached view): a replica's
answer includes every batch committed before it, by any replica.
"""

from __future__ import annotations

import math
import re
from typing import Any

from wattledger.collector.accounting.plan import DAY_SECONDS, elapsed_ratio, forecast, plan_of
from wattledger.collector.accounting.pricing import JOULES_PER_KWH
from wattledger.collector.accounting.siteclock import parse_month
from wattledger.collector.readmodel.chargeback import owner_rows, team_rows
from wattledger.collector.readmodel.view import Terms
from wattledger.collector.store.base import CHARGEBACK_GROUPS, SPEND_KEYS, GroupBy, Level, Store
from wattledger.collector.store.sql import SPEND_VALUES

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def spend_rows(store: Store, terms: Terms, *, site: str | None, month: str | None, group_by: GroupBy,
               now: float) -> list[dict[str, Any]]:
    """Rows of /v1/spend; ValueError for an unknown site, a malformed month or group_by."""
    if group_by not in SPEND_KEYS and group_by not in CHARGEBACK_GROUPS:
        raise ValueError(f"group_by must be one of {', '.join([*SPEND_KEYS, *CHARGEBACK_GROUPS])} "
                         f"(not {group_by!r})")
    if month is not None and not _MONTH.match(month):
        raise ValueError(f"month must look like 2026-12 (not {month!r})")
    if site is not None and site not in terms.sites:
        raise ValueError(f"site {site!r} is not configured")
    rows: list[dict[str, Any]] = []
    for name in [site] if site is not None else terms.site_names:
        this_month = month or terms.current_month(name, now)
        if group_by == "team":
            rows.extend(team_rows(store, terms, name, this_month, now))
        elif group_by in CHARGEBACK_GROUPS:
            rows.extend(owner_rows(store, terms, name, this_month, group_by))
        else:
            rows.extend(_site_rows(store, terms, name, this_month, group_by, now))  # type: ignore[arg-type]
    return rows


def _site_rows(store: Store, terms: Terms, site: str, month: str, group_by: Level,
               now: float) -> list[dict[str, Any]]:
    keys = SPEND_KEYS[group_by]
    found = store.spend_sums(site, month, group_by)
    since, until = (now - DAY_SECONDS) / 60.0, now / 60.0
    summary = terms.summary(site, month, store.month_sums(site, parse_month(month)),
                            store.day_cost(site, since, until), now)
    zeros = (0.0,) * len(SPEND_VALUES)
    if group_by == "site" and not found:
        found = [(site, *zeros)]
    if group_by == "cluster":  # clusters with a plan but no use yet are rows too
        used = {row[1] for row in found}
        planned = {e.cluster for e in terms.plan
                   if e.site == site and e.month == month and e.cluster is not None}
        found = sorted([*found, *((site, c, *zeros) for c in planned - used)],
                       key=lambda row: row[1])
    cluster_day_cost = (store.cluster_day_cost(site, math.ceil(since), until)
                        if group_by == "cluster" else {})
    rows = []
    for row in found:
        labels = dict(zip(keys, row[:len(keys)], strict=True))
        v = dict(zip(SPEND_VALUES, (float(x) for x in row[len(keys):]), strict=True))
        it_j, cooling_j, other_j = v["it_j"], v["cooling_j"], v["other_j"]
        energy_cost = v["it_cost"] + v["cooling_cost"] + v["other_cost"]
        out: dict[str, Any] = {**labels, "month": month, "currency": summary.currency,
                               "it_energy_j": it_j,
                               "it_energy_kwh": it_j / JOULES_PER_KWH,
                               "cooling_energy_kwh": cooling_j / JOULES_PER_KWH,
                               "facility_energy_kwh": (it_j + cooling_j + other_j) / JOULES_PER_KWH,
                               "it_cost": v["it_cost"], "cooling_cost": v["cooling_cost"],
                               "energy_cost": energy_cost,
                               "carbon_kg": v["carbon_g"] / 1000.0, "unmeasured_seconds": v["unmeasured_s"],
                               **bill_parts(v)}
        if group_by == "site":
            out.update(peak_demand_kw=summary.peak_kw, demand_charge=summary.demand_charge,
                       total_cost=summary.total_cost, plan_cost=summary.plan_cost,
                       plan_it_energy_kwh=summary.plan_it_energy_kwh,
                       plan_to_date=summary.plan_to_date, forecast_cost=summary.forecast_cost,
                       plan_energy_cost=summary.plan_energy_cost,
                       plan_energy_to_date=summary.plan_energy_to_date,
                       plan_demand_charge=summary.plan_demand_charge)
        elif group_by == "cluster":
            plan, plan_kwh = plan_of(terms.plan, site, month, str(labels["cluster"]))
            ratio, left = elapsed_ratio(terms.clocks[site], month, now)
            # a cluster's budget is energy only: the demand charge is the site's
            to_date = None if plan is None else plan * ratio
            out.update(demand_charge=None, total_cost=energy_cost, plan_cost=plan,
                       plan_it_energy_kwh=plan_kwh, plan_to_date=to_date,
                       forecast_cost=forecast(energy_cost, cluster_day_cost.get(str(labels["cluster"]), 0.0),
                                              ratio, left),
                       plan_energy_cost=plan, plan_energy_to_date=to_date, plan_demand_charge=None)
        else:
            out.update(demand_charge=None, total_cost=energy_cost, plan_cost=None,
                       plan_it_energy_kwh=None, plan_to_date=None, forecast_cost=None,
                       plan_energy_cost=None, plan_energy_to_date=None, plan_demand_charge=None)
        rows.append(out)
    return rows


def bill_parts(v: dict[str, float]) -> dict[str, float]:
    """The bill's parts of a spend row (docs/accounting.md, "The bill's parts"): the GPUs', the
    CPUs' and host domains', the node overhead (of which estimated), cooling and other facility
    load, as energy and cost. They add up: gpu + cpu + overhead = IT; + cooling + other = facility."""
    cpu_j = v["it_j"] - v["gpu_j"] - v["overhead_j"]
    cpu_cost = v["it_cost"] - v["gpu_cost"] - v["overhead_cost"]
    return {"gpu_energy_kwh": v["gpu_j"] / JOULES_PER_KWH, "gpu_cost": v["gpu_cost"],
            "cpu_energy_kwh": max(cpu_j, 0.0) / JOULES_PER_KWH, "cpu_cost": max(cpu_cost, 0.0),
            "overhead_energy_kwh": v["overhead_j"] / JOULES_PER_KWH, "overhead_cost": v["overhead_cost"],
            "overhead_estimated_kwh": v["overhead_est_j"] / JOULES_PER_KWH,
            "other_energy_kwh": v["other_j"] / JOULES_PER_KWH, "other_cost": v["other_cost"],
            "meter_disagreement_seconds": v["disagree_s"]}
