"""POST /v1/batches against the ASGI app: every answer of the contract, and what reaches the ledger."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpkit import AUTH, NOW, FakeLedger, batch, body, changed, client, make_app, settings
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.api.app import create_app, open_ledger

pytestmark = pytest.mark.anyio
MIB = 1 << 20


async def post(c: Any, payload: bytes, **headers: str) -> Any:
    return await c.post("/v1/batches", content=payload, headers={**AUTH, **headers})


def assert_error(r: Any, status: int, error: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert set(doc) == {"error", "detail"}
    if error is not None:
        assert doc["error"] == error
    return doc


@pytest.mark.parametrize("fast_ingest", [True, False], ids=["asgi-fast-path", "fastapi-route"])
async def test_accepted_then_duplicate_counts_readings_once(fast_ingest: bool) -> None:
    app, ledger = make_app(fast_ingest=fast_ingest)
    async with client(app) as c:
        first = await post(c, body(batch(seq=1, n=5)))
        again = await post(c, body(batch(seq=1, n=5)))
    assert first.status_code == 200 and first.json() == {"accepted": 5, "duplicate": False}
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicate": True}
    assert ledger.readings == {"gpu-node-01": 5}


async def test_gzip_body_is_accepted() -> None:
    app, ledger = make_app()
    async with client(app) as c:
        r = await post(c, body(batch(n=3), gz=True), **{"Content-Encoding": "gzip"})
    assert r.json() == {"accepted": 3, "duplicate": False}
    assert ledger.readings == {"gpu-node-01": 3}


async def test_json_with_charset_and_identity_encoding_are_accepted() -> None:
    app, _ = make_app()
    async with client(app) as c:
        r = await post(c, body(batch()), **{"Content-Type": "application/json; charset=utf-8",
                                            "Content-Encoding": "identity"})
    assert r.status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dG9rLW9uZQ==", "Bearer "])
async def test_no_or_unknown_token_is_401(authorization: str | None) -> None:
    app, ledger = make_app()
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with client(app) as c:
        r = await c.post("/v1/batches", content=body(batch()), headers=headers)
    doc = assert_error(r, 401, "unauthorized")
    assert doc["detail"]["field"] == "Authorization"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["connection"] == "close"  # the body was not read: not drained either
    assert ledger.state() == ({}, {})


@pytest.mark.parametrize("fast_ingest", [True, False], ids=["asgi-fast-path", "fastapi-route"])
async def test_token_of_another_node_is_403(fast_ingest: bool) -> None:
    app, ledger = make_app(fast_ingest=fast_ingest)
    async with client(app) as c:
        r = await post(c, body(batch(node="gpu-node-02")))
    doc = assert_error(r, 403, "forbidden")
    assert doc["detail"]["field"] == "node"
    assert ledger.state() == ({}, {})


class Upload:
    """A body of ``count`` chunks of 64 KiB that counts how many the server pulled."""

    CHUNK = 65536

    def __init__(self, count: int) -> None:
        self.count = count
        self.pulled = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.pulled += 1
            yield b" " * self.CHUNK


async def test_401_is_answered_without_reading_the_body() -> None:
    app, _ = make_app()
    upload = Upload(1000)
    async with client(app) as c:
        r = await c.post("/v1/batches", content=upload.chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert upload.pulled <= 1  # the transport may pull one chunk before the answer is seen


async def test_content_length_over_the_limit_is_413_before_reading() -> None:
    app, _ = make_app(max_body_bytes=MIB)
    upload = Upload(64)
    async with client(app) as c:
        r = await c.post("/v1/batches", content=upload.chunks(),
                         headers={**AUTH, "Content-Length": str(4 * MIB)})
    doc = assert_error(r, 413, "body too large")
    assert "Content-Length" in doc["detail"]["reason"]
    assert r.headers["connection"] == "close"
    assert upload.pulled <= 1


@pytest.mark.parametrize("fast_ingest", [True, False], ids=["asgi-fast-path", "fastapi-route"])
async def test_streamed_body_over_the_limit_is_cut_short(fast_ingest: bool) -> None:
    app, ledger = make_app(max_body_bytes=MIB, fast_ingest=fast_ingest)
    upload = Upload(1024)  # 64 MiB, no Content-Length (chunked)
    async with client(app) as c:
        r = await c.post("/v1/batches", content=upload.chunks(), headers=AUTH)
    assert_error(r, 413, "body too large")
    assert upload.pulled * Upload.CHUNK <= MIB + 2 * Upload.CHUNK  # stopped right after the limit
    assert ledger.state() == ({}, {})


async def test_gzip_bomb_is_413_after_gzip() -> None:
    app, ledger = make_app(max_body_bytes=MIB)
    bomb = gzip.compress(b"[" + b" " * (256 * MIB) + b"]", compresslevel=9)
    assert len(bomb) < MIB  # small on the wire, 256 MiB inflated
    async with client(app) as c:
        r = await post(c, bomb, **{"Content-Encoding": "gzip"})
    doc = assert_error(r, 413, "body too large")
    assert "after gzip" in doc["detail"]["reason"]
    assert ledger.state() == ({}, {})


@pytest.mark.parametrize(("payload", "error"), [
    (b'{"node": "gpu-node-01", ', "malformed JSON"),
    (b"\xff\xfe not utf-8", "malformed JSON"),
    (b"", "malformed JSON"),
])
async def test_unparseable_body_is_400(payload: bytes, error: str) -> None:
    app, ledger = make_app()
    async with client(app) as c:
        r = await post(c, payload)
    assert_error(r, 400, error)
    assert ledger.state() == ({}, {})


@pytest.mark.parametrize("payload", [
    b"this is not gzip at all",
    gzip.compress(json.dumps(batch()).encode())[:-12],  # cut short
    gzip.compress(json.dumps(batch()).encode()) + b"trailing",
])
async def test_broken_gzip_is_400(payload: bytes) -> None:
    app, ledger = make_app()
    async with client(app) as c:
        r = await post(c, payload, **{"Content-Encoding": "gzip"})
    assert_error(r, 400, "malformed gzip")
    assert ledger.state() == ({}, {})


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_content_type_other_than_json_is_415(content_type: str | None) -> None:
    app, ledger = make_app()
    headers = {"Authorization": AUTH["Authorization"]}
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with client(app) as c:
        r = await c.post("/v1/batches", content=body(batch()), headers=headers)
    doc = assert_error(r, 415)
    assert doc["detail"]["field"] == "Content-Type"
    assert ledger.state() == ({}, {})


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, br", "zstd"])
async def test_unknown_content_encoding_is_415(encoding: str) -> None:
    app, ledger = make_app()
    async with client(app) as c:
        r = await post(c, body(batch()), **{"Content-Encoding": encoding})
    doc = assert_error(r, 415)
    assert doc["detail"]["field"] == "Content-Encoding"
    assert ledger.state() == ({}, {})


def _with(change: dict[str, Any]) -> dict[str, Any]:
    return changed(batch(n=3), change)


INVALID = {
    "unequal lengths": ({"readings.power_w": [1.0, 2.0]}, "readings.power_w"),
    "negative power": ({"readings.power_w.1": -5.0}, "readings.power_w.1"),
    "negative energy": ({"readings.energy_j.0": -1.0}, "readings.energy_j.0"),
    "util over 1": ({"readings.util.2": 1.5}, "readings.util.2"),
    "unknown device index": ({"readings.device.1": 7}, "readings.device.1"),
    "future timestamp": ({"readings.ts": [NOW + 400, NOW + 401, NOW + 402]}, "readings.ts.0"),
    "readings not in time order": ({"readings.ts": [NOW - 5, NOW - 6, NOW - 4]}, "readings.ts.1"),
    "seq 0": ({"seq": 0}, "seq"),
    "bad node name": ({"node": "no spaces allowed"}, "node"),
    "no devices": ({"devices": []}, "devices"),
    "not an object": (None, "body"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_invalid_batch_is_422_naming_the_field(case: str) -> None:
    change, field = INVALID[case]
    doc = [1, 2] if change is None else _with(change)
    app, ledger = make_app()
    async with client(app) as c:
        r = await post(c, json.dumps(doc).encode())
    detail = assert_error(r, 422)["detail"]
    assert detail["field"] == field and detail["reason"]
    assert ledger.state() == ({}, {})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_inf_are_422(literal: str) -> None:
    text = json.dumps(batch(n=2)).replace("500.0", literal, 1)
    assert literal in text
    app, ledger = make_app()
    async with client(app) as c:
        r = await post(c, text.encode())
    assert assert_error(r, 422)["detail"]["field"] == "readings.power_w.0"
    assert ledger.state() == ({}, {})


async def test_unknown_site_is_422_before_the_batch_joins_a_group() -> None:
    app, ledger = make_app()
    async with client(app) as c:
        r = await post(c, body(batch(site="mars")))
    assert assert_error(r, 422, "unknown site")["detail"]["field"] == "labels.site"
    assert ledger.state() == ({}, {}) and ledger.transactions == []


async def test_a_batch_the_ledger_refuses_inside_a_group_does_not_sink_the_others() -> None:
    # the collector knows site "lab" but the ledger refuses it (as it refuses a stream of another
    # node): the group fails, and the writer commits its batches one by one instead
    ledger = FakeLedger(sites=("default",), delay=0.05)
    lab = {"timezone": "UTC", "price_per_kwh": 0.1}
    app, _ = make_app(ledger, sites={"default": lab, "lab": lab})
    async with client(app) as c:
        first = asyncio.create_task(post(c, body(batch(seq=1, stream="first"))))  # keeps the writer busy
        await asyncio.sleep(0.01)
        others = await asyncio.gather(
            *(post(c, body(batch(seq=1, stream=f"s-{i}"))) for i in range(4)),
            post(c, body(batch(seq=1, stream="lab", site="lab"))))
        await first
    assert [r.status_code for r in others] == [200, 200, 200, 200, 422]
    assert assert_error(others[-1], 422, "unknown site")
    assert sorted(ledger.committed) == sorted([("first", 1)] + [(f"s-{i}", 1) for i in range(4)])
    assert ledger.transactions[1:] == [1, 1, 1, 1]  # after the failed group: one by one


async def test_rejected_pushes_change_nothing_and_are_counted() -> None:
    app, ledger = make_app()
    async with client(app) as c:
        await post(c, body(batch(seq=1)))
        before_state = ledger.state()
        before_nodes = (await c.get("/v1/nodes")).json()
        bad = [
            await c.post("/v1/batches", content=body(batch(seq=2)),
                         headers={"Content-Type": "application/json"}),
            await post(c, body(batch(node="gpu-node-02", seq=2))),
            await post(c, b"{"),
            await post(c, body(batch(seq=2)), **{"Content-Type": "text/plain"}),
            await post(c, json.dumps(_with({"readings.util.0": 2.0}) | {"seq": 2}).encode()),
        ]
        assert [r.status_code for r in bad] == [401, 403, 400, 415, 422]
        assert ledger.state() == before_state
        assert (await c.get("/v1/nodes")).json() == before_nodes
        metrics = (await c.get("/metrics")).text
    for outcome, n in (("accepted", 1), ("rejected_401", 1), ("rejected_403", 1), ("rejected_400", 1),
                       ("rejected_415", 1), ("rejected_422", 1), ("duplicate", 0)):
        # a process's own families carry its replica label (the listen address here)
        sample = f'wattledger_ingest_batches_total{{outcome="{outcome}",replica="127.0.0.1:0"}} {float(n)}'
        assert sample in metrics


async def test_concurrent_pushes_share_transactions() -> None:
    ledger = FakeLedger(delay=0.02)  # a slow commit: requests pile up behind it
    app, _ = make_app(ledger)
    async with client(app) as c:
        answers = await asyncio.gather(*(post(c, body(batch(seq=1, stream=f"s-{i}"))) for i in range(40)))
    assert all(r.status_code == 200 and r.json()["accepted"] == 4 for r in answers)
    assert sum(ledger.transactions) == 40
    assert len(ledger.transactions) < 40  # group commit: fewer transactions than batches
    assert ledger.readings == {"gpu-node-01": 160}


async def test_full_queue_is_429_with_retry_after_and_changes_nothing_it_refused() -> None:
    ledger = FakeLedger(delay=0.05)
    app, _ = make_app(ledger, max_queue_batches=1, max_group_batches=1)
    async with client(app) as c:
        answers = await asyncio.gather(*(post(c, body(batch(seq=1, stream=f"s-{i}"))) for i in range(12)))
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
    for r in answers:
        if r.status_code == 429:
            assert_error(r, 429, "overloaded")
            assert r.headers["retry-after"] == "1"
    assert len(ledger.committed) == codes.count(200)


async def test_pending_bytes_bound_is_429() -> None:
    app, ledger = make_app(max_pending_bytes=1024, max_body_bytes=MIB)
    gate, holding = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:  # holds its bytes while the second push comes
        yield json.dumps(batch(seq=1, n=40, stream="slow")).encode()[:2000]
        holding.set()  # the app took the first 2000 bytes and asks for more
        await gate.wait()

    async with client(app) as c:
        first = asyncio.create_task(c.post("/v1/batches", content=slow_body(), headers=AUTH))
        await asyncio.wait_for(holding.wait(), 10)
        second = await post(c, body(batch(seq=1, stream="other")))
        gate.set()
        await first
    assert_error(second, 429, "overloaded")
    assert second.headers["retry-after"] == "1"
    assert ledger.state() == ({}, {})


async def test_ledger_fault_is_500_json_and_the_batch_can_be_sent_again() -> None:
    ledger = FakeLedger(fail_with=RuntimeError("disk on fire"))
    app, _ = make_app(ledger)
    async with client(app) as c:
        r = await post(c, body(batch()))
        assert_error(r, 500, "internal error")
        not_ready = await c.get("/readyz")
        ledger.fail_with = None
        again = await post(c, body(batch()))
        ready = await c.get("/readyz")
        metrics = (await c.get("/metrics")).text
    assert not_ready.status_code == 503
    assert "disk on fire" in not_ready.json()["detail"]["last_commit_error"]
    assert ready.status_code == 200  # the next commit that succeeds makes it ready again
    assert again.json() == {"accepted": 4, "duplicate": False}
    assert 'wattledger_ingest_batches_total{outcome="error",replica="127.0.0.1:0"} 1.0' in metrics


async def test_big_batch_is_checked_off_the_event_loop_and_accepted() -> None:
    app, ledger = make_app()
    big = batch(n=30_000, t0=NOW - 40_000)  # about 1.5 MB of JSON: parsed in a worker thread
    async with client(app) as c:
        r = await post(c, body(big))
    assert r.json() == {"accepted": 30_000, "duplicate": False}
    assert math.isclose(ledger.readings["gpu-node-01"], 30_000)


SERVICE_FAMILIES = ("wattledger_ingest_batches", "wattledger_collector_request_duration_seconds",
                    "wattledger_ingest_pending_bytes", "wattledger_ingest_queue_batches",
                    "wattledger_collector_http_refusals", "wattledger_ingest_auth_failures")


async def test_every_refusal_leaves_the_real_ledger_unchanged(tmp_path: Any) -> None:
    s = settings(db=f"sqlite:///{tmp_path}/ledger.db", max_body_bytes=MIB)
    ledger = open_ledger(s, clock=lambda: NOW)
    app = create_app(s, ledger=ledger, clock=lambda: NOW)

    async def books(c: Any) -> Any:
        spend = (await c.get("/v1/spend", params={"group_by": "device", "month": "2025-11"})).json()
        text = (await c.get("/metrics")).text
        ledger_series = sorted((smp.name, tuple(sorted(smp.labels.items())), smp.value)
                               for fam in text_string_to_metric_families(text)
                               if fam.name not in SERVICE_FAMILIES and not fam.name.startswith("process_")
                               for smp in fam.samples)
        return spend, ledger_series, (await c.get("/v1/nodes")).json()

    refusals = [
        ({"Authorization": "Bearer nope"}, body(batch(seq=2, t0=NOW - 30, e0=3000)), 401),
        ({}, body(batch(node="gpu-node-02", seq=2)), 403),
        ({"Content-Length": str(2 * MIB)}, b"{}", 413),
        ({"Content-Encoding": "gzip"}, gzip.compress(b"[" + b" " * (4 * MIB) + b"]"), 413),
        ({"Content-Type": "text/csv"}, body(batch(seq=2)), 415),
        ({}, b'{"node": ', 400),
        ({"Content-Encoding": "gzip"}, b"\x1f\x8b broken", 400),
        ({}, json.dumps(_with({"readings.power_w.0": -1.0}) | {"seq": 2}).encode(), 422),
        ({}, body(batch(seq=2, site="mars")), 422),
    ]
    try:
        async with client(app) as c:
            assert (await post(c, body(batch(seq=1, t0=NOW - 60)))).status_code == 200
            before = await books(c)
            for headers, payload, status in refusals:
                r = await post(c, payload, **headers)
                assert r.status_code == status, (headers, r.text)
                assert await books(c) == before, (headers, status)
    finally:
        ledger.close()
