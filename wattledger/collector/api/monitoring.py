"""GET /metrics, /healthz and /readyz.

/metrics joins the ledger's families (the same on every replica: the store's figures) and this
process's own (``wattledger_ingest_batches_total``, answer times, HTTP refusals, ``process_*``),
which carry a ``replica`` label so that Prometheus scraping each replica keeps them apart; rules
and dashboards take ``max without (instance)`` of the ledger's families and ``sum`` of these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from starlette.concurrency import run_in_threadpool

from wattledger.collector.api.errors import error_response, json_response
from wattledger.collector.api.httpstats import ServiceStats
from wattledger.collector.api.runtime import RuntimeHolder

REPLICA_LABEL = "replica"


class Labelled(Collector):
    """Another collector's families with one more label on every sample (``replica``)."""

    def __init__(self, inner: Collector, name: str, value: str) -> None:
        self._inner = inner
        self._name = name
        self._value = value

    def collect(self) -> Iterator[Metric]:
        for family in self._inner.collect():
            family.samples = [Sample(s.name, {**s.labels, self._name: self._value}, s.value, s.timestamp,
                                     s.exemplar) for s in family.samples]
            yield family


def metrics_text(collectors: Sequence[Collector]) -> Callable[[], bytes]:
    """/metrics: a collector that writes its own Prometheus text (``render``, as the ledger's
    does: at 10,000 GPUs ~10x faster than client_python's formatting of each sample) writes it;
    the others go through ``generate_latest``."""
    own: list[Callable[[], bytes]] = []
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        render = getattr(collector, "render", None)
        if callable(render):
            own.append(render)
        else:
            registry.register(collector)

    def text() -> bytes:
        return b"".join([*(render() for render in own), generate_latest(registry)])

    return text


def monitoring_router(holder: RuntimeHolder, stats: ServiceStats) -> APIRouter:
    router = APIRouter(tags=["monitoring"])

    @router.get("/metrics", summary="Prometheus metrics", response_model=None)
    def get_metrics() -> Response:
        started = time.perf_counter()
        body = holder.get().metrics()
        stats.observe("/metrics", time.perf_counter() - started)
        return Response(body, 200, media_type=CONTENT_TYPE_LATEST)

    # GET is the documented probe; HEAD too (load balancers such as HAProxy's `option httpchk`
    # and AWS target groups may probe with HEAD), answered like GET without a body, kept out
    # of the OpenAPI document (one operation per probe there)
    @router.api_route("/healthz", methods=["HEAD"], include_in_schema=False, response_model=None)
    @router.get("/healthz", summary="The process is up", response_model=None)
    async def get_healthz() -> Response:
        return json_response({"status": "ok"})

    @router.api_route("/readyz", methods=["HEAD"], include_in_schema=False, response_model=None)
    @router.get("/readyz", summary="Ready to ingest: writer, scheduler, database", response_model=None)
    async def get_readyz() -> Response:
        rt = holder.current
        if rt is None:
            return error_response(503, "not ready", {"reason": "starting or stopping"})
        try:  # the database answers now (a load balancer's health check: take a replica out)
            await run_in_threadpool(rt.ledger.ping)
            database_error = None
        except Exception as exc:
            database_error = f"{type(exc).__name__}: {exc}"
        refresh, writer = rt.periodic.status(), rt.writer
        checks = {"writer": writer.alive, "scheduler": rt.periodic.running,
                  "database": database_error is None and refresh.last_ok_at is not None
                  and refresh.last_error is None and writer.recent_fault() is None}
        if all(checks.values()):
            return json_response({"status": "ready", "checks": checks})
        return error_response(503, "not ready", {"checks": checks, "database_error": database_error,
                                                 "last_refresh_error": refresh.last_error,
                                                 "last_commit_error": writer.last_fault})

    return router
