"""The spool on its own: durable append, cutting into valid batches in seq order, ack,
restart, the size bound, corrupt files, and a kill -9 in the middle of appending."""

from __future__ import annotations

import gzip
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from tests.delivery.conftest import make_devices, make_sample
from wattledger.agent.reading import DeviceReading
from wattledger.agent.spool import DeviceDicts, Spool, SpoolError, build_batches, encode_sample
from wattledger.contract import Device
from wattledger.wire import validate

FAR_FUTURE = 4e9  # the checks' "now": sample times are fixed in the past


def open_spool(tmp_path: Path, **kw: object) -> Spool:
    spool = Spool(tmp_path / "spool", node="node-a", labels={"site": "s1"}, **kw)  # type: ignore[arg-type]
    spool.open()
    return spool


def body_of(spool: Spool) -> dict[str, object]:
    batch = spool.next_batch()
    assert batch is not None
    doc: dict[str, object] = orjson.loads(gzip.decompress(batch.body))
    return doc


def drain(spool: Spool) -> list[tuple[str, int, int]]:
    """Ack every waiting batch, validating each; returns (stream, seq, readings)."""
    seen = []
    while (batch := spool.next_batch()) is not None:
        valid = validate(gzip.decompress(batch.body), FAR_FUTURE)
        assert (valid.batch.stream, valid.batch.seq) == (batch.stream, batch.seq)
        assert len(valid.columns) == batch.readings
        seen.append((batch.stream, batch.seq, batch.readings))
        spool.ack(batch)
    return seen


def test_append_cut_ack_in_seq_order(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    devs = make_devices(4)
    for k in range(3):
        spool.append(make_sample(devs, k))
    assert spool.cut() == 1
    for k in range(3, 5):
        spool.append(make_sample(devs, k))
    assert spool.cut() == 1
    assert spool.cut() == 0  # nothing open
    counts = spool.counts()
    assert (counts.batches, counts.readings, counts.open_readings) == (2, 20, 0)

    doc = body_of(spool)
    assert doc["node"] == "node-a" and doc["labels"] == {"site": "s1"} and doc["seq"] == 1
    assert [d["id"] for d in doc["devices"]] == [d.id for d in devs]  # type: ignore[attr-defined]
    readings = doc["readings"]
    assert readings["device"] == [0, 1, 2, 3] * 3  # type: ignore[index]
    assert readings["energy_j"][:4] == [1000.0, 1000.0, 1000.0, 1000.0]  # type: ignore[index]
    assert "mem_temp_c" not in readings  # type: ignore[operator]  # all-null columns are left out

    assert drain(spool) == [(spool.stream, 1, 12), (spool.stream, 2, 8)]
    assert spool.counts().batches == 0 and spool.counts().bytes == 0
    assert spool.last_success is not None


def test_restart_continues_the_stream_and_cuts_an_interrupted_batch(tmp_path: Path) -> None:
    devs = make_devices(2)
    spool = open_spool(tmp_path)
    stream = spool.stream
    spool.append(make_sample(devs, 0))
    spool.cut()
    spool.append(make_sample(devs, 1))  # left open, as a crash would leave it
    spool.close()

    again = open_spool(tmp_path)
    assert again.stream == stream
    assert again.counts().open_readings == 0  # cut at open
    assert drain(again) == [(stream, 1, 2), (stream, 2, 2)]
    again.append(make_sample(devs, 2))
    again.cut()
    assert drain(again) == [(stream, 3, 2)]


def test_batches_are_split_at_the_size_limit(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_batch_readings=6)
    devs = make_devices(4)
    full = [spool.append(make_sample(devs, k)) for k in range(4)]
    assert full == [False, True, True, True]  # 8 >= 6 readings open: the caller should cut
    spool.cut()
    sizes = [r for _, _, r in drain(spool)]
    assert sum(sizes) == 16 and max(sizes) <= 6


def test_a_clock_step_back_starts_a_new_batch_a_device_swap_does_not(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    devs = make_devices(2)
    spool.append(make_sample(devs, 10))
    spool.append(make_sample(devs, 5))  # the clock stepped back 5 s
    # a board swapped in at GPU 0's index: another device with index 0, in the same batch
    swapped = Device(id="GPU-replacement", kind="gpu", index=0, power_limit_w=700.0)
    spool.append([DeviceReading(device=swapped, ts=1_700_000_020.0, power_w=100.0)])
    spool.cut()
    seen = drain(spool)  # every batch validated
    assert [r for _, _, r in seen] == [2, 3]


def gpu_server_with_rapl(samples: int) -> list[list[DeviceReading]]:
    """8 GPUs (index 0..7) and 2 RAPL packages (index 0 and 1), one sample a second."""
    gpus = make_devices(8)
    rapl = [Device(id=f"node-a:rapl:package-{i}", kind="cpu", index=i, model="RAPL package")
            for i in range(2)]
    t0 = 1_700_000_000.0
    return [[*make_sample(gpus, k, t0), *(DeviceReading(device=d, ts=t0 + k, power_w=80.0 + i,
                                                       energy_j=1e5 + 80.0 * k)
                                          for i, d in enumerate(rapl))]
            for k in range(samples)]


def test_a_gpu_server_with_rapl_makes_one_batch_not_one_per_sample() -> None:
    # issue 16, item 1: the builder cut a batch at every clash of a GPU's and a package's
    # index (120 batches for these 60 samples); positions make that clash harmless
    rows = [encode_sample(sample, DeviceDicts()) for sample in gpu_server_with_rapl(60)]
    built = build_batches(rows, max_readings=20_000, max_raw_bytes=4 << 20)
    assert len(built) == 1 and len(built[0]) == 600
    doc = orjson.loads(gzip.decompress(built[0].body("node-a", "s", 1, {})))
    # GPUs first, in index order: a GPU's position is its index (as old collectors read it)
    assert [(d["kind"], d["index"]) for d in doc["devices"]] == [
        *(("gpu", i) for i in range(8)), ("cpu", 0), ("cpu", 1)]
    assert doc["readings"]["device"][:10] == list(range(10))
    valid = validate(orjson.dumps(doc), FAR_FUTURE)
    assert len(valid.columns) == 600


def test_a_device_whose_description_changes_keeps_one_entry_the_latest(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    gpu = make_devices(1)[0]
    capped = Device(id=gpu.id, kind="gpu", index=0, model=gpu.model, power_limit_w=450.0)
    spool.append([DeviceReading(device=gpu, ts=1_700_000_000.0, power_w=300.0)])
    spool.append([DeviceReading(device=capped, ts=1_700_000_001.0, power_w=301.0)])
    spool.cut()
    doc = body_of(spool)
    assert doc["devices"] == [capped.wire_dict()]
    assert doc["readings"]["device"] == [0, 0]  # type: ignore[index]


def test_values_the_wire_refuses_become_null_not_a_refused_batch(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    dev = make_devices(1)[0]
    spool.append([DeviceReading(device=dev, ts=1_700_000_000.0, power_w=float("nan"), energy_j=-1.0,
                                util=1.5, temp_c=float("inf"), mem_util=0.5)])
    spool.cut()
    doc = body_of(spool)
    readings = doc["readings"]
    assert readings["power_w"] == [None] and readings["mem_util"] == [0.5]  # type: ignore[index]
    assert "energy_j" not in readings and "util" not in readings  # type: ignore[operator]
    assert len(drain(spool)) == 1


def test_a_full_spool_drops_the_oldest_batches_and_counts_them(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    spool = open_spool(tmp_path, max_bytes=6000)
    devs = make_devices(8)
    taken = 0
    with caplog.at_level(logging.ERROR, logger="wattledger.agent.spool"):
        for k in range(60):
            spool.append(make_sample(devs, k))
            taken += 8
            spool.cut()
            assert spool.counts().bytes <= 6000
    counts = spool.counts()
    assert spool.dropped_readings > 0
    assert counts.readings + spool.dropped_readings == taken  # every reading kept or counted
    seen = drain(spool)
    assert seen[0][1] > 1 and [s for _, s, _ in seen] == sorted(s for _, s, _ in seen)  # the oldest went
    assert any("spool full" in r.getMessage() for r in caplog.records)


def test_dead_letters_are_kept_and_counted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    devs = make_devices(2)
    for k in range(2):
        spool.append(make_sample(devs, k))
        spool.cut()
    first = spool.next_batch()
    assert first is not None
    spool.dead_letter(first, 422, "HTTP 422: invalid batch")
    assert spool.dead_letters() == [(spool.stream, 1, 2, 422, "HTTP 422: invalid batch")]
    assert spool.dead_lettered_batches == 1 and spool.counts().dead_letters == 1
    assert [s for _, s, _ in drain(spool)] == [2]


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    spool = open_spool(tmp_path)
    old_stream = spool.stream
    spool.close()
    (tmp_path / "spool" / "spool.db").write_bytes(b"this is not an SQLite file at all" * 200)
    for extra in ("spool.db-wal", "spool.db-shm"):
        (tmp_path / "spool" / extra).unlink(missing_ok=True)
    with caplog.at_level(logging.ERROR):
        again = open_spool(tmp_path)
    assert again.corruptions == 1 and again.stream != old_stream
    assert [p.name for p in (tmp_path / "spool").glob("spool.db.corrupt-*")]
    assert any("damaged" in r.getMessage() for r in caplog.records)
    again.append(make_sample(make_devices(1), 0))
    again.cut()
    assert drain(again) == [(again.stream, 1, 1)]


def test_a_damaged_page_rotates_the_spool_and_salvages_what_is_readable(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    old_stream = spool.stream
    devs = make_devices(8)
    for k in range(40):
        spool.append(make_sample(devs, k))
        spool.cut()
    spool.close()
    path = tmp_path / "spool" / "spool.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle:middle + page] = b"\xa5" * page  # one page of the batches table is now garbage
    path.write_bytes(bytes(data))

    again = open_spool(tmp_path)
    assert again.corruptions == 1 and again.stream != old_stream
    seen = drain(again)  # whatever was salvaged is valid and keeps its original stream and seq
    assert all(stream == old_stream for stream, _, _ in seen)
    assert len(seen) <= 40 and len({s for _, s, _ in seen}) == len(seen)


def test_a_second_agent_cannot_share_a_spool(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another agent"):
        open_spool(tmp_path)
    spool.close()
    open_spool(tmp_path).close()  # free again once the first one closed


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from tests.delivery.conftest import make_devices, make_sample
    from wattledger.agent.spool import Spool
    spool = Spool(Path(sys.argv[1]), node="node-a", labels={}, max_batch_readings=40)
    spool.open()
    devs = make_devices(4)
    k = 0
    while True:
        if spool.append(make_sample(devs, k)):
            spool.cut()
        k += 1
        print(k, flush=True)  # sample k is durable once this line is out
""")


def test_kill_9_while_appending_loses_at_most_the_sample_in_progress(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "spool")], cwd=root,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert child.stdout is not None
    durable = 0
    for line in child.stdout:
        durable = int(line)
        if durable >= 150:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    spool = open_spool(tmp_path)
    seen = drain(spool)
    kept = sum(r for _, _, r in seen) // 4
    assert durable <= kept <= durable + 1  # every confirmed sample, and at most the one in flight
    assert [s for _, s, _ in seen] == list(range(1, len(seen) + 1))
