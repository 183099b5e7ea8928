"""Fuzz POST /v1/batches with hypothesis, on the real ledger: mutated, truncated, compressed and
random bodies never give a 5xx, every refusal is JSON, and a refused batch changes nothing."""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from httpkit import AUTH, NOW, TOKENS, batch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from wattledger.collector.api.app import create_app, open_ledger
from wattledger.collector.api.runtime import LedgerService
from wattledger.collector.settings import settings_from

with warnings.catch_warnings():  # starlette asks for httpx2, which this project does not use
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
PATHS = ["node", "stream", "seq", "labels", "labels.site", "devices", "devices.0", "devices.0.index",
         "devices.0.kind", "devices.0.power_limit_w", "readings", "readings.device", "readings.ts",
         "readings.power_w", "readings.energy_j", "readings.util", "readings.temp_c", "readings.ts.1",
         "readings.power_w.2", "readings.device.0", "readings.util.3", "readings.clock_events"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, LedgerService]]:
    db = tmp_path_factory.mktemp("fuzzb") / "ledger.db"
    s = settings_from({"db": f"sqlite:///{db}", "tokens": TOKENS, "refresh_interval_seconds": 60,
                       "max_body_bytes": 65536})
    ledger = open_ledger(s, clock=lambda: NOW)
    with TestClient(create_app(s, ledger=ledger, clock=lambda: NOW)) as client:
        yield client, ledger
    ledger.close()


def mutate(doc: dict[str, Any], path: str, value: Any, delete: bool) -> dict[str, Any]:
    """A copy of ``doc`` with ``path`` set to ``value`` (or deleted); unchanged where an earlier
    mutation made the path impossible to follow."""
    doc = json.loads(json.dumps(doc))
    where: Any = doc
    *parents, last = path.split(".")
    for part in parents:
        if isinstance(where, dict) and part in where:
            where = where[part]
        elif isinstance(where, list) and part.isdigit() and int(part) < len(where):
            where = where[int(part)]
        else:
            return doc
    if isinstance(where, dict):
        if delete:
            where.pop(last, None)
        else:
            where[last] = value
    elif isinstance(where, list) and last.isdigit() and int(last) < len(where):
        if delete:
            del where[int(last)]
        else:
            where[int(last)] = value
    return doc


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    doc = batch(seq=draw(st.integers(1, 10**6)), n=4)
    for _ in range(draw(st.integers(1, 3))):
        doc = mutate(doc, draw(st.sampled_from(PATHS)), draw(JSON), draw(st.booleans()))
    raw = json.dumps(doc, allow_nan=True).encode()
    how = draw(st.sampled_from(["plain", "gzip", "truncated", "bytes", "gzip-truncated"]))
    headers = dict(AUTH)
    if how == "gzip":
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    elif how == "truncated":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif how == "bytes":
        raw = draw(st.binary(max_size=200))
    elif how == "gzip-truncated":
        raw = gzip.compress(raw)[: draw(st.integers(0, 40))]
        headers["Content-Encoding"] = "gzip"
    return raw, headers


def ledger_state(ledger: LedgerService) -> Any:
    return ledger.nodes(), ledger.spend(site=None, month="2025-11", group_by="device")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bodies())
def test_no_body_gives_a_server_error_and_refusals_change_nothing(
        api: tuple[TestClient, LedgerService], case: tuple[bytes, dict[str, str]]) -> None:
    client, ledger = api
    raw, headers = case
    before = ledger_state(ledger)
    r = client.post("/v1/batches", content=raw, headers=headers)
    event(f"status {r.status_code}")  # --hypothesis-show-statistics shows how far bodies got
    assert r.status_code < 500, r.text
    assert r.status_code in (200, 400, 403, 413, 415, 422), r.text
    doc = r.json()
    if r.status_code == 200:
        assert set(doc) == {"accepted", "duplicate"}
    else:
        assert set(doc) == {"error", "detail"} and doc["error"]
        assert ledger_state(ledger) == before
