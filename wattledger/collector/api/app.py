"""The collector's HTTP service: ``create_app(settings)`` builds the application.

Nothing is made at import time. The lifespan opens the ledger (unless one is handed in), starts
the ledger writer thread (group commit) and the periodic work, and closes them in reverse
order, committing what is queued, when the server stops.

Read top-down, a request meets: ``fastpath.FastPath`` (POST /v1/batches straight to the push
handler) -> the FastAPI application and its routers (``ingest``, ``finance``: /v1/spend,
``fleet``: /v1/nodes, ``planning``: /v1/plan, ``monitoring``: /metrics, /healthz, /readyz,
``docs``: /docs, /redoc) -> the ledger (``wattledger.collector.service``). Every error is JSON
``{"error": ..., "detail": ...}`` (``errors.py``); only a fault of the server itself is a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import ProcessCollector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp

from wattledger import __version__
from wattledger.collector.api.docs import install_docs
from wattledger.collector.api.errors import install_error_handlers
from wattledger.collector.api.fastpath import FastPath
from wattledger.collector.api.finance import finance_router
from wattledger.collector.api.fleet import fleet_router
from wattledger.collector.api.httpstats import ServiceCollector, ServiceStats
from wattledger.collector.api.ingest import ingest_router, push_handler
from wattledger.collector.api.monitoring import REPLICA_LABEL, Labelled, metrics_text, monitoring_router
from wattledger.collector.api.openapi import install_openapi
from wattledger.collector.api.planning import planning_router
from wattledger.collector.api.remotewrite import remote_write_router
from wattledger.collector.api.runtime import LedgerService, Runtime, RuntimeHolder
from wattledger.collector.ingest.auth import TokenBook
from wattledger.collector.ingest.checks import IngestLimits
from wattledger.collector.ingest.intake import BatchIngest
from wattledger.collector.ingest.periodic import PeriodicWork
from wattledger.collector.ingest.remotemap import Source
from wattledger.collector.ingest.remotewrite import RemoteWriteIngest, RemoteWriters
from wattledger.collector.ingest.transaction import UnknownSite, site_and_cluster
from wattledger.collector.ingest.writer import BatchWriter
from wattledger.collector.settings import CollectorSettings
from wattledger.wire import ValidBatch

log = logging.getLogger(__name__)


def open_ledger(settings: CollectorSettings, clock: Callable[[], float] = time.time) -> LedgerService:
    """The real ledger of these settings (imported here: the store is loaded only when needed)."""
    from wattledger.collector.service import Ledger

    return Ledger(settings.db, settings.sites, settings.plan, max_gap_seconds=settings.max_gap_seconds,
                  clock=clock, stale_after_seconds=settings.stale_after_seconds,
                  rollup_after_days=settings.rollup_after_days,
                  metrics_refresh_seconds=settings.metrics_refresh_seconds, teams=settings.teams)


def site_check(settings: CollectorSettings) -> Callable[[ValidBatch], None]:
    """Refuse (422) a batch of a site this collector does not have, before it joins a group
    (on the event loop: it needs no store). The refusals that need the store (a stream of
    another node, two agents for one node) come from the ledger in the writer thread."""
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


def remote_writers(settings: CollectorSettings) -> RemoteWriters:
    """The Prometheus servers of ``remote_write_tokens``, by token digest."""
    return RemoteWriters({name: (entry.digest(), Source(name, entry.site, entry.cluster))
                          for name, entry in settings.remote_write_tokens.items()})


def create_app(settings: CollectorSettings, *, ledger: LedgerService | None = None,
               clock: Callable[[], float] = time.time, fast_ingest: bool = True) -> ASGIApp:
    """The collector application. ``ledger`` given: the caller opened it and closes it.

    ``fast_ingest`` (the default) wraps the FastAPI application in ``FastPath``, which serves
    POST /v1/batches on plain ASGI (the same handler either way; off, the FastAPI route answers
    it). Either way the returned application's ``state.service_stats`` counts what the server's
    protocol refuses itself.
    """
    stats = ServiceStats()
    limits = IngestLimits(max_body_bytes=settings.max_body_bytes,
                          max_queue_batches=settings.max_queue_batches,
                          max_pending_bytes=settings.max_pending_bytes,
                          max_node_pending_bytes=settings.max_node_pending_bytes,
                          max_group_batches=settings.max_group_batches)
    tokens = token_book(settings)
    writers = remote_writers(settings)
    holder = RuntimeHolder()
    replica = settings.replica_name

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = ledger is None
        led = await run_in_threadpool(open_ledger, settings, clock) if ledger is None else ledger
        writer = BatchWriter(led, max_queue=limits.max_queue_batches, max_group=limits.max_group_batches)
        # the ledger's nodes: with the tokens', the names a refused push is counted under
        known = await run_in_threadpool(led.node_names)
        ingest = BatchIngest(tokens, writer, limits, clock, precheck=site_check(settings), known_nodes=known)
        periodic = PeriodicWork(led, settings.refresh_interval_seconds)
        # remote-write shares the agents' writer (one transaction per request) and byte pool
        remote = RemoteWriteIngest(writers, writer, limits, ingest.pending, settings.sites, clock)
        own_families = [ServiceCollector(stats, ingest.gauges, ingest.counters), ingest.auth_failures,
                        remote.stats, ProcessCollector(registry=None)]  # the collector's own CPU, memory
        metrics = metrics_text([led.collector(),
                                *(Labelled(family, REPLICA_LABEL, replica) for family in own_families)])
        writer.start()
        await run_in_threadpool(periodic.run_once)  # month roll-over and stale nodes before serving
        periodic.start()
        holder.current = Runtime(led, ingest, writer, periodic, metrics, remote)
        try:
            yield
        finally:
            holder.current = None
            periodic.stop()
            await run_in_threadpool(writer.stop)
            if own:
                led.close()

    app = FastAPI(title="wattledger collector", version=__version__, lifespan=lifespan,
                  description="Ingest of GPU power readings; energy, cost, carbon and plan of the fleet.",
                  redirect_slashes=False,  # POST /v1/batches/ is a JSON 404, not a bodiless 307
                  docs_url=None, redoc_url=None)  # install_docs: the pages without a CDN
    app.state.service_stats = stats  # the server's protocol counts its own refusals there (cli.py)
    install_error_handlers(app)
    push = push_handler(holder, stats)
    app.include_router(ingest_router(push))
    app.include_router(remote_write_router(holder, stats))
    app.include_router(finance_router(holder, settings.sites, clock, stats))
    app.include_router(fleet_router(holder))
    app.include_router(planning_router(holder, settings, stats))
    app.include_router(monitoring_router(holder, stats))
    install_openapi(app)
    install_docs(app)
    if settings.allow_unauthenticated:
        log.warning("allow_unauthenticated is on: pushes without a token are accepted for any node")
    elif not len(tokens):
        log.warning("no tokens configured (tokens, tokens_file): every push will be refused with 401")
    return FastPath(app, push) if fast_ingest else app
