"""One sample: ask every source, keep the latest result for /metrics, hand readings on.

Hardware sources are asked first; then each allocation source (Kubernetes, Slurm, the process
list), with the devices seen in that sample, who holds them; a device a holding names by an
alias a hardware source gave (an AMD GPU's PCI address) is named by its id. The
:class:`AllocationTracker` turns those holdings into allocations, handed on with the readings
(the spool stores both in one transaction). A source that fails to open or to sample is marked
down (``source_up`` 0) and does not stop the others (an allocation source that fails ends its
holdings: readings flow on, unattributed); one that could not open is tried again every
``reopen_seconds``. The sampler has no timer of its own: the runtime calls
:meth:`Sampler.sample` from APScheduler, tests and the simulator's backfill call it with the
timestamps they want.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeVar

from wattledger.agent.allocations import Allocation, AllocationTracker
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import (
    AllocationSource,
    Holding,
    HostStats,
    Source,
    SourceError,
)
from wattledger.contract import Device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """The latest sample, as /metrics shows it. Replaced whole, never mutated."""

    ts: float | None = None
    readings: tuple[DeviceReading, ...] = ()
    down: tuple[Device, ...] = ()
    host: HostStats | None = None
    source_up: dict[str, bool] = field(default_factory=dict)
    readings_total: int = 0  # device readings taken since start
    samples_total: int = 0
    sample_seconds: float | None = None  # how long the last sample took
    skipped_total: int = 0  # samples dropped because the clock went backwards


T = TypeVar("T")
#: what the sampler hands on after a sample: its new readings and the allocations that changed
OnReadings = Callable[[Sequence[DeviceReading], Sequence[Allocation]], None]


class Sampler:
    def __init__(
        self,
        sources: Sequence[Source | AllocationSource],
        on_readings: OnReadings | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        reopen_seconds: float = 60.0,
    ) -> None:
        self._sources: list[Source] = []
        self._allocation_sources: list[AllocationSource] = []
        for source in sources:  # the allocation sources are those that say who holds devices
            if isinstance(source, AllocationSource):
                self._allocation_sources.append(source)
            else:
                self._sources.append(source)
        self.allocations = AllocationTracker()
        self._on_readings = on_readings
        self._clock = clock
        self._timer = timer
        self._reopen_seconds = reopen_seconds
        self._open: dict[str, bool] = {}
        self._next_open: dict[str, float] = {}
        self._failing: set[str] = set()  # sources whose failure was already logged
        self._clock_behind = False  # skipping samples until the wall clock catches up
        # ts of the last reading handed on per device: a slow source (a BMC polled every 10 s)
        # returns its cached reading at every sample; it is exposed each time, delivered once
        self._handed_ts: dict[str, float] = {}
        # the hardware sources' other names of their devices (SourceSample.aliases), kept: a
        # device down for a sample is still held by its alias
        self._aliases: dict[str, str] = {}
        self._lock = threading.Lock()  # one sample at a time, whoever calls
        self.snapshot = Snapshot(source_up={s.name: False for s in self._every_source()})

    def _every_source(self) -> list[Source | AllocationSource]:
        return [*self._sources, *self._allocation_sources]

    @property
    def allocation_source_names(self) -> list[str]:
        return [s.name for s in self._allocation_sources]

    def open(self) -> None:
        for source in self._every_source():
            self._try_open(source, self._timer())

    def _try_open(self, source: Source | AllocationSource, now: float) -> bool:
        try:
            source.open()
        except SourceError as exc:
            self._next_open[source.name] = now + self._reopen_seconds
            if source.name not in self._failing:
                self._failing.add(source.name)
                log.warning("source %s off: %s; the other sources keep running (retried every %g s)",
                            source.name, exc, self._reopen_seconds)
            return False
        if source.name in self._failing:
            log.info("source %s is up", source.name)
            self._failing.discard(source.name)
        self._open[source.name] = True
        return True

    def close(self) -> None:
        for source in self._every_source():
            if self._open.pop(source.name, False):
                try:
                    source.close()
                except Exception as exc:  # closing must not stop the shutdown
                    log.warning("source %s did not close cleanly: %s", source.name, exc)

    def sample(self, ts: float | None = None) -> Snapshot:
        with self._lock:
            return self._sample(self._clock() if ts is None else ts)

    def _sample(self, ts: float) -> Snapshot:
        started = self._timer()
        prev = self.snapshot
        if prev.ts is not None and ts <= prev.ts:
            # Readings of a device must stay in time order, so wait for the clock to catch up.
            # Energy is not lost: the next reading's counter covers the skipped time.
            if not self._clock_behind:
                log.warning("the clock went back %.1f s: samples are skipped until it catches up",
                            prev.ts - ts)
            self._clock_behind = True
            self.snapshot = replace(prev, skipped_total=prev.skipped_total + 1)
            return self.snapshot
        self._clock_behind = False
        readings: list[DeviceReading] = []
        down: list[Device] = []
        host: HostStats | None = None
        up: dict[str, bool] = {}
        for source in self._sources:
            result = self._ask(source, started, partial(source.sample, ts))
            up[source.name] = result is not None
            if result is not None:
                readings.extend(result.readings)
                down.extend(result.down)
                host = result.host or host
                self._aliases.update(result.aliases)
        if self._allocation_sources:
            seen = list({d.id: d for d in (*(r.device for r in readings), *down)}.values())
            for holder in self._allocation_sources:
                holdings = self._ask(holder, started, partial(holder.holdings, ts, seen))
                up[holder.name] = holdings is not None
                self.allocations.observe(holder.name, ts, None if holdings is None else self._by_id(holdings))
        changed = self.allocations.drain()
        fresh = self._fresh(readings)
        duration = self._timer() - started
        self.snapshot = Snapshot(
            ts=ts, readings=tuple(readings), down=tuple(down), host=host, source_up=up,
            readings_total=prev.readings_total + len(fresh), samples_total=prev.samples_total + 1,
            sample_seconds=duration, skipped_total=prev.skipped_total,
        )
        if (fresh or changed) and self._on_readings is not None:
            try:
                self._on_readings(fresh, changed)
            except Exception as exc:  # delivery trouble must not stop the sampling or the scrape
                log.error("could not hand %d readings to delivery: %s", len(readings), exc)
        return self.snapshot

    def _by_id(self, holdings: list[Holding]) -> list[Holding]:
        """The holdings with each device named by its id: a name a device plugin hands a device
        out by (an AMD GPU's PCI address) becomes the id its hardware source reports (the GPU's
        AMD SMI UUID). A holding the tracker will refuse anyway is left as it is."""
        aliases = self._aliases
        if not aliases:
            return holdings
        out: list[Holding] = []
        for h in holdings:
            given = h.device_ids if isinstance(h.device_ids, tuple | list) else ()
            if all(isinstance(d, str) for d in given) and any(d in aliases for d in given):
                h = replace(h, device_ids=tuple(dict.fromkeys(aliases.get(d, d) for d in given)))
            out.append(h)
        return out

    def _fresh(self, readings: list[DeviceReading]) -> list[DeviceReading]:
        """The readings not handed on before: a device's reading whose ts is not after its
        last one handed on is a cached repeat (or would break the wire's time order)."""
        fresh: list[DeviceReading] = []
        handed = self._handed_ts
        for r in readings:
            if r.ts > handed.get(r.device.id, float("-inf")):
                handed[r.device.id] = r.ts
                fresh.append(r)
        return fresh

    def _ask(self, source: Source | AllocationSource, now: float, call: Callable[[], T]) -> T | None:
        """``call()`` (the source's sample, or its holdings), or None when the source is down
        (not open, or it failed)."""
        name = source.name
        closed = not self._open.get(name)
        if closed and (now < self._next_open.get(name, 0.0) or not self._try_open(source, now)):
            return None
        try:
            result = call()
        except Exception as exc:  # any failure of one source: that source is down this time
            if name not in self._failing:
                self._failing.add(name)
                log.warning("source %s failed: %s", name, exc)
            return None
        if name in self._failing:
            self._failing.discard(name)
            log.info("source %s is up", name)
        return result
