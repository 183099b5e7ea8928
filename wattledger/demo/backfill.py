"""Simulated history from the first of the month to now, through the real ingest path.

Each server's simulated source — built by the agent's own source registry, so its GPUs have
the same ids as the live agent's — is sampled on a virtual clock (no sleeping) at a coarse
step; its energy counter is integrated exactly inside the source, so the ledger gets every
joule however coarse the step. The samples are cut into wire-format batches by the agent's
spool code and POSTed (gzip'd, with the node's own token) by the agent's shipper code to the
collector's ``/v1/batches``: one stream per node and per backfill run
(``backfill-<node>-<start>``), batches in ``seq`` order, one in flight, re-sent until a 2xx.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wattledger.agent.settings import settings_from_argv
from wattledger.agent.shipper import Backoff, HttpSender, Outcome, classify, parse_retry_after
from wattledger.agent.sources import build_sources
from wattledger.agent.sources.base import Source
from wattledger.agent.spool import DeviceDicts, build_batches, encode_sample
from wattledger.demo.config import simulation_args
from wattledger.demo.scenario import Server

log = logging.getLogger(__name__)

#: readings per batch: big enough that a month goes in a few hundred requests, well under the
#: collector's body limit
MAX_BATCH_READINGS = 2000
MAX_BATCH_RAW_BYTES = 4 << 20


class BackfillError(Exception):
    """The collector refused a backfill batch for good (a 4xx other than auth or 429)."""


def simulated_source(server: Server) -> Source:
    """The same simulated GPUs the server's live agent runs: its settings, from the same flags."""
    settings = settings_from_argv(simulation_args(server), env={})
    return build_sources(["simulated"], settings.source_settings())[0]


def timestamps(start: float, end: float, step: float) -> list[float]:
    """start, start+step, ... up to end, and end itself (so the history ends exactly at end)."""
    if end <= start:
        return []
    count = math.floor((end - start) / step)
    out = [start + k * step for k in range(count + 1)]
    if out[-1] < end:
        out.append(end)
    return out


def node_batches(node: str, source: Source, devices: int, stream: str, labels: Mapping[str, str],
                 ts: Sequence[float], first_seq: int = 1,
                 allocations: Sequence[Mapping[str, Any]] = ()) -> Iterator[tuple[int, bytes]]:
    """Sample ``source`` (of ``devices`` devices) at each of ``ts``; yield (readings, gzip'd
    body) in seq order from ``first_seq``, each batch carrying ``allocations``."""
    seq = first_seq
    device_dict = DeviceDicts()  # the same few devices in every sample: each dumped once
    per_batch = max(1, MAX_BATCH_READINGS // max(1, devices))
    for first in range(0, len(ts), per_batch):
        samples = [encode_sample(source.sample(t).readings, device_dict)
                   for t in ts[first:first + per_batch]]
        for batch in build_batches(samples, MAX_BATCH_READINGS, MAX_BATCH_RAW_BYTES):
            yield len(batch), batch.body(node, stream, seq, labels, allocations)
            seq += 1


@dataclass
class Progress:
    """How far the backfill has come; written by the node threads, read by the view."""

    total: int = 0  # readings to send
    sent: int = 0  # readings the collector has acknowledged
    start: float = 0.0
    end: float = 0.0
    done: bool = False
    error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def extend(self, readings: int, end: float) -> None:
        with self._lock:
            self.total += readings
            self.end = max(self.end, end)

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else min(1.0, self.sent / self.total)

    @property
    def until(self) -> float:
        """Roughly how far in time the history has reached."""
        return self.start + (self.end - self.start) * self.fraction


class Poster:
    """Sends one stream's bodies in order, re-sending each until the collector takes it."""

    def __init__(self, collector_url: str, token: str, stop: threading.Event,
                 timeout: float = 30.0) -> None:
        self._http = HttpSender(collector_url, user_agent="wattledger-demo-backfill")
        self._token = token
        self._stop = stop
        self._timeout = timeout
        self._backoff = Backoff(base=0.2, cap=5.0)

    def send(self, body: bytes) -> bool:
        """True once a 2xx came back; False when told to stop first."""
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            retry_after = None
            try:
                answer = self._http.post(body, self._token, self._timeout)
            except OSError as exc:  # the collector is busy starting, or restarting
                log.debug("backfill post failed: %s", exc)
            else:
                if 200 <= answer.status < 300:
                    return True
                if classify(answer.status) is not Outcome.RETRY:
                    raise BackfillError(f"collector refused a backfill batch: HTTP {answer.status} "
                                        f"{answer.body[:200].decode('utf-8', 'replace')}")
                retry_after = parse_retry_after(answer.retry_after, time.time())
            self._stop.wait(self._backoff.delay(attempt, retry_after))
        return False

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True)
class NodePlan:
    server: Server
    labels: Mapping[str, str]
    token: str
    start: float  # first reading's timestamp
    #: what the server's batches carry: its job's allocation (the live agent's slurm source
    #: sends the same, from the same start: one job in the ledger)
    allocations: Sequence[Mapping[str, Any]] = ()


def run_backfill(plans: Sequence[NodePlan], collector_url: str, end: float, step: float,
                 progress: Progress, stop: threading.Event,
                 make_source: Callable[[Server], Source] = simulated_source,
                 clock: Callable[[], float] | None = time.time,
                 catch_up_within: float = 5.0) -> None:
    """Backfill every node from its ``start`` to ``end``, one thread per node; returns when done,
    failed or stopped (``progress`` says which).

    With a ``clock``, each node then catches up with it (the time the backfill itself took) in
    further passes, until its history ends less than ``catch_up_within`` seconds ago, so that
    the live agent started next takes over with the shortest gap.
    """
    series = {p.server.node: timestamps(p.start, end, step) for p in plans}
    progress.total = sum(len(series[p.server.node]) * p.server.gpus for p in plans)
    progress.start = min((p.start for p in plans), default=end)
    progress.end = end
    errors: list[str] = []

    def one(plan: NodePlan) -> None:
        server = plan.server
        source = make_source(server)
        poster = Poster(collector_url, plan.token, stop)
        try:
            source.open()
            stream = f"backfill-{server.node}-{int(plan.start)}"
            seq = 1
            ts = series[server.node]
            while ts and not stop.is_set():
                for n, body in node_batches(server.node, source, server.devices, stream, plan.labels,
                                            ts, first_seq=seq, allocations=plan.allocations):
                    if not poster.send(body):
                        return
                    seq += 1
                    progress.add(n)
                now = clock() if clock is not None else ts[-1]
                if now - ts[-1] < catch_up_within:
                    break
                ts = timestamps(ts[-1], now, step)[1:]
                progress.extend(len(ts) * server.gpus, now)
        except BackfillError as exc:
            errors.append(str(exc))
            stop.set()  # the other nodes' batches would be refused alike
        finally:
            poster.close()
            source.close()

    began = time.monotonic()
    threads = [threading.Thread(target=one, args=(p,), name=f"backfill-{p.server.node}", daemon=True)
               for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    progress.error = errors[0] if errors else None
    progress.done = not errors and not stop.is_set()
    log.debug("backfill: %d readings in %.1f s%s", progress.sent, time.monotonic() - began,
             f" ({progress.error})" if progress.error else "")
