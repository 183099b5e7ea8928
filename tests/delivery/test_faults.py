"""Fault injection with the real processes on loopback: the collector down for 30 s, answers
lost after the commit, the agent killed with unacknowledged batches, the collector killed
mid-stream, a full spool, a corrupt spool, an agent failing over between several collectors.
Each checks that the ledger holds exactly the
readings taken and exactly the energy the simulated GPUs drew (docs/delivery.md)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.delivery.e2e import Agent, Collector, Proxy, metric_sum, spool_contents, wait_until
from tests.loopback import free_port

# the bound of the slowest test if each of its waits ran to its deadline on a loaded machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NODE, TOKEN = "e2e-node", "e2e-token"
#: the outage of the "collector down" test (the issue asks for 30 s)
DOWN_SECONDS = 30.0


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path, {NODE: TOKEN})
    c.start()
    yield c
    c.cleanup()


@pytest.fixture
def proxy(collector: Collector) -> Iterator[Proxy]:
    p = Proxy(collector.port)
    yield p
    p.close()


@pytest.fixture
def cleanup() -> Iterator[list[Agent]]:
    agents: list[Agent] = []
    yield agents
    for a in agents:
        a.cleanup()


def agent_at(tmp_path: Path, url: str, cleanup: list[Agent], **kw: object) -> Agent:
    a = Agent(tmp_path, NODE, url, TOKEN, **kw)  # type: ignore[arg-type]
    cleanup.append(a)
    return a


def readings_grow(agent: Agent, by: float) -> None:
    """Let the agent take ``by`` more readings (no wall-clock sleeps to tune)."""
    start = agent.metric("wattledger_agent_readings_total")
    wait_until(f"{by:.0f} more readings",
               lambda: agent.metric("wattledger_agent_readings_total") >= start + by)


def assert_energy(collector: Collector, agent: Agent, runs_last: list[dict[str, float]]) -> None:
    """Ledger energy per device == the sum over the agent's runs of (last - first counter)."""
    start = agent.start_counters()
    devices = {d["id"]: d for d in collector.node(NODE)["devices"]}
    assert set(devices) == set(start)
    for dev_id, c0 in start.items():
        truth = sum(last[dev_id] - c0 for last in runs_last)
        assert devices[dev_id]["energy_j_total"] == pytest.approx(truth, abs=0.01), dev_id
        assert devices[dev_id]["counter_resets_total"] == 0 or len(runs_last) > 1


def final_counters(collector: Collector) -> dict[str, float]:
    """The last counter of each device, as the final (gracefully stopped) run sent it."""
    return {d["id"]: d["latest"]["energy_j"] for d in collector.node(NODE)["devices"]}


def stop_and_check_ledger(agent: Agent, collector: Collector) -> None:
    """Stop the agent (one run, nothing dropped): every reading it took is in the ledger
    once, nothing is left spooled, and the energy is the simulator's."""
    readings, shipped, spooled = agent.stop()
    assert spooled == 0 and shipped == readings
    assert collector.readings(NODE) == readings
    assert_energy(collector, agent, [final_counters(collector)])


# ---------------------------------------------------------------------------- the tests


def test_collector_down_for_30_seconds(tmp_path: Path, collector: Collector, cleanup: list[Agent]) -> None:
    agent = agent_at(tmp_path, collector.url, cleanup)
    agent.start()
    readings_grow(agent, 8)
    assert collector.signal(signal.SIGTERM) == 0
    time.sleep(DOWN_SECONDS)  # the outage itself; nothing is asserted about time
    assert agent.metric("wattledger_agent_spool_batches") > 0
    assert agent.metric("wattledger_agent_shipped_batches_total", outcome="retry") > 0
    collector.start()
    wait_until("the backlog to drain", lambda: agent.metric("wattledger_agent_spool_batches") <= 1,
               timeout=60)
    stop_and_check_ledger(agent, collector)


def test_answers_lost_after_the_commit(tmp_path: Path, collector: Collector, proxy: Proxy,
                                       cleanup: list[Agent]) -> None:
    proxy.mode, proxy.swallow_every = "swallow", 2
    agent = agent_at(tmp_path, proxy.url, cleanup)
    agent.start()
    wait_until("answers to be swallowed", lambda: proxy.swallowed >= 3)
    stop_and_check_ledger(agent, collector)  # each re-sent batch counted once
    assert metric_sum(collector.metrics(), "wattledger_ingest_batches_total", outcome="duplicate") >= 3


def test_agent_kill_9_with_unacknowledged_batches_then_restart(tmp_path: Path, collector: Collector,
                                                               proxy: Proxy, cleanup: list[Agent]) -> None:
    agent = agent_at(tmp_path, proxy.url, cleanup)
    agent.start()
    wait_until("the first batches to land", lambda: collector.readings(NODE) > 0)
    proxy.mode = "refuse"  # from here on nothing is acknowledged (nor committed)
    readings_grow(agent, 12)
    agent.kill()
    # (a restart can be quicker than max_gap_seconds; the collector would then bridge the
    # gap with a trapezoid the simulator never drew, and the energy would not be comparable)
    time.sleep(1.0)
    committed = collector.readings(NODE)
    waiting, last_of_killed_run = spool_contents(agent.spool)
    assert waiting >= 12 and committed > 0

    proxy.mode = "forward"
    agent.start()  # same spool: the killed run's batches go first
    readings, shipped, spooled = agent.stop()
    assert spooled == 0 and shipped == readings + waiting
    assert collector.readings(NODE) == committed + waiting + readings
    assert_energy(collector, agent, [last_of_killed_run, final_counters(collector)])


def test_collector_kill_9_mid_stream(tmp_path: Path, collector: Collector, cleanup: list[Agent]) -> None:
    agent = agent_at(tmp_path, collector.url, cleanup, interval=0.2, batch_seconds=0.4)
    agent.start()
    for _ in range(2):
        readings_grow(agent, 10)
        collector.signal(signal.SIGKILL)
        collector.start()
    readings_grow(agent, 10)
    stop_and_check_ledger(agent, collector)


def test_a_full_spool_drops_the_oldest_batches_counted(tmp_path: Path, collector: Collector, proxy: Proxy,
                                                       cleanup: list[Agent]) -> None:
    agent = agent_at(tmp_path, proxy.url, cleanup, interval=0.2, batch_seconds=0.4,
                     extra=("--spool-max-bytes", "6KiB"))
    agent.start()
    wait_until("the first batches to land", lambda: collector.readings(NODE) > 0)
    proxy.mode = "refuse"
    wait_until("the spool to drop readings",
               lambda: agent.metric("wattledger_agent_dropped_readings_total") >= 20)
    proxy.mode = "forward"
    wait_until("the backlog to drain", lambda: agent.metric("wattledger_agent_spool_batches") <= 1)
    dropped = agent.metric("wattledger_agent_dropped_readings_total")
    assert agent.metric("wattledger_agent_spool_bytes") <= 6 * 1024
    readings, shipped, spooled = agent.stop()
    assert spooled == 0
    assert collector.readings(NODE) == readings - dropped == shipped
    assert "spool full" in agent.text()
    # the counter bridges what was dropped: the energy is still all there
    assert_energy(collector, agent, [final_counters(collector)])


def test_a_corrupt_spool_is_moved_aside_and_a_new_stream_started(tmp_path: Path, collector: Collector,
                                                                 cleanup: list[Agent]) -> None:
    agent = agent_at(tmp_path, collector.url, cleanup)
    agent.spool.mkdir()
    (agent.spool / "spool.db").write_bytes(b"\x00garbage, not SQLite\x00" * 512)
    agent.start()
    readings_grow(agent, 6)
    assert agent.metric("wattledger_agent_spool_corruptions_total") == 1
    stop_and_check_ledger(agent, collector)
    assert list(agent.spool.glob("spool.db.corrupt-*"))
    assert "is damaged" in agent.text()


def test_failover_between_collectors(tmp_path: Path, collector: Collector, proxy: Proxy,
                                     cleanup: list[Agent]) -> None:
    """Three collectors, in this order: a port with nothing listening, a second endpoint of the
    same ledger (the proxy: a replica, as issue 11 has them on one database), the collector.
    The proxy first loses an answer after the commit (the batch is re-sent to the collector,
    answered duplicate), then answers 503 while the collector is killed -9 and restarted."""
    down = f"http://127.0.0.1:{free_port()}"
    proxy.mode = "swallow"
    agent = agent_at(tmp_path, f"{down},{proxy.url}", cleanup, extra=("--collector", collector.url))
    agent.start()
    wait_until("the batch whose answer was lost to be re-sent",
               lambda: agent.metric("wattledger_agent_shipped_batches_total", outcome="duplicate") >= 1)
    readings_grow(agent, 8)
    m = agent.metrics()
    assert proxy.swallowed == 1  # sticky: once the collector answered, everything went there
    assert metric_sum(m, "wattledger_agent_collector_up", collector=down) == 0
    assert metric_sum(m, "wattledger_agent_collector_active", collector=collector.url) == 1
    assert metric_sum(m, "wattledger_agent_collector_active") == 1
    assert metric_sum(m, "wattledger_agent_collector_failovers_total") >= 2
    assert metric_sum(collector.metrics(), "wattledger_ingest_batches_total", outcome="duplicate") >= 1

    proxy.mode = "unavailable"
    collector.signal(signal.SIGKILL)
    wait_until("the agent to try every collector",
               lambda: proxy.unavailable >= 1
               and agent.metric("wattledger_agent_collector_up", collector=collector.url) == 0)
    collector.start()
    wait_until("the backlog to drain", lambda: agent.metric("wattledger_agent_spool_batches") <= 1,
               timeout=90)
    assert agent.metric("wattledger_agent_collector_up", collector=proxy.url) == 0
    stop_and_check_ledger(agent, collector)
