"""A fleet reconnecting at once: 200 agents' streams, each with a backlog, pushing into one
real collector whose ingest limits are small. The collector must answer 429 with Retry-After
(not fall over, not grow without bound), and every reading must land exactly once.

The 200 streams are 200 real Delivery instances (spool, shipper thread, HTTP connection) in
this process rather than 200 agent processes: the machine has two cores."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.delivery.e2e import Collector, metric_sum, wait_until
from wattledger.agent.delivery import Delivery
from wattledger.agent.reading import DeviceReading
from wattledger.agent.shipper import Outcome
from wattledger.contract import Device

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

STREAMS = 200
BATCHES = 5  # backlog per stream
SAMPLES = 5  # per batch
GPUS = 2
Truth = dict[str, dict[str, tuple[float, float]]]  # node -> device -> (first, last) counter


def backlog(delivery: Delivery, node: str, t0: float) -> dict[str, tuple[float, float]]:
    """Spool BATCHES batches of SAMPLES samples; (first, last) energy counter per device."""
    devices = [Device(id=f"GPU-{node}-{i}", kind="gpu", index=i, power_limit_w=700.0)
               for i in range(GPUS)]
    counters = {d.id: 1000.0 * (d.index + 1) for d in devices}
    first: dict[str, float] = {}  # the counter of each device's first reading
    k = 0
    for _ in range(BATCHES):
        readings = []
        for _ in range(SAMPLES):  # one record() per batch (fewer fsyncs; the spool takes any count)
            for d in devices:
                power = 300.0 + 10.0 * d.index + (k % 7)
                counters[d.id] += power  # 1 s apart
                first.setdefault(d.id, counters[d.id])
                readings.append(DeviceReading(device=d, ts=t0 + k, power_w=power, energy_j=counters[d.id]))
            k += 1
        delivery.record(readings)
        delivery._cut()  # a batch per loop (the backlog's batches were cut while offline)
    return {dev: (first[dev], counters[dev]) for dev in counters}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Collector, list[Delivery], Truth]]:
    nodes = [f"flood-{i:03d}" for i in range(STREAMS)]
    collector = Collector(tmp_path, {n: f"tok-{n}" for n in nodes}, max_queue_batches=8,
                          max_pending_bytes=64 * 1024, max_gap_seconds=30)
    deliveries: list[Delivery] = []
    truth: Truth = {}
    t0 = time.time() - 3600.0
    try:
        for n in nodes:  # spooled while the collector is down
            d = Delivery(spool_dir=tmp_path / "spools" / n, collector_url=collector.url, token=f"tok-{n}",
                         node=n, labels={}, batch_seconds=3600.0, backoff_base=0.2, backoff_cap=2.0)
            deliveries.append(d)
            truth[n] = backlog(d, n, t0)
        collector.start()
        yield collector, deliveries, truth
    finally:
        for d in deliveries:
            d.stop(timeout=0)
        collector.cleanup()


def test_200_streams_reconnect_at_once_with_backlogs(
        fleet: tuple[Collector, list[Delivery], Truth]) -> None:
    collector, deliveries, truth = fleet
    assert collector.proc is not None
    rss_before = psutil.Process(collector.proc.pid).memory_info().rss
    for d in deliveries:  # everyone at once
        d.start()
    wait_until("every backlog to be delivered",
               lambda: all(d.spool.counts().batches == 0 for d in deliveries), timeout=180, every=0.5)

    metrics = collector.metrics()
    assert httpx.get(f"{collector.url}/healthz", timeout=5).is_success
    overloaded = metric_sum(metrics, "wattledger_ingest_batches_total", outcome="overloaded")
    assert overloaded > 0  # back-pressure was used, not a crash or a timeout
    assert sum(d.shipper.outcomes[Outcome.RETRY] for d in deliveries) >= overloaded
    assert metric_sum(metrics, "wattledger_ingest_batches_total", outcome="error") == 0
    assert sum(d.shipper.outcomes[Outcome.DEAD_LETTER] for d in deliveries) == 0
    rss_after = psutil.Process(collector.proc.pid).memory_info().rss
    assert rss_after - rss_before < 200 * 2**20  # bounded: no per-waiting-request buffering

    per_node = BATCHES * SAMPLES * GPUS
    assert metric_sum(metrics, "wattledger_ingest_readings_total") == STREAMS * per_node
    for d in deliveries[:: STREAMS // 20]:  # every reading once, energy exact (a sample of nodes)
        node = collector.node(d.node)
        assert node["readings_total"] == per_node
        for dev in node["devices"]:
            first, last = truth[d.node][dev["id"]]
            assert dev["energy_j_total"] == pytest.approx(last - first, abs=1e-6)
    energy = {k: v for k, v in metrics.items() if k.startswith("wattledger_device_energy_joules_total{")}
    assert len(energy) == STREAMS * GPUS
    assert sum(energy.values()) == pytest.approx(
        sum(last - first for devs in truth.values() for first, last in devs.values()))
