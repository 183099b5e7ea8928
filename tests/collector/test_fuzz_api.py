"""Fuzz the collector's API from its own OpenAPI document (schemathesis), on the real ledger:
no input yields a 5xx, no refused request changes the ledger, and every answer is what the
document says: a declared status, a declared media type, a body of the declared schema
(Schemathesis' response-conformance checks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from httpkit import NOW, TOKENS, fastapi_of
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from wattledger.collector.api.app import create_app, open_ledger
from wattledger.collector.api.runtime import LedgerService
from wattledger.collector.settings import settings_from

MAX_EXAMPLES = 50
# POST /api/v1/write takes snappy-compressed protobuf: generated as bytes, sent as they are (its
# bodies are fuzzed on their own in test_fuzz_remote_write.py)
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


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
    fastapi_of(create_app(settings_from({"tokens": TOKENS, "db": "sqlite:////nonexistent/unused.db"}))).openapi())


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
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        assert ledger_state(ledger) == before, (case.method, case.path, response.status_code)
        content_type = (response.headers.get("content-type") or [""])[0]  # header -> list of values
        if content_type.startswith("application/json"):
            assert set(response.json()) == {"error", "detail"}


#: a scenario of explicit power: it plans on an empty ledger
PLAN = {"site": "default", "start": "2026-01", "months": 2, "fleet": [
    {"name": "x", "servers": 2, "gpus_per_server": 8, "model": "NVIDIA H100 80GB HBM3", "utilization": 0.5,
     "power": {"idle_w": 80, "max_w": 700, "node_overhead_w": 1200}}]}
#: answers that random generation may not reach in MAX_EXAMPLES, each held to the document too
PICKED: list[tuple[str, str, dict[str, Any], int]] = [
    ("/v1/spend", "GET", {"query": {"month": "2025-13"}}, 422),
    ("/v1/spend", "GET", {"query": {"group_by": "planet"}}, 422),
    ("/v1/spend", "GET", {"query": {"site": "mars"}}, 404),
    ("/v1/spend", "GET", {"query": {"format": "csv", "month": "2025-11"}}, 200),
    ("/v1/spend", "GET", {"query": {"month": "2025-11"}}, 200),
    ("/v1/spend", "GET", {"query": {"group_by": "team", "format": "csv", "month": "2025-11"}}, 200),
    ("/v1/jobs", "GET", {"query": {"from": "yesterday"}}, 422),
    ("/v1/jobs", "GET", {"query": {"site": "mars"}}, 404),
    ("/v1/jobs", "GET", {"query": {"format": "csv"}}, 200),
    ("/v1/jobs", "GET", {"query": {"from": "2025-11-01T00:00:00Z", "team": "nlp"}}, 200),
    ("/v1/nodes", "GET", {}, 200),
    ("/metrics", "GET", {}, 200),
    ("/healthz", "GET", {}, 200),
    ("/v1/batches", "POST", {"body": {"node": "gpu-node-01"}}, 422),
    ("/v1/batches", "POST", {"body": {"node": "gpu-node-01"}, "headers": {"Content-Encoding": "gzip"}}, 400),
    ("/v1/batches", "POST", {"body": {}, "headers": {"Authorization": "Basic eA=="}}, 401),
    ("/v1/plan", "POST", {"body": PLAN}, 200),
    ("/v1/plan", "POST", {"body": {**PLAN, "months": -1}}, 422),
    ("/v1/plan", "POST", {"body": {**PLAN, "fleet": [{"name": "existing", "measured": True}]}}, 422),
    ("/api/v1/write", "POST", {"body": b"\x00", "headers": {"Content-Encoding": "snappy"}}, 401),
]


@pytest.mark.parametrize(("path", "method", "parts", "status"), PICKED,
                         ids=[f"{m} {p} {s}" for p, m, _, s in PICKED])
def test_picked_answers_are_what_the_document_says(fuzz_app: tuple[FastAPI, LedgerService], path: str,
                                                   method: str, parts: dict[str, Any], status: int) -> None:
    app, _ = fuzz_app
    headers = {"Authorization": f"Bearer {TOKENS['gpu-node-01']}", **parts.get("headers", {})}
    case = schema[path][method].Case(query=parts.get("query"), headers=headers,
                                     **({"body": parts["body"]} if "body" in parts else {}))
    response = case.call(app=app)
    assert response.status_code == status, response.text[:300]
    case.validate_response(response, checks=CHECKS)


def test_the_document_declares_the_real_media_types_and_errors() -> None:
    doc = fastapi_of(create_app(settings_from({"tokens": TOKENS, "db": "sqlite:////nonexistent/unused.db"}))).openapi()
    spend = doc["paths"]["/v1/spend"]["get"]["responses"]
    assert set(spend["200"]["content"]) == {"application/json", "text/csv"}
    assert spend["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    (metrics_type,) = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics_type.startswith("text/plain; version=")
    push = doc["paths"]["/v1/batches"]["post"]
    declared = {"400", "401", "403", "408", "413", "415", "422", "429", "431", "500", "503"}
    assert declared <= set(push["responses"])
    encoding = next(p for p in push["parameters"] if p["name"] == "Content-Encoding")
    assert encoding["schema"]["enum"] == ["gzip", "identity"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for operations in doc["paths"].values():
        for operation in operations.values():
            for code, answer in operation["responses"].items():
                if code != "200":  # every error of every operation is the Error shape
                    assert answer["content"] == {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"}}}, code
