"""The fleet as /metrics and /v1/nodes show it: one consistent view of the store, at one instant.

On SQLite the one collector process is the only writer and its store's memory is the truth: a
view is taken from it at each request (a copy made under the store's lock, then read without
it), as fast as reading memory. On PostgreSQL other replicas write too: a view is loaded from
the database (one read-only transaction) and served for at most ``metrics_refresh_seconds``,
except that a view never misses a batch this replica has itself acknowledged
(read-your-writes): a request that comes after one of our commits gets a view loaded after it.
Every replica loads the same rows and computes from them the same way, so the ledger's figures
are the same on every replica (gauges that follow the clock, such as plan to date, by time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from wattledger.collector.accounting.plan import DAY_SECONDS, MonthSummary, month_summary
from wattledger.collector.accounting.pricing import SiteSums
from wattledger.collector.accounting.siteclock import SiteClock, month_text
from wattledger.collector.accounting.teamsums import TeamMonth, team_months
from wattledger.collector.sites import PlanEntry, SiteConfig
from wattledger.collector.store.base import MinuteSums, NodeState, NodeTotals, Row, Store
from wattledger.collector.store.devicetable import DeviceTable


@dataclass(frozen=True)
class NodeView:
    site: str
    cluster: str
    last_seen: float
    readings: int
    stale: bool
    labels: Mapping[str, str]
    #: a batch of a second agent for this node was refused within stale_after_seconds
    duplicate_agent: bool
    conflicts: int  # such batches refused, all time


@dataclass(frozen=True)
class FleetView:
    now: float
    sites: Sequence[str]  # the configured sites, sorted
    totals: Mapping[str, SiteSums]  # all-time sums per site (counters)
    months: Mapping[str, MonthSummary]  # per site, its current month as of ``now``
    nodes: Mapping[str, NodeView]
    devices: DeviceTable
    #: per site: its teams in the current month, and (team, it_j, energy cost, carbon_g, gpu_s,
    #: idle_gpu_s) of each team all time (counters)
    teams: Mapping[str, Sequence[TeamMonth]] = field(default_factory=dict)
    team_totals: Mapping[str, Sequence[Row]] = field(default_factory=dict)
    #: per node, its all-time overhead and disagreement (beyond its devices' counters)
    node_totals: Mapping[str, NodeTotals] = field(default_factory=dict)
    #: per site, its minutes of the last hour (PUE, cooling power, outdoor temperature)
    minutes: MinuteSums = field(default_factory=MinuteSums)


class Terms:
    """What the figures are held against: the sites (tariffs, clocks), the plan, staleness."""

    def __init__(self, sites: Mapping[str, SiteConfig], plan: Sequence[PlanEntry], *,
                 clock: Callable[[], float], stale_after_seconds: float) -> None:
        self.sites = dict(sites)
        self.site_names = sorted(self.sites)
        self.plan = list(plan)
        self.clock = clock
        self.stale_after_seconds = stale_after_seconds
        self.clocks = {name: SiteClock(self.sites[name]) for name in self.site_names}

    def current_month(self, site: str, now: float) -> str:
        return month_text(self.clocks[site].month_at(now))

    def summary(self, site: str, month: str, sums: SiteSums, day_cost: float, now: float) -> MonthSummary:
        return month_summary(site, self.sites[site], self.plan, self.clocks[site], month, sums, day_cost, now)

    def node_view(self, state: NodeState, now: float) -> NodeView:
        recent = state.conflict_at is not None and now - state.conflict_at <= self.stale_after_seconds
        stale = now - state.last_seen > self.stale_after_seconds
        return NodeView(state.site, state.cluster, state.last_seen, state.readings, stale, state.labels,
                        recent, state.conflicts)


class ReadModel:
    """Views of the fleet for /metrics and /v1/nodes (see the module's docstring)."""

    def __init__(self, store: Store, terms: Terms, *, refresh_seconds: float = 5.0,
                 commits: Callable[[], int] = lambda: 0, monotonic: Callable[[], float] = time.monotonic
                 ) -> None:
        self.store = store
        self.terms = terms
        self.refresh_seconds = refresh_seconds
        self._commits = commits
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: tuple[FleetView, float, int] | None = None  # view, loaded at, commits before
        self.loads = 0  # views loaded (tests, logs)

    def commits(self) -> int:
        """Batches this process has committed so far (what a cache of the store's sums follows)."""
        return self._commits()

    def view(self) -> FleetView:
        if not self.store.shared:
            return self._load()
        wanted = self._commits()  # every commit acknowledged before this request
        with self._lock:  # one load at a time; whoever waited reads the view just loaded
            cached = self._cached
            if cached is not None:
                view, loaded_at, mark = cached
                # old by the monotonic clock, or by the ledger's (which a test may move at will)
                young = (self._monotonic() - loaded_at <= self.refresh_seconds
                         and abs(self.terms.clock() - view.now) <= self.refresh_seconds)
                if mark >= wanted and young:
                    return view
            mark, loaded_at = self._commits(), self._monotonic()
            view = self._load()
            self._cached = (view, loaded_at, mark)
            return view

    def _load(self) -> FleetView:
        terms = self.terms
        now = terms.clock()
        months = {site: terms.clocks[site].month_at(now) for site in terms.site_names}
        since, until = (now - DAY_SECONDS) / 60.0, now / 60.0
        data = self.store.fleet(months, since, until)
        self.loads += 1
        summaries = {site: terms.summary(site, month_text(months[site]), data.month_sums[site],
                                         data.day_cost[site], now) for site in terms.site_names}
        teams: dict[str, list[TeamMonth]] = {}
        totals: dict[str, list[Row]] = {}
        for site in terms.site_names:
            month = month_text(months[site])
            t = self.store.team_data(site, month, since, until)
            teams[site] = team_months(site, terms.plan, terms.clocks[site], month, summaries[site], t.months,
                                      t.quarters, t.day_cost, now)
            totals[site] = t.totals
        return FleetView(
            now=now, sites=terms.site_names,
            totals={site: data.site_totals.get(site, SiteSums()) for site in terms.site_names},
            months=summaries,
            nodes={name: terms.node_view(state, now) for name, state in data.nodes.items()},
            devices=data.devices, teams=teams, team_totals=totals, node_totals=data.node_totals,
            minutes=data.minutes)
