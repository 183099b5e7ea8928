"""Chargeback rows: a site's month by team or by an owner key (GET /v1/spend?group_by=team|job|
namespace|account|user), and its allocations (GET /v1/jobs). docs/chargeback.md says what each
field is.

Team rows add up to the site's row (idle and unassigned included): energy, energy cost, demand
charge, total cost, carbon. Rows by an owner key add up to the site's energy, energy cost and
carbon; the demand charge is shared among teams only (a job's share of the month's peak
quarter-hour is not kept), so those rows carry none. Read from the store at each request.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from wattledger.collector.accounting.plan import DAY_SECONDS, MonthSummary
from wattledger.collector.accounting.pricing import JOULES_PER_KWH
from wattledger.collector.accounting.siteclock import parse_month
from wattledger.collector.accounting.teamsums import HOUR_SECONDS, SUMS, TeamMonth, team_months
from wattledger.collector.readmodel.view import Terms
from wattledger.collector.store.base import Row, Store


def site_summary(store: Store, terms: Terms, site: str, month: str, now: float) -> MonthSummary:
    since, until = (now - DAY_SECONDS) / 60.0, now / 60.0
    return terms.summary(site, month, store.month_sums(site, parse_month(month)),
                         store.day_cost(site, since, until), now)


def teams_of(store: Store, terms: Terms, site: str, month: str, now: float,
             summary: MonthSummary | None = None) -> list[TeamMonth]:
    """The site's teams in the month (``accounting/teamsums.py``)."""
    summary = summary or site_summary(store, terms, site, month, now)
    data = store.team_data(site, month, (now - DAY_SECONDS) / 60.0, now / 60.0)
    return team_months(site, terms.plan, terms.clocks[site], month, summary, data.months, data.quarters,
                       data.day_cost, now)


def team_rows(store: Store, terms: Terms, site: str, month: str, now: float) -> list[dict[str, Any]]:
    currency = terms.sites[site].currency
    return [{"site": site, "month": month, "currency": currency, **team.row()}
            for team in teams_of(store, terms, site, month, now)]


def _sums_row(values: Sequence[float]) -> dict[str, float | None]:
    """The figures of summed holder rows (``SUMS`` order)."""
    v = dict(zip(SUMS, values, strict=True))
    energy_cost = v["it_cost"] + v["cooling_cost"]
    return {"gpu_energy_kwh": v["gpu_j"] / JOULES_PER_KWH, "it_energy_kwh": v["it_j"] / JOULES_PER_KWH,
            "cooling_energy_kwh": v["cooling_j"] / JOULES_PER_KWH,
            "facility_energy_kwh": (v["it_j"] + v["cooling_j"]) / JOULES_PER_KWH,
            "it_cost": v["it_cost"], "cooling_cost": v["cooling_cost"], "energy_cost": energy_cost,
            "carbon_kg": v["carbon_g"] / 1000.0, "gpu_hours": v["gpu_s"] / HOUR_SECONDS,
            "idle_gpu_hours": v["idle_gpu_s"] / HOUR_SECONDS, "waste_cost": v["waste_cost"]}


def _sums(row: Row) -> list[float]:
    """A holder row's sums (after its 8 holder columns; NULL as 0)."""
    return [float(x or 0.0) for x in row[8:]]


def owner_rows(store: Store, terms: Terms, site: str, month: str, key: str) -> list[dict[str, Any]]:
    """The month's holders summed by the value of one owner key: one row per value, one for the
    allocations without that key (``key`` null), one for idle time (``idle`` true)."""
    groups: dict[tuple[bool, str | None], list[float]] = defaultdict(lambda: [0.0] * len(SUMS))
    counts: dict[tuple[bool, str | None], int] = defaultdict(int)
    for row in store.holders_of_month(site, month):
        owner = str(row[3])
        group = (True, None) if owner == "" else (False, json.loads(owner).get(key))
        acc = groups[group]
        for i, value in enumerate(_sums(row)):
            acc[i] += value
        counts[group] += 1
    currency = terms.sites[site].currency
    order = sorted(groups, key=lambda g: (g[0], g[1] is None, g[1] or ""))
    return [{"site": site, "month": month, "currency": currency, key: value, "idle": idle,
             "allocations": 0 if idle else counts[(idle, value)], **_sums_row(groups[(idle, value)]),
             "demand_charge": None, "total_cost": None}
            for idle, value in order]


def job_rows(store: Store, terms: Terms, site: str, since: float, until: float,
             team: str | None) -> list[dict[str, Any]]:
    """The site's allocations held at some instant of [since, until] (optionally one team's),
    each with its sums since it began."""
    currency = terms.sites[site].currency
    out = []
    for row in store.jobs(site, since, until):
        ident, node, cluster, owner, start, ended, holder_team, devices = row[:8]
        if team is not None and holder_team != team:
            continue
        figures = _sums_row(_sums(row))
        out.append({"id": int(ident), "site": site, "cluster": cluster, "node": node, "team": holder_team,
                    "owner": json.loads(owner), "devices": json.loads(devices), "start": float(start),
                    "end": None if ended is None else float(ended), "currency": currency,
                    "gpu_seconds": float(figures["gpu_hours"] or 0.0) * HOUR_SECONDS,
                    "idle_gpu_seconds": float(figures["idle_gpu_hours"] or 0.0) * HOUR_SECONDS,
                    **{k: v for k, v in figures.items() if k not in ("gpu_hours", "idle_gpu_hours")}})
    return out
