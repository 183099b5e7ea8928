"""PostgreSQL restarted under load: two replicas, real agents (``--simulate``) given both URLs.

While the database is down the replicas answer pushes and reads 503 (never hang: within the
pool's timeout; never a 500) and /readyz says why; the agents keep their batches spooled and send them again;
once it is back, everything the agents took is in the ledger, once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpkit import Collector_, start_collector

from tests.delivery.e2e import Agent, metric_sum, scrape, wait_until
from tests.pgserver import PgServer, require_server_binaries

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

NODES = ("gpu-a", "gpu-b")
TOKENS = {node: f"tok-{node}" for node in NODES}


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A PostgreSQL of this test's own (it is stopped and started; the session's is not)."""
    require_server_binaries()  # skips without them; fails under CI, which has them
    server = PgServer().start()
    try:
        yield server
    finally:
        server.destroy()


def test_postgresql_restarted_under_load_loses_nothing(own_server: PgServer, tmp_path: Path) -> None:
    db = own_server.new_database()
    config = {"db": db, "tokens": TOKENS, "metrics_refresh_seconds": 0.5, "refresh_interval_seconds": 1,
              "stale_after_seconds": 3600, "max_gap_seconds": 0.5}
    replicas: list[Collector_] = [start_collector(tmp_path, config, name=f"replica-{i}") for i in range(2)]
    urls = ",".join(r.url for r in replicas)
    agents = [Agent(tmp_path, node, urls, TOKENS[node], gpus=2, interval=0.25, batch_seconds=0.5)
              for node in NODES]
    try:
        for agent in agents:
            agent.start()
        wait_until("batches in the ledger", lambda: metric_sum(
            scrape(f"{replicas[0].url}/metrics"), "wattledger_ingest_readings_total") > 20)

        own_server.stop("immediate")  # a crash: it recovers from its WAL at the next start
        started = time.monotonic()
        answer = httpx.post(f"{replicas[1].url}/v1/batches", content=b"{}", timeout=30,
                            headers={"Authorization": "Bearer tok-gpu-a", "Content-Type": "application/json"})
        assert answer.status_code in (400, 422, 503)  # (a body that is no batch never needs the database)
        probe = (b'{"node": "gpu-a", "stream": "probe", "seq": 1, "devices": [{"id": "GPU-p", "kind": "gpu", '
                 b'"index": 0}], "readings": {"device": [0], "ts": [%d], "power_w": [1]}}' % int(time.time()))
        answer = httpx.post(f"{replicas[1].url}/v1/batches", content=probe, timeout=30,
                            headers={"Authorization": "Bearer tok-gpu-a", "Content-Type": "application/json"})
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert answer.json()["error"] == "store unavailable"
        assert time.monotonic() - started < 25  # refused, not held
        ready = httpx.get(f"{replicas[0].url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["detail"]["database_error"]
        # reads: 503 too, never a 500 (/metrics and /v1/nodes once the view they may serve, at
        # most metrics_refresh_seconds old, is older than that: it may be younger still here)
        time.sleep(1.0)
        for path in ("/metrics", "/v1/nodes", "/v1/spend"):
            read = httpx.get(f"{replicas[0].url}{path}", timeout=30)
            assert read.status_code == 503 and read.headers["retry-after"], (path, read.text)
            assert read.json()["error"] == "store unavailable"
        time.sleep(2)  # the agents' samples keep coming: spooled meanwhile
        own_server.start()
        for replica in replicas:
            wait_until("the replica ready again", lambda r=replica: httpx.get(
                f"{r.url}/readyz", timeout=10).status_code == 200, timeout=60)
        time.sleep(2)
        taken = {}
        for agent in agents:
            readings, shipped, spooled = agent.stop()  # SIGTERM: ships what is left (10 s at most)
            assert readings > 0 and shipped == readings and spooled == 0, (agent.node, readings, shipped)
            taken[agent.node] = readings
        for replica in replicas:  # every replica: the whole fleet, each reading once
            wait_until("every reading on the replica", lambda r=replica: all(
                metric_sum(scrape(f"{r.url}/metrics"), "wattledger_ingest_readings_total", node=node) == n
                for node, n in taken.items()), timeout=30)
        nodes = httpx.get(f"{replicas[0].url}/v1/nodes", timeout=30).json()["nodes"]
        assert {n["node"]: n["readings_total"] for n in nodes if n["node"] in taken} == taken
        assert all(d["late_readings_total"] == 0 for n in nodes for d in n["devices"])
    finally:
        for agent in agents:
            agent.cleanup()
        for replica in replicas:
            replica.stop()
