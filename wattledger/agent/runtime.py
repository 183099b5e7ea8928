"""The running agent: sampler on an APScheduler interval job, /metrics on a thread, and the
optional delivery of readings to the collector. Built from settings by :class:`Agent`; nothing
runs at import."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.process_collector import ProcessCollector

from wattledger.agent.allocations import Allocation
from wattledger.agent.exposition import AgentCollector
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sampler import Sampler
from wattledger.agent.sources.base import AllocationSource, Source
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
        sources: Sequence[Source | AllocationSource],
        interval: float,
        listen: HostPort,
        delivery_factory: Callable[[], Delivery] | None = None,
    ) -> None:
        """``sources``: the hardware sources and the allocation sources (who holds the
        devices), which the sampler asks after the hardware ones. ``delivery_factory`` (with a
        collector) is called once the port is ours, so that an agent that cannot listen never
        opens a spool."""
        self.interval = interval
        self.listen = listen
        self._node, self._labels = node, labels
        self._delivery_factory = delivery_factory
        self.delivery: Delivery | None = None
        self.sampler = Sampler(sources, on_readings=self._deliver)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # the agent's own CPU and memory
        self._server: WSGIServer | None = None
        self._scheduler: BackgroundScheduler | None = None

    def _deliver(self, readings: Sequence[DeviceReading], allocations: Sequence[Allocation]) -> None:
        if self.delivery is not None:
            self.delivery.record(readings, allocations)

    def start(self) -> None:
        """Listen, open the delivery and the sources, take a first sample, then sample every
        ``interval``. Raises OSError (cannot listen) or ConfigError (from the delivery)."""
        try:
            self._server, _ = start_http_server(self.listen.port, self.listen.host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.listen}: {exc.strerror or exc}") from None
        if self._delivery_factory is not None:
            self.delivery = self._delivery_factory()
            # allocations still open when the agent stopped continue, or end where last seen
            held, last_seen = self.delivery.spool.open_allocations()
            self.sampler.allocations.resume(held, last_seen, self.sampler.allocation_source_names)
        self.registry.register(AgentCollector(lambda: self.sampler.snapshot, self._node, self._labels,
                                              self.delivery))
        log.info("serving /metrics on http://%s/metrics", self.listen)
        self.sampler.open()
        self.sampler.sample()
        if self.delivery is not None:
            self.delivery.start()
        # APScheduler logs every job run at INFO, DMTF's redfish library every request it makes
        # (4 lines a BMC poll): noise, not news. The sources log what fails, once.
        for noisy in ("apscheduler", "redfish"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
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
