"""The real `wattledger collector` process on loopback: totals and dedupe survive a graceful
restart and a kill -9, and every batch acknowledged before a crash is counted exactly once."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpkit import AUTH, TOKENS, Collector_, start_collector, trace
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


FLEET = {f"node-{k}": f"tok-{k}" for k in range(6)}


def config(tmp_path: Path) -> dict[str, Any]:
    return {"db": f"sqlite:///{tmp_path}/ledger.db", "tokens": {**TOKENS, **FLEET},
            "refresh_interval_seconds": 5,
            "sites": {"default": {"timezone": "UTC", "currency": "USD", "pue": 1.5, "price_per_kwh": 0.12,
                                  "demand_charge_per_kw": 0, "carbon_g_per_kwh": 400}}}


def push(c: Collector_, doc: dict[str, Any], client: httpx.Client | None = None) -> dict[str, Any]:
    token = FLEET.get(doc["node"])
    headers = {**AUTH, "Authorization": f"Bearer {token}"} if token else AUTH
    r = (client or httpx).post(f"{c.url}/v1/batches", content=json.dumps(doc), headers=headers, timeout=20)
    assert r.status_code == 200, r.text
    return dict(r.json())


def totals(c: Collector_) -> dict[str, Any]:
    """What a finance team and Prometheus see: spend rows and the ledger's counters."""
    spend = httpx.get(f"{c.url}/v1/spend", params={"group_by": "device"}, timeout=10).json()["rows"]
    metrics = httpx.get(f"{c.url}/metrics", timeout=10).text
    sums: dict[str, float] = {}
    for fam in text_string_to_metric_families(metrics):
        if fam.name in ("wattledger_ingest_readings", "wattledger_device_energy_joules",
                        "wattledger_energy_cost", "wattledger_carbon_grams", "wattledger_counter_resets"):
            sums[fam.name] = sum(s.value for s in fam.samples if s.name.endswith("_total"))
    for row in spend:  # the forecast moves with the clock; the rest must not
        row.pop("forecast_cost", None)
        row.pop("plan_to_date", None)
    return {"spend": spend, "metrics": sums}


def test_totals_and_dedupe_survive_a_graceful_restart(tmp_path: Path) -> None:
    batches = trace(6, time.time() - 600)
    first = start_collector(tmp_path, config(tmp_path), name="first")
    try:
        assert [push(first, b)["accepted"] for b in batches[:5]] == [4] * 5
        before = totals(first)
    finally:
        assert first.stop(signal.SIGTERM) == 0
    assert before["metrics"]["wattledger_ingest_readings"] == 20
    assert before["metrics"]["wattledger_device_energy_joules"] == pytest.approx(19 * 500.0)

    second = start_collector(tmp_path, config(tmp_path), name="second")
    try:
        assert totals(second) == before
        assert all(push(second, b) == {"accepted": 0, "duplicate": True} for b in batches[:5])
        assert totals(second) == before
        assert push(second, batches[5]) == {"accepted": 4, "duplicate": False}
        after = totals(second)
    finally:
        second.stop()
    # the sixth batch continues the same counter: 4 more intervals of 500 J, no reset
    assert after["metrics"]["wattledger_device_energy_joules"] == pytest.approx(23 * 500.0)
    assert after["metrics"]["wattledger_counter_resets"] == 0
    assert "Traceback" not in (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()


def test_kill_9_during_a_flood_loses_and_doubles_nothing(tmp_path: Path) -> None:
    streams = {f"s-{k}": trace(30, time.time() - 3000, node=f"node-{k}", stream=f"s-{k}") for k in range(6)}
    acked: set[tuple[str, int]] = set()
    first = start_collector(tmp_path, config(tmp_path), name="first")

    def send(stream: str) -> None:  # like an agent: one stream, in seq order, one batch in flight
        with httpx.Client(timeout=10) as client:
            for doc in streams[stream]:
                try:
                    push(first, doc, client)
                except (httpx.HTTPError, AssertionError):
                    return
                acked.add((stream, doc["seq"]))

    with concurrent.futures.ThreadPoolExecutor(len(streams)) as pool:
        running = [pool.submit(send, s) for s in streams]
        deadline = time.monotonic() + 30
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.stop(signal.SIGKILL)  # no shutdown: whatever was acknowledged must be on disk
        concurrent.futures.wait(running, timeout=30)
    assert acked, "nothing was acknowledged before the kill"

    second = start_collector(tmp_path, config(tmp_path), name="second")
    try:
        with httpx.Client(timeout=10) as client:
            for stream, docs in streams.items():
                for doc in docs:  # the agents send everything again after the crash
                    answer = push(second, doc, client)
                    if (stream, doc["seq"]) in acked:
                        assert answer == {"accepted": 0, "duplicate": True}, (stream, doc["seq"])
        final = totals(second)
    finally:
        second.stop()
    # every reading exactly once: 6 streams x 30 batches x 4 readings
    assert final["metrics"]["wattledger_ingest_readings"] == 6 * 30 * 4
