"""The collector service's own health figures, exposed at scrape time by a custom collector.

``wattledger_ingest_batches_total{outcome}`` counts every POST /v1/batches by how it ended;
``wattledger_collector_request_duration_seconds{handler}`` is the answer latency per endpoint;
``wattledger_ingest_queue_batches`` / ``wattledger_ingest_pending_bytes`` show back-pressure;
``wattledger_collector_http_refusals_total{reason}`` counts the requests the server's protocol
refused itself (slow or oversized headers, stalled bodies, broken framing);
These counters live in the process: they restart at 0 with it, as Prometheus expects of a
process's own counters (the ledger's money and energy counters are the ones kept in the store).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: outcomes always exposed (at 0 too), so that dashboards and alerts see the series from the start
OUTCOMES = ("accepted", "duplicate", "rejected_400", "rejected_401", "rejected_403", "rejected_408",
            "rejected_409", "rejected_413", "rejected_415", "rejected_422", "overloaded", "error")
#: why the server's protocol refused a request itself (wattledger.collector.api.server), each at 0
REFUSALS = ("header_timeout", "body_timeout", "headers_too_large", "target_too_long", "malformed")
#: latency buckets in seconds: a group commit on SQLite takes milliseconds, a big batch longer
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def outcome_of(status: int, duplicate: bool = False) -> str:
    """The ``outcome`` label of an answer to POST /v1/batches."""
    if status == 200:
        return "duplicate" if duplicate else "accepted"
    if status == 429:
        return "overloaded"
    if 400 <= status < 500:
        return f"rejected_{status}"
    return "error"


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last slot is +Inf
        self.total = 0.0


class ServiceStats:
    """Thread-safe counters and latency histograms of the HTTP service."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._latency: dict[str, _Histogram] = {}
        self.refusals: dict[str, int] = dict.fromkeys(REFUSALS, 0)

    def count(self, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1

    def refused(self, reason: str) -> None:
        """A request the server's protocol answered itself (called on the event loop)."""
        with self._lock:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def observe(self, handler: str, seconds: float) -> None:
        with self._lock:
            hist = self._latency.get(handler)
            if hist is None:
                hist = self._latency[handler] = _Histogram()
            hist.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            hist.total += seconds

    def refusal_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.refusals)

    def snapshot(self) -> tuple[dict[str, int], dict[str, tuple[list[int], float]]]:
        with self._lock:
            return (dict(self._outcomes),
                    {name: (list(h.counts), h.total) for name, h in self._latency.items()})


class ServiceCollector(Collector):
    """Yields the service's metric families at scrape time."""

    def __init__(self, stats: ServiceStats, gauges: Callable[[], dict[str, float]],
                 counters: Callable[[], dict[str, float]] = dict) -> None:
        self._stats = stats
        self._gauges = gauges  # e.g. the ingest queue's length and bytes pending, read now
        self._counters = counters  # e.g. ledger transactions made, read now

    def collect(self) -> Iterable[Metric]:
        outcomes, latency = self._stats.snapshot()
        batches = CounterMetricFamily("wattledger_ingest_batches", "POST /v1/batches answers by outcome",
                                      labels=["outcome"])
        for outcome, value in sorted(outcomes.items()):
            batches.add_metric([outcome], value)
        yield batches
        hist = HistogramMetricFamily("wattledger_collector_request_duration_seconds",
                                     "time from request to answer, per endpoint", labels=["handler"])
        for handler, (counts, total) in sorted(latency.items()):
            running = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                running += n
                buckets.append((_le(bound), running))
            hist.add_metric([handler], buckets, total)
        yield hist
        refusals = CounterMetricFamily("wattledger_collector_http_refusals",
                                       "requests the HTTP server refused itself, by reason",
                                       labels=["reason"])
        for reason, value in sorted(self._stats.refusal_counts().items()):
            refusals.add_metric([reason], value)
        yield refusals
        for name, level in sorted(self._gauges().items()):
            yield GaugeMetricFamily(name, _HELP.get(name, name), value=level)
        for name, count in sorted(self._counters().items()):
            yield CounterMetricFamily(name, _HELP.get(name, name), value=count)


_HELP = {
    "wattledger_ingest_transactions": "ledger transactions made by the writer (batches / this = group size)",
    "wattledger_ingest_queue_batches": "validated batches waiting for the ledger writer",
    "wattledger_ingest_pending_bytes": "request bytes held by batches being read, checked or written",
    "wattledger_ingest_queue_capacity_batches": "the most batches the ingest queue holds before 429",
}


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
