"""The wire contract of issue 16 through the collector: positions into the ledger's devices,
kinds that are not IT energy, allocations that change nothing yet, exact clock-event bitmasks
(also across a restart and a store migration), and hostile numbers refused with nothing changed."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.collector.httpkit import AUTH, NOW, FakeLedger, batch, body, changed, client, settings
from tests.collector.ledgerkit import FAR_FUTURE, make_batch, open_ledger
from tests.delivery.test_spool import gpu_server_with_rapl
from wattledger.agent.spool import DeviceDicts, build_batches, encode_sample
from wattledger.collector.api.app import create_app
from wattledger.collector.store.sqlite import MIGRATIONS
from wattledger.contract import CLOCK_EVENT_REASONS
from wattledger.wire import validate

pytestmark = pytest.mark.anyio

T = 1_764_259_000.0
ALL_BITS = 2**64 - 1


def devices_of(ledger: Any, node: str | None = None) -> dict[str, dict[str, Any]]:
    """Each device of the node (the only one by default) as /v1/nodes shows it, by id."""
    rows = [n for n in ledger.nodes() if node is None or n["node"] == node]
    return {d["id"]: d for d in rows[0]["devices"]}


def test_a_gpu_server_with_rapl_is_one_batch_and_every_device_is_its_own() -> None:
    rows = [encode_sample(s, DeviceDicts()) for s in gpu_server_with_rapl(60)]
    (built,) = build_batches(rows, max_readings=20_000, max_raw_bytes=4 << 20)
    valid = validate(gzip.decompress(built.body("node-a", "s", 1, {})), FAR_FUTURE)
    ledger = open_ledger(now=1_700_000_100.0)
    assert ledger.ingest([valid])[0].accepted == 600
    devices = devices_of(ledger)
    assert sorted((d["kind"], d["index"]) for d in devices.values()) == [
        ("cpu", 0), ("cpu", 1), *(("gpu", i) for i in range(8))]
    # each package's counter (80 J/s) and each GPU's (make_sample: 300 + index W) went to its own
    assert devices["node-a:rapl:package-0"]["energy_j_total"] == pytest.approx(59 * 80.0)
    gpus = [d for d in devices.values() if d["kind"] == "gpu"]
    assert sorted(d["energy_j_total"] for d in gpus) == pytest.approx([59 * (300.0 + i) for i in range(8)])


def mixed_devices() -> list[dict[str, Any]]:
    return [{"id": "GPU-0", "kind": "gpu", "index": 0, "power_limit_w": 700.0},
            {"id": "feed-a", "kind": "meter", "index": 0, "role": "facility"},
            {"id": "wx-1", "kind": "sensor", "index": 0, "role": "outdoor"},
            {"id": "MIG-0", "kind": "partition", "index": 0, "parent": "GPU-0", "share": 0.5}]


def test_meters_sensors_and_partitions_add_no_it_energy_and_no_unmeasured_time(tmp_path: Path) -> None:
    ts = [T, T, T, T, T + 10, T + 10, T + 10, T + 10, T + 100, T + 100, T + 100, T + 100]
    mixed = make_batch(devices=mixed_devices(), device=[0, 1, 2, 3] * 3, ts=ts,
                       power_w=[500.0, 90e3, None, None] * 3,
                       energy_j=[1e6, 5e9, None, None, 1e6 + 5000, 5e9 + 9e5, None, None,
                                 1e6 + 50_000, 5e9 + 9e6, None, None],
                       temp_c=[60.0, None, 12.5, None] * 3)
    alone = make_batch(devices=mixed_devices()[:1], device=[0, 0, 0], ts=[T, T + 10, T + 100],
                       power_w=[500.0] * 3, energy_j=[1e6, 1e6 + 5000, 1e6 + 50_000],
                       temp_c=[60.0] * 3)
    with_others = open_ledger(db=f"sqlite:///{tmp_path}/mixed.db")
    gpu_only = open_ledger()
    with_others.ingest([mixed])
    gpu_only.ingest([alone])
    month = "2025-11"
    assert (with_others.spend(site=None, month=month, group_by="site")
            == gpu_only.spend(site=None, month=month, group_by="site"))
    shown = devices_of(with_others)
    for device in ("feed-a", "wx-1", "MIG-0"):
        assert (shown[device]["energy_j_total"], shown[device]["unmeasured_seconds_total"]) == (0.0, 0.0)
    gpu = devices_of(gpu_only)["GPU-0"]
    assert (shown["GPU-0"]["energy_j_total"], shown["GPU-0"]["unmeasured_seconds_total"]) == (
        gpu["energy_j_total"], gpu["unmeasured_seconds_total"])
    assert shown["wx-1"]["latest"]["temp_c"] == 12.5  # their latest readings are kept and shown
    with_others.close()
    stored = sqlite3.connect(tmp_path / "mixed.db").execute(
        "SELECT device, role, parent, share FROM devices ORDER BY device").fetchall()
    assert stored == [("GPU-0", None, None, None), ("MIG-0", None, "GPU-0", 0.5),
                      ("feed-a", "facility", None, None), ("wx-1", "outdoor", None, None)]


def test_allocations_are_accepted_and_change_nothing_yet() -> None:
    def two(allocations: list[dict[str, Any]]) -> list[Any]:
        return [validate(json.dumps({**b, "allocations": allocations}), NOW)
                for b in (batch(seq=1), batch(seq=2, t0=NOW - 56, e0=3000.0))]

    plain, held = open_ledger(now=NOW), open_ledger(now=NOW)
    plain.ingest(two([]))
    held.ingest(two([{"devices": [0], "from": NOW - 100, "to": None, "weight": 0.5,
                      "owner": {"namespace": "nlp", "pod": "p-1", "team": "nlp"}},
                     {"devices": [0], "from": NOW - 58, "to": NOW - 57, "owner": {"job": "7"}}]))
    assert held.spend(site=None, month=None, group_by="device") == plain.spend(site=None, month=None,
                                                                               group_by="device")
    assert held.nodes() == plain.nodes()


def events_batch(seq: int, events: list[int | None]) -> Any:
    return make_batch(seq=seq, ts=[T + 10 * seq + i for i in range(len(events))],
                      power_w=[300.0] * len(events), clock_events=events)


@pytest.mark.parametrize("bits", [ALL_BITS, 2**63, 2**53 + 1, 0x44])
def test_clock_events_are_exact_in_memory_metrics_and_across_a_restart(tmp_path: Path, bits: int) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    ledger = open_ledger(db=db, now=T + 100)
    ledger.ingest([events_batch(1, [0, bits])])
    assert ledger.nodes()[0]["devices"][0]["latest"]["clock_events"] == bits
    text = ledger.collector().render().decode()  # type: ignore[attr-defined]
    active = {line.split('reason="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("wattledger_device_clock_event_active") and line.endswith(" 1.0")}
    assert active == {reason for bit, reason in CLOCK_EVENT_REASONS if bits & bit}
    ledger.close()
    again = open_ledger(db=db, now=T + 100)
    assert again.nodes()[0]["devices"][0]["latest"]["clock_events"] == bits
    again.ingest([events_batch(2, [None])])
    assert again.nodes()[0]["devices"][0]["latest"]["clock_events"] is None  # the latest reading has none
    again.close()


def test_the_migration_makes_a_float_bitmask_exact_and_forgets_impossible_ones(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    db = sqlite3.connect(path, isolation_level=None)
    for version, statements in enumerate(MIGRATIONS[:3], start=1):  # a ledger of schema 3
        for statement in statements:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
    db.execute("INSERT INTO nodes (node, site, cluster, labels, last_seen, readings) "
               "VALUES ('n1', 'default', '', '{}', ?, 5)", (T,))
    row = ("n1", "gpu", 0, None, 700.0, None, None, T, 300.0, None, *[None] * 5, 0, 0.0, 0.0, 0, 0, 0)
    for slot, events in enumerate([float(2**70), 1.8446744073709552e19, 68.0, -4.0, None]):
        db.execute("INSERT INTO devices (slot, node, device, kind, idx, model, power_limit_w, "
                   "slowdown_c, shutdown_c, last_ts, last_power_w, last_energy_j, temp_c, mem_temp_c, "
                   "util, mem_util, sm_clock_hz, clock_events, mem_used_bytes, energy_j, unmeasured_s, "
                   "resets, anomalies, late) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                   "?, ?, ?, ?, ?, ?, ?)", (slot, "n1", f"GPU-{slot}", *row[1:15], events, *row[15:]))
    db.close()
    ledger = open_ledger(db=f"sqlite:///{path}", now=T)
    shown = devices_of(ledger)
    # 2^70, 2^64 (the float) and -4 are no bitmasks: forgotten; 68 is kept, exactly
    assert [shown[f"GPU-{i}"]["latest"]["clock_events"] for i in range(5)] == [None, None, 68, None, None]
    ledger.close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version >= 4


# ---------------------------------------------------------------------------- over HTTP


HOSTILE: dict[str, tuple[str, Any]] = {
    "seq true": ("seq", True),
    "seq as a string": ("seq", "1"),
    "slowdown_c true": ("devices.0.slowdown_c", True),
    "power_w as a string": ("readings.power_w.0", "300"),
    "power_w in a list of strings": ("readings.power_w", ["300"] * 4),
    "power_w false": ("readings.power_w.1", False),
    "index 2^63": ("devices.0.index", 2**63),
    "index 2^40": ("devices.0.index", 2**40),
    "clock_events 2^70": ("readings.clock_events", [2**70] * 4),
    "seq 2^64": ("seq", 2**64),
    # no source measures these: once booked they stayed in every sum (the CSV report was a 500)
    "power_w 1e300": ("readings.power_w", [1e300] * 4),
    "energy_j past 1e18": ("readings.energy_j", [1e3, 2e18, 3e18, 4e18]),
}


def _node_twice() -> bytes:
    text = json.dumps(batch())
    return ('{"node": "gpu-node-02", ' + text[1:]).encode()


@pytest.mark.parametrize("case", [*HOSTILE, "node twice"])
async def test_each_hostile_number_or_key_is_a_422_that_changes_nothing(tmp_path: Path, case: str) -> None:
    raw = _node_twice() if case == "node twice" else body(changed(batch(), dict([HOSTILE[case]])))
    app = create_app(settings(db=f"sqlite:///{tmp_path}/ledger.db"), clock=lambda: NOW)
    async with client(app) as c:
        refused = await c.post("/v1/batches", content=raw, headers=AUTH)
        nodes = await c.get("/v1/nodes")
        assert refused.status_code == 422, refused.text
        doc = refused.json()
        assert doc["error"] == "invalid batch" and doc["detail"]["reason"]
        assert nodes.status_code == 200 and nodes.json() == {"nodes": []}
        good = await c.post("/v1/batches", content=body(batch()), headers=AUTH)
        assert good.json() == {"accepted": 4, "duplicate": False}  # seq 1 was not taken


async def test_nodes_and_metrics_answer_after_an_all_ones_bitmask_and_a_restart(tmp_path: Path) -> None:
    s = settings(db=f"sqlite:///{tmp_path}/ledger.db")
    doc = batch()
    doc["readings"]["clock_events"] = [0, 0, 0x44, ALL_BITS]
    async with client(create_app(s, clock=lambda: NOW)) as c:
        assert (await c.post("/v1/batches", content=body(doc), headers=AUTH)).status_code == 200
        first = await c.get("/v1/nodes")
    for attempt in range(2):  # the process that took it, then a new one on the same ledger
        if attempt:
            async with client(create_app(s, clock=lambda: NOW)) as c:
                first = await c.get("/v1/nodes")
                metrics = await c.get("/metrics")
            assert metrics.status_code == 200
            assert 'reason="hw_thermal"' in metrics.text
        assert first.status_code == 200
        assert first.json()["nodes"][0]["devices"][0]["latest"]["clock_events"] == ALL_BITS


def test_an_agent_batch_keeps_its_bitmask_bit_for_bit() -> None:
    doc = orjson.loads(orjson.dumps(batch()))
    doc["readings"]["clock_events"] = [ALL_BITS, 2**63, None, 1]
    cols = validate(orjson.dumps(doc), NOW).columns
    assert cols.clock_events.dtype == np.uint64 and int(cols.clock_events[0]) == ALL_BITS


@pytest.mark.parametrize(("params", "field", "reason"), [
    ({"month": "November"}, "query.month", "must be a month written YYYY-MM, e.g. 2026-12"),
    ({"month": "2025-13"}, "query.month", "must be a month written YYYY-MM, e.g. 2026-12"),
    ({"month": "0000-01"}, "query.month", "the year must be between 1970 and 9998"),
    ({"group_by": "rack"}, "query.group_by",
     "must be one of 'site', 'cluster', 'node', 'device', 'team', 'job', 'namespace', 'account' or 'user'"),
    ({"format": "xlsx"}, "query.format", "must be one of 'json' or 'csv'"),
    ({"site": "s" * 300}, "query.site", "must be at most 256 characters"),
])
async def test_spend_query_refusals_are_plain(params: dict[str, str], field: str, reason: str) -> None:
    app = create_app(settings(), ledger=FakeLedger(), clock=lambda: NOW)
    async with client(app) as c:
        answer = await c.get("/v1/spend", params=params)
    assert answer.status_code == 422
    assert answer.json() == {"error": "invalid request", "detail": {"field": field, "reason": reason}}
