"""The shipped alerts work unchanged for AMD Instinct and Intel Gaudi GPUs (issue 15: the `model`
says the vendor, nothing else differs).

The agent's own /metrics of hot AMD MI300X, MI250X and Gaudi 3 boards — made by the real
`amdsmi` and `hlml` sources over the fakes of their vendor modules (tests/agent/fake_*.py),
through the real AgentCollector — are fed to `promtool test rules` with the shipped rules file:
each thermal alert fires for each vendor whose boards report what it reads, never for a cool
board of the same models, and the MI250X (which reports no clock events) is covered by the
collector's margin, as docs/observability.md ("AMD and Gaudi GPUs") says. A static check keeps
every rule and dashboard query free of any vendor's name."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent.fake_amdsmi import make_amdsmi, mi250x, mi300x
from tests.agent.fake_pyhlml import gaudi3, make_pyhlml
from wattledger.agent.exposition import AgentCollector
from wattledger.agent.sampler import Sampler
from wattledger.agent.sources.amdsmi import AmdSmiSource
from wattledger.agent.sources.base import Source
from wattledger.agent.sources.hlml import HlmlSource

from .support import RULES, alerts, binary, dashboard_queries

TS = 1_764_000_000.0
VENDOR_WORDS = re.compile(r"nvidia|nvml|dcgm|amd|instinct|rocm|gaudi|habana|hlml|intel", re.IGNORECASE)


def exposition(node: str, source: Source, between: Any = None) -> list[tuple[str, dict[str, str], float]]:
    """The agent's GPU series of ``node`` after two samples (``between`` runs between them)."""
    sampler = Sampler([source])
    sampler.open()
    sampler.sample(TS)
    if between is not None:
        between()
    sampler.sample(TS + 1)
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: sampler.snapshot, node, {"site": "dc1", "cluster": "mixed"}))
    return [(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples if s.name.startswith("wattledger_gpu_") and math.isfinite(s.value)]


def series_text(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def hot_fleet() -> list[tuple[str, Source, Any]]:
    """(node, source, what happens between its two samples): hot boards of each vendor, and a
    cool node of the same models that must stay quiet."""
    hot_mi300 = mi300x(0)
    hot_mi300.hotspot, hot_mi300.vram = 97, 91  # junction 3 °C under its CRITICAL (100), HBM 91 °C
    cool_mi300 = mi300x(1)
    dies = mi250x(0)
    for die in dies:
        die.hotspot, die.vram = 101, 91  # past CRITICAL: throttling, but MI200 reports no cause
    hot_gaudi = gaudi3(0)
    hot_gaudi.temp_aip, hot_gaudi.temp_hbm, hot_gaudi.throttle = 92, 91, 1 << 1  # HLML THERMAL
    cool_gaudi = gaudi3(1)
    return [
        ("amd-hot", AmdSmiSource("amd-hot", amdsmi=make_amdsmi([hot_mi300])),
         lambda: hot_mi300.tick(throttled=("socket_thm_residency_acc",))),
        ("amd-cool", AmdSmiSource("amd-cool", amdsmi=make_amdsmi([cool_mi300])), cool_mi300.tick),
        ("mi250-hot", AmdSmiSource("mi250-hot", amdsmi=make_amdsmi(dies)), None),
        ("gaudi-hot", HlmlSource("gaudi-hot", pyhlml=make_pyhlml([hot_gaudi])), None),
        ("gaudi-cool", HlmlSource("gaudi-cool", pyhlml=make_pyhlml([cool_gaudi])), None),
    ]


def firing(alert: str, expected: list[tuple[str, str, int]]) -> dict[str, Any]:
    """A promql_expr_test: the firing alerts of ``alert`` counted by (node, model)."""
    return {"expr": f'count by (node, model) (ALERTS{{alertname="{alert}", alertstate="firing"}})',
            "eval_time": "10m",
            "exp_samples": [{"labels": series_text("", {"node": node, **({"model": model} if model else {})}),
                             "value": n} for node, model, n in expected]}


def test_the_thermal_alerts_fire_for_amd_and_gaudi_boards(tmp_path: Path) -> None:
    promtool = binary("promtool")
    inputs = []
    uuids: dict[str, list[str]] = {}
    for node, source, between in hot_fleet():
        for name, labels, value in exposition(node, source, between):
            labels.update(job="wattledger-agent", instance=f"{node}:9860")
            inputs.append({"series": series_text(name, labels), "values": f"{value:g}x15"})
            uuids.setdefault(node, []).append(labels["uuid"])
    # the MI250X node also delivers to a collector, which sees each die 1 °C past its slowdown
    for uuid in sorted(set(uuids["mi250-hot"])):
        inputs.append({"series": series_text("wattledger_device_slowdown_margin_celsius", {
            "site": "dc1", "cluster": "mixed", "node": "mi250-hot", "device": uuid,
            "job": "wattledger-collector", "instance": "collector:9861"}), "values": "-1x15"})
    models = {"amd-hot": "AMD Instinct MI300X", "mi250-hot": "AMD Instinct MI250X",
              "gaudi-hot": "Intel Gaudi HL-325L"}
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "group_eval_order": ["wattledger-fleet-records", "wattledger-thermal", "wattledger-cost",
                             "wattledger-health"],
        "tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": [
            firing("GpuThermalSlowdownNear", [("amd-hot", models["amd-hot"], 1),
                                              ("gaudi-hot", models["gaudi-hot"], 1),
                                              ("mi250-hot", models["mi250-hot"], 2)]),
            # MI300 and Gaudi from their own clock events; MI250X (none) from the collector's margin
            firing("GpuThermalThrottling", [("amd-hot", models["amd-hot"], 1),
                                            ("gaudi-hot", models["gaudi-hot"], 1),
                                            ("mi250-hot", "", 2)]),
            firing("GpuMemoryTemperatureHigh", [("amd-hot", models["amd-hot"], 1),
                                                ("gaudi-hot", models["gaudi-hot"], 1),
                                                ("mi250-hot", models["mi250-hot"], 2)]),
            firing("GpuPowerBrake", []),  # no vendor but NVIDIA has the signal
        ]}],
    }
    path = tmp_path / "vendors.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # the exposition had what the alerts read, from the vendors' own sources
    names = {item["series"].split("{")[0] for item in inputs}
    assert {"wattledger_gpu_temperature_celsius", "wattledger_gpu_slowdown_temperature_celsius",
            "wattledger_gpu_clock_event_active"} <= names


def test_no_rule_or_dashboard_query_names_a_vendor() -> None:
    """Vendor-neutral by construction: no expression selects or drops by model or vendor."""
    for rule in alerts():
        assert not VENDOR_WORDS.search(rule["expr"]) and "model" not in rule["expr"], rule["alert"]
    for board, title, expr in dashboard_queries():
        assert not VENDOR_WORDS.search(expr) and not re.search(r"model\s*[=!]~?", expr), (board, title, expr)
