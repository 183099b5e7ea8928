"""ingest_workers > 1: front-end worker processes check pushes, the collector process alone
writes the ledger. The same answers as one process, the ledger's state on every endpoint, and
no worker outlives the collector (SIGTERM, or kill -9 of the collector alone)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from httpkit import AUTH, TOKENS, Collector_, batch, start_collector, trace
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.workers import pack_batch, unpack_batch
from wattledger.wire import validate

SITE = {"timezone": "UTC", "currency": "USD", "pue": 1.5, "price_per_kwh": 0.12,
        "demand_charge_per_kw": 0, "carbon_g_per_kwh": 400}


def test_a_batch_crosses_to_the_writer_whole() -> None:
    doc = batch(n=6, site="default", cluster="c1")
    doc["devices"].append({"id": "GPU-0001", "kind": "gpu", "index": 3})
    doc["readings"]["device"][-1] = 1  # a position: the second device (its index is 3)
    doc["readings"]["temp_c"][2] = None
    valid = validate(json.dumps(doc).encode(), time.time())
    back = unpack_batch(pack_batch(valid))
    b, again = valid.batch, back.batch
    assert (again.node, again.stream, again.seq, again.labels) == (b.node, b.stream, b.seq, b.labels)
    assert again.devices == b.devices
    for name in valid.columns.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(back.columns, name), getattr(valid.columns, name))
        assert getattr(back.columns, name).dtype == getattr(valid.columns, name).dtype


@pytest.fixture
def two_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTLEDGER_INGEST_WORKERS", "2")


def cfg(tmp_path: Path) -> dict[str, Any]:
    return {"db": f"sqlite:///{tmp_path}/ledger.db", "tokens": TOKENS, "sites": {"default": SITE}}


def workers_of(c: Collector_) -> list[psutil.Process]:
    found = psutil.Process(c.proc.pid).children()
    assert len(found) == 2, found
    return found


def outcomes(c: Collector_) -> dict[str, float]:
    text = httpx.get(f"{c.url}/metrics", timeout=10).text
    return {s.labels["outcome"]: s.value for fam in text_string_to_metric_families(text)
            if fam.name == "wattledger_ingest_batches" for s in fam.samples if s.name.endswith("_total")}


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("two_workers")
def test_workers_answer_as_one_process_and_stop_with_it(tmp_path: Path) -> None:
    c = start_collector(tmp_path, cfg(tmp_path))
    try:
        workers = workers_of(c)
        docs = trace(3, time.time() - 600)
        with httpx.Client(base_url=c.url, headers=AUTH, timeout=10) as client:
            answers = [client.post("/v1/batches", content=json.dumps(d)).json() for d in docs]
            assert answers == [{"accepted": 4, "duplicate": False}] * 3
            again = client.post("/v1/batches", content=json.dumps(docs[0]))
            assert again.json() == {"accepted": 0, "duplicate": True}
            bad = client.post("/v1/batches", content=b'{"node": 1')
            assert bad.status_code == 400 and bad.json()["error"] == "malformed JSON"
            other = client.post("/v1/batches", content=json.dumps(batch("gpu-node-02")))
            assert other.status_code == 403
            unknown = client.post("/v1/batches", content=json.dumps(batch(seq=9, site="mars")))
            assert unknown.status_code == 422 and unknown.json()["detail"]["field"] == "labels.site"
            nobody = client.post("/v1/batches", content=json.dumps(docs[0]), headers={"Authorization": ""})
            assert nobody.status_code == 401
            # a stream of another node: refused by the ledger in the writer process
            theft = client.post("/v1/batches", content=json.dumps(batch("gpu-node-02", seq=4)),
                                headers={"Authorization": "Bearer tok-two"})
            assert theft.status_code == 422, theft.text
            nodes = client.get("/v1/nodes").json()["nodes"]
            assert [n["readings_total"] for n in nodes if n["node"] == "gpu-node-01"] == [12]
            assert client.get("/readyz").json()["status"] == "ready"
            assert client.get("/v1/spend", params={"month": "2026-13"}).status_code == 422
            assert client.get("/openapi.json").json()["info"]["title"] == "wattledger collector"
        # every answer a worker gave is counted on the writer's /metrics
        counted = outcomes(c)
        assert counted["accepted"] == 3 and counted["duplicate"] == 1
        assert counted["rejected_400"] == counted["rejected_401"] == counted["rejected_403"] == 1
        assert counted["rejected_422"] == 2
    finally:
        assert c.stop(signal.SIGTERM) == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert "Traceback" not in c.log.read_text()


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("two_workers")
def test_kill_9_of_the_collector_alone_takes_its_workers_and_frees_the_ledger(tmp_path: Path) -> None:
    docs = trace(4, time.time() - 600)
    first = start_collector(tmp_path, cfg(tmp_path), name="first")
    try:
        workers = workers_of(first)
        with httpx.Client(base_url=first.url, headers=AUTH, timeout=10) as client:
            for d in docs[:2]:
                assert client.post("/v1/batches", content=json.dumps(d)).json()["accepted"] == 4
        # a second collector on the same ledger is refused while the first (and its workers) run
        refused = start_collector_expecting_exit(tmp_path)
        assert refused == 2
        os.kill(first.proc.pid, signal.SIGKILL)  # the collector only, not its process group
        first.proc.wait(10)
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, alive
    finally:
        first.stop(signal.SIGKILL)
    second = start_collector(tmp_path, cfg(tmp_path), name="second")
    try:
        with httpx.Client(base_url=second.url, headers=AUTH, timeout=10) as client:
            answers = [client.post("/v1/batches", content=json.dumps(d)).json() for d in docs]
        assert answers == [{"accepted": 0, "duplicate": True}] * 2 + [{"accepted": 4, "duplicate": False}] * 2
    finally:
        assert second.stop(signal.SIGTERM) == 0


def start_collector_expecting_exit(tmp_path: Path) -> int:
    import subprocess

    from httpkit import WATTLEDGER

    conf = tmp_path / "again.yaml"
    conf.write_text(json.dumps({**cfg(tmp_path), "listen": "127.0.0.1:0"}))
    done = subprocess.run([WATTLEDGER, "collector", "--config", str(conf)], capture_output=True, timeout=30)
    assert b"in use by another collector" in done.stderr
    return done.returncode
