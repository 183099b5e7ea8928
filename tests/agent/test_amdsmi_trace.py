"""The amdsmi source against real boards' recorded answers (``scripts/record_amdsmi_trace.py``).

No AMD machine has been lent to this project yet, so ``TRACES`` is empty and the tests over it
are skipped; the recorder's round trip (the recorder run against the fake amdsmi, its trace
replayed and read by the source) runs the same checks. Record a board with
``python scripts/record_amdsmi_trace.py --out tests/agent/traces/NAME.json`` on it and add the
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
    replay_amdsmi,
)
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.amdsmi import AmdSmiSource

TRACES: list[str] = []


def read(trace: dict[str, Any]) -> list[list[DeviceReading]]:
    return readings(replay_amdsmi(trace), lambda module: AmdSmiSource("traced", amdsmi=module))


def expected(raw: dict[str, Any]) -> dict[str, float | None]:
    """The recorded raw answers in base units, worked out here apart from the source."""
    def num(v: Any) -> float | None:
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else None

    power = raw["power_info"] if ok(raw["power_info"]) else {}
    energy = raw["energy_count"] if ok(raw["energy_count"]) else {}
    count = num(energy.get("energy_accumulator", energy.get("power")))
    temp = {k: v for k, v in raw["temp"].items() if ok(v)}
    activity = raw["activity"] if ok(raw["activity"]) else {}
    return {
        "power_w": next((w for k in ("socket_power", "current_socket_power", "average_socket_power")
                         if (w := num(power.get(k))) is not None), None),
        "energy_j": None if count is None else count * energy["counter_resolution"] / 1e6,
        "temp_c": temp.get("HOTSPOT CURRENT"),
        "mem_temp_c": temp.get("VRAM CURRENT"),
        "util": None if num(activity.get("gfx_activity")) is None else activity["gfx_activity"] / 100,
        "mem_used_bytes": raw["memory_usage"] if ok(raw["memory_usage"]) else None,
    }


def modules(trace: dict[str, Any]) -> list[int]:
    """For each device, the device whose power data it shares: the one before it when its
    first answers are the zeros of an MI250X module's second die, else itself."""
    def zeros(raw: dict[str, Any]) -> bool:
        power, energy, cap = raw["power_info"], raw["energy_count"], raw["power_cap_info"]
        return (ok(power) and 0 in power.values() and ok(energy) and ok(cap) and cap["power_cap"] == 0
                and energy.get("energy_accumulator", energy.get("power")) == 0)

    firsts: list[int] = []
    for i, device in enumerate(trace["devices"]):
        firsts.append(firsts[-1] if i and zeros(device["samples"][0]) else i)
    return firsts


def check_every_recorded_answer(trace: dict[str, Any]) -> None:
    samples, firsts = read(trace), modules(trace)
    for i, device in enumerate(trace["devices"]):
        first = trace["devices"][firsts[i]]
        dies = firsts.count(firsts[i])
        for step, raw in enumerate(device["samples"]):
            r = samples[step][i]
            want = expected(raw)
            module = expected(first["samples"][step])  # a module's power data, split between its dies
            for key in ("power_w", "energy_j"):
                want[key] = None if module[key] is None else module[key] / dies
            assert {key: getattr(r, key) for key in want} == pytest.approx(want), f"device {i} sample {step}"
            cap_info = first["samples"][step]["power_cap_info"]
            cap = cap_info["power_cap"] if ok(cap_info) else 0
            assert r.device.power_limit_w == (cap / 1e6 / dies if cap else None)
            critical = device["temp"]["HOTSPOT CRITICAL"]
            assert r.device.slowdown_c == (float(critical) if ok(critical) and critical else None)


@pytest.mark.parametrize("name", TRACES)
def test_every_recorded_answer_comes_out_in_base_units(name: str) -> None:
    check_every_recorded_answer(load_trace(name))


@pytest.mark.parametrize("name", TRACES)
def test_the_real_counter_agrees_with_the_real_power_readings(name: str) -> None:
    trace = load_trace(name)
    check_the_counter_agrees_with_the_power(trace, read(trace))


@pytest.mark.integration
def test_the_recorder_round_trips_through_the_replay(tmp_path: Path) -> None:
    """scripts/record_amdsmi_trace.py against the fake amdsmi (an MI250X module's two dies and
    an MI300X): what it records, replayed, reads as the boards are."""
    trace = record_from_fake(tmp_path, "record_amdsmi_trace.py", "amdsmi",
                             "from agent.fake_amdsmi import make_amdsmi, mi250x, mi300x\n"
                             "module = make_amdsmi([*mi250x(), mi300x()])")
    assert [d["uuid"] for d in trace["devices"]][2].startswith("ecff74b5")
    check_every_recorded_answer(trace)
    first, second, mi300 = read(trace)[0]
    assert (first.power_w, first.temp_c, first.mem_temp_c, first.device.model) == (
        201.0, 68.0, 61.0, "AMD Instinct MI250X")  # half of the module's 402 W
    assert (second.power_w, second.energy_j, second.device.power_limit_w) == (
        201.0, first.energy_j, 280.0)
    assert (mi300.power_w, mi300.device.power_limit_w, mi300.device.shutdown_c) == (612.0, 750.0, 105.0)
    assert mi300.clock_events is None  # one sample before: nothing to compare with
    assert read(trace)[1][2].clock_events == 0  # the fake's counters did not move
