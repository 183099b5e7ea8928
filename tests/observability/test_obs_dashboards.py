"""The Grafana dashboards: generated from code and committed as generated, with the variables,
units, thresholds and alert annotations an operator expects, and every query valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .support import ROOT, binary, concrete, dashboard_queries, dashboards, panels


def test_committed_json_is_what_the_code_generates() -> None:
    r = subprocess.run([sys.executable, "-m", "dashboards.build", "--check"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_generation_writes_the_same_files_elsewhere(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "dashboards.build", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(dashboards())
    eur = subprocess.run(
        [sys.executable, "-m", "dashboards.build", "--out", str(tmp_path), "--currency", "EUR"],
        capture_output=True, text=True, cwd=ROOT)
    assert eur.returncode == 0, eur.stderr
    assert '"currencyEUR"' in (tmp_path / "energy-cost-plan.json").read_text()


def test_three_boards_with_unique_uids_and_titles() -> None:
    boards = dashboards()
    titles = {b["title"] for b in boards.values()}
    assert {"wattledger / Fleet power & thermal", "wattledger / Energy & cost vs plan",
            "wattledger / Health"} <= titles
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_variables_units_thresholds_and_alert_annotations(name: str) -> None:
    board = dashboards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "site", "cluster", "node"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    for v in ("site", "cluster", "node"):
        assert variables[v]["includeAll"] and variables[v]["multi"]
    annotations = board["annotations"]["list"]
    assert any(a.get("expr", "").startswith("ALERTS{") and a.get("titleFormat") for a in annotations)
    ids = []
    for p in panels(board):
        ids.append(p["id"])
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']}: no unit"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{p['title']} sticks out of the grid"
    assert len(set(ids)) == len(ids)
    steps = [p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", []) for p in panels(board)
             if p["type"] != "row"]
    assert any(len(s) > 1 for s in steps), "no panel with thresholds"


def _units() -> set[str]:
    return {p["fieldConfig"]["defaults"]["unit"] for b in dashboards().values() for p in panels(b)
            if p["type"] != "row"}


def test_units_cover_power_energy_temperature_and_money() -> None:
    assert {"watt", "kwatth", "celsius", "currencyUSD", "percentunit", "s"} <= _units()


def _exprs(name: str) -> str:
    return "\n".join(e for f, _, e in dashboard_queries() if f == name)


def test_the_boards_show_what_they_promise() -> None:
    fleet, cost, health = (_exprs(n) for n in
                           ("fleet-power-thermal.json", "energy-cost-plan.json", "health.json"))
    for metric in ("wattledger_gpu_power_watts", "wattledger_it_power_watts",
                   "wattledger_gpu_slowdown_temperature_celsius", 'sensor="memory"',
                   "wattledger_gpu_clock_event_active", "wattledger_gpu_utilization_ratio", "topk("):
        assert metric in fleet, metric
    for metric in ("wattledger_month_cost", "wattledger_plan_cost_to_date", "wattledger_plan_cost",
                   "wattledger_forecast_cost", "wattledger_energy_cost_total",
                   "wattledger_cooling_energy_joules_total", "wattledger_demand_charge",
                   "wattledger_peak_demand_watts", "wattledger_carbon_grams_total",
                   "cluster", "node"):
        assert metric in cost, metric
    for metric in ("wattledger_node_last_seen_timestamp_seconds", "wattledger_agent_spool_batches",
                   "wattledger_agent_dropped_readings_total", "wattledger_ingest_batches_total",
                   "wattledger_unmeasured_seconds_total", "up{"):
        assert metric in health, metric


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    rules: dict[str, Any] = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query:{i}", "expr": concrete(e)} for i, (_, _, e) in enumerate(queries)]}]}
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps(rules))
    r = subprocess.run([binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]


MONEY = ("wattledger_month_cost", "wattledger_plan_cost", "wattledger_forecast_cost",
         "wattledger_demand_charge", "wattledger_energy_cost_total", "wattledger_plan_energy_cost",
         "wattledger_plan_demand_charge")


def test_money_panels_show_one_value_per_currency_in_that_currency() -> None:
    board = dashboards()["energy-cost-plan.json"]
    money_panels = [p for p in panels(board) if p["type"] != "row"
                    and any(m in t.get("expr", "") for t in p["targets"] for m in MONEY)]
    assert len(money_panels) > 10
    for p in money_panels:
        in_money = p["fieldConfig"]["defaults"]["unit"].startswith("currency")
        for t in p["targets"]:
            if p["type"] == "stat":  # one figure per currency (or a ratio of two such)
                assert t["expr"].startswith("sum by (currency) ("), p["title"]
            if in_money and p["type"] != "table":  # a table shows the currency label as a column
                assert t["legendFormat"].endswith("{{currency}}"), p["title"]
            assert not re.search(r"\bsum\s*\(", t["expr"]), f"{p['title']}: a sum over every currency"
        if in_money and p["type"] != "table":
            overrides = p["fieldConfig"]["overrides"]
            units = {o["matcher"]["options"]: o["properties"][0]["value"] for o in overrides
                     if o["matcher"]["id"] == "byRegexp"}
            assert units["(.* )?[A-Z]{3}"] == "none" and units["(.* )?EUR"] == "currencyEUR", p["title"]


def test_agent_panels_count_agents_without_a_site_label_as_site_default() -> None:
    agent_series = re.compile(r"\bwattledger_(gpu|host|agent)_[a-z_]+\{")
    for name, title, expr in dashboard_queries():
        for m in agent_series.finditer(expr):
            # each agent selector is paired with the collector's filing of its node
            assert "and on (node) wattledger_node_last_seen_timestamp_seconds{" in expr, f"{name} / {title}"
            after = expr[m.end():m.end() + 80]
            assert 'site=~"$site"' in after or 'node=~"$node"' in after, f"{name} / {title}"


def test_the_chargeback_board_shows_teams_budgets_waste_and_links_the_ledgers_jobs() -> None:
    board = dashboards()["chargeback.json"]
    exprs = _exprs("chargeback.json")
    for metric in ("wattledger_team_month_cost", "wattledger_team_plan_cost_to_date",
                   "wattledger_team_plan_cost", "wattledger_team_forecast_cost",
                   "wattledger_team_idle_gpu_seconds_total",
                   "wattledger_team_gpu_seconds_total", "wattledger_team_energy_joules_total",
                   "wattledger_idle_energy_joules_total"):
        assert metric in exprs, metric
    # jobs and pods are never labels: no query groups by them
    for group in re.findall(r"\bby \(([^)]*)\)", exprs):
        assert not {"job", "pod", "namespace", "user", "account"} & {k.strip() for k in group.split(",")}
    links = [link["url"] for p in panels(board) for link in p.get("links", [])]
    assert any(u.startswith("${collector}/v1/jobs?site=") and u.endswith("&format=csv") for u in links)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["collector"]["type"] == "textbox"
