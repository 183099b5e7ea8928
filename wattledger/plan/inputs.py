"""From a checked scenario, the site and what the ledger measured to the projection's inputs:
each fleet entry's power (:class:`EntryPlan`) and each month's conditions
(:class:`MonthConditions`: hours, price, outdoor temperature or measured cooling ratio)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from wattledger.collector.accounting.cooling import ChillerCooling, Cooling, MeteredCooling
from wattledger.collector.accounting.history import SiteMonth
from wattledger.collector.accounting.siteclock import parse_month
from wattledger.collector.accounting.weather import epw_monthly_mean_c
from wattledger.collector.sites import SiteConfig
from wattledger.config import ConfigError
from wattledger.plan.calendar import month_clock
from wattledger.plan.projection import EntryPlan, MonthConditions, SiteTerms
from wattledger.plan.reading import ReadHistory
from wattledger.plan.scenario import MeasuredEntry, Scenario

MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def needs_history(scenario: Scenario, cooling: Cooling) -> bool:
    """Whether the plan must read the ledger: a measured entry or profile, a metered site, or a
    chiller whose only outdoor temperature is the site's sensor."""
    if scenario.needs_profiles() or isinstance(cooling, MeteredCooling):
        return True
    return (
        isinstance(cooling, ChillerCooling)
        and cooling.outdoor.epw is None
        and cooling.outdoor.fixed_c is None
    )


def wants_history(scenario: Scenario, cooling: Cooling) -> bool:
    """Whether the plan reads the ledger when it can: it must (:func:`needs_history`), or the
    site's chiller has an outdoor sensor, whose measured months come before its fallbacks."""
    sensor = isinstance(cooling, ChillerCooling) and cooling.outdoor.sensor is not None
    return sensor or needs_history(scenario, cooling)


def site_terms(name: str, site: SiteConfig, cooling: Cooling) -> SiteTerms:
    return SiteTerms(
        name=name,
        currency=site.currency,
        timezone=site.timezone,
        cooling=cooling,
        demand_charge_per_kw=site.demand_charge_per_kw,
        carbon_g_per_kwh=site.carbon_g_per_kwh,
    )


def _months_between(start: str, month: str) -> int:
    a, b = parse_month(start), parse_month(month)
    return (b // 100 - a // 100) * 12 + (b % 100 - a % 100)


def resolve_entries(scenario: Scenario, history: ReadHistory | None) -> list[EntryPlan]:
    """Each entry with its power line (explicit, or the measured profile's); the scenario has
    passed the cross-check, so every profile it asks for is there and usable."""
    out: list[EntryPlan] = []
    for entry in scenario.fleet:
        if isinstance(entry, MeasuredEntry):
            assert history is not None and history.fleet is not None
            fleet = history.fleet
            hours = fleet.hours
            gpus_per_server = round(fleet.gpus / fleet.servers) if fleet.servers else 0
            out.append(
                EntryPlan(
                    name=entry.name,
                    measured=True,
                    model=", ".join(m.model for m in fleet.models) or None,
                    first_index=0,
                    servers=fleet.servers,
                    gpus_per_server=gpus_per_server,
                    utilization=fleet.mean_utilization,
                    idle_w=None,
                    max_w=None,
                    node_overhead_w=None,
                    measured_it_kw=fleet.it_energy_kwh / hours if hours > 0 else 0.0,
                    measured_gpu_kw=sum(m.gpu_energy_kwh for m in fleet.models) / hours if hours > 0 else 0.0,
                    measured_gpus=fleet.gpus,
                    power_source=f"measured: the ledger's fleet over {hours / 24:.1f} days",
                )
            )
            continue
        first = _months_between(scenario.start, entry.from_) if entry.from_ is not None else 0
        if entry.power == "measured":
            assert history is not None
            profile = history.profiles[entry.model]
            assert profile.fit is not None and profile.node_overhead is not None
            idle_w, max_w = profile.line_idle_w, profile.line_max_w
            overhead = profile.node_overhead.overhead_w
            source = (
                f"measured: {idle_w:.1f} + {max_w - idle_w:.1f} x utilization W (R² {profile.fit.r2:.3f}, "
                f"{profile.coverage.readings} readings), node overhead {overhead:.0f} W"
            )
        else:
            idle_w, max_w, overhead = entry.power.idle_w, entry.power.max_w, entry.power.node_overhead_w
            source = "explicit"
        out.append(
            EntryPlan(
                name=entry.name,
                measured=False,
                model=entry.model,
                first_index=first,
                servers=entry.servers,
                gpus_per_server=entry.gpus_per_server,
                utilization=entry.utilization,
                idle_w=idle_w,
                max_w=max_w,
                node_overhead_w=overhead,
                capex_per_server=entry.capex_per_server,
                depreciation_months=entry.depreciation_months,
                power_source=source,
            )
        )
    return out


def _latest(months: Sequence[SiteMonth], calendar_month: int, has: str) -> SiteMonth | None:
    """The most recent measured month of that calendar month (1-12) with a value for ``has``."""
    found = [
        m
        for m in months
        if int(m.month[5:7]) == calendar_month and getattr(m, has) is not None and m.it_kwh > 0
    ]
    return max(found, key=lambda m: m.month) if found else None


def resolve_conditions(
    scenario: Scenario, site_name: str, site: SiteConfig, cooling: Cooling, history: ReadHistory | None
) -> list[MonthConditions]:
    """Hours, price and the cooling's inputs of each plan month; ConfigError (one line) when the
    site's cooling model has nothing to go on for a month."""
    months = history.months if history is not None else ()
    epw: dict[int, float] | None = None
    if isinstance(cooling, ChillerCooling) and cooling.outdoor.epw is not None:
        epw = epw_monthly_mean_c(Path(cooling.outdoor.epw))
    if isinstance(cooling, MeteredCooling) and not any(
        m.cooling_kwh is not None and m.it_kwh > 0 for m in months
    ):
        raise ConfigError(
            f"config key sites.{site_name}.cooling: model metered, but the ledger has no "
            "cooling meter energy of this site to take the cooling ratio from"
        )
    out: list[MonthConditions] = []
    for month in scenario.month_ids():
        clock = month_clock(site, month)
        calendar = month % 100
        cond = MonthConditions(month=month, hours=clock.hours, price_per_kwh=clock.price_per_kwh)
        if isinstance(cooling, ChillerCooling):
            cond = _outdoor(cond, cooling, calendar, months, epw, site_name)
        elif isinstance(cooling, MeteredCooling):
            cond = _metered(cond, calendar, months)
        out.append(cond)
    return out


def _outdoor(
    cond: MonthConditions,
    chiller: ChillerCooling,
    calendar: int,
    months: Sequence[SiteMonth],
    epw: dict[int, float] | None,
    site_name: str,
) -> MonthConditions:
    """The month's mean outdoor temperature: the sensor's same month last measured, else the
    weather file's month, else ``fixed_c`` (the collector's order of fallbacks)."""
    if chiller.outdoor.sensor is not None:
        seen = _latest(months, calendar, "outdoor_mean_c")
        if seen is not None and seen.outdoor_mean_c is not None:
            return replace(
                cond,
                outdoor_c=seen.outdoor_mean_c,
                outdoor_source=f"sensor {chiller.outdoor.sensor}, measured {seen.month}",
            )
    if epw is not None:
        return replace(cond, outdoor_c=epw[calendar], outdoor_source=f"weather file {chiller.outdoor.epw}")
    if chiller.outdoor.fixed_c is not None:
        return replace(cond, outdoor_c=chiller.outdoor.fixed_c, outdoor_source="fixed_c")
    raise ConfigError(
        f"config key sites.{site_name}.cooling.outdoor: the ledger has no outdoor temperature "
        f"of {MONTH_NAMES[calendar - 1]} from sensor {chiller.outdoor.sensor!r}; add an epw "
        "weather file or fixed_c"
    )


def _metered(cond: MonthConditions, calendar: int, months: Sequence[SiteMonth]) -> MonthConditions:
    """The month's measured cooling ratio: the same calendar month last measured, else the ratio
    over every measured month."""
    seen = _latest(months, calendar, "cooling_kwh")
    if seen is not None and seen.cooling_kwh is not None:
        used, source = [seen], f"measured {seen.month}"
    else:
        used = [m for m in months if m.cooling_kwh is not None and m.it_kwh > 0]
        source = f"no {MONTH_NAMES[calendar - 1]} measured: mean of {len(used)} measured months"
    it = sum(m.it_kwh for m in used)
    cooling = sum(m.cooling_kwh or 0.0 for m in used)
    with_facility = [m for m in used if m.facility_kwh is not None]
    other = 0.0
    if with_facility:
        f_it = sum(m.it_kwh for m in with_facility)
        f_other = sum((m.facility_kwh or 0.0) - m.it_kwh - (m.cooling_kwh or 0.0) for m in with_facility)
        other = max(f_other, 0.0) / f_it if f_it > 0 else 0.0
    return replace(cond, cooling_ratio=cooling / it, other_ratio=other, ratio_source=source)
