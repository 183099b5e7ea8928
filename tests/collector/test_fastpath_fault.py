"""A fault of the collector on the push path is a JSON 500 on the ASGI fast path too, which
answers ahead of FastAPI's middleware stack (so not through its error handler); nothing
reaches the ledger and the server goes on."""

from __future__ import annotations

from typing import Any

import pytest
from httpkit import AUTH, batch, body, client, make_app

from wattledger.collector.ingest import BatchIngest

pytestmark = pytest.mark.anyio


async def test_a_fault_while_checking_is_a_json_500(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    def broken(self: BatchIngest, raw: bytes, token_node: str | None) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(BatchIngest, "_check", broken)
    app, ledger = make_app()
    async with client(app) as c:
        r = await c.post("/v1/batches", content=body(batch()), headers=AUTH)
        healthy = await c.get("/healthz")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "internal error"
    assert healthy.status_code == 200  # the server goes on
    assert ledger.readings == {}
    assert "a bug" in caplog.text  # the traceback is in the log
