"""The running agent: sampler on an APScheduler interval job, /metrics on a thread, and the
optional delivery of readings to the collector. Built from settings by :class:`Agent`; nothing
runs at import."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.process_collector import ProcessCollector

from wattledger.agent.exposition import AgentCollector
from wattledger.agent.sampler import Sampler
from wattledger.agent.sources.base import Source
from wattledger.config import HostPort

if TYPE_CHECKING:
    from wattledger.agent.delivery import Delivery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    readings: int  # device readings taken in this run
    shipped: int  # readings the collector acknowledged in this run
    spooled: int  # readings left in the spool for the next start

    def __str__(self) -> str:
        return f"stopped: readings={self.readings} shipped={self.shipped} spooled={self.spooled}"


class Agent:
    def __init__(
        self,
        *,
        node: str,
        labels: dict[str, str],
        sources: Sequence[Source],
        interval: float,
        listen: HostPort,
        delivery: Delivery | None = None,
    ) -> None:
        self.interval = interval
        self.listen = listen
        self.delivery = delivery
        self.sampler = Sampler(sources, on_readings=delivery.record if delivery is not None else None)
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(lambda: self.sampler.snapshot, node, labels, delivery))
        ProcessCollector(registry=self.registry)  # the agent's own CPU and memory
        self._server: WSGIServer | None = None
        self._scheduler: BackgroundScheduler | None = None

    def start(self) -> None:
        """Listen, open the sources, take a first sample, then sample every ``interval``."""
        try:
            self._server, _ = start_http_server(self.listen.port, self.listen.host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.listen}: {exc.strerror or exc}") from None
        log.info("serving /metrics on http://%s/metrics", self.listen)
        self.sampler.open()
        self.sampler.sample()
        if self.delivery is not None:
            self.delivery.start()
        # APScheduler logs every job run at INFO; once a second that is noise, not news
        logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
        scheduler = BackgroundScheduler(timezone="UTC")
        scheduler.add_job(self.sampler.sample, "interval", seconds=self.interval, coalesce=True,
                          max_instances=1, misfire_grace_time=max(1, int(self.interval * 5)))
        scheduler.start()
        self._scheduler = scheduler

    def stop(self, delivery_timeout: float = 10.0) -> RunSummary:
        """Stop sampling, ship what the spool holds for up to ``delivery_timeout``, close."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        shipped = spooled = 0
        if self.delivery is not None:
            try:
                stats = self.delivery.stop(timeout=delivery_timeout)
                shipped, spooled = stats.shipped_readings, stats.spooled_readings
            except Exception as exc:  # the summary line must still be written
                log.error("delivery did not stop cleanly: %s", exc)
        self.sampler.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        return RunSummary(self.sampler.snapshot.readings_total, shipped, spooled)
