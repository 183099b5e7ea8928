"""A slow device read on its own thread, so that it never delays the GPU samples.

A BMC, a PDU or a facility meter answers in tens of milliseconds on a good day and not at all
on a bad one (a BMC rebooting, a PDU on a congested management network). The sampler asks
every source once a second and must never wait for one: a :class:`Poller` runs the device's
``read`` on a daemon thread every ``interval`` seconds, with the read's own connect/read
timeouts, and keeps the last result. ``latest()`` hands that result over at once (a tuple
swap, no lock held across I/O). A result older than ``stale_after`` polls is no result: the
source then reports its devices down rather than a number that is no longer true.

A failing read is retried with exponential backoff (interval x 2, x 4, … up to
``max_backoff``), so a dead BMC is not hammered; the first failure and the recovery are each
logged once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Polled(Generic[T]):
    value: T
    read_at: float  # wall clock (unix s) when the read finished


class Poller(Generic[T]):
    def __init__(
        self,
        what: str,
        read: Callable[[], T],
        interval: float,
        *,
        stale_after: int = 3,
        max_backoff: float = 300.0,
        clock: Callable[[], float] = time.time,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        """``what`` names the device in log lines ("redfish https://bmc-01"); ``read`` may
        raise anything (it is a vendor library call): the message becomes ``last_error``;
        ``on_stop`` runs on the poll thread after its last read (a logout)."""
        self.what = what
        self._read = read
        self.interval = interval
        self.stale_after = stale_after
        self._max_backoff = max(interval, max_backoff)
        self._clock = clock
        self._on_stop = on_stop
        self._latest: Polled[T] | None = None
        self.last_error: str | None = None
        self.polls = 0  # reads attempted, for tests and logs
        self.failures = 0  # consecutive failed reads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the sampler's side

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"poll {self.what}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` for it; a read blocked in I/O
        ends at its own timeout (the thread is a daemon: it never holds the process up)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        elif self._on_stop is not None:  # never started (reads made by hand): close here
            self._on_stop()

    def latest(self, now: float | None = None) -> Polled[T] | None:
        """The last good result, or None when there is none or it is stale."""
        latest = self._latest
        if latest is None:
            return None
        now = self._clock() if now is None else now
        if now - latest.read_at > self.stale_after * self.interval:
            return None
        return latest

    def describe_failure(self) -> str:
        """One line saying why there is no fresh result (for SourceError)."""
        if self.last_error is not None:
            return f"{self.what}: {self.last_error}"
        if self._latest is None:
            return f"{self.what}: no reading yet"
        return f"{self.what}: no reading for {self._clock() - self._latest.read_at:.0f} s"

    # ------------------------------------------------------------------ the poll thread

    def poll_once(self) -> bool:
        """One read; True when it succeeded. Called by the thread (and by tests)."""
        self.polls += 1
        try:
            value = self._read()
        except Exception as exc:  # a vendor library's error of any type: the device is down
            self.failures += 1
            message = " ".join(str(exc).split()) or type(exc).__name__
            if self.failures == 1:
                log.warning("%s: read failed: %s (retrying with backoff)", self.what, message)
            self.last_error = message[:300]
            return False
        if self.failures:
            log.info("%s: answering again after %d failed reads", self.what, self.failures)
        self.failures = 0
        self.last_error = None
        self._latest = Polled(value, self._clock())
        return True

    def _delay(self) -> float:
        if not self.failures:
            return self.interval
        return min(self._max_backoff, self.interval * 2.0 ** min(self.failures, 16))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.poll_once()
                self._stop.wait(self._delay())
        finally:
            if self._on_stop is not None:
                try:
                    self._on_stop()
                except Exception as exc:  # a logout that fails must not raise on the thread
                    log.info("%s: did not close cleanly: %s", self.what, exc)


class WrapUnfolder:
    """A counter of ``bits`` bits (an SNMP Unsigned32, a Modbus uint32 register) made
    cumulative across wrap-arounds: a drop of more than half the range is a wrap (the
    counter ran past its top); a smaller drop is a reset (the meter was cleared), which is
    passed on as it is read, so the collector counts it as it counts a GPU counter reset."""

    def __init__(self, bits: int) -> None:
        self.modulus = float(1 << bits)
        self._last: float | None = None
        self._wraps = 0

    def __call__(self, raw: float) -> float:
        last, self._last = self._last, raw
        if last is not None and raw < last:
            if last - raw > self.modulus / 2:
                self._wraps += 1
            else:
                self._wraps = 0  # cleared: start again from what the meter says
        return raw + self._wraps * self.modulus


def measured(value: float | None, *, signed: bool = False) -> float | None:
    """A device's number as the wire may carry it, else None (absent). Meters send NaN for
    "not available", some report an exported (negative) power: one such number in a batch
    would have the collector refuse the whole batch, GPU readings included."""
    if value is None or not math.isfinite(value) or (value < 0 and not signed):
        return None
    return value
