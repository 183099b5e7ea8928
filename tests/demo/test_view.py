"""The view drawn from the real shapes of GET /v1/nodes and /v1/spend (a real ledger holding the
demo's backfill) and of Prometheus' /api/v1/alerts."""

from __future__ import annotations

import re
from typing import Any

import pytest
from demokit import NOW, as_json
from rich.console import Console

from wattledger.collector.service import Ledger
from wattledger.demo.fetch import alerts_from_prometheus, servers_from_nodes, sites_from_spend, unwrap
from wattledger.demo.scenario import Scenario
from wattledger.demo.snapshot import BackfillState, Snapshot, Urls, group_alerts
from wattledger.demo.view import money, plain_lines, render, watts

URLS = Urls("http://127.0.0.1:9861", "http://127.0.0.1:9090", "dashboards/provisioning")


def alert(name: str, state: str, severity: str, **labels: str) -> dict[str, Any]:
    """One entry of Prometheus' /api/v1/alerts, as Prometheus 2.x returns it."""
    return {"labels": {"alertname": name, "severity": severity, **labels},
            "annotations": {"summary": f"{name} summary", "description": "…",
                            "runbook_url": f"docs/runbook.md#{name.lower()}"},
            "state": state, "activeAt": "2026-11-27T18:17:38.687388466Z", "value": "1.9e+00"}


ALERTS = {"status": "success", "data": {"alerts": [
    alert("EnergyCostOverPlan", "pending", "ticket", site="dc-east", currency="USD", category="cost"),
    *(alert("GpuThermalSlowdownNear", "firing", "page", site="dc-east", cluster="train-a", node="demo-gpu-02",
            gpu=str(i), job="wattledger-agent", instance="127.0.0.1:9872") for i in range(8)),
]}}


def answers(ledger: Ledger) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of GET /v1/nodes and GET /v1/spend?group_by=site, as the collector wraps them."""
    nodes = as_json({"nodes": ledger.nodes()})
    spend = as_json({"site": None, "month": None, "group_by": "site",
                     "rows": ledger.spend(site=None, month=None, group_by="site")})
    return unwrap(nodes, "nodes"), unwrap(spend, "rows")


def snapshot(ledger: Ledger, scenario: Scenario, **over: Any) -> Snapshot:
    nodes, spend = answers(ledger)
    values: dict[str, Any] = {
        "at": NOW, "urls": URLS, "servers": servers_from_nodes(nodes, scenario),
        "sites": sites_from_spend(spend), "alerts": alerts_from_prometheus(ALERTS)}
    values.update(over)
    return Snapshot(**values)


def test_servers_from_the_ledgers_nodes(ledger: Ledger, scenario: Scenario) -> None:
    nodes, _ = answers(ledger)
    rows = servers_from_nodes(nodes, scenario)
    assert [r.node for r in rows] == [s.node for s in scenario.servers]
    by_node = {n["node"]: n for n in nodes}
    for row, server in zip(rows, scenario.servers, strict=True):
        devices = [d for d in by_node[server.node]["devices"] if d["kind"] == "gpu"]  # not its BMC
        assert row.gpus == server.gpus and row.workload == server.workload
        assert row.cluster == server.cluster
        assert row.power_w == pytest.approx(sum(d["latest"]["power_w"] for d in devices))
        assert row.hottest is not None and row.hottest.slowdown_c == 87.0
        assert row.hottest.temp_c == max(d["latest"]["temp_c"] for d in devices)
        assert row.last_seen == pytest.approx(NOW - 60)
    idle, training = rows[3].power_w, rows[0].power_w
    assert idle is not None and training is not None and idle < training / 4


def test_sites_from_the_ledgers_spend(ledger: Ledger) -> None:
    _, spend = answers(ledger)
    [site] = sites_from_spend(spend)
    assert site.site == "dc-east" and site.currency == "USD"
    assert site.cost == pytest.approx(spend[0]["total_cost"]) and site.cost > 0
    assert site.plan_cost == 2000.0
    assert site.plan_to_date is not None and 0 < site.plan_to_date < 2000.0
    assert site.forecast is not None and site.forecast > site.cost
    assert site.it_energy_j == pytest.approx(spend[0]["it_energy_kwh"] * 3.6e6)


def test_a_node_the_collector_has_not_seen_yet_is_shown_empty(scenario: Scenario) -> None:
    rows = servers_from_nodes([], scenario)
    assert [r.power_w for r in rows] == [None] * 4 and all(r.hottest is None for r in rows)
    assert "- W" in "\n".join(plain_lines(Snapshot(at=NOW, urls=URLS, servers=rows)))


def test_alerts_are_grouped_firing_first() -> None:
    groups = group_alerts(alerts_from_prometheus(ALERTS))
    assert [(g.name, g.state, len(g.subjects)) for g in groups] == [
        ("GpuThermalSlowdownNear", "firing", 8), ("EnergyCostOverPlan", "pending", 1)]
    assert groups[0].where == "dc-east demo-gpu-02 (8)"
    assert groups[1].where == "dc-east" and groups[1].summary == "EnergyCostOverPlan summary"


def test_rich_view_shows_every_figure_with_its_unit(ledger: Ledger, scenario: Scenario) -> None:
    snap = snapshot(ledger, scenario, backfill=BackfillState(0.42, 12345, False, None, NOW - 86400))
    console = Console(record=True, width=150, color_system=None)
    console.print(render(snap))
    text = console.export_text()
    for server in scenario.servers:
        assert server.node in text
    site = snap.sites[0]
    assert money(site.cost, "USD") in text and money(site.plan_to_date, "USD") in text
    assert money(site.forecast, "USD") in text and "$2,000.00" in text
    assert re.search(r"\d[\d,.]* k?W\b", text) and "°C" in text and "slowdown" in text
    assert "kWh" in text and "plan" in text
    assert "backfilling the month so far: 42 %" in text
    assert "GpuThermalSlowdownNear" in text and "firing" in text
    assert "http://127.0.0.1:9861" in text and "/metrics" in text and "/v1/spend" in text
    assert "http://127.0.0.1:9090" in text
    assert "dashboards/provisioning" in text


def test_plain_lines_carry_the_same_figures(ledger: Ledger, scenario: Scenario) -> None:
    snap = snapshot(ledger, scenario)
    lines = plain_lines(snap)
    text = "\n".join(lines)
    assert lines[0].startswith("[") and f"fleet power {watts(snap.fleet_power_w)}" in lines[0]
    assert "°C" in lines[0] and "slowdown" in lines[0]
    assert sum(1 for line in lines if line.strip().startswith("demo-gpu-")) == 4
    site = snap.sites[0]
    assert f"cost so far {money(site.cost, 'USD')} USD" in text
    assert f"plan to date {money(site.plan_to_date, 'USD')}" in text
    assert "month-end forecast" in text and "monthly plan $2,000.00" in text
    assert "alerts: GpuThermalSlowdownNear firing on dc-east demo-gpu-02 (8)" in text


def test_without_prometheus_the_view_says_how_to_get_it(ledger: Ledger, scenario: Scenario) -> None:
    note = "Prometheus is not installed, so no alert rules run: apt-get install prometheus"
    snap = snapshot(ledger, scenario, alerts=None, urls=Urls(URLS.collector, None, None), notes=[note])
    console = Console(record=True, width=150, color_system=None)
    console.print(render(snap))
    text = console.export_text()
    assert "apt-get install prometheus" in text
    assert "alerts:" not in "\n".join(plain_lines(snap))


@pytest.mark.parametrize(("value", "text"), [(None, "- W"), (512.3, "512 W"), (14_230.0, "14.2 kW")])
def test_watts(value: float | None, text: str) -> None:
    assert watts(value) == text


@pytest.mark.parametrize(("amount", "currency", "text"),
                         [(1234.5, "USD", "$1,234.50"), (3.0, "CHF", "3.00 CHF"), (None, "EUR", "-")])
def test_money(amount: float | None, currency: str, text: str) -> None:
    assert money(amount, currency) == text


def test_energy_cost_and_demand_charge_are_shown_apart(ledger: Ledger, scenario: Scenario) -> None:
    snap = snapshot(ledger, scenario)
    (site,) = snap.sites
    assert site.energy_cost is not None and site.demand_charge is not None and site.demand_charge > 0
    assert site.energy_cost + site.demand_charge == pytest.approx(site.cost)
    assert site.plan_demand_charge == scenario.site.plan_demand_charge == 350.0
    assert site.plan_energy_to_date is not None and site.plan_to_date is not None
    assert site.plan_energy_to_date < site.plan_to_date  # the energy part of the plan, prorated
    assert site.energy_of_plan_to_date == pytest.approx(site.energy_cost / site.plan_energy_to_date)
    text = "\n".join(plain_lines(snap))
    assert f"energy cost {money(site.energy_cost, 'USD')} vs energy plan to date " \
           f"{money(site.plan_energy_to_date, 'USD')}" in text
    assert f"demand charge {money(site.demand_charge, 'USD')} of $350.00" in text
    console = Console(record=True, width=200, color_system=None)
    console.print(render(snap))
    rich_text = console.export_text()
    for column in ("energy cost", "energy plan to date", "demand charge", "cost so far"):
        assert column in rich_text
    assert f"{money(site.demand_charge, 'USD')} of $350.00" in rich_text


def test_the_demo_has_node_meters_and_a_chiller_that_follows_the_day(ledger: Ledger) -> None:
    """Three servers with a BMC (measured overhead), one without (estimated); the chiller's outdoor
    temperature swings over the day, and its cooling per IT joule with it."""
    totals = ledger.view().node_totals
    assert totals["demo-gpu-01"].overhead_meas_j > 0 and totals["demo-gpu-01"].overhead_est_j == 0
    assert totals["demo-gpu-04"].overhead_est_j > 0 and totals["demo-gpu-04"].overhead_meas_j == 0
    rows = ledger.store.query("SELECT minute, it_j, cooling_j, outdoor_c FROM site_minutes WHERE it_j > 0")
    temps = [r[3] for r in rows]
    assert max(temps) - min(temps) > 12  # a day of 14..30 °C, hour by hour
    warm = [c / i for _, i, c, t in rows if t > 27]
    cool = [c / i for _, i, c, t in rows if t < 17]
    assert warm and cool and min(warm) > max(cool)  # cooling costs more in the afternoon
