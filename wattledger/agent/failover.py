"""Which collector the shipper sends the next attempt to, when it has several (issue 11:
replicas on one database, any of which may take any batch).

The rule (docs/delivery.md, "Several collectors"):

- **Sticky.** The shipper stays with the collector that answered last, as long as it answers
  2xx: one kept-alive connection, one collector's view of the stream at a time.
- **Fail over at once** after an attempt that did not move the stream on (no answer, a
  timeout, 5xx, 408, 429, 401/403, a wrong URL): that collector is not tried again before its
  own backoff (capped exponential with jitter, per collector) or its ``Retry-After`` has passed,
  and the next attempt goes to the next collector, in the order given, that is ready now.
- **Wait** only when none is ready, until the first one is. So each collector sees at most the
  attempts an agent with that collector alone would make, and with one collector the shipper
  behaves exactly as it always did.

A batch re-sent to another collector after a lost answer may reach the ledger twice; the
collector replicas dedupe by (stream, seq) in the database, so it is committed once.

Pure policy (no I/O): the clock is injected, the shipper does the sending.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


def display_url(url: str) -> str:
    """A collector URL as logs and the ``collector`` label show it: without user information (a
    password must not end up in Prometheus), without a trailing slash."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


@dataclass
class CollectorState:
    """What the shipper knows of one collector."""

    url: str  # as display_url() shows it
    up: bool | None = None  # after the last attempt: answered as a collector does; None: not tried yet
    failures: int = 0  # consecutive attempts that did not move the stream on
    not_before: float = 0.0  # clock() before which it is not tried again


class Failover:
    """The choice of collector for each attempt, and each collector's backoff."""

    def __init__(self, urls: Sequence[str], backoff: Callable[[int, float | None], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``backoff(n, retry_after)``: the wait after a collector's n-th failure in a row."""
        if not urls:
            raise ValueError("no collector given")
        self.collectors = [CollectorState(display_url(u)) for u in urls]
        self.current = 0  # the collector of the last attempt (sticky while it answers 2xx)
        self.failovers = 0  # attempts sent to another collector than the one before, after a failure
        self._backoff = backoff
        self._clock = clock

    def pick(self) -> int:
        """The collector for the next attempt: the current one when ready, else the next ready one
        in the order given, else the one ready soonest (the shipper has waited for it already,
        or was told to try once more at once: a stop)."""
        now = self._clock()
        n = len(self.collectors)
        ring = [(self.current + k) % n for k in range(n)]
        chosen = next((i for i in ring if self.collectors[i].not_before <= now), None)
        if chosen is None:
            chosen = min(ring, key=lambda i: self.collectors[i].not_before)  # ties: ring order
        if chosen != self.current:
            self.failovers += 1
            self.current = chosen
        return chosen

    def succeeded(self, i: int) -> None:
        """Collector ``i`` answered 2xx, or refused the batch itself (a dead letter): it is up."""
        c = self.collectors[i]
        c.up, c.failures, c.not_before = True, 0, 0.0

    def failed(self, i: int, *, up: bool, retry_after: float | None = None) -> float:
        """Collector ``i`` did not take the batch (``up``: it answered as a collector does, e.g.
        429 or 401). Returns the seconds to wait before the next attempt (0: another is ready)."""
        c = self.collectors[i]
        c.up = up
        c.failures += 1
        c.not_before = self._clock() + self._backoff(c.failures, retry_after)
        return self.wait()

    def wait(self) -> float:
        """Seconds until some collector is ready."""
        soonest = min(c.not_before for c in self.collectors)
        return max(0.0, soonest - self._clock())
