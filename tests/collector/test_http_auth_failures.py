"""Pushes refused 401/403 are counted and logged by the node they claim to be (the agent's
``X-Wattledger-Node``), so that the central operator can tell which node is misconfigured;
only a valid name the collector knows becomes a label (the others are ``unknown``), and the
log says it once a minute per node at most."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from httpkit import FakeLedger, batch, body, client, make_app
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.ingest.refusals import AuthFailures

LOGGER = "wattledger.collector.ingest.refusals"


def failures(text: str) -> dict[tuple[str, str], float]:
    return {(s.labels["node"], s.labels["status"]): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == "wattledger_ingest_auth_failures_total"}


def headers(token: str | None, node: str | None) -> dict[str, str]:
    out = {"Content-Type": "application/json"}
    if token is not None:
        out["Authorization"] = f"Bearer {token}"
    if node is not None:
        out["X-Wattledger-Node"] = node
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("fast_ingest", [True, False], ids=["asgi-fast-path", "fastapi-route"])
async def test_refusals_are_counted_by_claimed_node_with_bounded_labels(fast_ingest: bool) -> None:
    app, _ = make_app(fast_ingest=fast_ingest)
    pushes: list[tuple[dict[str, str], Any]] = [
        (headers("wrong", "gpu-node-01"), batch()),  # a node of the tokens with a stale token
        (headers("wrong", "gpu-node-01"), batch()),
        (headers(None, "gpu-node-02"), batch(node="gpu-node-02")),  # no token at all
        (headers("wrong", "intruder-9"), batch(node="intruder-9")),  # a name nobody configured
        (headers("wrong", "not a node name!"), batch()),
        (headers("wrong", None), batch()),  # an agent too old to say
        # the token of gpu-node-01 on the agent of gpu-node-02 (a copied secret)
        (headers("tok-one", "gpu-node-02"), batch(node="gpu-node-02")),
    ]
    async with client(app) as c:
        statuses = [(await c.post("/v1/batches", content=body(doc), headers=h)).status_code
                    for h, doc in pushes]
        metrics = (await c.get("/metrics")).text
    assert statuses == [401, 401, 401, 401, 401, 401, 403]
    assert failures(metrics) == {("gpu-node-01", "401"): 2, ("gpu-node-02", "401"): 1,
                                 ("unknown", "401"): 3, ("gpu-node-02", "403"): 1}


@pytest.mark.anyio
async def test_nodes_of_the_ledger_are_known_too() -> None:
    ledger = FakeLedger(readings={"old-node": 4})  # committed before this process started
    app, _ = make_app(ledger, tokens={}, allow_unauthenticated=True)
    async with client(app) as c:
        fresh = await c.post("/v1/batches", content=body(batch(node="lab-7")), headers=headers(None, "lab-7"))
        for node in ("old-node", "lab-7", "never-seen"):
            r = await c.post("/v1/batches", content=body(batch(node=node, seq=2)),
                             headers=headers("wrong", node))
            assert r.status_code == 401
        metrics = (await c.get("/metrics")).text
    assert fresh.status_code == 200
    assert failures(metrics) == {("old-node", "401"): 1, ("lab-7", "401"): 1, ("unknown", "401"): 1}


@pytest.mark.anyio
async def test_refusals_are_logged_once_a_minute_per_claimed_node(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = make_app()
    caplog.set_level(logging.WARNING, LOGGER)
    async with client(app) as c:
        for node in ["gpu-node-01"] * 5 + ["gpu-node-02"]:
            await c.post("/v1/batches", content=body(batch(node=node)), headers=headers("wrong", node))
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 2, lines
    assert "push refused 401" in lines[0] and "'gpu-node-01'" in lines[0] and "unknown token" in lines[0]
    assert "'gpu-node-02'" in lines[1]


def test_the_log_line_after_a_quiet_minute_says_how_many_were_not_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    book = AuthFailures(lambda node: node == "n1", clock=lambda: now[0])
    caplog.set_level(logging.WARNING, LOGGER)
    for _ in range(4):
        book.record("n1", 401, "unknown token", "10.0.0.7:4242")
    now[0] += 61
    book.record("n1", 401, "unknown token", "10.0.0.7:4242")
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 2
    assert "10.0.0.7:4242" in lines[0]
    assert "3 more since the last line" in lines[1]
    assert book.counts == {("n1", 401): 5}


def test_a_claimed_name_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    book = AuthFailures(lambda node: True)
    caplog.set_level(logging.WARNING, LOGGER)
    book.record("x\nFAKE: collector stopped", 401, "unknown token")
    (line,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "\n" not in line
    assert book.counts == {("unknown", 401): 1}  # not a valid node name: no label made of it
