"""Advice from the same data: idle GPUs that drew power, and what a power cap would save.

Both are *estimates*, and say so in the report with their assumptions:

- idle: the ledger's idle-but-powered GPU-hours and their GPUs' energy per month (readings below
  5 % utilization), grossed up by the month's facility-to-IT ratio and priced at the month's
  time-weighted price (the ledger's bill prices each minute; this is the month's average);
- power cap: from a model's measured power histogram, the share of its GPU energy above a cap
  (sum over readings of the power above the cap, over the sum of power), applied to the plan's
  GPU energy of that model. It assumes the work is unchanged and takes no longer under the cap:
  an upper bound, since power-bound work runs longer when capped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wattledger.collector.accounting.cooling import ChillerCooling, Cooling, PueCooling, chiller_cooling
from wattledger.collector.accounting.history import POWER_BIN_W, PowerStats, SiteMonth
from wattledger.collector.accounting.siteclock import parse_month
from wattledger.collector.sites import SiteConfig
from wattledger.plan.calendar import month_clock
from wattledger.plan.profile import PowerProfile
from wattledger.plan.projection import Projection

IDLE_ASSUMPTIONS = (
    "idle = GPU readings below 5 % utilization while the GPU was powered, as the ledger counted them",
    "money = the idle GPUs' own energy x the month's facility/IT ratio x the month's time-weighted price "
    "(an average: the ledger's bill prices each minute)",
)
CAP_ASSUMPTIONS = (
    "estimate, not a measurement: the share of GPU energy above the cap is taken from the model's measured "
    "power histogram (10 W bins) and applied to the plan's GPU energy of that model",
    "the work is assumed unchanged and no slower under the cap, so the saving is an upper bound: work that "
    "is limited by power runs longer when capped",
    "cooling and the tariff scale the saving as they scale the GPU energy (same month, same price)",
)


def energy_share_above(stats: PowerStats, cap_w: float) -> float:
    """Share of the readings' energy above ``cap_w`` (bin centres), 0..1."""
    total = above = 0.0
    for i, count in enumerate(stats.power_hist):
        if count:
            centre = (i + 0.5) * POWER_BIN_W
            total += count * centre
            above += count * max(centre - cap_w, 0.0)
    return above / total if total > 0 else 0.0


def readings_above(stats: PowerStats, cap_w: float) -> float:
    n = sum(c for i, c in enumerate(stats.power_hist) if (i + 0.5) * POWER_BIN_W > cap_w)
    return n / stats.n if stats.n else 0.0


def _facility_ratio(cooling: Cooling, month: SiteMonth) -> float:
    if month.cooling_kwh is not None and month.it_kwh > 0:
        facility = month.facility_kwh if month.facility_kwh is not None else month.it_kwh + month.cooling_kwh
        return facility / month.it_kwh
    if isinstance(cooling, PueCooling):
        return cooling.pue
    if isinstance(cooling, ChillerCooling) and month.outdoor_mean_c is not None and month.it_kwh > 0:
        hours = month.days * 24.0
        it_kw = month.it_kwh / hours
        return 1.0 + chiller_cooling(cooling, it_kw, month.outdoor_mean_c).cooling_kw / it_kw
    return 1.0


def idle_advice(months: Sequence[SiteMonth], site: SiteConfig, cooling: Cooling) -> list[dict[str, Any]]:
    out = []
    for month in sorted(months, key=lambda m: m.month):
        if month.idle_gpu_hours <= 0:
            continue
        ratio = _facility_ratio(cooling, month)
        price = month_clock(site, parse_month(month.month)).price_per_kwh
        facility = month.idle_energy_kwh * ratio
        out.append(
            {
                "month": month.month,
                "idle_gpu_hours": month.idle_gpu_hours,
                "idle_gpu_energy_kwh": month.idle_energy_kwh,
                "facility_kwh": facility,
                "cost": facility * price,
                "price_per_kwh": price,
                "facility_to_it": ratio,
            }
        )
    return out


def _cap_levels(profile: PowerProfile) -> list[float]:
    if profile.p95_w is None:
        return []
    floor = profile.idle_w or 0.0
    levels = []
    for factor in (1.0, 0.9, 0.8):
        cap = POWER_BIN_W * int(profile.p95_w * factor // POWER_BIN_W)
        if cap > floor and cap not in levels:
            levels.append(float(cap))
    return levels


def _gpu_kwh_by_model(
    projection: Projection, fleet_shares: Mapping[str, float]
) -> dict[str, list[tuple[int, float]]]:
    """Per model, the plan's GPU kWh per month (month index, kWh); the measured entry's GPU
    energy is split among its models by their measured GPU energy."""
    out: dict[str, list[tuple[int, float]]] = {}
    for k, month in enumerate(projection.months):
        for entry, em in zip(projection.entries, month.entries, strict=True):
            if em is None:
                continue
            shares = fleet_shares if entry.measured else ({entry.model: 1.0} if entry.model else {})
            for model, share in shares.items():
                out.setdefault(model, []).append((k, em.gpu_kwh * share))
    return out


def cap_advice(
    projection: Projection, profiles: Mapping[str, PowerProfile], fleet_shares: Mapping[str, float]
) -> list[dict[str, Any]]:
    """For each measured model the plan runs, the saving of a cap at its measured 95th percentile
    of power and at 90 % and 80 % of it."""
    by_model = _gpu_kwh_by_model(projection, fleet_shares)
    out = []
    for model, months in sorted(by_model.items()):
        profile = profiles.get(model)
        if profile is None or profile.stats.n == 0:
            continue
        for cap in _cap_levels(profile):
            share = energy_share_above(profile.stats, cap)
            kwh = cost = 0.0
            for k, gpu_kwh in months:
                row = projection.months[k].row
                if row["it_kwh"] <= 0:
                    continue
                saved_facility = gpu_kwh * share * row["facility_kwh"] / row["it_kwh"]
                kwh += saved_facility
                cost += saved_facility * row["energy_cost"] / row["facility_kwh"]
            fit = profile.fit
            at_cap = (cap - fit.intercept_w) / fit.slope_w if fit is not None and fit.slope_w > 0 else None
            out.append(
                {
                    "model": model,
                    "cap_w": cap,
                    "readings_above_cap": readings_above(profile.stats, cap),
                    "gpu_energy_share_saved": share,
                    "line_utilization_at_cap": min(max(at_cap, 0.0), 1.0) if at_cap is not None else None,
                    "plan_facility_kwh_saved": kwh,
                    "plan_energy_cost_saved": cost,
                }
            )
    return out


def advice(
    projection: Projection,
    profiles: Mapping[str, PowerProfile],
    months: Sequence[SiteMonth],
    site: SiteConfig,
    fleet_shares: Mapping[str, float],
) -> dict[str, Any]:
    cooling = projection.site.cooling
    return {
        "estimate": True,
        "idle": {"months": idle_advice(months, site, cooling), "assumptions": list(IDLE_ASSUMPTIONS)},
        "power_cap": {
            "options": cap_advice(projection, profiles, fleet_shares),
            "assumptions": list(CAP_ASSUMPTIONS),
        },
    }
