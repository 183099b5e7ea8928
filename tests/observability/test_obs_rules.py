"""The Prometheus rules: promtool accepts them, every alert is unit-tested both ways, and every
alert has a severity, figures in its text and a runbook entry."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from .support import RULE_TESTS, RULES, RUNBOOK, alerts, binary

CONTRACT = {"GpuThermalSlowdownNear", "GpuThermalThrottling", "EnergyCostOverPlan",
            "EnergyCostForecastOverPlan", "NodeStale", "TeamCostOverPlan", "TeamCostForecastOverPlan",
            "GpuAllocatedIdle", "SitePueHigh", "NodeMeterDisagrees"}


def test_promtool_accepts_the_rules() -> None:
    r = subprocess.run([binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in yaml.safe_load(RULES.read_text())['groups'])} rules" \
        in r.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file: Any) -> None:
    r = subprocess.run([binary("promtool"), "test", "rules", test_file.name], capture_output=True,
                       text=True, cwd=test_file.parent)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "SUCCESS" in r.stdout


def test_the_contracts_alerts_are_there() -> None:
    assert {a["alert"] for a in alerts()} >= CONTRACT


def _cases() -> dict[str, dict[str, int]]:
    """alert -> {"fires": n, "quiet": n} over every alert_rule_test of every test file."""
    seen: dict[str, dict[str, int]] = {}
    for f in RULE_TESTS:
        for test in yaml.safe_load(f.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = "fires" if case.get("exp_alerts") else "quiet"
                seen.setdefault(case["alertname"], {"fires": 0, "quiet": 0})[kind] += 1
    return seen


@pytest.mark.parametrize("alert", [a["alert"] for a in alerts()])
def test_every_alert_has_a_firing_and_a_quiet_unit_test(alert: str) -> None:
    cases = _cases().get(alert, {"fires": 0, "quiet": 0})
    assert cases["fires"] >= 1, f"{alert}: no promtool case in which it fires"
    assert cases["quiet"] >= 1, f"{alert}: no promtool case in which it stays quiet"


def _anchors() -> set[str]:
    """GitHub-style anchors of the runbook's headings."""
    out = set()
    for line in RUNBOOK.read_text().splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            out.add(re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_every_alert_is_labelled_explained_and_has_a_runbook_entry(rule: dict[str, Any]) -> None:
    labels, ann = rule.get("labels", {}), rule.get("annotations", {})
    assert labels.get("severity") in {"page", "ticket", "warning"}
    assert labels.get("category") in {"thermal", "cost", "health"}
    assert ann.get("summary") and ann.get("description")
    # the figures: the alert's value or the series' labels, not a fixed sentence
    assert "$value" in ann["summary"] + ann["description"] or "$labels" in ann["summary"]
    url = ann.get("runbook_url", "")
    assert url.startswith("docs/runbook.md#"), url
    anchor = url.split("#", 1)[1]
    assert anchor == rule["alert"].lower()
    assert anchor in _anchors(), f"docs/runbook.md has no heading for {rule['alert']}"


def test_thermal_thresholds_come_from_each_gpus_own_series() -> None:
    by_name = {a["alert"]: a["expr"] for a in alerts()}
    assert "wattledger_gpu_slowdown_temperature_celsius" in by_name["GpuThermalSlowdownNear"]
    # energy against the energy part of the plan; the demand charge against its own budget
    assert "wattledger_plan_energy_cost_to_date" in by_name["EnergyCostOverPlan"]
    assert "wattledger_demand_charge" in by_name["EnergyCostOverPlan"]
    assert "wattledger_plan_demand_charge" in by_name["DemandChargeOverPlan"]
    assert "wattledger_plan_cost" in by_name["EnergyCostForecastOverPlan"]
