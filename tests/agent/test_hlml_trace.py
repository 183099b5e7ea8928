"""The hlml source against real boards' recorded answers (``scripts/record_hlml_trace.py``).

No Gaudi machine has been lent to this project yet, so ``TRACES`` is empty and the tests over
it are skipped; the recorder's round trip (the recorder run against the fake pyhlml, its trace
replayed and read by the source) runs the same checks. Record a board with
``python scripts/record_hlml_trace.py --out tests/agent/traces/NAME.json`` on it and add the
file to ``TRACES``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.accelerator_trace import (
    check_the_counter_agrees_with_the_power,
    load_trace,
    ok,
    readings,
    record_from_fake,
    replay_hlml,
)
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.hlml import HlmlSource

TRACES: list[str] = []


def read(trace: dict[str, Any]) -> list[list[DeviceReading]]:
    return readings(replay_hlml(trace), lambda module: HlmlSource("traced", pyhlml=module))


def expected(raw: dict[str, Any]) -> dict[str, float | None]:
    """The recorded raw answers in base units, worked out here apart from the source."""
    memory = raw["memory"] if ok(raw["memory"]) else {}
    return {
        "power_w": raw["power_mw"] / 1000 if ok(raw["power_mw"]) else None,
        "energy_j": raw["energy_mj"] / 1000 if ok(raw["energy_mj"]) else None,
        "temp_c": raw["temp_aip"] if ok(raw["temp_aip"]) else None,
        "mem_temp_c": raw["temp_hbm"] if ok(raw["temp_hbm"]) else None,
        "util": raw["utilization"]["aip"] / 100 if ok(raw["utilization"]) else None,
        "mem_used_bytes": memory.get("used"),
        "mem_total_bytes": memory.get("total"),
    }


def check_every_recorded_answer(trace: dict[str, Any]) -> None:
    samples = read(trace)
    for i, device in enumerate(trace["devices"]):
        for step, raw in enumerate(device["samples"]):
            r = samples[step][i]
            want = expected(raw)
            assert {key: getattr(r, key) for key in want} == pytest.approx(want), f"device {i} sample {step}"
            limit = raw["limit_mw"] if ok(raw["limit_mw"]) else raw["default_limit_mw"]
            assert r.device.power_limit_w == (limit / 1000 if ok(limit) and limit else None)
            assert r.device.slowdown_c == (device["slowdown_c"] if ok(device["slowdown_c"]) else None)


@pytest.mark.parametrize("name", TRACES)
def test_every_recorded_answer_comes_out_in_base_units(name: str) -> None:
    check_every_recorded_answer(load_trace(name))


@pytest.mark.parametrize("name", TRACES)
def test_the_real_counter_agrees_with_the_real_power_readings(name: str) -> None:
    trace = load_trace(name)
    check_the_counter_agrees_with_the_power(trace, read(trace))


@pytest.mark.integration
@pytest.mark.parametrize("bindings", ["1.24", "2022"])
def test_the_recorder_round_trips_through_the_replay(tmp_path: Path, bindings: str) -> None:
    """scripts/record_hlml_trace.py against the fake pyhlml (a Gaudi 2 and a Gaudi 3, with
    either bindings): what it records, replayed, reads as the boards are."""
    trace = record_from_fake(tmp_path, "record_hlml_trace.py", "pyhlml",
                             "from agent.fake_pyhlml import gaudi2, gaudi3, make_pyhlml\n"
                             f"module = make_pyhlml([gaudi2(0), gaudi3(1)], bindings={bindings!r})")
    new = bindings == "1.24"
    assert trace["bindings"] == {"hbm_sensor": new, "power_management_limit": new}
    check_every_recorded_answer(trace)
    g2, g3 = read(trace)[0]
    assert (g2.power_w, g2.temp_c, g2.device.model) == (421.0, 48.0, "Intel Gaudi HL-225")
    assert g2.device.power_limit_w == (550.0 if new else 600.0)
    assert (g3.power_w, g3.mem_temp_c) == (812.0, 52.0 if new else None)
