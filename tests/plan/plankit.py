"""Helpers of the plan tests: sites and scenarios as a planner writes them, a measured history
built from readings whose power is known exactly, and EPW weather files written by ladybug."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from wattledger.collector.accounting.history import (
    FleetModel,
    GpuReading,
    HistorySnapshot,
    LedgerSpan,
    MeasuredFleet,
    MeasuredHistory,
    NodeOverheadDay,
    SiteHistory,
    SiteMonth,
    model_days_from_readings,
)
from wattledger.plan.build import make_plan
from wattledger.plan.ledger import HistoryUnavailable
from wattledger.plan.siteconfig import PlanSites, plan_sites

MODEL = "NVIDIA A100-SXM4-80GB"
#: the simulated GPUs' exact power line: p = IDLE_W + SLOPE_W x u
IDLE_W, SLOPE_W = 57.0, 333.0

FLAT_SITE: dict[str, Any] = {
    "timezone": "UTC",
    "currency": "USD",
    "pue": 1.5,
    "price_per_kwh": 0.10,
    "demand_charge_per_kw": 10.0,
    "carbon_g_per_kwh": 400.0,
}
TOU_BANDS = [
    {"price_per_kwh": 0.30, "days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "20:00"},
    {"price_per_kwh": 0.10},
]
#: 10 servers x 8 GPUs at 50 %: GPU 300 W, node 8 x 300 + 1000 = 3400 W, IT 34 kW
ENTRY: dict[str, Any] = {
    "name": "expansion",
    "servers": 10,
    "gpus_per_server": 8,
    "model": MODEL,
    "utilization": 0.5,
    "power": {"idle_w": 100, "max_w": 500, "node_overhead_w": 1000},
    "capex_per_server": 12000,
    "depreciation_months": 24,
}
IT_KW = 34.0


def site(**changes: Any) -> dict[str, Any]:
    out = {**FLAT_SITE, **changes}
    if "tariff" in changes:
        out.pop("price_per_kwh", None)
    return out


def sites_of(**by_name: dict[str, Any]) -> PlanSites:
    return plan_sites({"sites": by_name, "db": "sqlite:////nonexistent/ledger.db"}, "test")


def scenario(*entries: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "site": "dc1",
        "start": "2027-01",
        "months": 2,
        "cloud_price_per_gpu_hour": 2.0,
        "fleet": [copy.deepcopy(e) for e in (entries or (ENTRY,))],
    }
    out.update(changes)
    return out


def plan(raw: dict[str, Any], sites: PlanSites, history: MeasuredHistory | None = None) -> dict[str, Any]:
    """The plan document; a plan that needs the ledger gets ``history`` (none: HistoryUnavailable)."""

    def opener() -> MeasuredHistory:
        if history is None:
            raise HistoryUnavailable("no ledger in this test")
        return history

    return make_plan(raw, sites, opener)


def utilization_at(i: int) -> float:
    """A spread of utilizations 0..1, some below 5 % (idle), deterministic."""
    return ((i * 37) % 101) / 100.0


def exact_readings(
    days: int = 3, gpus: int = 4, every_s: float = 60.0, start: datetime | None = None, model: str = MODEL
) -> list[GpuReading]:
    """Readings of ``gpus`` GPUs every ``every_s`` seconds for ``days`` days, power exactly on the line."""
    t0 = (start or datetime(2026, 9, 1, tzinfo=UTC)).timestamp()
    out = []
    steps = int(days * 86400 / every_s)
    for step in range(steps):
        for g in range(gpus):
            u = utilization_at(step * gpus + g)
            out.append(
                GpuReading(t0 + step * every_s, f"GPU-{model[-4:]}-{g}", model, u, IDLE_W + SLOPE_W * u)
            )
    return out


def measured_history(
    site_name: str = "dc1",
    zone: str = "UTC",
    readings: list[GpuReading] | None = None,
    months: tuple[SiteMonth, ...] = (),
    fleet: MeasuredFleet | None = None,
    overhead_w: float | None = 900.0,
) -> HistorySnapshot:
    """A ledger's history of one site: per-day statistics of ``readings`` (default: exact ones),
    a day of node meters per day of readings at ``overhead_w`` per node, a fleet and months."""
    readings = exact_readings() if readings is None else readings
    days = model_days_from_readings(readings, ZoneInfo(zone))
    overhead = (
        ()
        if overhead_w is None
        else tuple(
            NodeOverheadDay(
                d.model,
                d.day,
                nodes=1,
                metered_seconds=86400.0,
                node_energy_j=86400.0 * (2400 + overhead_w),
                gpu_energy_j=86400.0 * 2400,
                gpu_seconds=8 * 86400.0,
            )
            for d in days
        )
    )
    first = min(r.ts for r in readings) if readings else 0.0
    last = max(r.ts for r in readings) if readings else 0.0
    if fleet is None:
        fleet = MeasuredFleet(
            last - 30 * 86400,
            last,
            (
                FleetModel(
                    MODEL,
                    gpus=16,
                    servers=2,
                    mean_utilization=0.5,
                    gpu_energy_kwh=2000.0,
                    it_energy_kwh=3600.0,
                ),
            ),
        )
    return HistorySnapshot(
        {
            site_name: SiteHistory(
                span=LedgerSpan(first, last) if readings else None,
                model_days=tuple(days),
                node_overhead_days=overhead,
                fleet=fleet,
                site_months=months,
            )
        }
    )


def write_epw(path: Path, monthly_c: dict[int, float]) -> Path:
    """An EPW file (ladybug's own writer) whose every hour of month m has dry-bulb monthly_c[m]."""
    from ladybug.epw import EPW

    epw = EPW.from_missing_values()
    collection = epw.dry_bulb_temperature
    collection.values = [monthly_c[moment.month] for moment in collection.datetimes]
    epw.save(str(path))
    return path


def day(text: str) -> date:
    return date.fromisoformat(text)
