"""The Ledger as the service uses it: dedupe, group commit, restarts, refusals, reports."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledgerkit import (
    BACKEND,
    Backend,
    at,
    committed_low,
    device_totals,
    make_batch,
    make_sites,
    node_state,
    open_ledger,
    site_row,
)

from wattledger.collector.ingest.transaction import IngestResult, StreamOfAnotherNode, UnknownSite
from wattledger.collector.service import Ledger
from wattledger.collector.sites import PlanEntry
from wattledger.collector.store.base import StreamState
from wattledger.wire import ValidBatch

#: every test here runs on SQLite and on PostgreSQL (tests/collector/conftest.py)
pytestmark = pytest.mark.usefixtures("backend")

T0 = at("2026-11-30 23:45", "America/New_York")  # a month ends within the traces below
TWO_GPUS = [{"id": "GPU-a", "kind": "gpu", "index": 0, "power_limit_w": 700.0},
            {"id": "GPU-b", "kind": "gpu", "index": 1, "power_limit_w": 400.0}]
SITES = {"default": {"timezone": "America/New_York", "pue": 1.4, "carbon_g_per_kwh": 350,
                     "demand_charge_per_kw": 12.0, "tariff": [
                         {"price_per_kwh": 0.31, "from": "23:53", "to": "00:07"},
                         {"price_per_kwh": 0.11}]}}

Reading = tuple[int, float, float | None, float | None]  # device, ts, power_w, energy_j


@st.composite
def traces(draw: st.DrawFn) -> list[Reading]:
    """Readings of two GPUs in time order: gaps short and long, counters with resets, holes
    and impossible jumps."""
    readings: list[Reading] = []
    for device in (0, 1):
        ts, energy = T0 + draw(st.integers(0, 20)), float(draw(st.integers(0, 10**6)))
        for _ in range(draw(st.integers(1, 15))):
            ts += draw(st.sampled_from([0.5, 1.0, 7.0, 29.0, 30.0, 31.0, 95.0]))
            step = draw(st.sampled_from(["normal", "normal", "normal", "reset", "jump", "none"]))
            energy = {"normal": energy + draw(st.floats(0, 2000)), "reset": draw(st.floats(0, 500)),
                      "jump": energy + 1e7, "none": energy}[step]
            power = draw(st.one_of(st.none(), st.floats(0, 700)))
            readings.append((device, ts, power, None if step == "none" else energy))
    readings.sort(key=lambda r: r[1])
    return readings


def ledger_state(led: Ledger) -> dict[str, Any]:
    """Everything the ledger holds, devices by (node, id) (slots are numbered in arrival order),
    floats rounded to a micro-unit (the same sums, added in another order)."""
    devices = led.view().devices

    def rounded(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows)

    usage = led.store.query("SELECT u.month, d.node || '/' || d.device, u.site, u.cluster, u.it_j, "
                            "u.cooling_j, u.it_cost, u.cooling_cost, u.carbon_g, u.unmeasured_s "
                            "FROM usage u JOIN devices d ON d.slot = u.slot")
    return {
        "devices": {f"{devices.node[slot]}/{devices.device[slot]}": device_totals(led, slot)
                    for slot in range(devices.size)},
        "usage": rounded(usage),
        "quarters": rounded(led.store.query("SELECT site, cluster, start_minute, month, it_j, facility_j, "
                                            "cost FROM quarters")),
        "demand": [round(site_row(led, m)["demand_charge"], 6) for m in ("2026-11", "2026-12")],
    }


def approx_state(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    out["devices"] = {device: {k: pytest.approx(v, rel=1e-12, abs=1e-6) for k, v in d.items()}
                      for device, d in state["devices"].items()}
    return out


def as_batch(readings: list[Reading], seq: int, stream: str = "s1", node: str = "n1") -> ValidBatch:
    return make_batch(node=node, stream=stream, seq=seq, devices=TWO_GPUS, labels={"cluster": node},
                      device=[r[0] for r in readings], ts=[r[1] for r in readings],
                      power_w=[r[2] for r in readings], energy_j=[r[3] for r in readings])


HEALTH = [HealthCheck.too_slow, HealthCheck.large_base_example, HealthCheck.function_scoped_fixture]


def any_split_and_any_resend(traces_by_node: tuple[list[Reading], list[Reading]],
                             data: st.DataObject) -> None:
    """Two nodes, each trace cut anywhere into its stream's batches; group commits mix the two
    streams (each in seq order), shuffled, with re-sends of anything sent before: the totals of
    one batch per stream."""
    sites = make_sites(SITES)
    nodes = {"n1": traces_by_node[0], "n2": traces_by_node[1]}
    whole = open_ledger(sites)
    whole.ingest([as_batch(trace, 1, f"s-{node}", node) for node, trace in nodes.items()])

    queues: dict[str, list[ValidBatch]] = {}
    for node, trace in nodes.items():
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(trace) - 1)), max_size=8)))
        pieces = [trace[a:b] for a, b in zip([0, *cuts], [*cuts, len(trace)], strict=True) if trace[a:b]]
        queues[node] = [as_batch(piece, seq, f"s-{node}", node) for seq, piece in enumerate(pieces, 1)]
    split = open_ledger(sites)
    sent: list[ValidBatch] = []
    while any(queues.values()):
        call: list[ValidBatch] = []
        first = data.draw(st.sampled_from([node for node, queue in queues.items() if queue]))
        for node, queue in queues.items():  # at least one batch of one stream, any of the other
            take = data.draw(st.integers(1 if node == first else 0, len(queue)))
            call += queue[:take]
            del queue[:take]
        resends = data.draw(st.lists(st.sampled_from(sent + call), max_size=3)) if sent + call else []
        results = split.ingest(data.draw(st.permutations(call + resends)))
        assert sum(r.accepted for r in results) == sum(len(b.columns) for b in call)
        sent += call

    assert ledger_state(split) == approx_state(ledger_state(whole))
    for node, trace in nodes.items():
        assert node_state(split, node).readings == len(trace)
    BACKEND.close_all()  # each example's databases: their connections go now




@pytest.mark.backends("sqlite")
@settings(max_examples=60, deadline=None, suppress_health_check=HEALTH)
@given(traces_by_node=st.tuples(traces(), traces()), data=st.data())
def test_any_split_and_any_resend_gives_the_totals_of_one_batch(
        backend: Backend, traces_by_node: tuple[list[Reading], list[Reading]], data: st.DataObject) -> None:
    any_split_and_any_resend(traces_by_node, data)


@pytest.mark.backends("postgresql")
@settings(max_examples=15, deadline=None, suppress_health_check=HEALTH)  # two databases an example
@given(traces_by_node=st.tuples(traces(), traces()), data=st.data())
def test_any_split_and_any_resend_gives_the_totals_of_one_batch_on_postgresql(
        backend: Backend, traces_by_node: tuple[list[Reading], list[Reading]], data: st.DataObject) -> None:
    any_split_and_any_resend(traces_by_node, data)


def test_duplicates_are_answered_and_change_nothing() -> None:
    led = open_ledger()
    first = make_batch(ts=[at("2026-11-02 10:00"), at("2026-11-02 10:00:10")], power_w=[100.0, 100.0])
    assert [(r.accepted, r.duplicate) for r in led.ingest([first, first])] == [(2, False), (0, True)]
    before = ledger_state(led)
    assert [(r.accepted, r.duplicate) for r in led.ingest([first])] == [(0, True)]
    assert ledger_state(led) == before
    assert node_state(led, "n1").readings == 2


def test_seqs_out_of_order_are_each_committed_once() -> None:
    led = open_ledger()
    t = at("2026-11-02 10:00")
    b = {seq: make_batch(seq=seq, ts=[t + 10 * seq], power_w=[100.0]) for seq in (1, 2, 3, 4)}
    led.ingest([b[1]])
    led.ingest([b[3]])  # 2 still missing: 3 is held above the low mark
    assert led.store.stream("s1") == StreamState("n1", 1, {3})
    assert led.ingest([b[3]])[0].duplicate
    assert not led.ingest([b[2]])[0].duplicate
    assert led.store.stream("s1") == StreamState("n1", 3, set())
    assert led.store.query("SELECT stream, seq FROM stream_seqs") == []
    assert [r.duplicate for r in led.ingest([b[4], b[2], b[1]])] == [False, True, True]


def test_restart_keeps_totals_and_dedupe(backend: Backend, tmp_path: Path) -> None:
    sites = make_sites(SITES)
    db = backend.reopenable(tmp_path)
    trace: list[Reading] = [(d, T0 + 10 * i, 300.0 + d, 1000.0 * i) for i in range(60) for d in (0, 1)]
    batches = [as_batch(trace[i:i + 20], seq) for seq, i in enumerate(range(0, 120, 20), start=1)]
    whole = open_ledger(sites)
    whole.ingest(batches)

    led = open_ledger(sites, db=db)
    led.ingest(batches[:3])
    led.close()
    led = open_ledger(sites, db=db)
    # the 200 of batch 3 was lost: the agent sends it again, then the rest
    assert led.ingest([batches[2]])[0].duplicate
    led.ingest(batches[3:])
    led.close()
    led = open_ledger(sites, db=db)
    assert ledger_state(led) == approx_state(ledger_state(whole))
    assert all(r.duplicate for r in led.ingest(batches))
    assert node_state(led, "n1").readings == 120
    assert led.view().totals["default"].it_cost == pytest.approx(whole.view().totals["default"].it_cost)
    led.close()


def test_unknown_site_is_refused_before_anything_is_written() -> None:
    led = open_ledger()
    good = make_batch(ts=[at("2026-11-02 10:00")], power_w=[100.0])
    bad = make_batch(node="n2", stream="s2", labels={"site": "mars"}, ts=[at("2026-11-02 10:00")],
                     power_w=[100.0])
    with pytest.raises(UnknownSite) as caught:
        led.ingest([good, bad])
    assert caught.value.status == 422
    assert caught.value.to_json()["detail"]["field"] == "labels.site"
    assert caught.value.batch_index == 1  # type: ignore[attr-defined]
    assert led.view().nodes == {} and led.store.stream("s1") is None
    assert led.store.query("SELECT COUNT(*) FROM streams") == [(0,)]
    with pytest.raises(UnknownSite):
        led.check(bad)


def test_a_stream_belongs_to_one_node() -> None:
    led = open_ledger()
    led.ingest([make_batch(node="n1", stream="shared", ts=[at("2026-11-02 10:00")], power_w=[1.0])])
    other = make_batch(node="n2", stream="shared", seq=2, ts=[at("2026-11-02 10:00")], power_w=[1.0])
    with pytest.raises(StreamOfAnotherNode):
        led.ingest([other])
    assert "n2" not in led.view().nodes


def test_failed_commit_leaves_memory_as_stored(backend: Backend, tmp_path: Path) -> None:
    if backend.name != "sqlite":
        pytest.skip("SQLite's store keeps the ledger in memory too; PostgreSQL's keeps nothing there")
    db = f"sqlite:///{tmp_path}/ledger.db"
    led = open_ledger(db=db)
    t = at("2026-11-02 10:00")
    led.ingest([make_batch(ts=[t, t + 10], power_w=[100.0, 100.0])])
    before = ledger_state(led)
    # a trigger makes the next write fail inside the transaction (as a full disk would)
    raw = sqlite3.connect(f"{tmp_path}/ledger.db")
    raw.execute("CREATE TRIGGER nope BEFORE UPDATE ON nodes BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    raw.commit()
    with pytest.raises(sqlite3.DatabaseError):
        led.ingest([make_batch(seq=2, ts=[t + 20], power_w=[100.0])])
    assert ledger_state(led) == before
    assert committed_low(led, "s1") == 1
    raw.execute("DROP TRIGGER nope")
    raw.commit()
    raw.close()
    assert not led.ingest([make_batch(seq=2, ts=[t + 20], power_w=[100.0])])[0].duplicate
    assert device_totals(led)["energy_j"] == 2000.0
    led.close()


def test_spend_groups_add_up_and_carry_plans() -> None:
    sites = make_sites(demand_charge_per_kw=5.0)
    plan = [PlanEntry(site="default", month="2026-11", cluster="train", cost=200.0),
            PlanEntry(site="default", month="2026-11", cluster="serve", cost=100.0)]
    led = open_ledger(sites, plan, now=at("2026-11-16 00:00"))
    t = at("2026-11-02 10:00")
    led.ingest([
        make_batch(node="a1", stream="a", labels={"cluster": "train"}, devices=TWO_GPUS, device=[0, 1, 0, 1],
                   ts=[t, t, t + 3600, t + 3600], power_w=[0, 0, 0, 0],
                   energy_j=[0.0, 0.0, 1.8e6, 0.9e6]),
        make_batch(node="b1", stream="b", labels={"cluster": "infer"}, ts=[t, t + 3600],
                   power_w=[0, 0], energy_j=[0.0, 0.36e6]),
    ])
    site = site_row(led, "2026-11")
    # 0.5 + 0.25 + 0.1 = 0.85 kWh IT at 0.10 = 0.085; facility peak: the hour is flat, 0.85 kW x 1.5
    assert site["it_energy_kwh"] == pytest.approx(0.85)
    assert site["it_cost"] == pytest.approx(0.085)
    assert site["demand_charge"] == pytest.approx(0.85 * 1.5 * 5.0)
    assert site["plan_cost"] == 300.0  # no site-wide entry: the sum of its clusters' budgets
    assert site["plan_to_date"] == pytest.approx(150.0)
    clusters = {r["cluster"]: r for r in led.spend(site=None, month="2026-11", group_by="cluster")}
    assert set(clusters) == {"infer", "serve", "train"}
    assert clusters["train"]["plan_cost"] == 200.0 and clusters["infer"]["plan_cost"] is None
    assert clusters["serve"]["it_energy_kwh"] == 0.0
    for level in ("cluster", "node", "device"):
        rows = led.spend(site="default", month="2026-11", group_by=level)
        assert sum(r["energy_cost"] for r in rows) == pytest.approx(site["energy_cost"])
    devices = led.spend(site="default", month="2026-11", group_by="device")
    # ordered by site, cluster, node, device: "infer" before "train"
    assert [(r["node"], r["device"]) for r in devices] == [("b1", "GPU-0"), ("a1", "GPU-a"),
                                                           ("a1", "GPU-b")]
    with pytest.raises(ValueError, match="not configured"):
        led.spend(site="mars", month=None, group_by="site")
    with pytest.raises(ValueError, match="2026-12"):
        led.spend(site=None, month="2026-13", group_by="site")


def test_nodes_show_latest_readings_and_staleness() -> None:
    t = at("2026-11-02 10:00")
    led = open_ledger(now=t + 60, stale_after_seconds=120.0)
    led.ingest([make_batch(labels={"cluster": "c", "rack": "r1"}, ts=[t, t + 10], power_w=[100.0, 250.0],
                           temp_c=[50.0, 61.0], util=[0.5, 0.9], clock_events=[0, 0x40])])
    (node,) = led.nodes()
    assert node["node"] == "n1" and node["site"] == "default" and node["cluster"] == "c"
    assert node["labels"] == {"cluster": "c", "rack": "r1"}
    assert node["last_seen"] == t + 60 and node["stale"] is False
    (gpu,) = node["devices"]
    assert gpu["id"] == "GPU-0" and gpu["slowdown_c"] == 87.0
    assert gpu["latest"]["ts"] == t + 10 and gpu["latest"]["power_w"] == 250.0
    assert gpu["latest"]["temp_c"] == 61.0 and gpu["latest"]["clock_events"] == 0x40
    assert gpu["latest"]["mem_temp_c"] is None
    led.clock.now = t + 60 + 121  # type: ignore[attr-defined]
    assert led.nodes()[0]["stale"] is True


def test_refresh_notes_month_roll_over_and_stale_nodes(caplog: pytest.LogCaptureFixture) -> None:
    t = at("2026-11-30 23:58")
    led = open_ledger(now=t)
    led.ingest([make_batch(ts=[t - 10, t], power_w=[100.0, 100.0])])
    led.refresh()
    led.clock.now = t + 180  # type: ignore[attr-defined]
    with caplog.at_level("INFO", logger="wattledger.collector.service"):
        led.refresh()
        led.refresh()  # said once, not at every refresh
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["site default: billing month 2026-12 begins",
                        "node n1 is stale: no batch for over 120 s"]
    led.clock.now = t + 90 * 86400  # type: ignore[attr-defined]
    led.refresh()
    # quarter-hours older than needed leave memory (SQLite's; not the store)
    assert getattr(led.store, "quarters", {}) == {}
    assert site_row(led, "2026-11")["it_energy_j"] == 1000.0


def test_devices_without_readings_are_stored_too(backend: Backend, tmp_path: Path) -> None:
    db = backend.reopenable(tmp_path)
    t = at("2026-11-02 10:00")
    led = open_ledger(db=db)
    # GPU-b is declared but never measured; then another node's GPU is
    led.ingest([make_batch(devices=TWO_GPUS, device=[0], ts=[t], power_w=[100.0])])
    led.ingest([make_batch(node="n2", stream="s2", ts=[t, t + 10], power_w=[50.0, 50.0])])
    led.close()
    again = open_ledger(db=db)
    devices = again.view().devices
    assert [(devices.node[s], devices.device[s]) for s in range(devices.size)] == \
        [("n1", "GPU-a"), ("n1", "GPU-b"), ("n2", "GPU-0")]
    assert device_totals(again, 2)["energy_j"] == 500.0
    again.close()


def test_an_empty_batch_commits_its_seq_and_devices() -> None:
    led = open_ledger()
    assert led.ingest([make_batch(ts=[], power_w=[])]) == [IngestResult(0, False)]
    assert led.ingest([make_batch(ts=[], power_w=[])]) == [IngestResult(0, True)]
    assert led.ingest([]) == []
    (node,) = led.nodes()
    assert node["devices"][0]["id"] == "GPU-0" and node["devices"][0]["latest"]["ts"] is None
