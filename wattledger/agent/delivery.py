"""Durable delivery of an agent's readings to the collector: spool + shipper (issue 4).

This is the interface the agent runtime calls; the spool and shipper behind it are built in
``spool.py`` and ``shipper.py``. The guarantee, its limits and the metrics that show it
working are in docs/delivery.md.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from wattledger import __version__
from wattledger.agent.allocations import Allocation
from wattledger.agent.reading import DeviceReading
from wattledger.agent.shipper import Backoff, HttpSender, Outcome, Shipper, TokenSource
from wattledger.agent.spool import Spool, SpoolError
from wattledger.config import ConfigError
from wattledger.contract import MAX_LABELS, is_label, is_node_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryStats:
    shipped_readings: int  # readings acknowledged by the collector during this run
    spooled_readings: int  # readings still in the spool (shipped at the next start)


def _check_identity(node: str, labels: Mapping[str, str]) -> None:
    """A node name or label the wire refuses would send every batch to the dead-letter
    table: refuse it here, at start, in one line."""
    if not is_node_name(node):
        raise ConfigError(f"node name {node!r} is not valid on the wire (letters, digits, '.', '_', '-'; "
                          "at most 128)")
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"{len(labels)} labels given; at most {MAX_LABELS} are allowed")
    for key, value in labels.items():
        if not is_label(key, value):
            raise ConfigError(f"label {key}={value!r} is not valid on the wire")


def _senders(urls: str | Sequence[str], node: str) -> list[HttpSender]:
    """One sender per collector, each with the same TLS setting (the system's CA store or
    ``SSL_CERT_FILE``, verification on)."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ConfigError("--collector: no collector URL given")
    senders: list[HttpSender] = []
    for url in urls:
        try:
            sender = HttpSender(url, user_agent=f"wattledger-agent/{__version__}", node=node)
        except ValueError as exc:
            raise ConfigError(f"--collector: {exc}") from None
        if any(s.url == sender.url for s in senders):
            raise ConfigError(f"--collector: {sender.url} is given twice")
        senders.append(sender)
    return senders


class Delivery:
    """Spool every sample durably, cut batches, ship them in seq order to the collector."""

    def __init__(
        self,
        *,
        spool_dir: Path,
        collector_url: str | Sequence[str],
        token: str | None,
        node: str,
        labels: Mapping[str, str],
        batch_seconds: float = 10.0,
        max_spool_bytes: int = 1 << 30,
        token_file: Path | None = None,
        max_batch_readings: int = 20_000,
        max_batch_bytes: int = 4 << 20,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        http_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """Open the spool (creating it) and prepare the shipper; nothing is sent before
        ``start()``. ``collector_url``: one collector, or several in the order to try them
        (the shipper fails over between them). ``token_file``, when given, is re-read whenever
        it changes (a fixed token is picked up without a restart). Raises ConfigError (one
        line) when the spool directory, a URL, the node name or a label cannot be used."""
        _check_identity(node, labels)
        if batch_seconds <= 0 or max_spool_bytes <= 0:
            raise ConfigError("batch seconds and spool size must be greater than 0")
        self.node = node
        self.labels = dict(labels)
        self.batch_seconds = batch_seconds
        self._clock = clock
        self._wall = wall_clock
        senders = _senders(collector_url, node)
        self.spool = Spool(spool_dir, node=node, labels=labels, max_bytes=max_spool_bytes,
                           max_batch_readings=max_batch_readings, max_batch_bytes=max_batch_bytes,
                           wall_clock=wall_clock)
        try:
            self.spool.open()
        except SpoolError as exc:
            raise ConfigError(f"--spool: {exc}") from None
        self._cut_lock = threading.Lock()
        self._open_since: float | None = None  # clock() when the open batch got its first sample
        self._record_failures = 0
        self._stopped = False
        self.shipper = Shipper(
            self.spool, senders, TokenSource(token, token_file), cut_if_due=self._cut_if_due,
            idle_wait=min(batch_seconds, 5.0), backoff=Backoff(backoff_base, backoff_cap, rng),
            http_timeout=http_timeout, clock=clock, wall_clock=wall_clock)
        counts = self.spool.counts()
        if counts.batches:
            log.info("spool %s: %d batches (%d readings) from an earlier run will be shipped first",
                     spool_dir, counts.batches, counts.readings)

    # ------------------------------------------------------------------ sampler side

    def record(self, readings: Sequence[DeviceReading], allocations: Sequence[Allocation] = ()) -> None:
        """Called by the sampler after each sample (its readings and the allocations that
        changed); durable, both in one transaction, when it returns."""
        if (not readings and not allocations) or self._stopped:
            return
        try:
            full = self.spool.append(readings, allocations)
        except Exception as exc:  # a full or failing disk must never stop the sampler
            self._lost(len(readings), exc)
            return
        with self._cut_lock:
            if self._open_since is None:
                self._open_since = self._clock()
        if full:
            self._cut()
        else:
            self._cut_if_due()

    def _lost(self, n: int, exc: BaseException) -> None:
        self.spool.dropped_readings += n
        self._record_failures += 1
        if self._record_failures == 1 or self._record_failures % 60 == 0:
            log.error("spool: could not store a sample (%d readings dropped, counted in "
                      "wattledger_agent_dropped_readings_total): %s", n, exc)

    def _cut_if_due(self) -> None:
        with self._cut_lock:
            due = self._open_since is not None and self._clock() - self._open_since >= self.batch_seconds
        if due:
            self._cut()

    def _cut(self) -> None:
        with self._cut_lock:
            self._open_since = None
            try:
                n = self.spool.cut()
            except Exception as exc:  # keep the samples; the next cut tries again
                log.error("spool: could not cut a batch: %s", exc)
                self._open_since = self._clock()
                return
        if n:
            self.shipper.wake()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.shipper.start()

    def stop(self, timeout: float = 10.0) -> DeliveryStats:
        """Cut the open batch, ship for up to ``timeout`` seconds, close the spool."""
        self._stopped = True
        self._cut()
        started = self._clock()
        self.shipper.drain(timeout)
        if not self.shipper.join(timeout + 1.0):
            log.warning("shipper still waiting for the collector after %.0f s; leaving it", timeout)
        waiting = self.spool.counts()
        self.spool.close()
        log.debug("delivery stopped after %.1f s", self._clock() - started)
        return DeliveryStats(self.shipper.shipped_readings, waiting.readings + waiting.open_readings)

    # ------------------------------------------------------------------ self-health

    def collect(self) -> Iterable[Metric]:
        """Self-health metric families (spool batches, dropped readings, shipped batches)."""
        names = ["node", *self.labels]
        values = [self.node, *self.labels.values()]
        counts = self.spool.counts()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(values, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=names)
            c.add_metric(values, value)
            return c

        yield gauge("wattledger_agent_spool_batches", "Batches in the spool waiting to be shipped.",
                    counts.batches)
        yield gauge("wattledger_agent_spool_readings",
                    "Readings in the spool not yet acknowledged (waiting batches and the open batch).",
                    counts.readings + counts.open_readings)
        yield gauge("wattledger_agent_spool_bytes",
                    "Bytes the spool holds (batch bodies, dead letters, open samples); bounded by "
                    "the spool size limit.", counts.bytes)
        yield gauge("wattledger_agent_spool_limit_bytes", "The spool size limit.", self.spool.max_bytes)
        yield gauge("wattledger_agent_dead_letter_batches",
                    "Batches the collector refused as invalid, parked in the spool's dead-letter table.",
                    counts.dead_letters)
        oldest = self.spool.oldest_timestamp()
        if oldest is not None:
            yield gauge("wattledger_agent_spool_oldest_timestamp_seconds",
                        "Time of the oldest reading waiting in the spool (delivery lag).", oldest)
        if self.spool.last_success is not None:
            yield gauge("wattledger_agent_last_shipped_timestamp_seconds",
                        "When the collector last acknowledged a batch of this agent.",
                        self.spool.last_success)
        yield counter("wattledger_agent_dropped_readings",
                      "Readings dropped because the spool was full or could not be written.",
                      self.spool.dropped_readings)
        yield counter("wattledger_agent_spool_corruptions",
                      "Damaged spool files moved aside (a new stream was started).",
                      self.spool.corruptions)
        shipped = CounterMetricFamily("wattledger_agent_shipped_batches",
                                      "Batch delivery attempts by outcome (ok, duplicate, retry, "
                                      "auth_error, dead_letter).", labels=[*names, "outcome"])
        for outcome in Outcome:
            shipped.add_metric([*values, outcome.value], self.shipper.outcomes[outcome])
        yield shipped
        yield counter("wattledger_agent_shipped_readings",
                      "Readings acknowledged by the collector (committed, or already committed).",
                      self.shipper.shipped_readings)
        yield from self._collector_families(names, values)

    def _collector_families(self, names: list[str], values: list[str]) -> Iterable[Metric]:
        """Where the shipper sends, and whether each collector answered its last attempt."""
        failover = self.shipper.failover
        labels = [*names, "collector"]
        active = GaugeMetricFamily("wattledger_agent_collector_active",
                                   "1 for the collector the shipper sends to now (sticky while it "
                                   "answers), 0 for the others given with --collector.", labels=labels)
        up = GaugeMetricFamily("wattledger_agent_collector_up",
                               "Whether the collector answered the shipper's last attempt as a "
                               "collector does (0: no answer, a timeout, 5xx, or a wrong URL); only "
                               "collectors tried since the agent started.", labels=labels)
        for i, c in enumerate(failover.collectors):
            active.add_metric([*values, c.url], 1.0 if i == failover.current else 0.0)
            if c.up is not None:
                up.add_metric([*values, c.url], 1.0 if c.up else 0.0)
        yield active
        yield up
        failovers = CounterMetricFamily("wattledger_agent_collector_failovers",
                                        "Attempts sent to another collector than the attempt before, "
                                        "after it failed.", labels=names)
        failovers.add_metric(values, failover.failovers)
        yield failovers
