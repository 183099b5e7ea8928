"""The split rule (accounting/allocation.py) against hand computations."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattledger.collector.accounting.allocation import (
    Holdings,
    Lanes,
    Pieces,
    idle_pieces,
    node_minute_it,
    split_board,
)

IDLE = 99
INF = math.inf


def holdings(*rows: tuple[int, float, float, float, int]) -> Holdings:
    """(lane, start, end, weight, holder) rows."""
    lane, start, end, weight, holder = zip(*rows, strict=True)
    return Holdings(np.array(lane, dtype=np.int64), np.array(start, dtype=float), np.array(end, dtype=float),
                    np.array(weight, dtype=float), np.array(holder, dtype=np.int64))


def by(p: Pieces, field: str = "energy_j", per_minute: bool = False) -> dict[object, float]:
    out: dict[object, float] = defaultdict(float)
    for minute, holder, value in zip(p.minute.tolist(), p.holder.tolist(), getattr(p, field).tolist(),
                                     strict=True):
        out[(minute, holder) if per_minute else holder] += value
    return dict(out)


def board(start: list[float], end: list[float], energy: list[float], util: list[float] | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    u = util if util is not None else [0.9] * len(start)
    return (np.array(start, dtype=float), np.array(end, dtype=float), np.array(energy, dtype=float),
            np.array(u, dtype=float))


def test_one_allocation_covering_half_an_interval() -> None:
    # (0, 10] carries 1000 J; job 1 holds from t=5 on: 500 J to it, 500 J idle
    s, e, j, u = board([0.0], [10.0], [1000.0])
    p = split_board(s, e, j, u, Lanes.of([]), holdings((0, 5.0, INF, 1.0, 1)), IDLE)
    assert by(p) == pytest.approx({1: 500.0, IDLE: 500.0})
    assert by(p, "gpu_s") == pytest.approx({1: 5.0, IDLE: 5.0})


def test_weights_and_overlap_instant_by_instant() -> None:
    # (0, 12] 1200 J (100 J/s). A (weight 1) holds [0, 8]; B (weight 3) holds [4, 12]
    # [0,4]: A alone 400; [4,8]: A 1/4 of 400 = 100, B 300; [8,12]: B 400
    s, e, j, u = board([0.0], [12.0], [1200.0])
    p = split_board(s, e, j, u, Lanes.of([]), holdings((0, 0.0, 8.0, 1.0, 1), (0, 4.0, 12.0, 3.0, 2)), IDLE)
    assert by(p) == pytest.approx({1: 500.0, 2: 700.0})
    assert IDLE not in by(p)
    assert by(p, "gpu_s") == pytest.approx({1: 5.0, 2: 7.0})


def test_gap_between_holdings_is_idle_and_minutes_are_split() -> None:
    # (50, 70] 2000 J across the minute boundary at 60; A holds [50, 55], B holds [65, 100]
    s, e, j, u = board([50.0], [70.0], [2000.0])
    held = holdings((0, 50.0, 55.0, 1.0, 1), (0, 65.0, 100.0, 1.0, 2))
    p = split_board(s, e, j, u, Lanes.of([]), held, IDLE)
    assert by(p, per_minute=True) == pytest.approx({(0, 1): 500.0, (0, IDLE): 500.0, (1, IDLE): 500.0,
                                                    (1, 2): 500.0})


def test_mig_partitions_split_the_board_by_share() -> None:
    # an H100 board in MIG mode: a 3/7 partition held by job 1, a 2/7 partition nobody holds,
    # the 2/7 left unpartitioned held by nobody; 700 J over (0, 10]
    s, e, j, u = board([0.0], [10.0], [700.0])
    lanes = Lanes.of([3 / 7, 2 / 7])
    p = split_board(s, e, j, u, lanes, holdings((0, 0.0, INF, 1.0, 1)), IDLE)
    assert by(p) == pytest.approx({1: 300.0, IDLE: 400.0})
    assert by(p, "gpu_s") == pytest.approx({1: 30 / 7, IDLE: 40 / 7})


def test_mig_two_pods_time_slicing_one_partition_and_the_board_lane() -> None:
    # partition (4/7) held by pods 1 and 2 (weights 1, 1); the board's own lane (3/7) by job 3
    s, e, j, u = board([0.0], [7.0], [700.0])
    lanes = Lanes.of([4 / 7])
    p = split_board(s, e, j, u, lanes, holdings((0, 0.0, INF, 1.0, 1), (0, 0.0, INF, 1.0, 2),
                                                (lanes.own, 0.0, INF, 1.0, 3)), IDLE)
    assert by(p) == pytest.approx({1: 200.0, 2: 200.0, 3: 300.0})


def test_shares_over_one_are_scaled_down() -> None:
    lanes = Lanes.of([0.6, 0.6])
    assert lanes.capacity.tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_held_idle_is_waste() -> None:
    # two intervals: the first at 2 % utilization (waste), the second busy; job 1 holds both
    s, e, j, u = board([0.0, 10.0], [10.0, 20.0], [600.0, 3000.0], [0.02, 0.95])
    p = split_board(s, e, j, u, Lanes.of([]), holdings((0, 0.0, INF, 1.0, 1)), IDLE)
    assert by(p, "idle_s") == pytest.approx({1: 10.0})
    assert by(p, "waste_j") == pytest.approx({1: 600.0})
    # idle (unheld) time is never waste, and unknown utilization is never waste
    s, e, j, u = board([0.0], [10.0], [600.0], [float("nan")])
    p = split_board(s, e, j, u, Lanes.of([]), holdings((0, 5.0, INF, 1.0, 1)), IDLE)
    assert sum(p.idle_s) == 0.0


def test_idle_pieces_per_minute() -> None:
    p = idle_pieces(np.array([30.0]), np.array([90.0]), np.array([600.0]), np.array([7]))
    assert by(p, per_minute=True) == pytest.approx({(0, 7): 300.0, (1, 7): 300.0})


def test_node_minute_it_shares_non_gpu_energy_by_gpu_energy() -> None:
    # minute 0: job 1 300 J of GPU, idle 100 J; the node's CPUs 200 J -> job 1 +150, idle +50
    # minute 1: no GPU energy; CPUs 80 J -> all to idle
    it = node_minute_it(np.array([0, 0, 1, 1]), np.array([300.0, 100.0, 0.0, 0.0]),
                        np.array([False, True, False, True]), np.array([200.0, 80.0]))
    assert it.tolist() == pytest.approx([450.0, 150.0, 0.0, 80.0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0.1, 50), st.floats(0, 5000)), min_size=1, max_size=5),
       st.lists(st.tuples(st.integers(0, 2), st.floats(0, 120), st.floats(0, 60), st.floats(0.1, 4)),
                max_size=6),
       st.lists(st.floats(0.05, 0.5), max_size=2))
def test_allocated_plus_idle_is_the_energy(spans: list[tuple[float, float, float]],
                                           holds: list[tuple[int, float, float, float]],
                                           shares: list[float]) -> None:
    # intervals one after the other, each after a gap
    start = np.cumsum(np.array([g for g, _, _ in spans]) + np.array([0.0, *[d for _, d, _ in spans[:-1]]]))
    end = start + np.array([d for _, d, _ in spans])
    energy = np.array([j for _, _, j in spans])
    lanes = Lanes.of(shares)
    rows = [(lane % lanes.capacity.shape[0], s, s + length, w, i + 1)
            for i, (lane, s, length, w) in enumerate(holds)]
    if rows:
        p = split_board(start, end, energy, np.full(len(spans), 0.01), lanes, holdings(*rows), IDLE)
    else:
        p = idle_pieces(start, end, energy, np.full(len(spans), IDLE, dtype=np.int64))
    assert float(p.energy_j.sum()) == pytest.approx(float(energy.sum()), rel=1e-9, abs=1e-9)
    assert float(p.gpu_s.sum()) == pytest.approx(float((end - start).sum()), rel=1e-9, abs=1e-9)
    assert (p.energy_j >= -1e-12).all()
