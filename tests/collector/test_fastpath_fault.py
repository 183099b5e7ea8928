"""A fault of the collector on the push path is a JSON 500 on the ASGI fast path too, which
answers ahead of FastAPI's middleware stack (so not through its error handler); nothing
reaches the ledger, the server goes on, and the push is counted as an ``error`` and in the
answer-time histogram like every other, so that the collector's own error alert sees it."""

from __future__ import annotations

from typing import Any

import pytest
from httpkit import AUTH, FakeLedger, batch, body, client, make_app
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.ingest import intake as ingest
from wattledger.collector.ingest.intake import BatchIngest

pytestmark = pytest.mark.anyio
ROUTES = pytest.mark.parametrize("fast_ingest", [True, False], ids=["asgi-fast-path", "fastapi-route"])


def push_counts(text: str) -> tuple[float, float]:
    """(``outcome="error"`` pushes, /v1/batches answers in the latency histogram)."""
    errors = answered = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "wattledger_ingest_batches_total" and s.labels["outcome"] == "error":
                errors = s.value
            if s.name == "wattledger_collector_request_duration_seconds_count" \
                    and s.labels["handler"] == "/v1/batches":
                answered = s.value
    return errors, answered


@ROUTES
async def test_a_fault_while_checking_is_a_json_500(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture,
                                                     fast_ingest: bool) -> None:
    def broken(self: BatchIngest, raw: bytes, token_node: str | None) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(BatchIngest, "_check", broken)
    app, ledger = make_app(fast_ingest=fast_ingest)
    async with client(app) as c:
        r = await c.post("/v1/batches", content=body(batch()), headers=AUTH)
        healthy = await c.get("/healthz")
        metrics = (await c.get("/metrics")).text
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "internal error"
    assert healthy.status_code == 200  # the server goes on
    assert ledger.readings == {}
    assert "a bug" in caplog.text  # the traceback is in the log
    assert push_counts(metrics) == (1.0, 1.0)


@ROUTES
async def test_a_fault_while_reading_the_body_is_counted(monkeypatch: pytest.MonkeyPatch,
                                                         fast_ingest: bool) -> None:
    async def broken(*args: Any, **kw: Any) -> bytes:
        raise MemoryError("no room")  # an Exception a body read can raise

    monkeypatch.setattr(ingest, "read_body", broken)
    app, _ = make_app(fast_ingest=fast_ingest)
    async with client(app) as c:
        r = await c.post("/v1/batches", content=body(batch()), headers=AUTH)
        metrics = (await c.get("/metrics")).text
    assert r.status_code == 500 and r.json()["error"] == "internal error"
    assert push_counts(metrics) == (1.0, 1.0)


@ROUTES
async def test_a_ledger_that_raises_is_a_counted_500(fast_ingest: bool) -> None:
    app, _ = make_app(FakeLedger(fail_with=RuntimeError("disk on fire")), fast_ingest=fast_ingest)
    async with client(app) as c:
        answers = [await c.post("/v1/batches", content=body(batch(seq=seq)), headers=AUTH) for seq in (1, 2)]
        metrics = (await c.get("/metrics")).text
    assert [a.status_code for a in answers] == [500, 500]
    assert all(a.json()["error"] == "internal error" for a in answers)
    assert push_counts(metrics) == (2.0, 2.0)
