"""Profiles fitted from sufficient statistics: readings whose power is exactly idle + slope x u give
back the line with R² = 1; the statistics add up over days and replicas to the whole; idle power,
percentiles, node overhead; too little data says why."""

from __future__ import annotations

import math
import random
from dataclasses import fields
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from plankit import IDLE_W, MODEL, SLOPE_W, day, exact_readings

from wattledger.collector.accounting.history import (
    GpuReading,
    NodeOverheadDay,
    PowerStats,
    model_days_from_readings,
    sum_stats,
)
from wattledger.plan.profile import MIN_READINGS, fit_line, node_overhead_of, profile_of, profiles_of

UTC = ZoneInfo("UTC")


def test_an_exact_line_is_fitted_back_with_r2_one() -> None:
    readings = exact_readings(days=3, gpus=4)
    profile = profile_of(MODEL, model_days_from_readings(readings, UTC))
    assert profile.usable, profile.problems
    assert profile.fit is not None
    assert profile.fit.intercept_w == pytest.approx(IDLE_W, abs=1e-6)
    assert profile.fit.slope_w == pytest.approx(SLOPE_W, rel=1e-9)
    assert profile.fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert (profile.line_idle_w, profile.line_max_w) == (
        pytest.approx(IDLE_W),
        pytest.approx(IDLE_W + SLOPE_W),
    )
    c = profile.coverage
    assert (c.days, c.gpus, c.readings) == (3, 4, len(readings))
    assert (c.first_day, c.last_day) == (day("2026-09-01"), day("2026-09-03"))
    assert c.hours == pytest.approx(72 - 1 / 60)
    idle = [r.power_w for r in readings if r.utilization is not None and r.utilization < 0.05]
    assert profile.idle_readings == len(idle) > 0
    assert profile.idle_w == pytest.approx(sum(p for p in idle if p is not None) / len(idle))
    truth = np.percentile([r.power_w for r in readings], 95)
    assert profile.p95_w is not None and abs(profile.p95_w - truth) <= 10.0  # one 10 W bin
    assert profile.mean_utilization == pytest.approx(np.mean([r.utilization for r in readings]))
    # the chart's points: each 5 % bin's mean power lies on the line at the bin's mean utilization
    for point in profile.binned:
        assert (
            IDLE_W + SLOPE_W * (point.utilization - 0.025)
            <= point.mean_power_w
            <= IDLE_W + SLOPE_W * (point.utilization + 0.025)
        )


def test_statistics_add_up_over_days_and_replicas() -> None:
    readings = exact_readings(days=2, gpus=3)
    whole = PowerStats.of((r.ts, r.utilization or 0.0, r.power_w or 0.0) for r in readings)
    by_day = sum_stats(d.power for d in model_days_from_readings(readings, UTC))
    shuffled = readings[:]
    random.Random(7).shuffle(shuffled)
    a, b = shuffled[: len(shuffled) // 3], shuffled[len(shuffled) // 3 :]
    replicas = sum_stats(
        PowerStats.of((r.ts, r.utilization or 0.0, r.power_w or 0.0) for r in part) for part in (a, b)
    )
    for total in (by_day, replicas):
        for f in fields(PowerStats):
            mine, theirs = getattr(total, f.name), getattr(whole, f.name)
            if isinstance(mine, float) or (isinstance(mine, tuple) and isinstance(mine[0], float)):
                assert mine == pytest.approx(theirs, rel=1e-12), f.name  # sums in another order
            else:
                assert mine == theirs, f.name


def test_noisy_readings_fit_the_least_squares_line() -> None:
    rng = random.Random(3)
    points = [(float(i), u, 80 + 250 * u + rng.gauss(0, 20)) for i in range(5000) for u in [rng.random()]]
    fit = fit_line(PowerStats.of(points))
    u = np.array([p[1] for p in points])
    p = np.array([p[2] for p in points])
    slope, intercept = np.polyfit(u, p, 1)
    assert fit is not None
    assert (fit.slope_w, fit.intercept_w) == (
        pytest.approx(slope, rel=1e-9),
        pytest.approx(intercept, rel=1e-9),
    )
    assert fit.r2 == pytest.approx(np.corrcoef(u, p)[0, 1] ** 2, rel=1e-9)
    assert 0.8 < fit.r2 < 1.0


def test_readings_outside_the_line_are_not_counted() -> None:
    stats = PowerStats.of(
        [(0.0, 0.5, 200.0), (1.0, 1.5, 200.0), (2.0, 0.5, -1.0), (3.0, 0.5, math.nan), (4.0, math.nan, 100.0)]
    )
    assert stats.n == 1
    days = model_days_from_readings(
        [GpuReading(0.0, "g", MODEL, None, 100.0), GpuReading(0.0, "g", MODEL, 0.5, None)], UTC
    )
    assert days == []


def test_a_profile_with_too_little_data_says_why() -> None:
    few = profile_of(MODEL, model_days_from_readings(exact_readings(days=1, gpus=1, every_s=300), UTC))
    assert not few.usable
    assert any(f"at least {MIN_READINGS}" in p for p in few.problems)
    assert any("hours of readings" in p for p in few.problems)
    busy = [GpuReading(float(i * 30), "g0", MODEL, 0.96 + 0.02 * (i % 2), 390.0 + i % 3) for i in range(4000)]
    narrow = profile_of(MODEL, model_days_from_readings(busy, UTC))
    assert any("utilization spans only" in p for p in narrow.problems), narrow.problems
    falling = [
        GpuReading(float(i * 30), "g0", MODEL, (i % 100) / 100, 400 - 100 * (i % 100) / 100)
        for i in range(4000)
    ]
    assert any("power falls" in p for p in profile_of(MODEL, model_days_from_readings(falling, UTC)).problems)


def test_models_are_profiled_apart() -> None:
    readings = exact_readings(days=2, gpus=2) + exact_readings(days=2, gpus=1, model="NVIDIA H100 80GB HBM3")
    profiles = profiles_of(model_days_from_readings(readings, UTC))
    assert sorted(profiles) == sorted([MODEL, "NVIDIA H100 80GB HBM3"])
    assert profiles[MODEL].coverage.gpus == 2 and profiles["NVIDIA H100 80GB HBM3"].coverage.gpus == 1


def test_node_overhead_from_node_meters() -> None:
    days = [
        NodeOverheadDay(
            MODEL,
            day("2026-09-01"),
            nodes=2,
            metered_seconds=2 * 86400.0,
            node_energy_j=2 * 86400.0 * 3500,
            gpu_energy_j=2 * 86400.0 * 2400,
            gpu_seconds=16 * 86400.0,
        ),
        NodeOverheadDay(
            MODEL,
            day("2026-09-02"),
            nodes=1,
            metered_seconds=43200.0,
            node_energy_j=43200.0 * 3200,
            gpu_energy_j=43200.0 * 2400,
            gpu_seconds=8 * 43200.0,
        ),
    ]
    overhead = node_overhead_of(days)
    assert overhead is not None
    assert overhead.overhead_w == pytest.approx((2 * 86400 * 1100 + 43200 * 800) / (2 * 86400 + 43200))
    assert (overhead.nodes, overhead.metered_node_hours, overhead.gpus_per_node) == (2, 60.0, 8.0)
    assert node_overhead_of([]) is None
