"""The nvml source against a real driver's recorded answers (an NVIDIA H200, driver 580.159.04,
24 samples 0.5 s apart: idle, then a bf16 matrix-product load, then idle again), recorded with
``scripts/record_nvml_trace.py`` on a lent GPU machine; the agent's /metrics from the same
machine is kept beside it.

Record another board with ``python scripts/record_nvml_trace.py --out tests/agent/traces/NAME.json``
and add it to ``TRACES``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.nvml_trace import TRACES as TRACE_DIR
from agent.nvml_trace import load_trace, replay
from wattledger.agent.exposition import AgentCollector
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sampler import Sampler
from wattledger.agent.sources.nvml import NvmlSource

TRACES = ["h200-driver-580.159.04.json"]


def readings(name: str) -> tuple[dict[str, Any], list[list[DeviceReading]]]:
    """Each recorded sample as the source reads it."""
    trace = load_trace(name)
    r = replay(trace)
    source = NvmlSource("traced", nvml=r.nvml)
    source.open()
    out = []
    for step in range(r.samples):
        r.step = step
        sample = source.sample(float(step))
        assert sample.down == []
        out.append(sample.readings)
    return trace, out


def expected(raw: dict[str, Any]) -> dict[str, float | int | None]:
    """The recorded raw answers in base units, worked out here independently of the source."""
    fields = raw["fields"] if "error" not in raw["fields"] else {}
    memory = raw["memory_v2"] if "error" not in raw["memory_v2"] else raw["memory_v1"]

    def ok(value: Any) -> bool:
        return not (isinstance(value, dict) and "error" in value)

    return {
        "power_w": raw["power_mw"] / 1000 if ok(raw["power_mw"]) else None,
        "energy_j": (fields["83"]["value"] if ok(fields.get("83", {"error": 3}))
                     else raw["energy_mj"]) / 1000,
        "temp_c": raw["temp_c"] if ok(raw["temp_c"]) else None,
        "mem_temp_c": fields["82"]["value"] if ok(fields.get("82", {"error": 3})) else None,
        "util": raw["utilization"]["gpu"] / 100,
        "mem_util": raw["utilization"]["memory"] / 100,
        "mem_used_bytes": memory["used"],
        "mem_total_bytes": memory["total"],
        "sm_clock_hz": raw["sm_clock_mhz"] * 1e6,
        "clock_events": raw["clock_events"],
    }


@pytest.mark.parametrize("name", TRACES)
def test_every_recorded_answer_comes_out_in_base_units(name: str) -> None:
    trace, samples = readings(name)
    for gpu in trace["gpus"]:
        for step, raw in enumerate(gpu["samples"]):
            (r,) = [x for x in samples[step] if x.device.id == gpu["uuid"]]
            want = expected(raw)
            got = {key: getattr(r, key) for key in want}
            assert got == pytest.approx(want), f"{gpu['name']} sample {step}"
            assert r.device.model == gpu["name"]
            assert (r.device.slowdown_c, r.device.shutdown_c) == (gpu["slowdown_c"], gpu["shutdown_c"])
            assert r.device.power_limit_w == raw["power_limit_mw"] / 1000


@pytest.mark.parametrize("name", TRACES)
def test_the_real_counter_agrees_with_the_real_power_readings(name: str) -> None:
    trace, samples = readings(name)
    for gpu in trace["gpus"]:
        ts = [s["ts"] for s in gpu["samples"]]
        series = [next(x for x in step if x.device.id == gpu["uuid"]) for step in samples]
        energy = [r.energy_j for r in series]
        assert all(b is not None and a is not None and b >= a for a, b in itertools.pairwise(energy))
        # NVML's power is a 1 s average that lags a load that changes, so only roughly equal
        power = [r.power_w or 0.0 for r in series]
        integral = sum((t1 - t0) * (p0 + p1) / 2
                       for t0, t1, p0, p1 in zip(ts, ts[1:], power, power[1:], strict=False))
        counted = float(energy[-1] or 0) - float(energy[0] or 0)
        assert 0.7 < integral / counted < 1.3


def test_the_h200_trace_saw_idle_and_a_load_at_the_power_cap() -> None:
    _, samples = readings("h200-driver-580.159.04.json")
    powers = [r.power_w or 0.0 for step in samples for r in step]
    assert min(powers) < 150 < 400 < max(powers)
    # idle: gpu_idle (0x1); at ~690 W of a 700 W limit: sw_power_cap (0x4)
    assert {r.clock_events for step in samples for r in step} == {0x1, 0x4}
    assert {r.mem_temp_c is not None for step in samples for r in step} == {True}  # HBM sensor


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The wattledger_gpu_* series of a /metrics text: names and labels, node left out."""
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "node")))
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name.startswith("wattledger_gpu_")}


@pytest.mark.parametrize("name", TRACES)
def test_replayed_exposition_has_the_series_the_real_agent_exposed(name: str) -> None:
    trace = load_trace(name)
    r = replay(trace)
    sampler = Sampler([NvmlSource("traced", nvml=r.nvml)])
    sampler.open()
    sampler.sample(0.0)
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: sampler.snapshot, "traced", {}))
    ours = series(generate_latest(registry).decode())
    real = series((TRACE_DIR / Path(name).with_suffix(".metrics.txt")).read_text())
    assert ours == real
    assert len(real) > 10


@pytest.mark.integration
def test_the_recorder_round_trips_through_the_replay(tmp_path: Path) -> None:
    """scripts/record_nvml_trace.py against the fake NVML of the bench tests (two boards, one
    without an HBM sensor): what it records, replayed, reads as the boards are."""
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "fake.json"
    env = {**os.environ, "PYTHONPATH": str(root / "tests" / "bench" / "fakenvml")}
    subprocess.run([sys.executable, str(root / "scripts" / "record_nvml_trace.py"), "--samples", "2",
                    "--interval", "0.01", "--out", str(out)], env=env, check=True, timeout=60,
                   capture_output=True)
    trace = json.loads(out.read_text())
    r = replay(trace)
    source = NvmlSource("traced", nvml=r.nvml)
    source.open()
    first, second = source.sample(0.0).readings
    assert (first.power_w, first.temp_c, first.mem_temp_c) == (512.3, 61.0, 70.0)
    assert (second.power_w, second.mem_temp_c, second.util) == (61.25, None, 0.0)
    assert second.mem_used_bytes == 5 << 20  # memory info v2: without the driver's reservation
