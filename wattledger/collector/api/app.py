"""The collector's HTTP service: ``create_app(settings)`` builds the FastAPI application.

Nothing is made at import time. The lifespan opens the ledger (unless one is handed in), starts
the ledger writer thread (group commit) and the periodic work, and closes them in reverse
order, committing what is queued, when the server stops.

Endpoints (docs/collector.md): POST /v1/batches, GET /v1/spend, GET /v1/nodes, GET /metrics,
GET /healthz, GET /readyz, and the OpenAPI documents at /docs and /openapi.json. Every error is
JSON ``{"error": ..., "detail": ...}``; only a fault of the server itself is a 500.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.registry import Collector
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from wattledger import __version__
from wattledger.collector.api.docs import install_docs
from wattledger.collector.api.fastpath import BatchFastPath, Push, is_push
from wattledger.collector.api.httpstats import ServiceCollector, ServiceStats, outcome_of
from wattledger.collector.api.openapi import BATCH_OPENAPI, install_openapi
from wattledger.collector.ingest.auth import TokenBook
from wattledger.collector.ingest.intake import (
    Answer,
    BatchIngest,
    BatchWriter,
    IngestLimits,
    IngestResultLike,
    RequestHead,
    why,
)
from wattledger.collector.ingest.periodic import PeriodicWork
from wattledger.collector.settings import CollectorSettings
from wattledger.collector.sites import Month, SiteConfig
from wattledger.collector.workers import RelayApp, WorkerPool, WriterLink, WriterSide, serve_worker
from wattledger.wire import ValidBatch, plain_reason

log = logging.getLogger(__name__)

GroupBy = Literal["site", "cluster", "node", "device"]


def _plausible_month(month: str) -> str:
    # the pattern allows year 0000, which no calendar (or datetime) in the ledger can place
    if not 1970 <= int(month[:4]) <= 9998:
        raise ValueError("the year must be between 1970 and 9998")
    return month


QueryMonth = Annotated[Month, AfterValidator(_plausible_month)]


class LedgerService(Protocol):
    """What the HTTP service needs of ``wattledger.collector.ingest.ledger.Ledger``."""

    def ingest(self, batches: Sequence[ValidBatch]) -> Sequence[IngestResultLike]: ...
    def collector(self) -> Collector: ...
    def spend(self, *, site: str | None, month: str | None, group_by: GroupBy) -> list[dict[str, Any]]: ...
    def nodes(self) -> list[dict[str, Any]]: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


def open_ledger(settings: CollectorSettings, clock: Callable[[], float] = time.time) -> LedgerService:
    """The real ledger of these settings (imported here: the store is loaded only when needed)."""
    from wattledger.collector.ingest.ledger import Ledger

    return Ledger(settings.db, settings.sites, settings.plan, max_gap_seconds=settings.max_gap_seconds,
                  clock=clock, stale_after_seconds=settings.stale_after_seconds,
                  rollup_after_days=settings.rollup_after_days)


def site_check(settings: CollectorSettings) -> Callable[[ValidBatch], None]:
    """Refuse (422) a batch of a site this collector does not have, before it joins a group.

    Not ``Ledger.check``: that one takes the ledger's lock, which a commit holds through its
    fsync, and the event loop must never wait for a commit. The rarer refusals (a stream of
    another node) come from ``Ledger.ingest`` in the writer thread, which then commits the
    rest of the group without the refused batch.
    """
    from wattledger.collector.ingest.ledger import UnknownSite, site_and_cluster

    known = frozenset(settings.sites)

    def check(valid: ValidBatch) -> None:
        site, _ = site_and_cluster(valid.batch)
        if site not in known:
            raise UnknownSite(site)

    return check


def token_book(settings: CollectorSettings) -> TokenBook:
    """The tokens of these settings (the tokens_file is read now, once per process)."""
    return TokenBook(settings.tokens, settings.hashed_tokens(),
                     allow_unauthenticated=settings.allow_unauthenticated)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, headers,
                    media_type="application/json")


def error_response(status: int, error: str, detail: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": error, "detail": detail}, status, headers)


class CollectorApp(FastAPI):
    """FastAPI, with POST /v1/batches answered ahead of all of it when ``batch_push`` is set:
    agents push thousands of batches a second, and each layer (FastAPI's own call with its
    telemetry look-ups, error and exception middleware, body limit) costs per request about
    what checking a batch does. The fast path answers its own faults (JSON 500), as the stack
    would."""

    batch_push: Push | None = None
    _fast_path: BatchFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.batch_push is not None and is_push(scope):
            if self._fast_path is None:
                self._fast_path = BatchFastPath(super().__call__, self.batch_push)
            await self._fast_path.serve(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


@dataclass
class Runtime:
    """What the lifespan starts: the parts every request uses."""

    ledger: LedgerService
    ingest: BatchIngest
    writer: BatchWriter
    periodic: PeriodicWork
    metrics: Callable[[], bytes]  # the text of /metrics


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


def create_app(settings: CollectorSettings, *, ledger: LedgerService | None = None,
               clock: Callable[[], float] = time.time, fast_ingest: bool = True,
               workers: WorkerPool | None = None) -> FastAPI:
    """The collector application. ``ledger`` given: the caller opened it and closes it.

    ``fast_ingest`` serves POST /v1/batches on plain ASGI ahead of FastAPI's router (the same
    handler either way; off, the FastAPI route answers it). ``workers``: front-end processes
    (``wattledger.collector.workers``) whose batches and relayed requests this app answers;
    they are stopped before the ledger writer.
    """
    stats = ServiceStats()
    limits = IngestLimits(max_body_bytes=settings.max_body_bytes,
                          max_queue_batches=settings.max_queue_batches,
                          max_pending_bytes=settings.max_pending_bytes,
                          max_node_pending_bytes=settings.max_node_pending_bytes,
                          max_group_batches=settings.max_group_batches)
    tokens = token_book(settings)
    holder: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = ledger is None
        led = open_ledger(settings, clock) if ledger is None else ledger
        writer = BatchWriter(led, max_queue=limits.max_queue_batches, max_group=limits.max_group_batches)
        # the ledger's nodes: with the tokens', the names a refused push is counted under
        known = await run_in_threadpool(lambda: [row["node"] for row in led.nodes()])
        ingest = BatchIngest(tokens, writer, limits, clock, precheck=site_check(settings), known_nodes=known)
        periodic = PeriodicWork(led, settings.refresh_interval_seconds)
        metrics = metrics_text([led.collector(), ServiceCollector(stats, ingest.gauges, ingest.counters),
                                ingest.auth_failures,
                                ProcessCollector(registry=None)])  # the collector's own CPU, memory
        writer.start()
        await run_in_threadpool(periodic.run_once)  # month roll-over and stale nodes before serving
        periodic.start()
        holder["rt"] = Runtime(led, ingest, writer, periodic, metrics)
        side = WriterSide(ingest.commit, app, tally)
        links = [asyncio.create_task(serve_worker(channel, side)) for channel in
                 (workers.channels if workers is not None else [])]
        try:
            yield
        finally:
            if workers is not None:  # their in-flight batches are answered meanwhile
                await workers.stop()
            if links:
                await asyncio.wait(links, timeout=5)
            holder.pop("rt", None)
            periodic.stop()
            await run_in_threadpool(writer.stop)
            if own:
                led.close()

    app = CollectorApp(title="wattledger collector", version=__version__, lifespan=lifespan,
                       description="Ingest of GPU power readings; energy, cost, carbon and plan of "
                                   "the fleet.",
                       redirect_slashes=False,  # POST /v1/batches/ is a JSON 404, not a bodiless 307
                       docs_url=None, redoc_url=None)  # install_docs: the pages without a CDN
    app.state.service_stats = stats  # the server's protocol counts its own refusals there (cli.py)
    install_error_handlers(app)

    def runtime() -> Runtime:
        rt = holder.get("rt")
        if rt is None:  # a request before start-up finished or after shutdown began
            raise StarletteHTTPException(503, "not ready")
        return rt

    def tally(status: int, duplicate: bool, seconds: float) -> None:
        """A push answered, by this process or by a worker process."""
        stats.count(outcome_of(status, duplicate))
        stats.observe("/v1/batches", seconds)

    async def push(head: RequestHead, chunks: AsyncIterator[bytes]) -> Answer:
        """One push, from its headers and body chunks to its answer (both routes below use it)."""
        started = time.perf_counter()
        rt = holder.get("rt")
        if rt is None:
            answer = Answer(503, {"error": "not ready", "detail": {"reason": "starting or stopping"}},
                            {"Retry-After": "1"})
        else:
            try:
                answer = await rt.ingest.handle(head, chunks)
            except ClientDisconnect:  # nobody is left to read the answer
                answer = Answer(400, {"error": "client disconnected", "detail": None})
        tally(answer.status, answer.duplicate, time.perf_counter() - started)
        return answer

    # served by BatchFastPath (below) ahead of the router; declared here for the OpenAPI document
    @app.post("/v1/batches", tags=["ingest"], summary="Push one batch of readings (agents)",
              openapi_extra=BATCH_OPENAPI, response_model=None)
    async def post_batch(request: Request) -> Response:
        h = request.headers
        head = RequestHead(h.get("authorization"), h.get("content-type"), h.get("content-encoding"),
                           h.get("content-length"), h.get("x-wattledger-node"))
        answer = await push(head, request.stream())
        return json_response(answer.payload, answer.status, answer.headers)

    if fast_ingest:
        app.batch_push = push

    @app.get("/v1/spend", tags=["finance"], response_model=None,
             summary="Energy, cost and carbon by site, cluster, node or device")
    def get_spend(
        request: Request,
        site: Annotated[str | None, Query(max_length=256, description="one site (default: all)")] = None,
        month: Annotated[QueryMonth | None, Query(description="YYYY-MM (default: this month)")] = None,
        group_by: GroupBy = "site",
        format: Literal["json", "csv"] | None = None,
    ) -> Response:
        started = time.perf_counter()
        rt = runtime()
        if site is not None and site not in settings.sites:
            return error_response(404, "unknown site", why("site", f"{site!r} is not configured"))
        # the month of each site decided here, so the answer can say which it is: without
        # `month`, each site's current month on its own clock (two sites may differ at midnight)
        names = [site] if site is not None else sorted(settings.sites)
        months = {name: month or current_site_month(settings.sites[name], clock()) for name in names}
        rows = [row for name in names
                for row in rt.ledger.spend(site=name, month=months[name], group_by=group_by)]
        want_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
        stats.observe("/v1/spend", time.perf_counter() - started)
        one_month = month or (next(iter(months.values())) if len(set(months.values())) == 1 else None)
        if want_csv:
            name = f"wattledger-spend-{one_month or 'current'}-{group_by}.csv"
            return Response(rows_to_csv(rows), 200, {"Content-Disposition": f'attachment; filename="{name}"'},
                            media_type="text/csv; charset=utf-8")
        return json_response({"site": names[0] if len(names) == 1 else None, "sites": names,
                              "month": one_month, "months": months, "group_by": group_by, "rows": rows})

    @app.get("/v1/nodes", tags=["fleet"], summary="Nodes: last seen, devices, latest readings",
             response_model=None)
    def get_nodes() -> Response:
        return json_response({"nodes": runtime().ledger.nodes()})

    @app.get("/metrics", tags=["monitoring"], summary="Prometheus metrics", response_model=None)
    def get_metrics() -> Response:
        started = time.perf_counter()
        body = runtime().metrics()
        stats.observe("/metrics", time.perf_counter() - started)
        return Response(body, 200, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["monitoring"], summary="The process is up", response_model=None)
    async def get_healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["monitoring"], summary="Ready to ingest: writer, scheduler, database",
             response_model=None)
    async def get_readyz() -> Response:
        rt = holder.get("rt")
        if rt is None:
            return error_response(503, "not ready", {"reason": "starting or stopping"})
        refresh, writer = rt.periodic.status(), rt.writer
        checks = {"writer": writer.alive, "scheduler": rt.periodic.running,
                  "database": refresh.last_ok_at is not None and refresh.last_error is None
                  and writer.last_fault is None}
        if all(checks.values()):
            return json_response({"status": "ready", "checks": checks})
        return error_response(503, "not ready", {"checks": checks, "last_refresh_error": refresh.last_error,
                                                 "last_commit_error": writer.last_fault})

    install_openapi(app)
    install_docs(app)
    if settings.allow_unauthenticated:
        log.warning("allow_unauthenticated is on: pushes without a token are accepted for any node")
    elif not len(tokens):
        log.warning("no tokens configured (tokens, tokens_file): every push will be refused with 401")
    return app


def current_site_month(site: SiteConfig, now: float) -> str:
    """The month (YYYY-MM) that ``now`` falls in on the site's local clock."""
    from wattledger.collector.accounting.siteclock import SiteClock, month_text

    return month_text(SiteClock(site).month_at(now))


def worker_app(settings: CollectorSettings, link: WriterLink) -> ASGIApp:
    """A front-end worker's application: POST /v1/batches checked here, committed by the writer
    process over ``link``; every other request relayed whole to the writer's application."""
    limits = IngestLimits(max_body_bytes=settings.max_body_bytes,
                          max_pending_bytes=settings.max_pending_bytes)
    ingest = BatchIngest(token_book(settings), link, limits, precheck=site_check(settings))

    async def push(head: RequestHead, chunks: AsyncIterator[bytes]) -> Answer:
        started = time.perf_counter()
        try:
            answer = await ingest.handle(head, chunks)
        except ClientDisconnect:
            answer = Answer(400, {"error": "client disconnected", "detail": None})
        link.tally(answer.status, answer.duplicate, time.perf_counter() - started)
        return answer

    return BatchFastPath(RelayApp(link, settings.max_body_bytes), push)


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV, columns in first-seen order (finance tools open it as is), money rounded to
    each row's currency's minor unit (``wattledger.collector.accounting.money``)."""
    from wattledger.collector.accounting.money import for_csv

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    if columns:
        writer.writeheader()
        writer.writerows(for_csv(row) for row in rows)
    return out.getvalue()


# ---------------------------------------------------------------------------- errors


def install_error_handlers(app: FastAPI) -> None:
    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(part) for part in first.get("loc", ()))
        # in words a person reads (no regex, no pydantic wording): the batch path's sentences
        reason = plain_reason(first) if errors else "invalid request"
        return error_response(422, "invalid request", why(field or "request", reason))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), None, dict(exc.headers or {}))

    async def on_fault(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error", {"reason": "a fault of the collector; see its log"})

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_fault)
