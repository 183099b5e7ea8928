"""Allocations in the spool: stored with the sample, carried by every batch whose devices' spans
they overlap (positions, not ids), across restarts, pruned when no batch can need them; and a
spool of an older agent (batches naming devices by index) upgraded without losing a batch."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from tests.agent.held_source import HeldSource
from tests.delivery.conftest import make_devices, make_sample
from tests.delivery.test_spool import FAR_FUTURE, drain, open_spool
from wattledger.agent.allocations import Allocation, AllocationTracker
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sampler import Sampler
from wattledger.agent.spool import SPOOL_VERSION, Spool
from wattledger.contract import Device
from wattledger.wire import validate

T0 = 1_700_000_000.0
GPUS = make_devices(2)


def bodies(spool: Spool) -> list[dict[str, Any]]:
    """Every waiting batch, checked by the collector's own validation, then acknowledged."""
    out = []
    while (batch := spool.next_batch()) is not None:
        raw = gzip.decompress(batch.body)
        validate(raw, FAR_FUTURE)
        out.append(orjson.loads(raw))
        spool.ack(batch)
    return out


def job(key: str, start: float, end: float | None = None, *devices: str, weight: float = 1.0) -> Allocation:
    return Allocation("slurm", key, devices or (GPUS[0].id,), {"job": key}, weight, start, end)


def owners(doc: dict[str, Any]) -> list[tuple[str, list[int], float, float | None]]:
    return [(a["owner"]["job"], a["devices"], a["from"], a["to"]) for a in doc.get("allocations", [])]


def test_an_allocation_spanning_three_batches_is_in_each_with_its_end_once_known(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(make_sample(GPUS, 0), [job("j1", T0 + 0.5, None, GPUS[1].id)])
    for k in range(1, 3):
        spool.append(make_sample(GPUS, k))
    spool.cut()
    for k in range(3, 6):
        spool.append(make_sample(GPUS, k))
    spool.cut()
    spool.append(make_sample(GPUS, 6), [job("j1", T0 + 0.5, T0 + 6.5, GPUS[1].id)])
    spool.append(make_sample(GPUS, 7))
    spool.cut()
    got = [owners(doc) for doc in bodies(spool)]
    assert got == [[("j1", [1], T0 + 0.5, None)], [("j1", [1], T0 + 0.5, None)],
                   [("j1", [1], T0 + 0.5, T0 + 6.5)]]
    spool.append(make_sample(GPUS, 8))
    spool.cut()
    assert owners(bodies(spool)[0]) == []  # GPU 1's span (7, 8] is past its end
    assert spool.open_allocations()[0] == []  # no later batch can need it: pruned


def test_an_end_learnt_after_the_batch_that_carried_it_open_is_carried_by_the_next(tmp_path: Path) -> None:
    # j3 was last listed at the sample of 2 s, the last reading of batch 1 (cut before the next
    # sample): batch 1 carried it open up to 2 s; the sample of 3 s learns that it ended at 2 s.
    # No later span (2, ...] overlaps it, yet the collector must learn the job's end: batch 2
    # carries it once, then it is pruned
    spool = open_spool(tmp_path)
    spool.append(make_sample(GPUS, 0), [job("j3", T0 - 10)])
    for k in range(1, 3):
        spool.append(make_sample(GPUS, k))
    spool.cut()
    spool.append(make_sample(GPUS, 3), [job("j3", T0 - 10, T0 + 2)])
    spool.cut()
    spool.append(make_sample(GPUS, 4))
    spool.cut()
    got = [owners(doc) for doc in bodies(spool)]
    assert got == [[("j3", [0], T0 - 10, None)], [("j3", [0], T0 - 10, T0 + 2)], []]
    assert spool.open_allocations()[0] == []


def test_an_end_before_the_cut_waits_for_a_device_that_has_not_reported_past_it(tmp_path: Path) -> None:
    # j4 holds GPU 0 and a GPU that has not reported since before its end: that GPU's next
    # span will carry it; GPU 0's batches after its end do not
    spool = open_spool(tmp_path)
    both = job("j4", T0 - 10, None, GPUS[0].id, "GPU-silent")
    spool.append(make_sample(GPUS, 0), [both])
    spool.cut()
    spool.append(make_sample(GPUS, 1), [job("j4", T0 - 10, T0 + 0.0, GPUS[0].id, "GPU-silent")])
    spool.cut()
    first, second = bodies(spool)
    assert owners(first) == [("j4", [0], T0 - 10, None)] and owners(second) == []
    assert [a.key for a in spool.open_allocations()[0]] == ["j4"]


def test_a_devices_span_begins_at_its_reading_in_the_previous_batch(tmp_path: Path) -> None:
    # j2 held GPU 0 from 2.2 to 2.8 s: between its reading at 2 s (the last of batch 1) and its
    # reading at 3 s (the first of batch 2): the interval (2, 3] is in batch 2, and so is j2
    spool = open_spool(tmp_path)
    for k in range(3):
        spool.append(make_sample(GPUS, k))
    spool.cut()
    spool.append(make_sample(GPUS, 3), [job("j2", T0 + 2.2, T0 + 2.8)])
    spool.append(make_sample(GPUS, 4))
    spool.cut()
    first, second = bodies(spool)
    assert owners(first) == [] and owners(second) == [("j2", [0], T0 + 2.2, T0 + 2.8)]


def test_ids_become_positions_and_devices_not_in_the_batch_are_left_out(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    rapl = Device(id="node-a:rapl:package-0", kind="cpu", index=0)
    readings = [DeviceReading(device=rapl, ts=T0, power_w=50.0), *make_sample(GPUS, 0)]
    later = [DeviceReading(device=rapl, ts=T0 + 1, power_w=50.0), *make_sample(GPUS, 1)]
    both = Allocation("k8s", "pod", (GPUS[1].id, "GPU-elsewhere", GPUS[0].id), {"pod": "p"}, 0.5, T0 - 5)
    spool.append(readings, [both])
    spool.append(later)
    spool.cut()
    (doc,) = bodies(spool)
    assert [d["id"] for d in doc["devices"]] == [GPUS[0].id, GPUS[1].id, rapl.id]  # GPUs first
    assert doc["allocations"] == [{"devices": [0, 1], "from": T0 - 5, "to": None, "weight": 0.5,
                                   "owner": {"pod": "p"}}]


def test_allocations_and_spans_survive_a_restart_and_the_tracker_takes_them_up(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(make_sample(GPUS, 0), [job("j1", T0 - 30)])
    spool.append(make_sample(GPUS, 1))
    spool.close()  # as a crash leaves it: the open samples and j1 are on disk

    again = open_spool(tmp_path)  # cuts the interrupted batch at open
    held, last_seen = again.open_allocations()
    assert [(a.key, a.start, a.end) for a in held] == [("j1", T0 - 30, None)] and last_seen == T0 + 1
    tracker = AllocationTracker()
    tracker.resume(held, last_seen, sources=["slurm"])
    slurm = HeldSource("slurm")
    sampler = Sampler([slurm], on_readings=lambda rs, allocs: again.append(rs, allocs))
    sampler.allocations = tracker
    sampler.open()
    sampler.sample(T0 + 2)  # j1 is no longer listed: it ends where it was last seen
    assert [(a.key, a.end) for a in again.open_allocations()[0]] == [("j1", T0 + 1)]
    again.append(make_sample(GPUS, 3))
    again.cut()
    first, second = bodies(again)
    assert owners(first) == [("j1", [0], T0 - 30, None)]  # cut at open, while j1 was held
    # (1, 3] is after j1's end, but the first batch carried it open up to 1 s: the second
    # carries its end, so the collector learns that j1 ended
    assert owners(second) == [("j1", [0], T0 - 30, T0 + 1)]
    assert again.open_allocations()[0] == []


def test_an_older_spool_is_upgraded_its_batches_named_by_position(tmp_path: Path) -> None:
    # an agent before positions cut this: GPUs 1 and 3 (GPU 0 and 2 were absent), named by index
    spool = open_spool(tmp_path)
    spool.close()
    db = sqlite3.connect(tmp_path / "spool" / "spool.db", isolation_level=None)
    old_doc = {"node": "node-a", "stream": "old-stream", "seq": 7, "labels": {},
               "devices": [{"id": "GPU-b", "kind": "gpu", "index": 1},
                           {"id": "GPU-d", "kind": "gpu", "index": 3}],
               "readings": {"device": [1, 3, 1, 3], "ts": [T0, T0, T0 + 1, T0 + 1],
                            "power_w": [100.0, 300.0, 101.0, 301.0]}}
    # ... and this, whose indexes are its positions already (0): it is left as it was
    same_doc = {**old_doc, "seq": 8, "devices": [{"id": "GPU-a", "kind": "gpu", "index": 0}],
                "readings": {"device": [0], "ts": [T0 + 2], "power_w": [1.0]}}
    for doc in (old_doc, same_doc):
        body = gzip.compress(orjson.dumps(doc))
        db.execute("INSERT INTO batches (stream, seq, readings, bytes, first_ts, last_ts, body) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", ("old-stream", doc["seq"], len(doc["readings"]["ts"]),
                                                    len(body), T0, T0 + 1, body))
    db.execute("PRAGMA user_version = 0")
    db.close()

    upgraded = open_spool(tmp_path)
    assert upgraded.counts().batches == 2
    moved, kept = bodies(upgraded)
    assert moved["readings"]["device"] == [0, 1, 0, 1]  # GPU-b and GPU-d, their power intact
    assert moved["readings"]["power_w"] == old_doc["readings"]["power_w"]
    assert kept["readings"] == same_doc["readings"]
    version = sqlite3.connect(tmp_path / "spool" / "spool.db").execute("PRAGMA user_version").fetchone()[0]
    assert version == SPOOL_VERSION


def test_the_collector_accepts_every_batch_a_tracker_fed_spool_cuts(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_batch_readings=5)
    slurm = HeldSource("slurm")
    sim_devices = make_devices(3)

    class Hardware:
        name = "fake-gpus"

        def open(self) -> None: ...

        def close(self) -> None: ...

        def sample(self, ts: float) -> Any:
            from wattledger.agent.sources.base import SourceSample
            return SourceSample(readings=make_sample(sim_devices, int(ts - T0)))

    sampler = Sampler([Hardware(), slurm], on_readings=lambda rs, allocs: spool.append(rs, allocs))
    sampler.open()
    for k in range(12):
        if k == 2:
            slurm.hold("a", sim_devices[0].id, sim_devices[1].id, weight=0.5)
            slurm.hold("b", sim_devices[0].id, weight=0.5, since=T0 - 100)
        if k == 7:
            slurm.release("a")
        sampler.sample(T0 + k)
    spool.cut()
    seen = drain(spool)
    assert sum(r for _, _, r in seen) == 36 and len(seen) > 3  # every batch valid (drain checks)
