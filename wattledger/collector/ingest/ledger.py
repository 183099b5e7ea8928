"""The collector's ledger: dedupe, accounting and store behind one small interface.

``ingest`` takes any number of validated batches (group commit): it drops the ones already
committed, accounts the rest in numpy (intervals.py, per device across batches and restarts),
prices every device-minute at the site's tariff in local time (siteclock.py), rolls the result
up per (month, device) and per site quarter-hour, and writes it all in ONE transaction
(store.py). In-memory state is a write-through cache of the store, so /metrics never reads the
disk and counters resume where they were after a restart. Rules: docs/accounting.md.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from prometheus_client.registry import Collector

from wattledger.collector.accounting import intervals
from wattledger.collector.accounting.siteclock import SiteClock, month_text, parse_month
from wattledger.collector.sites import PlanEntry, SiteConfig
from wattledger.collector.store.devicetable import LATEST, DeviceTable, Floats, Ints
from wattledger.collector.store.sqlite import DEVICE_COLUMNS, Store
from wattledger.wire import Batch, BatchError, ValidBatch

log = logging.getLogger(__name__)

GroupBy = Literal["site", "cluster", "node", "device"]
DEFAULT_SITE = "default"
JOULES_PER_KWH = 3.6e6
QUARTER_SECONDS = 900.0
#: quarter-hours kept in memory: this month and the last (demand, trailing 24 h), with margin
KEEP_QUARTERS_SECONDS = 70 * 86400.0
#: the roll-up never touches the last two days (forecasts read the trailing 24 h)
MIN_ROLLUP_DAYS = 2.0


@dataclass(frozen=True)
class IngestResult:
    """The answer to one batch: readings committed, or a re-sent batch already committed."""

    accepted: int
    duplicate: bool


class UnknownSite(BatchError):
    """A batch whose ``site`` label (default ``default``) names no configured site: 422."""

    def __init__(self, site: str) -> None:
        super().__init__(422, "unknown site", "labels.site",
                         f"site {site!r} is not configured on this collector")


class StreamOfAnotherNode(BatchError):
    """A batch on a stream that another node already uses: 422 (dedupe is per stream)."""

    def __init__(self, stream: str, owner: str) -> None:
        super().__init__(422, "invalid batch", "stream",
                         f"stream {stream!r} belongs to node {owner!r}")


@dataclass
class StreamState:
    """Committed seqs of a stream: all up to ``low``, plus ``above`` (sent out of order)."""

    node: str
    low: int
    above: set[int] = field(default_factory=set)

    def committed(self, seq: int) -> bool:
        return seq <= self.low or seq in self.above


@dataclass
class NodeState:
    site: str
    cluster: str
    labels: dict[str, str]
    last_seen: float
    readings: int


@dataclass
class SiteMonth:
    """What a site used in one billing month (the in-memory mirror of ``usage`` rows)."""

    it_j: float = 0.0
    cooling_j: float = 0.0
    it_cost: float = 0.0
    cooling_cost: float = 0.0
    carbon_g: float = 0.0
    peak_quarter_facility_j: float = 0.0  # the month's highest quarter-hour, all clusters

    @property
    def energy_cost(self) -> float:
        return self.it_cost + self.cooling_cost


def site_and_cluster(batch: Batch) -> tuple[str, str]:
    """A node's site is its ``site`` label (default ``default``); its cluster its ``cluster``."""
    return batch.labels.get("site", DEFAULT_SITE), batch.labels.get("cluster", "")


def sum_by(keys: Sequence[Ints], values: Sequence[Floats]) -> tuple[list[Ints], list[Floats]]:
    """Group rows by several integer keys and sum the values of each group (sorted by keys)."""
    n = keys[0].shape[0]
    if n == 0:
        return [k[:0] for k in keys], [v[:0] for v in values]
    order = np.lexsort(tuple(reversed(keys)))
    sorted_keys = [k[order] for k in keys]
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in sorted_keys:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    return ([k[starts] for k in sorted_keys],
            [np.add.reduceat(v[order], starts) for v in values])


class Ledger:
    """Energy, cost and carbon per device, site and month, kept in a store that survives restarts."""

    def __init__(self, db_url: str, sites: Mapping[str, SiteConfig], plan: Sequence[PlanEntry], *,
                 max_gap_seconds: float = 30.0, clock: Callable[[], float] = time.time,
                 stale_after_seconds: float = 120.0, rollup_after_days: float | None = None) -> None:
        if rollup_after_days is not None and rollup_after_days < MIN_ROLLUP_DAYS:
            raise ValueError(f"rollup_after_days must be at least {MIN_ROLLUP_DAYS} "
                             "(forecasts read the last 24 h of quarter-hours)")
        self.sites = dict(sites)
        self.rollup_after_days = rollup_after_days
        self.plan = list(plan)
        self.max_gap_seconds = max_gap_seconds
        self.clock = clock
        self.stale_after_seconds = stale_after_seconds
        self.site_names = sorted(self.sites)
        self._site_index = {name: i for i, name in enumerate(self.site_names)}
        self._site_clocks = [SiteClock(self.sites[name]) for name in self.site_names]
        self._pue = np.array([self.sites[n].pue for n in self.site_names], dtype=np.float64)
        self._carbon = np.array([self.sites[n].carbon_g_per_kwh for n in self.site_names])
        self.lock = threading.RLock()
        self.store = Store(db_url)
        self._months_seen: dict[str, int] = {}
        self._stale_seen: set[str] = set()
        self._load()

    # ---- state ------------------------------------------------------------------------------

    def _load(self) -> None:
        """(Re)build every in-memory structure from the store."""
        store = self.store
        self.devices = DeviceTable()
        self.devices.load(store.query(f"SELECT {', '.join(DEVICE_COLUMNS)} FROM devices"))
        self.streams = {s: StreamState(node, int(low))
                        for s, node, low in store.query("SELECT stream, node, low_seq FROM streams")}
        for stream, seq in store.query("SELECT stream, seq FROM stream_seqs"):
            self.streams[stream].above.add(int(seq))
        self.node_states = {
            node: NodeState(site, cluster, json.loads(labels), float(seen), int(readings))
            for node, site, cluster, labels, seen, readings in store.query(
                "SELECT node, site, cluster, labels, last_seen, readings FROM nodes")}
        #: groups: the (site, cluster) pairs readings are attributed to, numbered
        self._groups: list[tuple[str, str]] = []
        self._group_index: dict[tuple[str, str], int] = {}
        #: per site: all-time sums (the counters of /metrics, exactly as stored) and per month
        self.site_totals: dict[str, SiteMonth] = {name: SiteMonth() for name in self.site_names}
        for site, cool_j, it_cost, cool_cost, carbon in store.query(
                "SELECT site, cooling_j, it_cost, cooling_cost, carbon_g FROM site_totals"):
            if site in self.site_totals:
                self.site_totals[site] = SiteMonth(0.0, cool_j, it_cost, cool_cost, carbon)
        self.site_months: dict[tuple[str, int], SiteMonth] = {}
        for site, month, it_j, cool_j, it_cost, cool_cost, carbon in store.query(
                "SELECT site, month, SUM(it_j), SUM(cooling_j), SUM(it_cost), SUM(cooling_cost), "
                "SUM(carbon_g) FROM usage GROUP BY site, month"):
            self.site_months[(site, parse_month(month))] = SiteMonth(it_j, cool_j, it_cost, cool_cost,
                                                                     carbon)
        #: per (site, quarter start minute): facility joules and energy cost, all clusters
        self.quarters: dict[tuple[str, int], list[float]] = {}
        for site, month, start, facility_j, cost in store.query(
                "SELECT site, month, start_minute, SUM(facility_j), SUM(cost) FROM quarters "
                "GROUP BY site, month, start_minute"):
            sm = self.site_months.setdefault((site, parse_month(month)), SiteMonth())
            sm.peak_quarter_facility_j = max(sm.peak_quarter_facility_j, facility_j)
            if start * 60.0 >= self.clock() - KEEP_QUARTERS_SECONDS:
                self.quarters[(site, int(start))] = [facility_j, cost]
        # the peaks of quarter-hours rolled up into hours (kept before they went)
        for site, month, facility_j in store.query("SELECT site, month, facility_j FROM month_peaks"):
            sm = self.site_months.setdefault((site, parse_month(month)), SiteMonth())
            sm.peak_quarter_facility_j = max(sm.peak_quarter_facility_j, facility_j)

    @staticmethod
    def _add_sums(into: SiteMonth, sums: SiteMonth) -> None:
        into.it_j += sums.it_j
        into.cooling_j += sums.cooling_j
        into.it_cost += sums.it_cost
        into.cooling_cost += sums.cooling_cost
        into.carbon_g += sums.carbon_g

    def site_clock(self, site: str) -> SiteClock:
        return self._site_clocks[self._site_index[site]]

    def _group(self, site: str, cluster: str) -> int:
        key = (site, cluster)
        index = self._group_index.get(key)
        if index is None:
            index = self._group_index[key] = len(self._groups)
            self._groups.append(key)
        return index

    # ---- ingest -----------------------------------------------------------------------------

    def check(self, batch: ValidBatch) -> None:
        """Raise the BatchError that ingest() would raise for this batch (cheap, in memory)."""
        b = batch.batch
        site, _ = site_and_cluster(b)
        if site not in self.sites:
            raise UnknownSite(site)
        # no lock: called on the service's event loop, and a dict read is atomic; a stream's
        # node never changes once it is set
        owner = self.streams.get(b.stream)
        if owner is not None and owner.node != b.node:
            raise StreamOfAnotherNode(b.stream, owner.node)

    def ingest(self, batches: Sequence[ValidBatch]) -> list[IngestResult]:
        """Dedupe, account and commit the batches in ONE transaction; one result per batch.

        A batch that must be refused (unknown site, another node's stream) raises its
        BatchError before anything is written, with ``batch_index`` set to its position;
        the other batches of the call are then not committed either (send them again).
        """
        with self.lock:
            for number, vb in enumerate(batches):
                try:
                    self.check(vb)
                except BatchError as exc:
                    exc.batch_index = number  # type: ignore[attr-defined]
                    raise
            results: list[IngestResult] = []
            fresh: list[ValidBatch] = []
            in_call: set[tuple[str, int]] = set()
            for vb in batches:
                b = vb.batch
                state = self.streams.get(b.stream)
                key = (b.stream, b.seq)
                if (state is not None and state.committed(b.seq)) or key in in_call:
                    results.append(IngestResult(0, True))
                    continue
                in_call.add(key)
                fresh.append(vb)
                results.append(IngestResult(len(vb.columns), False))
            if fresh:
                try:
                    self._commit(fresh)
                except BaseException:
                    self._load()  # the transaction rolled back: memory back to what is stored
                    raise
            return results

    def _commit(self, batches: Sequence[ValidBatch]) -> None:
        now = self.clock()
        stream_rows, seqs_added, seqs_dropped = self._advance_streams(batches)
        touched_nodes: set[str] = set()
        declared: set[int] = set()
        parts: dict[str, list[Any]] = {k: [] for k in ("slot", "group", "ts", "power_w", "energy_j",
                                                       *LATEST, "clock_events", "has_clock_events")}
        for vb in batches:
            b, cols = vb.batch, vb.columns
            site, cluster = site_and_cluster(b)
            node = self.node_states.get(b.node)
            if node is None:
                node = self.node_states[b.node] = NodeState(site, cluster, {}, now, 0)
            node.site, node.cluster, node.labels = site, cluster, dict(b.labels)
            node.last_seen = now
            node.readings += len(cols)
            touched_nodes.add(b.node)
            # readings name their device by its position in the batch's devices
            slot_at = np.array([self.devices.slot_of(b.node, info) for info in b.devices], dtype=np.int64)
            declared.update(slot_at.tolist())  # written even without readings: metadata may have changed
            parts["slot"].append(slot_at[cols.device])
            parts["group"].append(np.full(len(cols), self._group(site, cluster), dtype=np.int64))
            for name in ("ts", "power_w", "energy_j", *LATEST, "clock_events", "has_clock_events"):
                parts[name].append(getattr(cols, name))
        r = {name: np.concatenate(arrays) for name, arrays in parts.items()}
        usage_rows, quarter_rows = self._account(r)
        node_rows = [(n, s.site, s.cluster, json.dumps(s.labels, sort_keys=True), s.last_seen,
                      s.readings) for n in sorted(touched_nodes) for s in [self.node_states[n]]]
        sites = sorted({row[2] for row in usage_rows})
        totals = [(site, t.cooling_j, t.it_cost, t.cooling_cost, t.carbon_g)
                  for site in sites for t in [self.site_totals[site]]]
        self.store.commit_ingest(
            streams=stream_rows, seqs_added=seqs_added, seqs_dropped=seqs_dropped,
            nodes=node_rows, devices=self.devices.rows(sorted(declared)),
            usage=usage_rows, quarters=quarter_rows, site_totals=totals)

    def _advance_streams(self, batches: Sequence[ValidBatch]
                         ) -> tuple[list[tuple[Any, ...]], list[tuple[str, int]], list[tuple[str, int]]]:
        """Mark each batch's seq committed; the store rows that say so."""
        added: list[tuple[str, int]] = []
        dropped: list[tuple[str, int]] = []
        touched: set[str] = set()
        for vb in sorted(batches, key=lambda v: (v.batch.stream, v.batch.seq)):
            b = vb.batch
            state = self.streams.get(b.stream)
            if state is None:  # a new stream starts where its first batch is (sent in seq order)
                state = self.streams[b.stream] = StreamState(b.node, b.seq - 1)
            touched.add(b.stream)
            if b.seq == state.low + 1:
                state.low = b.seq
                while state.low + 1 in state.above:
                    state.low += 1
                    state.above.discard(state.low)
                    dropped.append((b.stream, state.low))
            else:
                state.above.add(b.seq)
                added.append((b.stream, b.seq))
        # a seq added and dropped within this call never reaches the store
        both = set(added) & set(dropped)
        added = [a for a in added if a not in both]
        dropped = [d for d in dropped if d not in both]
        rows = [(s, self.streams[s].node, self.streams[s].low) for s in sorted(touched)]
        return rows, added, dropped

    def _account(self, r: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Account readings of many batches; update memory; return the store rows to write."""
        dev = self.devices
        order = np.lexsort((r["ts"], r["slot"]))
        r = {name: values[order] for name, values in r.items()}
        slot: Ints = r["slot"]
        late = intervals.late_readings(slot, r["ts"], dev.view("last_ts"))
        if late.any():
            np.add.at(dev.counts["late"], slot[late], 1)
            r = {name: values[~late] for name, values in r.items()}
            slot = r["slot"]
        iv = intervals.account(
            slot, r["ts"], r["power_w"], r["energy_j"], state_ts=dev.view("last_ts"),
            state_power_w=dev.view("last_power_w"), state_energy_j=dev.view("last_energy_j"),
            power_limit_w=dev.view("power_limit_w"), max_gap_seconds=self.max_gap_seconds)
        # the newest reading of each device becomes its state (and its "latest" values)
        if slot.shape[0]:
            last = np.flatnonzero(np.append(slot[1:] != slot[:-1], True))
            last_slot = slot[last]
            dev.floats["last_ts"][last_slot] = r["ts"][last]
            dev.floats["last_power_w"][last_slot] = r["power_w"][last]
            dev.floats["last_energy_j"][last_slot] = r["energy_j"][last]
            for name in LATEST:
                dev.floats[name][last_slot] = r[name][last]
            dev.clock_events[last_slot] = r["clock_events"][last]
            dev.has_clock_events[last_slot] = r["has_clock_events"][last]
        # meters, sensors and partitions add no IT energy and no unmeasured time: their readings
        # keep the device's state and latest values, nothing more
        it = dev.it_energy[:dev.size][iv.slot]
        if not it.all():
            iv = intervals.Intervals(*(getattr(iv, name)[it]
                                       for name in intervals.Intervals.__dataclass_fields__))
        np.add.at(dev.floats["energy_j"], iv.slot, iv.energy_j)
        np.add.at(dev.floats["unmeasured_s"], iv.slot, iv.unmeasured_s)
        np.add.at(dev.counts["resets"], iv.slot[iv.reset], 1)
        np.add.at(dev.counts["anomalies"], iv.slot[iv.anomaly], 1)
        usage_rows, quarter_rows = self._price(iv, r["group"][iv.reading])
        return usage_rows, quarter_rows

    def _price(self, iv: intervals.Intervals, group: Ints
               ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Split intervals by minute, price them, roll up per (month, device) and quarter-hour."""
        shares = intervals.split_for_pricing(iv.start, iv.end, iv.unmeasured_s > 0)
        k = shares.interval
        it_j = iv.energy_j[k] * shares.share
        unmeasured = iv.unmeasured_s[k] * shares.share
        slot, grp, minute = iv.slot[k], group[k], shares.minute
        site = np.array([self._site_index[s] for s, _ in self._groups], dtype=np.int64)[grp] \
            if len(grp) else np.zeros(0, dtype=np.int64)
        price = np.zeros(len(minute))
        month = np.zeros(len(minute), dtype=np.int64)
        quarter = np.zeros(len(minute), dtype=np.int64)
        for s in np.unique(site).tolist():
            mask = site == s
            price[mask], month[mask], quarter[mask] = self._site_clocks[s].lookup(minute[mask])
        cooling_j = it_j * (self._pue[site] - 1.0)
        it_cost = it_j / JOULES_PER_KWH * price
        cooling_cost = cooling_j / JOULES_PER_KWH * price
        carbon_g = (it_j + cooling_j) / JOULES_PER_KWH * self._carbon[site]

        (u_month, u_slot, u_group), sums = sum_by(
            (month, slot, grp), (it_j, cooling_j, it_cost, cooling_cost, carbon_g, unmeasured))
        # rows built column-wise (one .tolist() per column, not one float() per value)
        names = [self._groups[g] for g in u_group.tolist()]
        texts = {m: month_text(m) for m in np.unique(u_month).tolist()}
        usage_rows = list(zip([texts[m] for m in u_month.tolist()], u_slot.tolist(),
                              [site for site, _ in names], [cluster for _, cluster in names],
                              *(v.tolist() for v in sums), strict=True))
        # the site sums take one addition per (site and cluster, month), not one per device
        (s_group, s_month), s_sums = sum_by((u_group, u_month), sums[:5])
        for g, m, *values in zip(s_group.tolist(), s_month.tolist(), *(v.tolist() for v in s_sums),
                                 strict=True):
            site_name = self._groups[g][0]
            for sm in (self.site_totals[site_name],
                       self.site_months.setdefault((site_name, m), SiteMonth())):
                self._add_sums(sm, SiteMonth(*values))

        (q_group, q_start, q_month), q_sums = sum_by(
            (grp, quarter, month), (it_j, it_j + cooling_j, it_cost + cooling_cost))
        quarter_rows = []
        for i in range(len(q_group)):
            site_name, cluster = self._groups[int(q_group[i])]
            start, mid = int(q_start[i]), int(q_month[i])
            it_q, facility_q, cost_q = (float(v[i]) for v in q_sums)
            quarter_rows.append((site_name, cluster, start, month_text(mid), it_q, facility_q, cost_q))
            held = self.quarters.get((site_name, start))
            if held is None:  # new, or older than memory keeps (a late backfill): ask the store
                held = self.quarters[(site_name, start)] = self._stored_quarter(site_name, start)
            held[0] += facility_q
            held[1] += cost_q
            sm = self.site_months.setdefault((site_name, mid), SiteMonth())
            sm.peak_quarter_facility_j = max(sm.peak_quarter_facility_j, held[0])
        return usage_rows, quarter_rows

    def _stored_quarter(self, site: str, start: int) -> list[float]:
        """[facility J, cost] of a site's quarter-hour as committed (all clusters)."""
        ((facility_j, cost),) = self.store.query(
            "SELECT COALESCE(SUM(facility_j), 0), COALESCE(SUM(cost), 0) FROM quarters "
            "WHERE site = ? AND start_minute = ?", (site, start))
        return [float(facility_j), float(cost)]

    # ---- reading ----------------------------------------------------------------------------

    def collector(self) -> Collector:
        """A prometheus_client custom collector over this ledger's in-memory state."""
        from wattledger.collector.readmodel.exposition import LedgerCollector
        return LedgerCollector(self)

    def spend(self, *, site: str | None, month: str | None, group_by: GroupBy) -> list[dict[str, Any]]:
        """Spend rows for finance (JSON-ready); see wattledger.collector.readmodel.spend."""
        from wattledger.collector.readmodel.spend import spend_rows
        with self.lock:
            return spend_rows(self, site=site, month=month, group_by=group_by, now=self.clock())

    def nodes(self) -> list[dict[str, Any]]:
        """Every node: site, cluster, labels, last seen, stale, devices and their latest readings."""
        from wattledger.collector.readmodel.spend import node_rows
        with self.lock:
            return node_rows(self, now=self.clock())

    def refresh(self) -> None:
        """Periodic upkeep: note month roll-overs and stale nodes, forget old quarter-hours.

        Months, plan to date and forecasts need no recomputation here: every reading is filed
        under the month of its own minute, and /metrics derives the rest from the clock.
        """
        now = self.clock()
        with self.lock:
            horizon_minute = (now - KEEP_QUARTERS_SECONDS) / 60.0
            for key in [k for k in self.quarters if k[1] < horizon_minute]:
                del self.quarters[key]
            stale = {n for n, s in self.node_states.items() if self.is_stale(s, now)}
            months = {site: self.site_clock(site).month_at(now) for site in self.site_names}
        rolled = self.roll_up()
        if rolled:
            log.info("roll-up: %d quarter-hour rows older than %g days summed into hours", rolled,
                     self.rollup_after_days)
        for site, month in months.items():
            if self._months_seen.get(site, month) != month:
                log.info("site %s: billing month %s begins", site, month_text(month))
        self._months_seen = months
        for node in sorted(stale - self._stale_seen):
            log.warning("node %s is stale: no batch for over %.0f s", node, self.stale_after_seconds)
        self._stale_seen = stale

    def roll_up(self) -> int:
        """Roll quarter-hours older than ``rollup_after_days`` up into hours (docs/accounting.md,
        "Roll-up"); returns the quarter rows rolled up. Totals, spend, demand peaks, plan and
        forecast read the same afterwards: usage rows are never rolled up, each month's peak
        quarter-hour is kept first, and the last day's quarter-hours stay."""
        if self.rollup_after_days is None:
            return 0
        cutoff_minute = (self.clock() - self.rollup_after_days * 86400.0) / 60.0
        with self.lock:
            return self.store.roll_up(int(cutoff_minute // 60) * 60)

    def is_stale(self, node: NodeState, now: float) -> bool:
        return now - node.last_seen > self.stale_after_seconds

    def close(self) -> None:
        with self.lock:
            self.store.close()
