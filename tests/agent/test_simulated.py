"""The simulator on a virtual clock: exact energy, bounded temperature, throttling, faults."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattledger.agent.sources.base import HW_THERMAL, SW_THERMAL
from wattledger.agent.sources.simulated import (
    MODELS,
    PSU_EFFICIENCY,
    WORKLOADS,
    SimulatedGpu,
    SimulatedSource,
    fake_uuid,
)

T0 = 1_764_000_000.0  # 2025-11-24 16:00 UTC
steps = st.lists(st.floats(min_value=0.05, max_value=600.0, allow_nan=False), min_size=1, max_size=60)


def gpu(workload: str = "training", model: str = "h100-sxm", seed: int = 1) -> SimulatedGpu:
    return SimulatedGpu("n1", 0, MODELS[model], workload, seed)


@settings(max_examples=60, deadline=None)
@given(steps=steps, workload=st.sampled_from(sorted(WORKLOADS)), model=st.sampled_from(sorted(MODELS)))
def test_counter_is_the_integral_of_the_reported_power(steps: list[float], workload: str, model: str) -> None:
    g = gpu(workload, model)
    ts = T0
    prev = g.advance(ts)
    start = g.counter_j
    integral = 0.0
    for dt in steps:
        ts += dt
        r = g.advance(ts)
        assert r.power_w is not None and prev.power_w is not None
        integral += (prev.power_w + r.power_w) / 2 * (r.ts - prev.ts)  # the ts as sent, not dt
        assert r.energy_j is not None and prev.energy_j is not None
        assert r.energy_j >= prev.energy_j  # never decreases without a reset
        prev = r
    assert g.counter_j - start == pytest.approx(integral, rel=1e-9, abs=1e-6)
    assert g.drawn_j == pytest.approx(integral, rel=1e-9, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(steps=steps, workload=st.sampled_from(sorted(WORKLOADS)), model=st.sampled_from(sorted(MODELS)))
def test_temperature_and_power_stay_bounded(steps: list[float], workload: str, model: str) -> None:
    g = gpu(workload, model)
    m, w = MODELS[model], WORKLOADS[workload]
    hottest = w.ambient_c + m.thermal_resistance * w.cooling * m.power_limit_w
    ts = T0
    for dt in [0.0, *steps]:
        ts += dt
        r = g.advance(ts)
        assert r.temp_c is not None and r.power_w is not None and r.util is not None
        assert w.ambient_c - 0.1 <= r.temp_c <= hottest + 0.1
        assert r.temp_c < m.shutdown_c  # the throttle keeps it off the shutdown threshold
        assert 0 < r.power_w <= m.power_limit_w
        assert 0.0 <= r.util <= 1.0


@settings(max_examples=30, deadline=None)
@given(steps=steps, reset_at=st.integers(min_value=0, max_value=59))
def test_counter_drops_only_on_a_driver_reload(steps: list[float], reset_at: int) -> None:
    g = gpu()
    ts = T0
    last = g.advance(ts).energy_j
    for i, dt in enumerate(steps):
        if i == reset_at:
            g.reset_counter()
        before, ts, drawn_before = ts, ts + dt, g.drawn_j
        now = g.advance(ts).energy_j
        assert now is not None and last is not None
        if i == reset_at:
            # the reload restarted it at 0: it holds this interval's energy only (which may equal
            # or even exceed the old total, when that was a shorter interval of its own)
            assert now == pytest.approx(g.drawn_j - drawn_before, rel=1e-9, abs=1e-3)  # mJ resolution
            assert now <= MODELS["h100-sxm"].power_limit_w * (ts - before) + 1e-3
        else:
            assert now >= last
        last = now


def test_hot_gpu_throttles_near_slowdown_and_a_cool_one_does_not() -> None:
    src = SimulatedSource("n1", 2, workloads=("training", "hot"), seed=3)
    temps: dict[int, list[float]] = {0: [], 1: []}
    thermal_events = {0: 0, 1: 0}
    for k in range(720):  # an hour at 5 s
        for r in src.sample(T0 + 5 * k).readings:
            assert r.temp_c is not None and r.clock_events is not None
            temps[r.device.index].append(r.temp_c)
            thermal_events[r.device.index] += bool(r.clock_events & (SW_THERMAL | HW_THERMAL))
    slowdown = MODELS["h100-sxm"].slowdown_c
    late_hot = temps[1][360:]
    assert slowdown - 5 < sum(late_hot) / len(late_hot) <= slowdown  # runs hot, just under slowdown
    assert thermal_events[1] > 100
    assert max(temps[0]) < slowdown - 10 and thermal_events[0] == 0


def test_inference_swings_over_the_day() -> None:
    g = gpu("inference")
    day0 = math.floor(T0 / 86400) * 86400
    night = [g.advance(day0 + 3 * 3600 + 10 * k).util or 0.0 for k in range(200)]
    afternoon = [g.advance(day0 + 15 * 3600 + 10 * k).util or 0.0 for k in range(200)]
    assert sum(afternoon) / 200 > sum(night) / 200 + 0.4


def test_idle_gpu_sits_at_its_floor() -> None:
    r = gpu("idle").advance(T0)
    assert r.util == 0.0 and r.power_w == MODELS["h100-sxm"].idle_w
    assert r.clock_events is not None and r.clock_events & 0x1  # GpuIdle


def test_same_seed_same_gpus_and_values() -> None:
    a = SimulatedSource("n1", 4, seed=9, workloads=("inference",))
    b = SimulatedSource("n1", 4, seed=9, workloads=("inference",))
    for k in range(5):
        assert a.sample(T0 + k).readings == b.sample(T0 + k).readings
    assert [g.info.id for g in a.gpus] == [fake_uuid("n1", i, 9) for i in range(4)]
    assert fake_uuid("n1", 0, 9) != fake_uuid("n1", 0, 10) != fake_uuid("n2", 0, 9)
    assert a.gpus[0].info.model == "NVIDIA H100 80GB HBM3" and a.gpus[0].info.power_limit_w == 700.0


def test_lost_gpu_is_down_and_comes_back_with_a_reset_counter() -> None:
    src = SimulatedSource("n1", 3)
    src.sample(T0)
    src.gpus[1].lose()
    out = src.sample(T0 + 1)
    assert [r.device.index for r in out.readings] == [0, 2]
    assert [d.index for d in out.down] == [1]
    src.gpus[1].recover()
    back = src.sample(T0 + 2).readings[1]
    assert back.energy_j is not None and back.energy_j < 1000  # the reset restarted the counter
    assert src.gpus[1].drawn_j > 1000  # ground truth kept counting


def test_unsupported_fields_are_absent() -> None:
    g = gpu()
    g.unsupported = frozenset({"energy_j", "mem_temp_c"})
    r = g.advance(T0)
    assert r.energy_j is None and r.mem_temp_c is None and r.power_w is not None


def test_gddr_board_has_no_memory_temperature() -> None:
    assert gpu(model="l40s").advance(T0).mem_temp_c is None


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown GPU model"):
        SimulatedSource("n1", 1, model="h200-nvl")
    with pytest.raises(ValueError, match="unknown workload"):
        SimulatedSource("n1", 1, workloads=("mining",))


def test_a_simulated_bmc_reads_the_gpus_through_the_power_supplies_plus_its_base() -> None:
    src = SimulatedSource("n1", 2, node_meter_w=800.0, seed=1)
    first, second = src.sample(1000.0), src.sample(1010.0)
    (a,) = [r for r in first.readings if r.device.kind == "node"]
    (b,) = [r for r in second.readings if r.device.kind == "node"]
    gpus = sum(r.power_w or 0.0 for r in second.readings if r.device.kind == "gpu")
    assert b.device.id == "n1:bmc" and len(second.readings) == 3
    assert b.power_w == pytest.approx((gpus + 800.0) / PSU_EFFICIENCY, abs=0.05)
    assert a.power_w is not None and b.power_w is not None
    assert b.energy_j == pytest.approx((a.power_w + b.power_w) / 2 * 10, abs=1e-3)
    # without it, GPUs only
    assert all(r.device.kind == "gpu" for r in SimulatedSource("n1", 2).sample(1000.0).readings)
