"""The collector's OpenAPI document (``/openapi.json``): what the service answers, as it answers.

FastAPI's own document describes a FastAPI application: a 422 of its ``HTTPValidationError``
shape, every answer JSON, no 5xx. This one is checked by Schemathesis against the running
application (tests/collector/test_fuzz_api.py, status codes, media types and bodies), so it
says what the collector really does: every error is ``Error`` (``{"error", "detail"}``), the
CSV of ``/v1/spend`` is ``text/csv`` and ``/metrics`` is Prometheus text, and each operation
lists the refusals of the server's protocol (400, 408, 414, 431: ``collector/api/server.py``), its
500 and, where it needs the ledger, its 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST

from wattledger.contract import NODE_NAME_PATTERN
from wattledger.wire import Batch

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error", "detail"],
    "properties": {"error": {"type": "string", "description": "what went wrong, in a few words"},
                   "detail": {"description": "the field and the reason, where there is one"}}}


def error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: what the server's protocol answers itself, before the application sees a request
SERVER_REFUSALS = {
    "400": error("malformed HTTP (framing, header syntax); for a push also a body that cannot be "
                 "parsed"),
    "408": error("the headers were not complete in time, or the body stalled"),
    "414": error("the request target is over 8 KiB"),
    "431": error("the headers are over the limit (in all, or one field)"),
    "500": error("a fault of the collector (logged); for a push: the batch was not stored"),
}
NOT_READY = {"503": error("the collector is starting or stopping, or its database does not answer "
                          "(store unavailable: ask again after Retry-After)")}

BATCH_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Batch"}}}},
    "parameters": [
        {"name": "Content-Encoding", "in": "header", "required": False,
         "description": "gzip: the body is gzip (its size is checked again after un-gzipping)",
         "schema": {"type": "string", "enum": ["gzip", "identity"]}},
        {"name": "X-Wattledger-Node", "in": "header", "required": False,
         "description": "the node the agent is (a claim, not a credential): refused pushes are "
                        "counted and logged by it",
         "schema": {"type": "string", "pattern": NODE_NAME_PATTERN}},
    ],
    "security": [{"bearer": []}],
    "responses": {
        "200": json_answer("committed, or a duplicate of a committed batch", {
            "type": "object", "required": ["accepted", "duplicate"],
            "properties": {"accepted": {"type": "integer", "minimum": 0},
                           "duplicate": {"type": "boolean"}}}),
        "401": error("no token, or a present and wrong one"),
        "403": error("the token of another node"),
        "413": error("body over the limit, before or after gzip"),
        "415": error("not JSON, or an unknown Content-Encoding"),
        "409": error("another agent pushes for this node: its stream holds the batch's devices (send "
                     "again after Retry-After; the batch is kept)"),
        "422": error("an invalid batch"),
        "429": error("overloaded: send again after Retry-After seconds"),
        "503": error("the collector is starting or stopping, or its database does not answer; send "
                     "again later"),
    },
}

WRITE_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/x-protobuf": {
        "schema": {"type": "string", "format": "binary",
                   "description": "a snappy-compressed prometheus.WriteRequest (remote-write 1.0)"}}}},
    "parameters": [
        {"name": "Content-Encoding", "in": "header", "required": True, "description": "the body is snappy",
         "schema": {"type": "string", "enum": ["snappy"]}},
    ],
    "security": [{"bearer": []}],
    "responses": {
        "200": json_answer("committed; what became of the request's samples, by outcome", {
            "type": "object", "required": ["samples"],
            "properties": {"samples": {"type": "object",
                                       "additionalProperties": {"type": "integer", "minimum": 0}}}}),
        "400": error("not snappy, or not a prometheus.WriteRequest"),
        "401": error("no token, or one that remote_write_tokens does not have"),
        "403": error("a series names a site other than the token's"),
        "413": error("the body, or what it inflates to, is over max_body_bytes"),
        "415": error("not application/x-protobuf with Content-Encoding: snappy"),
        "422": error("a series names a site this collector does not have"),
        "503": error("busy, starting or stopping, or the database does not answer: send it again "
                     "(Retry-After)"),
    },
}

_OBJECT = {"type": "object"}
#: per path and method: the answers FastAPI cannot know (media types, errors, bodies)
ANSWERS: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/spend", "get"): {
        "200": {"description": "the month's rows: JSON, or CSV with format=csv or Accept: text/csv",
                "content": {"application/json": {"schema": {
                                "type": "object", "required": ["group_by", "rows"],
                                "properties": {"rows": {"type": "array", "items": _OBJECT}}}},
                            "text/csv": {"schema": {"type": "string"}}}},
        "404": error("an unknown site"),
        "422": error("a bad query parameter"),
        **NOT_READY,
    },
    ("/v1/plan", "post"): {
        "200": json_answer("the plan (docs/planning.md, \"The report\")", {
            "type": "object", "required": ["site", "currency", "months", "totals", "proposed_plan",
                                           "assumptions"],
            "properties": {"months": {"type": "array", "items": _OBJECT},
                           "proposed_plan": {"type": "array", "items": _OBJECT}}}),
        "400": error("a body that cannot be parsed (broken JSON, broken gzip)"),
        "413": error("body over the limit, before or after gzip"),
        "415": error("not JSON, or an unknown Content-Encoding"),
        "422": error("a scenario that cannot be planned: detail names the field (and lists every issue)"),
        "429": error("plans are being computed already: send again after Retry-After seconds"),
        "503": error("the collector is starting or stopping, or its database does not answer"),
    },
    ("/v1/jobs", "get"): {
        "200": {"description": "the allocations held within [from, to]: JSON, or CSV with format=csv or "
                               "Accept: text/csv",
                "content": {"application/json": {"schema": {
                                "type": "object", "required": ["jobs", "from", "to"],
                                "properties": {"jobs": {"type": "array", "items": _OBJECT},
                                               "from": {"type": "number"}, "to": {"type": "number"}}}},
                            "text/csv": {"schema": {"type": "string"}}}},
        "404": error("an unknown site"),
        "422": error("a bad query parameter (from/to not a time, from after to)"),
        **NOT_READY,
    },
    ("/v1/nodes", "get"): {
        "200": json_answer("every node the ledger knows", {
            "type": "object", "required": ["nodes"],
            "properties": {"nodes": {"type": "array", "items": _OBJECT}}}),
        **NOT_READY,
    },
    ("/metrics", "get"): {
        "200": {"description": "Prometheus text exposition",
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **NOT_READY,
    },
    ("/healthz", "get"): {
        "200": json_answer("the process serves", {
            "type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}),
    },
    ("/readyz", "get"): {
        "200": json_answer("ready to ingest", {
            "type": "object", "required": ["status", "checks"],
            "properties": {"status": {"const": "ready"}, "checks": _OBJECT}}),
        "503": error("not ready: the failing check and its error are in detail"),
    },
}


def describe_answers(doc: dict[str, Any]) -> None:
    """Put the collector's real answers into FastAPI's document, in place."""
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if "422" in responses:  # FastAPI's HTTPValidationError: the collector answers Error
                responses["422"] = error("a bad parameter")
            for code, answer in ANSWERS.get((path, method), {}).items():
                responses[code] = answer
            for code, answer in SERVER_REFUSALS.items():
                responses.setdefault(code, answer)
            operation["responses"] = dict(sorted(responses.items()))
    schemas = doc.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def install_openapi(app: FastAPI) -> None:
    """OpenAPI with the wire schema's Batch, the error shape and every answer described."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            batch = Batch.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(batch.pop("$defs", {}))
            schemas["Batch"] = batch
            schemas["Error"] = ERROR_SCHEMA
            doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            describe_answers(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
