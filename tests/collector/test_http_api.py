"""The read side of the collector's HTTP API and its lifecycle, against the ASGI app."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from httpkit import AUTH, NOW, FakeLedger, batch, body, client, make_app, settings
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.api.app import create_app

pytestmark = pytest.mark.anyio


async def test_spend_as_json_and_as_csv() -> None:
    app, _ = make_app()
    async with client(app) as c:
        await c.post("/v1/batches", content=body(batch(n=6)), headers=AUTH)
        as_json = await c.get("/v1/spend", params={"group_by": "node", "month": "2025-11"})
        by_format = await c.get("/v1/spend", params={"group_by": "node", "format": "csv"})
        by_accept = await c.get("/v1/spend", params={"group_by": "node"}, headers={"Accept": "text/csv"})
    assert as_json.status_code == 200
    doc = as_json.json()
    # the site and month actually used, though none was asked for (one site configured)
    assert doc["group_by"] == "node" and doc["month"] == "2025-11" and doc["site"] == "default"
    assert doc["sites"] == ["default"] and doc["months"] == {"default": "2025-11"}
    assert doc["rows"] == [{"node": "gpu-node-01", "month": "2025-11", "readings": 6}]
    for r in (by_format, by_accept):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert rows == [{"node": "gpu-node-01", "month": "2025-11", "readings": "6"}]


@pytest.mark.parametrize(("params", "status", "field"), [
    ({"group_by": "rack"}, 422, "query.group_by"),
    ({"month": "2025-13"}, 422, "query.month"),
    ({"month": "November"}, 422, "query.month"),
    ({"month": "0000-01"}, 422, "query.month"),  # found by the schemathesis fuzz: was a 500
    ({"format": "xlsx"}, 422, "query.format"),
    ({"site": "mars"}, 404, "site"),
])
async def test_bad_spend_queries_are_json_4xx(params: dict[str, str], status: int, field: str) -> None:
    app, _ = make_app()
    async with client(app) as c:
        r = await c.get("/v1/spend", params=params)
    assert r.status_code == status
    doc = r.json()
    assert set(doc) == {"error", "detail"} and doc["detail"]["field"] == field


async def test_nodes_lists_what_the_ledger_knows() -> None:
    app, _ = make_app()
    async with client(app) as c:
        assert (await c.get("/v1/nodes")).json() == {"nodes": []}
        await c.post("/v1/batches", content=body(batch(n=2)), headers=AUTH)
        assert (await c.get("/v1/nodes")).json() == {"nodes": [{"node": "gpu-node-01", "readings": 2}]}


async def test_metrics_hold_the_ledger_and_the_service_families() -> None:
    app, _ = make_app()
    async with client(app) as c:
        await c.post("/v1/batches", content=body(batch()), headers=AUTH)
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    outcomes = {s.labels["outcome"]: s.value for s in families["wattledger_ingest_batches"].samples}
    assert outcomes["accepted"] == 1 and outcomes["rejected_413"] == 0 and outcomes["overloaded"] == 0
    assert families["wattledger_ingest_readings"].samples[0].value == 4  # from the ledger's collector
    latency = families["wattledger_collector_request_duration_seconds"]
    count = [s for s in latency.samples if s.name.endswith("_count") and s.labels["handler"] == "/v1/batches"]
    assert count[0].value == 1
    assert families["wattledger_ingest_queue_capacity_batches"].samples[0].value == 1024


async def test_healthz_and_readyz() -> None:
    app, ledger = make_app()
    async with client(app) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"writer": True, "scheduler": True, "database": True}
    assert ledger.refreshes >= 1  # the periodic work ran once before serving


async def test_probes_answer_head_as_get_without_a_body() -> None:
    """A load balancer that health-checks with HEAD (HAProxy httpchk, some cloud target groups)
    sees the probe's status, not a 405 that takes every replica out."""
    app, _ = make_app()
    async with client(app) as c:
        health, ready = await c.head("/healthz"), await c.head("/readyz")
        wrong = await c.head("/v1/batches")
    assert (health.status_code, ready.status_code) == (200, 200)
    assert health.content == b"" and ready.content == b""
    assert health.headers["content-type"].startswith("application/json")
    assert wrong.status_code == 405  # only the probes take HEAD


async def test_readyz_is_503_when_the_refresh_fails() -> None:
    class BrokenRefresh(FakeLedger):
        def refresh(self) -> None:
            raise OSError("database is gone")

    app, _ = make_app(BrokenRefresh())
    async with client(app) as c:
        r = await c.get("/readyz")
        health = await c.get("/healthz")
        head = await c.head("/readyz")
    assert head.status_code == 503 and head.content == b""
    assert r.status_code == 503
    doc = r.json()
    assert doc["error"] == "not ready" and doc["detail"]["checks"]["database"] is False
    assert "database is gone" in doc["detail"]["last_refresh_error"]
    assert health.status_code == 200


async def test_unknown_route_and_method_are_json() -> None:
    app, _ = make_app()
    async with client(app) as c:
        missing = await c.get("/v2/whatever")
        wrong = await c.get("/v1/batches")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "detail"}
    assert wrong.status_code == 405 and set(wrong.json()) == {"error", "detail"}
    assert "POST" in wrong.headers["allow"]


async def test_openapi_describes_the_batch_schema_and_errors() -> None:
    app, _ = make_app()
    async with client(app) as c:
        doc = (await c.get("/openapi.json")).json()
        docs = await c.get("/docs")
    assert docs.status_code == 200
    post = doc["paths"]["/v1/batches"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Batch"}
    assert {"400", "401", "403", "413", "415", "422", "429"} <= set(post["responses"])
    schemas = doc["components"]["schemas"]
    assert {"Batch", "DeviceInfo", "Readings", "Error"} <= set(schemas)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert set(doc["paths"]) >= {"/v1/spend", "/v1/nodes", "/metrics", "/healthz", "/readyz"}


async def test_lifespan_leaves_a_given_ledger_open_and_commits_the_queue_at_shutdown() -> None:
    app, ledger = make_app()
    async with client(app) as c:
        r = await c.post("/v1/batches", content=body(batch()), headers=AUTH)
    assert r.status_code == 200
    assert ledger.closed is False  # the caller opened it, the caller closes it
    assert ledger.readings == {"gpu-node-01": 4}


async def test_without_a_ledger_the_lifespan_opens_and_closes_the_real_one(tmp_path: Path) -> None:
    s = settings(db=f"sqlite:///{tmp_path}/ledger.db")
    app = create_app(s, clock=lambda: NOW)  # nothing is opened yet
    assert not (tmp_path / "ledger.db").exists()
    async with client(app) as c:
        r = await c.post("/v1/batches", content=body(batch(t0=NOW - 60)), headers=AUTH)
        nodes = (await c.get("/v1/nodes")).json()["nodes"]
    assert r.json() == {"accepted": 4, "duplicate": False}
    assert [n["node"] for n in nodes] == ["gpu-node-01"]
    async with client(create_app(s, clock=lambda: NOW)) as c:  # closed, and opened again
        again = await c.post("/v1/batches", content=body(batch(t0=NOW - 60)), headers=AUTH)
    assert again.json() == {"accepted": 0, "duplicate": True}
