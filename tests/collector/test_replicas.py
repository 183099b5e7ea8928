"""Collector replicas on one PostgreSQL (DESIGN.md "Scale-out"), as real processes on loopback.

A batch may reach any replica: batches sprayed across two and three replicas at random, with
re-sends to others, are each committed once; the same batch sent to two replicas at the same
instant is committed once; a replica killed (-9) with a batch in flight loses nothing and
counts nothing twice when the batch is sent again to another; a restarted replica shows the
same figures. Every replica's ledger figures equal the others' and those of one SQLite
collector fed the same batches. PostgreSQL restarted under load: test_replicas_outage.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpkit import Collector_, start_collector
from ledgerkit import make_sites
from prometheus_client.parser import text_string_to_metric_families

from tests.pgserver import PgServer
from wattledger.collector.service import Ledger
from wattledger.plan.build import make_plan
from wattledger.plan.siteconfig import plan_sites
from wattledger.wire import validate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NODES = [f"node-{n}" for n in range(6)]
TOKENS = {node: f"tok-{node}" for node in NODES}
T0 = time.time() - 2 * 86400  # room for the long traces of the kill test
MONTH = time.strftime("%Y-%m", time.gmtime(T0))  # the billing month (UTC) the traces are in
SITE = {"timezone": "UTC", "price_per_kwh": 0.2, "pue": 1.3, "carbon_g_per_kwh": 300}
#: the ledger's families (the same on every replica); the others are one process's own
PER_PROCESS = ("process_", "python_")


def body(node: str, seq: int, readings: int = 10, gpus: int = 2) -> bytes:
    """Batch ``seq`` of a node's continuous trace: ``gpus`` GPUs, ``readings`` 1-s samples each."""
    start = T0 + (seq - 1) * readings
    ts = [start + s for s in range(readings)]
    return json.dumps({
        "node": node, "stream": f"stream-{node}", "seq": seq, "labels": {"cluster": node[-1]},
        "devices": [{"id": f"GPU-{node}-{g}", "kind": "gpu", "index": g, "power_limit_w": 700.0,
                     "model": "NVIDIA H100 80GB HBM3"} for g in range(gpus)],
        "readings": {"device": [g for g in range(gpus) for _ in ts], "ts": ts * gpus,
                     "power_w": [300.0 + 10 * g for g in range(gpus) for _ in ts],
                     "energy_j": [1e6 + (300.0 + 10 * g) * (t - T0) for g in range(gpus) for t in ts],
                     "temp_c": [60.0] * (readings * gpus),
                     # the plan's statistics (plan_days) are booked per replica too
                     "util": [round(((int(t) * 7 + g * 13) % 100) / 100, 2)
                              for g in range(gpus) for t in ts]}}).encode()


def push(url: str, node: str, data: bytes, timeout: float = 30.0) -> httpx.Response:
    return httpx.post(f"{url}/v1/batches", content=data, timeout=timeout,
                      headers={"Authorization": f"Bearer {TOKENS[node]}", "Content-Type": "application/json"})


def ledger_figures(url: str) -> dict[str, float]:
    """Every sample of the ledger's families on one replica's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "replica" in s.labels or s.name.startswith(PER_PROCESS) or "plan" in s.name \
                    or "forecast" in s.name or s.name.startswith("wattledger_node_last_seen"):
                continue  # one process's own, or moving with the clock
            out[f"{s.name}{sorted(s.labels.items())}"] = s.value
    return out


def settled(urls: list[str], readings: int, timeout: float = 30.0) -> list[dict[str, float]]:
    """The figures of every replica once each shows all ``readings`` (metrics_refresh_seconds)."""
    end = time.monotonic() + timeout
    while True:
        figures = [ledger_figures(url) for url in urls]
        counts = [sum(v for k, v in f.items() if k.startswith("wattledger_ingest_readings_total"))
                  for f in figures]
        if all(c == readings for c in counts) or time.monotonic() > end:
            assert counts == [readings] * len(urls)
            return figures


@pytest.fixture
def replicas(pg_server: PgServer, pg_template: str, tmp_path: Path) -> Iterator[Any]:
    """``start(n)``: n collector processes on one fresh database; stopped at the end."""
    started: list[Collector_] = []
    db = pg_server.new_database(pg_template)
    config = {"db": db, "tokens": TOKENS, "metrics_refresh_seconds": 0.5, "stale_after_seconds": 3600,
              "refresh_interval_seconds": 2, "sites": {"default": SITE}}

    class Fleet:
        def start(self, n: int) -> list[Collector_]:
            made = [start_collector(tmp_path, config, name=f"replica-{len(started) + i}") for i in range(n)]
            started.extend(made)
            return made

        def restart(self, dead: Collector_) -> Collector_:
            (made,) = self.start(1)
            return made

    try:
        yield Fleet()
    finally:
        for collector in started:
            collector.stop()
        pg_server.drop_database(db)


def sqlite_figures(bodies: list[tuple[str, bytes]]) -> Ledger:
    """One SQLite ledger given the same batches, in seq order per node."""
    led = Ledger("sqlite:///:memory:", make_sites({"default": SITE}), [], stale_after_seconds=3600)
    for _, data in bodies:
        led.ingest([validate(data, time.time())])
    return led


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3])
def test_batches_sprayed_across_replicas_are_each_committed_once(replicas: Any, n: int) -> None:
    urls = [c.url for c in replicas.start(n)]
    rng = random.Random(n)
    per_node = {node: [body(node, seq) for seq in range(1, 9)] for node in NODES}

    def agent(node: str) -> list[int]:
        """One stream in seq order, one batch in flight; now and then a re-send to another
        replica (an agent that timed out on one and tried the next)."""
        statuses = []
        for data in per_node[node]:
            first = rng.randrange(n)
            statuses.append(push(urls[first], node, data).status_code)
            if rng.random() < 0.4:
                again = push(urls[(first + 1 + rng.randrange(n - 1)) % n], node, data)
                assert again.json() == {"accepted": 0, "duplicate": True}
        return statuses

    with concurrent.futures.ThreadPoolExecutor(len(NODES)) as pool:
        assert all(code == 200 for codes in pool.map(agent, NODES) for code in codes)
    readings = len(NODES) * 8 * 20
    figures = settled(urls, readings)
    assert all(f == figures[0] for f in figures[1:])  # the same rows: the same numbers
    single = sqlite_figures([(node, data) for node in NODES for data in per_node[node]])
    spend = {r["node"]: r for r in single.spend(site="default", month=MONTH, group_by="node")}
    for url in urls:
        query = {"group_by": "node", "month": MONTH}
        got = httpx.get(f"{url}/v1/spend", params=query, timeout=30).json()["rows"]
        assert {r["node"] for r in got} == set(NODES)
        for row in got:
            want = spend[row["node"]]
            for key in ("it_energy_j", "energy_cost", "carbon_kg", "unmeasured_seconds"):
                assert row[key] == pytest.approx(want[key], rel=1e-9), (row["node"], key)
    devices = {d["id"]: d for node in single.nodes() for d in node["devices"]}
    for node in httpx.get(f"{urls[-1]}/v1/nodes", timeout=30).json()["nodes"]:
        assert node["readings_total"] == 160 and node["duplicate_agent"] is False
        for d in node["devices"]:
            assert d["energy_j_total"] == pytest.approx(devices[d["id"]]["energy_j_total"], rel=1e-12)
            assert d["late_readings_total"] == 0 and d["counter_resets_total"] == 0
    # the plan's statistics: what every replica plans from is what one process booked
    scenario = {"site": "default", "start": MONTH, "months": 1, "fleet": [{"name": "now", "measured": True}]}
    sites = plan_sites({"sites": {"default": SITE}}, "test")
    want_plan = make_plan(scenario, sites, single.plan_history)
    for url in urls:
        got_plan = httpx.post(f"{url}/v1/plan", json=scenario, timeout=60).json()
        assert got_plan["profiles"][0]["coverage"] == want_plan["profiles"][0]["coverage"]
        assert got_plan["profiles"][0]["coverage"]["readings"] == readings
        got, want = got_plan["profiles"][0], want_plan["profiles"][0]
        for key in ("idle_w", "slope_w", "r2"):
            assert got["line"][key] == pytest.approx(want["line"][key], rel=1e-9), key
        assert (got["idle_w"], got["idle_readings"]) == pytest.approx((want["idle_w"], want["idle_readings"]))
        assert [b["readings"] for b in got["binned"]] == [b["readings"] for b in want["binned"]]
        assert got_plan["fleet"][0]["it_kw"] == pytest.approx(want_plan["fleet"][0]["it_kw"], rel=1e-9)
    single.close()


@pytest.mark.slow
def test_the_same_batch_to_two_replicas_at_the_same_instant_is_committed_once(replicas: Any) -> None:
    a, b = (c.url for c in replicas.start(2))
    answers: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for seq in range(1, 16):
        data = body("node-0", seq)
        gate = threading.Barrier(2)

        def send(url: str, data: bytes = data, gate: threading.Barrier = gate) -> dict[str, Any]:
            gate.wait()
            answer = push(url, "node-0", data)
            assert answer.status_code == 200, answer.text
            doc: dict[str, Any] = answer.json()
            return doc

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first, second = pool.map(send, (a, b))
        answers.append((first, second))
        assert sorted([first["duplicate"], second["duplicate"]]) == [False, True]
        assert first["accepted"] + second["accepted"] == 20
    settled([a, b], 15 * 20)


@pytest.mark.slow
def test_a_replica_killed_with_a_batch_in_flight_loses_nothing(replicas: Any) -> None:
    """The agent heard nothing from the killed replica and sends the batch to another: it is
    there once, whether the killed one had committed it or not."""
    first, other = replicas.start(2)
    seq = 0
    for round_ in range(4):
        seq += 1
        big = body("node-1", seq, readings=3000, gpus=8)  # ~1.5 MB: long enough to be caught
        sent = threading.Thread(target=_lost, args=(first.url, big), daemon=True)
        sent.start()
        time.sleep(0.05 * round_)  # killed in the read, the check, the commit, or after it
        first.stop(signal.SIGKILL)
        sent.join(30)
        again = push(other.url, "node-1", big)
        assert again.status_code == 200 and again.json()["accepted"] in (0, 24000)
        first = replicas.restart(first)  # a replica restarted: serves as before
        seq += 1
        assert push(first.url, "node-1", body("node-1", seq, readings=3000, gpus=8)).json() == \
            {"accepted": 24000, "duplicate": False}
    figures = settled([first.url, other.url], seq * 24000)
    assert figures[0] == figures[1]
    nodes = httpx.get(f"{first.url}/v1/nodes", timeout=30).json()["nodes"]
    (gpus,) = [n["devices"] for n in nodes if n["node"] == "node-1"]
    for gpu in gpus:  # one continuous trace: every interval counted once, by its counter
        assert gpu["late_readings_total"] == 0 and gpu["counter_resets_total"] == 0
        assert gpu["energy_j_total"] == pytest.approx((300.0 + 10 * gpu["index"]) * (seq * 3000 - 1))


def _lost(url: str, data: bytes) -> None:
    # the answer never comes: the replica is killed meanwhile (or it comes first)
    with contextlib.suppress(httpx.HTTPError):
        push(url, "node-1", data, timeout=20)
