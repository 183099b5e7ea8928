"""The collector's periodic work on APScheduler: month roll-over, stale nodes, plan refresh.

All of it is one call, ``Ledger.refresh()``, run every ``refresh_interval_seconds`` in
APScheduler's background thread (it touches the database, so it must not run on the event
loop). A run that fails is logged and remembered: /readyz reports the collector not ready
until a later run succeeds, so a database that went away shows up there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from wattledger.collector.store.base import StoreUnavailable

log = logging.getLogger(__name__)


class Refreshable(Protocol):
    def refresh(self) -> None: ...


@dataclass(frozen=True)
class RefreshStatus:
    runs: int
    last_ok_at: float | None  # monotonic seconds of the last run that succeeded
    last_error: str | None  # why the last run failed; None when it succeeded


class PeriodicWork:
    """Runs ``ledger.refresh()`` now and then every ``interval`` seconds until stopped."""

    def __init__(self, ledger: Refreshable, interval: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ledger = ledger
        self._interval = interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._runs = 0
        self._last_ok: float | None = None
        self._last_error: str | None = None
        self._scheduler = BackgroundScheduler(timezone="UTC", daemon=True)

    def start(self) -> None:
        self._scheduler.add_job(
            self.run_once, "interval", seconds=self._interval, id="ledger-refresh",
            # a run that is late (the process was busy) happens once, not once per missed slot
            coalesce=True, max_instances=1, misfire_grace_time=max(1, int(self._interval)),
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def run_once(self) -> None:
        try:
            self._ledger.refresh()
        except Exception as exc:  # one failed run must not end the schedule
            if isinstance(exc, StoreUnavailable):  # the database is away: no fault here, one line
                log.warning("ledger refresh skipped: %s", exc)
            else:
                log.exception("ledger refresh failed")
            with self._lock:
                self._runs += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            self._runs += 1
            self._last_ok = self._monotonic()
            self._last_error = None

    def status(self) -> RefreshStatus:
        with self._lock:
            return RefreshStatus(self._runs, self._last_ok, self._last_error)
