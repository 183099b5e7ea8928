"""The AllocationTracker: holdings seen sample by sample become allocations with from/to."""

from __future__ import annotations

import logging

import pytest

from wattledger.agent.allocations import Allocation, AllocationTracker, for_batch, still_needed
from wattledger.agent.sources.base import Holding

T = 1_764_000_000.0


def held(key: str, *devices: str, weight: float = 1.0, since: float | None = None,
         until: float | None = None, **owner: str) -> Holding:
    return Holding(key, devices or ("GPU-0",), owner or {"job": key}, weight, since, until)


def spans(tracker: AllocationTracker) -> list[tuple[str, float, float | None]]:
    return [(a.key, a.start, a.end) for a in tracker.drain()]


def test_first_seen_starts_no_longer_seen_ends_at_the_last_sample_it_was_seen() -> None:
    t = AllocationTracker()
    t.observe("slurm", T, [held("j1")])
    assert spans(t) == [("j1", T, None)]
    t.observe("slurm", T + 1, [held("j1")])
    t.observe("slurm", T + 2, [held("j1")])
    assert spans(t) == []  # nothing changed: nothing to store
    t.observe("slurm", T + 3, [])
    assert spans(t) == [("j1", T, T + 2)]
    assert t.open_count == 0


def test_since_and_until_given_by_the_source_are_used() -> None:
    t = AllocationTracker()
    t.observe("slurm", T, [held("j1", since=T - 500)])
    assert spans(t) == [("j1", T - 500, None)]
    t.observe("slurm", T + 1, [held("j1", since=T - 500, until=T + 0.5)])  # the epilog ran
    assert spans(t) == [("j1", T - 500, T + 0.5)]
    t.observe("slurm", T + 2, [held("j1", since=T - 500, until=T + 0.5)])  # still listed: no change
    assert spans(t) == []
    t.observe("slurm", T + 3, [held("j2", since=T - 100, until=T - 50)])  # seen only once ended
    assert spans(t) == [("j2", T - 100, T - 50)]


def test_a_since_in_the_future_starts_now_and_an_until_before_the_start_is_the_start() -> None:
    t = AllocationTracker()
    t.observe("s", T, [held("j1", since=T + 60), held("j2", since=T - 10, until=T - 20)])
    assert sorted(spans(t)) == [("j1", T, None), ("j2", T - 10, T - 10)]


def test_a_change_of_weight_owner_or_devices_hands_over_at_that_sample() -> None:
    t = AllocationTracker()
    t.observe("k8s", T, [held("pod", "GPU-0", weight=1.0, team="a")])
    t.observe("k8s", T + 1, [held("pod", "GPU-0", weight=0.5, team="a")])
    got = t.drain()
    assert [(a.start, a.end, a.weight) for a in got] == [(T, T + 1, 1.0), (T + 1, None, 0.5)]
    t.observe("k8s", T + 2, [held("pod", "GPU-0", "GPU-1", weight=0.5, team="a")])
    t.observe("k8s", T + 3, [held("pod", "GPU-0", "GPU-1", weight=0.5, team="b")])
    assert [(a.start, a.end, a.device_ids, dict(a.owner)) for a in t.drain()] == [
        (T + 1, T + 2, ("GPU-0",), {"team": "a"}),
        (T + 2, T + 3, ("GPU-0", "GPU-1"), {"team": "a"}),
        (T + 3, None, ("GPU-0", "GPU-1"), {"team": "b"})]


def test_several_holdings_of_one_device_share_it_by_weight() -> None:
    t = AllocationTracker()
    t.observe("k8s", T, [held("a", weight=0.25), held("b", weight=0.75)])
    assert sorted((a.key, a.weight) for a in t.drain()) == [("a", 0.25), ("b", 0.75)]


def test_a_failing_source_ends_its_holdings_and_only_its_own() -> None:
    t = AllocationTracker()
    t.observe("slurm", T, [held("j1")])
    t.observe("k8s", T, [held("pod")])
    t.observe("slurm", T + 1, [held("j1")])
    t.drain()
    t.observe("slurm", T + 2, None)  # the source failed at this sample
    t.observe("k8s", T + 2, [held("pod")])
    assert spans(t) == [("j1", T, T + 1)]
    # back: the same job starts again where it is seen, never overlapping its last allocation
    t.observe("slurm", T + 3, [held("j1", since=T - 999)])
    assert spans(t) == [("j1", T + 1, None)]


def test_holdings_the_wire_would_refuse_are_left_out_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    t = AllocationTracker()
    bad = [Holding("x", ("GPU-0",), {"Team": "a"}), Holding("y", (), {"job": "1"}),
           Holding("z", ("GPU-0",), {"job": "1"}, weight=0.0), Holding("", ("GPU-0",), {"job": "1"}),
           Holding("w", ("GPU-0",), {"job": "x" * 257}), Holding("v", ("GPU-0",), {"job": "1"}, since=-5.0),
           Holding("u", ("GPU-0",), {})]
    with caplog.at_level(logging.WARNING):
        t.observe("k8s", T, [*bad, held("ok")])
        t.observe("k8s", T + 1, [*bad, held("ok")])
    assert spans(t) == [("ok", T, None)]
    assert sum("left out" in r.message for r in caplog.records) == 1


def test_resume_continues_what_is_listed_again_and_ends_the_rest_where_last_seen() -> None:
    t = AllocationTracker()
    stored = [Allocation("slurm", "j1", ("GPU-0",), {"job": "j1"}, 1.0, T - 100),
              Allocation("slurm", "j2", ("GPU-1",), {"job": "j2"}, 1.0, T - 100),
              Allocation("slurm", "j0", ("GPU-1",), {"job": "j0"}, 1.0, T - 300, T - 200),
              Allocation("gone", "g", ("GPU-1",), {"job": "g"}, 1.0, T - 100)]
    t.resume(stored, last_seen=T - 10, sources=["slurm"])
    assert spans(t) == [("g", T - 100, T - 10)]  # its source is no longer configured
    t.observe("slurm", T, [held("j1"), held("j0", since=T - 300)])
    assert sorted(spans(t)) == [("j0", T - 200, None), ("j2", T - 100, T - 10)]  # j1 goes on


def test_which_allocations_a_batch_carries() -> None:
    a = Allocation("s", "a", ("GPU-0", "GPU-9"), {"job": "a"}, 1.0, T, T + 10)
    late = Allocation("s", "late", ("GPU-0",), {"job": "late"}, 0.5, T + 20)
    other = Allocation("s", "o", ("GPU-1",), {"job": "o"}, 1.0, T, None)
    position = {"GPU-0": 0, "GPU-1": 1}
    # GPU-0's span (T + 5, T + 15]: a overlaps it, late starts after it; GPU-1 is not held then
    got = for_batch([a, late, other], {"GPU-0": (T + 5, T + 15)}, position)
    assert got == [{"devices": [0], "from": T, "to": T + 10, "weight": 1.0, "owner": {"job": "a"}}]
    assert for_batch([a], {"GPU-0": (T + 10, T + 15)}, position) == []  # ended at the span's start
    assert len(for_batch([other] * 5, {"GPU-1": (T, T + 1)}, position, limit=3)) == 3
    assert still_needed(a, {"GPU-0": T + 5}, T + 5)
    assert not still_needed(a, {"GPU-0": T + 10, "GPU-9": T + 11}, T + 11)
    assert not still_needed(a, {"GPU-0": T + 10}, T + 86400 + 11)  # GPU-9 never reported: forgotten
    assert still_needed(other, {"GPU-1": T + 1e6}, T + 1e6)  # open
