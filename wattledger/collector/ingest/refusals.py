"""Pushes refused for who they claim to be (401/403), counted and logged by the claimed node.

``wattledger_ingest_auth_failures_total{node,status}``: the central operator can tell which
node is misconfigured without a label any client could make up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from wattledger.contract import is_node_name

log = logging.getLogger(__name__)

#: the ``node`` of a refused push whose claimed name is not one this collector knows
UNKNOWN_NODE = "unknown"
#: one log line per claimed node and status per this many seconds
AUTH_LOG_INTERVAL_SECONDS = 60.0


class AuthFailures(Collector):
    """Pushes refused 401/403, counted and logged by the node they claim to be.

    The claim is the agent's ``X-Wattledger-Node`` header: it is not proof of anything (that is
    what the token is for), but it tells the operator which agent to look at. Only a valid
    node name that this collector knows (``known``: a token's node, or a node of the ledger)
    becomes a label; any other claim, or none, is counted under ``node="unknown"``, so that
    no client can make series up. One log line per label and status per minute at most.
    Used from the event loop only; a scrape reads a copy.
    """

    def __init__(self, known: Callable[[str], bool], clock: Callable[[], float] = time.monotonic) -> None:
        self._known = known
        self._clock = clock
        self.counts: dict[tuple[str, int], int] = {}
        self._logged_at: dict[tuple[str, int], float] = {}
        self._quiet: dict[tuple[str, int], int] = {}  # refusals not logged since the last line

    def label(self, claimed: str | None) -> str:
        if claimed is not None and is_node_name(claimed) and self._known(claimed):
            return claimed
        return UNKNOWN_NODE

    def record(self, claimed: str | None, status: int, reason: str, peer: str | None = None) -> None:
        key = (self.label(claimed), status)
        self.counts[key] = self.counts.get(key, 0) + 1
        now = self._clock()
        last = self._logged_at.get(key)
        if last is not None and now - last < AUTH_LOG_INTERVAL_SECONDS:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return
        self._logged_at[key] = now
        quiet = self._quiet.pop(key, 0)
        # the claim is the client's text: repr() and cut short, so it cannot forge log lines
        said = "no X-Wattledger-Node" if claimed is None else f"claims node {claimed[:80]!r}"
        log.warning("push refused %d from %s (%s): %s%s", status, peer or "?", said, reason,
                    f" ({quiet} more since the last line)" if quiet else "")

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("wattledger_ingest_auth_failures",
                                     "pushes refused 401/403, by the node they claim to be",
                                     labels=["node", "status"])
        for (node, status), value in sorted(dict(self.counts).items()):
            family.add_metric([node, str(status)], value)
        yield family
