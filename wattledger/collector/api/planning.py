"""POST /v1/plan: ``wattledger plan`` over HTTP, on the collector's own sites and ledger.

The body is the scenario as JSON (the keys of the scenario YAML, docs/planning.md); the answer
is the plan's JSON document, the same as ``wattledger plan --format json`` would print against
this collector's configuration and ledger. The request is bounded like a push: JSON only
(415), gzip accepted, ``MAX_PLAN_BODY_BYTES`` at most (413, before the rest is read), an
unparseable body 400; a scenario that cannot be planned is a 422 naming the field
(``{"error": "invalid scenario", "detail": {"field", "reason", "issues": [...]}}``); at most
``MAX_PLANS_AT_ONCE`` plans are computed at a time (429 with Retry-After beyond). The planner is
the command line's (``wattledger.plan.build``): the collector's HTTP layer is the one place in
the collector that calls it (tests/test_layers.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from wattledger.collector.accounting.cooling import Cooling
from wattledger.collector.accounting.history import MeasuredHistory
from wattledger.collector.api.errors import error_response, json_response
from wattledger.collector.api.httpstats import ServiceStats
from wattledger.collector.api.runtime import PlanHistory, RuntimeHolder
from wattledger.collector.ingest.checks import (
    PendingBytes,
    Refusal,
    check_content_encoding,
    check_content_type,
    overloaded,
    read_body,
    why,
)
from wattledger.collector.settings import CollectorSettings
from wattledger.collector.store.base import StoreUnavailable
from wattledger.config import ConfigError
from wattledger.plan.siteconfig import PlanSites

#: a scenario is a few dozen lines; a megabyte is a mistake or an attack
MAX_PLAN_BODY_BYTES = 1024 * 1024
#: plans computed at once (each is CPU work of a few hundred milliseconds)
MAX_PLANS_AT_ONCE = 2

PLAN_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": "the scenario: site, start, months, fleet, … (docs/planning.md)",
        "required": ["site", "start", "months", "fleet"],
        "properties": {"site": {"type": "string"}, "start": {"type": "string", "pattern": r"^\d{4}-\d{2}$"},
                       "months": {"type": "integer", "minimum": 1},
                       "fleet": {"type": "array", "items": {"type": "object"}}}}}}},
}


def plan_sites_of(settings: CollectorSettings) -> PlanSites:
    """The collector's sites as the planner reads them (its cooling: the site's model, or its
    PUE for a site without one)."""
    cooling: dict[str, Cooling] = {}
    for name, site in settings.sites.items():
        cooling[name] = site.cooling_model
    return PlanSites(sites=settings.sites, cooling=cooling, db=settings.db,
                     source="the collector's configuration")


def planning_router(holder: RuntimeHolder, settings: CollectorSettings, stats: ServiceStats) -> APIRouter:
    router = APIRouter(tags=["planning"])
    pending = PendingBytes(MAX_PLAN_BODY_BYTES * MAX_PLANS_AT_ONCE)
    running = asyncio.Semaphore(MAX_PLANS_AT_ONCE)
    sites = plan_sites_of(settings)

    @router.post("/v1/plan", summary="What a fleet will cost to run and cool, per month (a scenario in, "
                 "the plan out)", openapi_extra=PLAN_OPENAPI, response_model=None)
    async def post_plan(request: Request) -> Response:
        started = time.perf_counter()
        rt = holder.get()
        hold = pending.reserve()
        try:
            check_content_type(request.headers.get("content-type"))
            gzip = check_content_encoding(request.headers.get("content-encoding"))
            body = await read_body(request.stream(), limit=MAX_PLAN_BODY_BYTES, gzip=gzip, hold=hold)
            try:
                raw = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise Refusal(400, "malformed JSON", why("body", str(exc))) from None
            if not isinstance(raw, dict):
                issue = why("body", "the scenario must be a JSON object (site, start, months, fleet)")
                raise Refusal(422, "invalid scenario", {**issue, "issues": [issue]})
            if running.locked():
                raise overloaded("plans are being computed")
            async with running:
                answer = await run_in_threadpool(_plan, raw, sites, rt.ledger.plan_history)
        except Refusal as refusal:
            answer = error_response(refusal.status, refusal.error, refusal.detail, refusal.headers)
        except ClientDisconnect:
            answer = error_response(400, "client disconnected")
        finally:
            hold.release()
        stats.observe("/v1/plan", time.perf_counter() - started)
        return answer

    return router


def _plan(raw: Any, sites: PlanSites, open_history: Callable[[], PlanHistory]) -> Response:
    from wattledger.plan.build import issue_fields, make_plan
    from wattledger.plan.scenario import ScenarioError

    opened: list[PlanHistory] = []

    def history() -> MeasuredHistory:
        opened.append(open_history())
        return opened[-1]

    try:
        doc = make_plan(raw, sites, history)
    except ScenarioError as exc:
        issues = issue_fields(exc)
        return error_response(422, "invalid scenario", {**issues[0], "issues": issues})
    except StoreUnavailable as exc:
        return error_response(503, "database unavailable", {"reason": str(exc)}, {"Retry-After": "5"})
    except ConfigError as exc:  # the site's cooling or ledger cannot back the plan
        return error_response(422, "cannot plan", why("site", str(exc)))
    finally:
        for held in opened:
            held.close()
    return json_response(doc)
