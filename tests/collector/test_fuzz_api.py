"""Fuzz the collector's API from its own OpenAPI document (schemathesis), on the real ledger:
no input yields a 5xx, and no refused request changes the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from httpkit import NOW, TOKENS
from hypothesis import HealthCheck, settings

from wattledger.collector.app import LedgerService, create_app, open_ledger
from wattledger.collector.settings import settings_from

MAX_EXAMPLES = 50


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, LedgerService]]:
    db = tmp_path_factory.mktemp("fuzz") / "ledger.db"
    s = settings_from({"db": f"sqlite:///{db}", "tokens": TOKENS, "refresh_interval_seconds": 60,
                       "max_body_bytes": 65536,
                       "plan": [{"site": "default", "month": "2025-11", "cost": 1000}]})
    ledger = open_ledger(s, clock=lambda: NOW)
    yield create_app(s, ledger=ledger, clock=lambda: NOW), ledger
    ledger.close()


# the document of an app with the same settings (building one opens nothing: the ledger is
# opened by its lifespan); each case is then sent to the fixture's app, on the real ledger
schema = schemathesis.openapi.from_dict(
    create_app(settings_from({"tokens": TOKENS, "db": "sqlite:////nonexistent/unused.db"})).openapi())


def ledger_state(ledger: LedgerService) -> Any:
    return ledger.nodes(), ledger.spend(site=None, month="2025-11", group_by="device")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_input_gives_a_server_error(case: Any, fuzz_app: tuple[FastAPI, LedgerService]) -> None:
    app, ledger = fuzz_app
    before = ledger_state(ledger)
    # the token of gpu-node-01 (401s are tested on their own): a generated batch of that node
    # gets past authentication to the validation and the ledger
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKENS['gpu-node-01']}"}
    response = case.call(app=app)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    if response.status_code >= 400:
        assert ledger_state(ledger) == before, (case.method, case.path, response.status_code)
        content_type = (response.headers.get("content-type") or [""])[0]  # header -> list of values
        if content_type.startswith("application/json"):
            assert set(response.json()) == {"error", "detail"}
