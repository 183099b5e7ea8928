"""The hand-over of a batch from the spool to the shipper (issue 16, item 10): once
``next_batch`` has given the shipper a batch, the spool's trim (a full spool during an outage)
never drops it, so no reading is counted both dropped and shipped.

Invariant held by both tests: readings taken == readings the collector committed + readings
the spool dropped + readings still spooled, and no batch is both dropped and committed."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest

from tests.delivery.conftest import FakeCollector, make_sample
from tests.delivery.test_shipper import DEVICES, make_delivery, spool_batches
from wattledger.agent.delivery import Delivery
from wattledger.agent.spool import Spool, SpooledBatch

DROPPED = re.compile(r"dropped batch (\S+)/(\d+) with")


def dropped_batches(caplog: pytest.LogCaptureFixture) -> set[tuple[str, int]]:
    """(stream, seq) of every batch the spool logged as dropped."""
    found = (DROPPED.search(r.getMessage()) for r in caplog.records)
    return {(m.group(1), int(m.group(2))) for m in found if m}


def assert_every_reading_once(delivery: Delivery, collector: FakeCollector, taken: int,
                              caplog: pytest.LogCaptureFixture) -> None:
    spool = delivery.spool
    counts = spool.counts()
    with collector.lock:
        committed = sum(collector.committed.values())
        both = dropped_batches(caplog) & set(collector.committed)
    assert not both, f"batches counted dropped and shipped: {sorted(both)}"
    assert committed + spool.dropped_readings + counts.readings + counts.open_readings == taken
    assert delivery.shipper.shipped_readings == committed


def test_trim_between_next_batch_and_send_spares_the_batch_being_sent(
        tmp_path: Path, collector: FakeCollector, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic: the sampler cuts a batch into a full spool in the very window between the
    shipper's ``next_batch`` and its POST (a hook runs the cut on the sampler's side, in its
    own thread, right after ``next_batch`` returned)."""
    delivery = make_delivery(tmp_path, collector.url)
    taken = spool_batches(delivery, range(3))
    spool = delivery.spool
    full = spool.counts().bytes
    spool.max_bytes = full + full // 6  # room for 3.5 batches: a 4th trims one
    real_next = spool.next_batch
    handed: list[SpooledBatch] = []

    def next_then_sampler_cuts() -> SpooledBatch | None:
        batch = real_next()
        if batch is not None and not handed:
            handed.append(batch)

            def sampler() -> None:
                delivery.record(make_sample(DEVICES, 3))
                delivery._cut()

            cutting = threading.Thread(target=sampler)
            cutting.start()
            cutting.join(10)
        return batch

    monkeypatch.setattr(spool, "next_batch", next_then_sampler_cuts)
    taken += len(DEVICES)
    with caplog.at_level(logging.ERROR, logger="wattledger.agent.spool"):
        delivery.start()
        assert collector.wait_for(3 * len(DEVICES))  # 4 batches spooled, one dropped
        stats = delivery.stop(timeout=5)
    assert handed and handed[0].seq == 1
    assert spool.dropped_readings == len(DEVICES)
    dropped = dropped_batches(caplog)
    assert dropped == {(spool.stream, 2)}, "the trim must drop the oldest batch not being sent"
    assert stats.spooled_readings == 0
    assert sorted(seq for _, seq in collector.committed) == [1, 3, 4]
    assert_every_reading_once(delivery, collector, taken, caplog)


def test_sampler_and_shipper_hammering_a_full_spool(tmp_path: Path, collector: FakeCollector,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The sampler cuts one batch per sample into a spool that holds about three, while the
    shipper sends as fast as the collector answers: whatever the interleaving, every reading
    is committed, dropped or still spooled, exactly once."""
    delivery = make_delivery(tmp_path, collector.url)
    spool_batches(delivery, range(1))
    delivery.spool.max_bytes = 3 * delivery.spool.counts().bytes + 1
    taken = len(DEVICES)
    with caplog.at_level(logging.ERROR, logger="wattledger.agent.spool"):
        delivery.start()
        taken += spool_batches(delivery, range(1, 400))
        delivery.stop(timeout=5)
    assert_every_reading_once(delivery, collector, taken, caplog)


def test_the_spool_spares_the_handed_batch_until_it_is_settled(tmp_path: Path) -> None:
    """The spool's side alone: next_batch marks, release hands back, ack settles."""
    spool = Spool(tmp_path / "spool", node="node-a", labels={})
    spool.open()
    for k in range(3):
        spool.append(make_sample(DEVICES, k))
        spool.cut()
    first = spool.next_batch()
    assert first is not None and spool.in_flight == (spool.stream, 1)
    full = spool.counts().bytes
    spool.max_bytes = full + full // 6  # room for 3.5 batches: a 4th trims one
    spool.append(make_sample(DEVICES, 3))
    spool.cut()
    assert spool.in_flight == (spool.stream, 1)
    assert [seq for _, seq in waiting(spool)] == [1, 3, 4]  # the second went, not the first
    spool.release(first)
    assert spool.in_flight is None
    spool.append(make_sample(DEVICES, 4))
    spool.cut()
    assert 1 not in [seq for _, seq in waiting(spool)]  # handed back: now it may be dropped
    again = spool.next_batch()
    assert again is not None and spool.in_flight == (again.stream, again.seq)
    spool.ack(again)
    assert spool.in_flight is None
    assert spool.dropped_readings + spool.counts().readings + again.readings == 5 * len(DEVICES)


def waiting(spool: Spool) -> list[tuple[str, int]]:
    rows = spool._db().execute("SELECT stream, seq FROM batches ORDER BY id").fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]
