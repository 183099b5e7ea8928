"""A plan from a scenario: check it, read what it needs of the ledger, project, and write the
document that every report format renders (the JSON of docs/planning.md, "The report")."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import IO, Any

from wattledger.collector.accounting.cooling import CURVE_PRESETS, ChillerCooling, Cooling
from wattledger.collector.accounting.history import MeasuredHistory
from wattledger.plan.advice import advice
from wattledger.plan.inputs import (
    needs_history,
    resolve_conditions,
    resolve_entries,
    site_terms,
    wants_history,
)
from wattledger.plan.ledger import HistoryUnavailable
from wattledger.plan.profile import (
    MIN_HOURS,
    MIN_METERED_NODE_HOURS,
    MIN_READINGS,
    MIN_UTILIZATION_SPREAD,
    PowerProfile,
)
from wattledger.plan.projection import (
    EntryPlan,
    Projection,
    break_even,
    project,
    proposed_plan,
    totals_of,
)
from wattledger.plan.reading import FLEET_WINDOW_S, ReadHistory, read_history
from wattledger.plan.scenario import Scenario, ScenarioError, cross_check, scenario_from
from wattledger.plan.siteconfig import PlanSites

#: the sensitivity cases: (name, utilization factor, price factor)
SENSITIVITY = (
    ("utilization -20%", 0.8, 1.0),
    ("utilization +20%", 1.2, 1.0),
    ("price -20%", 1.0, 0.8),
    ("price +20%", 1.0, 1.2),
)


def make_plan(
    raw_scenario: Any,
    sites: PlanSites,
    open_history: Callable[[], MeasuredHistory],
    progress: IO[str] | None = None,
) -> dict[str, Any]:
    """The plan document of a scenario. ScenarioError for a bad scenario (every issue); whatever
    ``open_history`` raises (one line) when the plan needs the ledger and cannot have it."""
    scenario = scenario_from(raw_scenario)
    early = cross_check(scenario, sites.sites, None)
    if early:
        raise ScenarioError(early)
    site = sites.sites[scenario.site]
    cooling = sites.cooling[scenario.site]
    history: ReadHistory | None = None
    unread: str | None = None
    if wants_history(scenario, cooling):
        try:
            ledger = open_history()
        except HistoryUnavailable as exc:
            if needs_history(scenario, cooling):
                raise
            unread = str(exc)  # only the chiller's sensor months wanted it: its fallbacks plan on
        else:
            history = read_history(ledger, scenario.site, progress)
            issues = cross_check(scenario, sites.sites, history.facts(site.zone))
            if issues:
                raise ScenarioError(issues)
    terms = site_terms(scenario.site, site, cooling)
    entries = resolve_entries(scenario, history)
    conditions = resolve_conditions(scenario, scenario.site, site, cooling, history)

    def run(util: float = 1.0, price: float = 1.0) -> Projection:
        return project(
            terms,
            [e.with_utilization(util) for e in entries],
            conditions,
            scenario.price_escalation_per_year,
            scenario.cloud_price_per_gpu_hour,
            price,
        )

    base = run()
    profiles = history.profiles if history is not None else {}
    fleet_shares = _fleet_shares(history)
    return {
        "site": scenario.site,
        "currency": site.currency,
        "months": base.rows,
        "totals": base.totals,
        "proposed_plan": proposed_plan(base),
        "assumptions": assumptions(scenario, sites, base, history, unread),
        "fleet": [_entry_doc(e, base, i) for i, e in enumerate(entries)],
        "cloud_comparison": _comparison(base),
        "profiles": [profile_doc(p) for p in profiles.values()],
        "sensitivity": [_sensitivity(name, run(u, p), base) for name, u, p in SENSITIVITY],
        "advice": advice(base, profiles, history.months if history is not None else (), site, fleet_shares),
    }


def _fleet_shares(history: ReadHistory | None) -> dict[str, float]:
    if history is None or history.fleet is None:
        return {}
    total = sum(m.gpu_energy_kwh for m in history.fleet.models)
    return {m.model: m.gpu_energy_kwh / total for m in history.fleet.models} if total > 0 else {}


def _entry_doc(entry: EntryPlan, projection: Projection, index: int) -> dict[str, Any]:
    rows = []
    for result in projection.months:
        em = result.entries[index]
        if em is None:
            continue
        rows.append(
            {
                "month": result.row["month"],
                "gpus": em.gpus,
                "it_kwh": em.it_kwh,
                "cooling_kwh": em.cooling_kwh,
                "facility_kwh": em.facility_kwh,
                "energy_cost": em.energy_cost,
                "demand_charge": em.demand_charge,
                "capex": em.capex,
                "total_cost": em.energy_cost + em.demand_charge + em.capex,
                "carbon_kg": em.facility_kwh * projection.site.carbon_g_per_kwh / 1000.0,
                "gpu_hours": em.gpu_hours,
                "cost_per_gpu_hour": None,
                "cloud_cost": (
                    em.gpu_hours * projection.cloud_price_per_gpu_hour
                    if projection.cloud_price_per_gpu_hour is not None
                    else None
                ),
            }
        )
    first = (
        projection.months[entry.first_index].row["month"]
        if entry.first_index < len(projection.months)
        else None
    )
    return {
        "name": entry.name,
        "measured": entry.measured,
        "model": entry.model,
        "from": first,
        "servers": entry.servers,
        "gpus_per_server": entry.gpus_per_server,
        "gpus": entry.gpus,
        "utilization": entry.utilization,
        "idle_w": entry.idle_w,
        "max_w": entry.max_w,
        "node_overhead_w": entry.node_overhead_w,
        "gpu_power_w": entry.gpu_power_w,
        "node_power_w": entry.node_power_w,
        "it_kw": entry.it_kw,
        "power": entry.power_source,
        "totals": totals_of(rows) if rows else None,
    }


def _comparison(projection: Projection) -> dict[str, Any] | None:
    found = break_even(projection)
    if found is None:
        return None
    return {
        "break_even_month": found.month,
        "onprem_cumulative_cash": list(found.onprem_cash),
        "cloud_cumulative": list(found.cloud),
        "basis": "on-prem: each entry's servers paid in full in its first month, energy cost and demand "
        "charge monthly; cloud: GPU-hours x cloud_price_per_gpu_hour; break-even: the first month "
        "from which the cumulative cloud cost stays at or above the cumulative on-prem spend (null: "
        "owning still costs more at the plan's end)",
    }


def _sensitivity(name: str, case: Projection, base: Projection) -> dict[str, Any]:
    t, b = case.totals, base.totals
    change = t["total_cost"] - b["total_cost"]
    return {
        "case": name,
        "total_cost": t["total_cost"],
        "energy_cost": t["energy_cost"],
        "demand_charge": t["demand_charge"],
        "facility_kwh": t["facility_kwh"],
        "cost_per_gpu_hour": t["cost_per_gpu_hour"],
        "change_total_cost": change,
        "change_ratio": change / b["total_cost"] if b["total_cost"] else None,
    }


def profile_doc(p: PowerProfile) -> dict[str, Any]:
    """A measured profile with the data it came from."""
    c = p.coverage
    return {
        "model": p.model,
        "usable": p.usable,
        "problems": list(p.problems),
        "line": (
            {
                "idle_w": p.fit.intercept_w,
                "max_w": p.fit.power_at(1.0),
                "slope_w": p.fit.slope_w,
                "r2": p.fit.r2,
            }
            if p.fit is not None
            else None
        ),
        "idle_w": p.idle_w,
        "idle_readings": p.idle_readings,
        "p95_w": p.p95_w,
        "mean_utilization": p.mean_utilization,
        "utilization_p5": p.utilization_p5,
        "utilization_p95": p.utilization_p95,
        "coverage": {
            "days": c.days,
            "gpus": c.gpus,
            "readings": c.readings,
            "hours": c.hours,
            "first_day": c.first_day.isoformat() if c.first_day else None,
            "last_day": c.last_day.isoformat() if c.last_day else None,
        },
        "node_overhead": asdict(p.node_overhead) if p.node_overhead is not None else None,
        "binned": [
            {"utilization": b.utilization, "mean_power_w": b.mean_power_w, "readings": b.readings}
            for b in p.binned
        ],
    }


def _cooling_doc(cooling: Cooling) -> dict[str, Any]:
    doc = cooling.model_dump(mode="json")
    if isinstance(cooling, ChillerCooling) and cooling.curves is not None:
        doc["curves_source"] = CURVE_PRESETS[cooling.curves].source
    return doc


def assumptions(
    scenario: Scenario,
    sites: PlanSites,
    projection: Projection,
    history: ReadHistory | None,
    unread: str | None = None,
) -> dict[str, Any]:
    site = sites.sites[scenario.site]
    over = [m.row["month"] for m in projection.months if m.over_capacity]
    calendar = []
    for cond, result in zip(projection.conditions, projection.months, strict=True):
        calendar.append(
            {
                "month": result.row["month"],
                "hours": cond.hours,
                "price_per_kwh": cond.price_per_kwh,
                "escalation_factor": result.escalation,
                "outdoor_c": cond.outdoor_c,
                "outdoor_source": cond.outdoor_source,
                "chiller_plr": result.chiller_plr,
                "cooling_ratio": cond.cooling_ratio,
                "other_ratio": cond.other_ratio if cond.cooling_ratio is not None else None,
                "cooling_ratio_source": cond.ratio_source,
            }
        )
    warnings = []
    if unread is not None:
        warnings.append(f"the outdoor sensor's measured months were not used: {unread}")
    if over:
        warnings.append(
            f"the IT load is more than the chiller can carry in {len(over)} months (first "
            f"{over[0]}): cooling there is the chiller's full-load power and the heat above it "
            "is not removed; the site needs more cooling capacity"
        )
    return {
        "configuration": sites.source,
        "scenario": {
            "start": scenario.start,
            "months": scenario.months,
            "end": scenario.end,
            "price_escalation_per_year": scenario.price_escalation_per_year,
            "cloud_price_per_gpu_hour": scenario.cloud_price_per_gpu_hour,
        },
        "timezone": site.timezone,
        "hours": "real local hours of each month in the site's timezone (743 or 745 in a month with a "
        "DST change)",
        "tariff": (
            "flat price_per_kwh"
            if site.price_per_kwh is not None
            else f"time-of-use, {len(site.tariff or [])} bands, time-weighted over each month's real "
            "local minutes"
        ),
        "escalation": "energy cost x (1 + price_escalation_per_year) ^ floor(months since start / 12)",
        "demand_charge": f"{site.demand_charge_per_kw:g} per kW of the month's facility kW (kWh / hours: "
        "a steady load's peak quarter-hour is its mean)",
        "carbon_g_per_kwh": site.carbon_g_per_kwh,
        "cooling": _cooling_doc(sites.cooling[scenario.site]),
        "capex": "servers x capex_per_server / depreciation_months in each of an entry's first "
        "depreciation_months months (none for the measured fleet: already bought)",
        "totals_gpus": "totals.gpus is the largest month's GPUs (GPUs summed over months would be "
        "GPU-months)",
        "measured": {
            "fleet_window_days": FLEET_WINDOW_S / 86400,
            "ledger_first_reading": _utc(history.span.first) if history and history.span else None,
            "ledger_last_reading": _utc(history.span.last) if history and history.span else None,
            "profile_requirements": {
                "readings": MIN_READINGS,
                "hours": MIN_HOURS,
                "utilization_spread": MIN_UTILIZATION_SPREAD,
                "node_meter_node_hours": MIN_METERED_NODE_HOURS,
            },
        },
        "sensitivity": "utilization x 0.8 and x 1.2 (at most 100 %) of the projected entries (the measured "
        "fleet as measured); price x 0.8 and x 1.2 of the tariff (the demand charge unchanged)",
        "months": calendar,
        "warnings": warnings,
    }


def _utc(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def issue_fields(error: ScenarioError) -> list[Mapping[str, str]]:
    """The issues as ``{field, reason}`` (an HTTP 422's detail)."""
    return [{"field": i.field, "reason": i.reason} for i in error.issues]
