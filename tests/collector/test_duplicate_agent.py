"""Two agents for one node (a cloned host, a copied token): two live streams of one node with
the same devices (issue 16 item 8). The stream that has the devices keeps them; the other's
batches are refused 409 — logged, counted, exposed — until the first has been silent for
``stale_after_seconds``; then the newer one takes over, and what it kept is accepted."""

from __future__ import annotations

import logging

import pytest
from ledgerkit import at, device_totals, make_batch, node_state, open_ledger
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.ingest.transaction import DuplicateAgent, IngestResult
from wattledger.collector.service import Ledger

pytestmark = pytest.mark.usefixtures("backend")

T0 = at("2026-11-02 10:00")
GPUS = [{"id": f"GPU-{g}", "kind": "gpu", "index": g, "power_limit_w": 700.0} for g in range(2)]


def readings(stream: str, seq: int, start: float, node: str = "n1", devices: list[dict[str, object]] = GPUS):
    """Two GPUs x 10 s from ``start``; counters of the one physical device both agents read."""
    ts = [start + s for s in range(10)]
    return make_batch(node=node, stream=stream, seq=seq, devices=devices, device=[0] * 10 + [1] * 10,
                      ts=ts * 2, power_w=[300.0] * 20,
                      energy_j=[1e6 + 300.0 * (t - T0) for t in ts] * 2)


def series(led: Ledger, name: str) -> dict[str, float]:
    return {s.labels["node"]: s.value
            for fam in text_string_to_metric_families(led.collector().render().decode())  # type: ignore[attr-defined]
            for s in fam.samples if s.name == name}


def test_a_second_live_stream_overlapping_in_time_is_refused_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    led = open_ledger(now=T0 + 10)
    assert led.ingest([readings("clone-a", 1, T0)]) == [IngestResult(20, False)]
    before = device_totals(led)
    caplog.set_level(logging.WARNING, "wattledger.collector.ingest.transaction")
    led.clock.now = T0 + 15  # type: ignore[attr-defined]
    (refused,) = led.ingest([readings("clone-b", 1, T0 + 5)])  # T0 + 5..14: overlaps T0..9
    assert isinstance(refused, DuplicateAgent)
    assert refused.status == 409 and refused.to_json()["error"] == "duplicate agent"
    assert "clone-a" in refused.reason and "120 s" in refused.reason
    assert refused.headers["Retry-After"] == "60"  # at most a minute: the agent asks again
    assert device_totals(led) == before  # nothing of it is booked
    assert led.ingest([readings("clone-a", 2, T0 + 10)]) == [IngestResult(20, False)]
    (refused_again,) = led.ingest([readings("clone-b", 2, T0 + 15)])  # overlaps T0 + 10..19
    assert isinstance(refused_again, DuplicateAgent)
    state = node_state(led, "n1")
    assert state.duplicate_agent and state.conflicts == 2 and state.readings == 40
    assert series(led, "wattledger_node_duplicate_agent") == {"n1": 1.0}
    assert series(led, "wattledger_ingest_conflicts_total") == {"n1": 2.0}
    # one line a minute per node, however many batches are refused
    lines = [r.getMessage() for r in caplog.records if "two agents" in r.getMessage()]
    assert len(lines) == 1 and "clone-b" in lines[0] and "clone-a" in lines[0]
    (node,) = led.nodes()
    assert node["duplicate_agent"] is True and node["duplicate_agent_batches_total"] == 2
    # the established stream went on as if nothing happened
    assert device_totals(led)["energy_j"] == pytest.approx(19 * 300.0)  # GPU-0: T0 to T0 + 19


def test_a_hand_over_is_at_once_and_the_old_stream_if_it_returns_is_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    """A re-imaged host with a fresh spool (or the demo's backfill, then its live agent): the new
    stream's readings start after the last committed ones; it takes the devices over at once."""
    led = open_ledger(now=T0 + 10)
    led.ingest([readings("old", 1, T0)])
    caplog.set_level(logging.WARNING, "wattledger.collector.ingest.transaction")
    led.clock.now = T0 + 21  # type: ignore[attr-defined]
    assert led.ingest([readings("new", 1, T0 + 10)]) == [IngestResult(20, False)]
    assert any("takes its devices over from stream old" in r.getMessage() for r in caplog.records)
    # the counters of the same GPUs bridge from one stream to the other: every joule once
    assert device_totals(led)["energy_j"] == pytest.approx(19 * 300.0)
    assert node_state(led, "n1").duplicate_agent is False
    # the old one was alive after all: its batches are now the ones refused
    (refused,) = led.ingest([readings("old", 2, T0 + 10)])
    assert isinstance(refused, DuplicateAgent) and "'new'" in refused.reason
    assert node_state(led, "n1").duplicate_agent is True
    # a quiet stretch later, the node counts as having no second agent any more
    led.clock.now += 121  # type: ignore[attr-defined]
    assert node_state(led, "n1").duplicate_agent is False and node_state(led, "n1").conflicts == 1


def test_a_silent_stream_is_taken_over_even_by_overlapping_readings() -> None:
    led = open_ledger(now=T0 + 10, stale_after_seconds=120.0)
    led.ingest([readings("old", 1, T0)])
    led.clock.now = T0 + 15  # type: ignore[attr-defined]
    kept = readings("new", 1, T0 + 5)
    assert isinstance(led.ingest([kept])[0], DuplicateAgent)
    led.clock.now = T0 + 10 + 121  # type: ignore[attr-defined]  # "old" silent for over 120 s
    assert led.ingest([kept]) == [IngestResult(20, False)]  # the agent kept it and sent it again
    # its readings up to T0 + 9 came late (counted, no energy); T0 + 9 -> 14 is bridged
    assert device_totals(led)["late"] == 5
    assert device_totals(led)["energy_j"] == pytest.approx(14 * 300.0)


def test_in_one_group_the_other_batches_go_in() -> None:
    led = open_ledger(now=T0 + 10)
    led.ingest([readings("a", 1, T0)])
    other_node = readings("x", 1, T0, node="n2")
    results = led.ingest([readings("b", 1, T0 + 3), other_node, readings("a", 2, T0 + 10)])  # b overlaps a
    assert isinstance(results[0], DuplicateAgent)
    assert results[1:] == [IngestResult(20, False), IngestResult(20, False)]
    assert node_state(led, "n1").readings == 40 and node_state(led, "n2").readings == 20
    # a refusal is not a commit: sent again (still refused), the others are duplicates
    again = led.ingest([readings("b", 1, T0 + 3), other_node])
    assert isinstance(again[0], DuplicateAgent) and again[1] == IngestResult(0, True)


def test_two_streams_with_other_devices_are_no_conflict() -> None:
    """Not the same devices (a node's second agent for its BMC, say): both are accepted."""
    led = open_ledger(now=T0 + 10)
    bmc = [{"id": "bmc", "kind": "node", "index": 0}]
    led.ingest([readings("gpus", 1, T0)])
    wall = make_batch(stream="bmc", devices=bmc, ts=[T0, T0 + 5], power_w=[900.0, 900.0])
    assert led.ingest([wall]) == [IngestResult(2, False)]
    assert node_state(led, "n1").duplicate_agent is False
