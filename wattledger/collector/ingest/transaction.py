"""The ingest transaction: a group of batches deduped, accounted and stored, all or nothing.

``Bookkeeper.ingest`` takes any number of validated batches (the group-commit writer hands it
every batch waiting). In ONE store transaction it

1. reads and locks the group's streams and devices (``IngestUnit.hold``): each stream's
   committed seqs, each device's last committed reading and owner stream;
2. drops the batches already committed (``dedupe.py``), refuses the batches whose devices
   another live stream of the node holds (409: two agents for one node, below);
3. accounts the rest against the devices' committed state (``accounting/readings.py``) and
   prices every device-minute at the site's tariff in local time (``accounting/pricing.py``);
4. writes the new marks and states and adds the sums (``IngestUnit.write``).

The store decides where that state lives (SQLite: the one writer's memory; PostgreSQL: rows
locked in the transaction), so the same code holds on one process or on many replicas.

Batches made from a Prometheus remote-write request (``ValidBatch.remote``, ingest/remotewrite.py)
are booked by the same accounting, in the same transaction as their request's other nodes, with
these differences: they have no (stream, seq) (a re-sent request is harmless because its samples
are at or before their devices' last committed readings: late, counted, adding nothing); they
never take a device over from an agent's stream nor are refused 409; their readings of a device
whose agent stream is live are left out (``IngestResult.agent_fed``: one device, (node, id),
booked from the agent's exact readings, never interleaved with scraped values that lag their
timestamps); they never overwrite what an agent declared (a node's labels, the metadata of a
device an agent feeds) and only add to what remote-write declared before (``merge_info``), and
their readings are held to the device's stored power limit when the request gave none.

Two agents for one node (a cloned host, a copied token): a device belongs to the stream whose
batches its readings come from. A batch of another stream whose readings of a device do not
start after the device's last committed reading, while that device's stream had a batch
committed in the last ``stale_after_seconds``, is refused 409 (the agent keeps it and sends it
again): two agents reading the same devices overlap in time. Readings that start after the last
committed one are a hand-over (a re-imaged host with a fresh spool, a salvaged spool): the new
stream takes the device over at once, and the old one, should it come back, is refused. Once
a stream has been silent for ``stale_after_seconds`` any other takes its devices over.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from wattledger.collector.accounting.intervals import Intervals
from wattledger.collector.accounting.pricing import SitePrices, price
from wattledger.collector.accounting.profiles import DayClock, group_devices, plan_rows
from wattledger.collector.accounting.readings import (
    LATEST,
    READINGS_FIELDS,
    Accounted,
    DeviceStates,
    Readings,
    account,
)
from wattledger.collector.accounting.siteclock import month_text
from wattledger.collector.ingest import dedupe
from wattledger.collector.ingest.chargeback import Chargeback, GroupBatch
from wattledger.collector.ingest.minutes import GroupNodes, MinuteBooker
from wattledger.collector.ingest.sharing import SHARE_LIMIT, CoolingSharer
from wattledger.collector.sites import SiteConfig
from wattledger.collector.store.base import (
    Changes,
    DeviceChanges,
    HeldDevices,
    IngestUnit,
    NodeChange,
    NodeConflicts,
    Store,
    StreamState,
)
from wattledger.contract import NODE_METER_KIND, PART_KINDS
from wattledger.wire import Batch, BatchError, Columns, DeviceInfo, ValidBatch

log = logging.getLogger(__name__)

DEFAULT_SITE = "default"
#: one "two agents" line per node per this many seconds (each refused batch is counted anyway)
CONFLICT_LOG_SECONDS = 60.0


@dataclass(frozen=True)
class IngestResult:
    """The answer to one batch: readings committed, or a re-sent batch already committed."""

    accepted: int
    duplicate: bool
    #: of a remote-write batch: which of its readings (in its order) were late, adding nothing
    late: npt.NDArray[np.bool_] | None = None
    #: of a remote-write batch: which of its readings were left out, their device fed by an
    #: agent whose stream is live (the agent's readings are the ledger's)
    agent_fed: npt.NDArray[np.bool_] | None = None


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


class DuplicateAgent(BatchError):
    """A batch whose devices another live stream of the node holds: 409, send it again later."""

    def __init__(self, node: str, stream: str, device: str, owner: str, age: float,
                 stale_after: float) -> None:
        wait = max(1, min(60, math.ceil(stale_after - age)))
        super().__init__(
            409, "duplicate agent", "stream",
            f"the readings of device {device!r} of node {node!r} overlap those of stream {owner!r}, "
            f"which sent it {age:.0f} s ago: two agents push for this node (a cloned host or a copied "
            "token). "
            f"Stream {stream!r} takes the node's devices over once {owner!r} has been silent for "
            f"{stale_after:g} s; until then its batches are refused")
        self.headers = {"Retry-After": str(wait)}


def _without(vb: ValidBatch, drop: npt.NDArray[np.bool_]) -> ValidBatch:
    """The batch without the readings ``drop`` marks."""
    if not drop.any():
        return vb
    keep = ~drop
    cols = vb.columns
    return ValidBatch(vb.batch, Columns(**{f.name: getattr(cols, f.name)[keep] for f in fields(cols)}),
                      remote=vb.remote)


def site_and_cluster(batch: Batch) -> tuple[str, str]:
    """A node's site is its ``site`` label (default ``default``); its cluster its ``cluster``."""
    return batch.labels.get("site", DEFAULT_SITE), batch.labels.get("cluster", "")


class Bookkeeper:
    """Books groups of batches into the ledger's store (one transaction per group)."""

    def __init__(self, store: Store, sites: Mapping[str, SiteConfig], *, max_gap_seconds: float = 30.0,
                 stale_after_seconds: float = 120.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 teams: Mapping[str, list[dict[str, str]]] | None = None) -> None:
        self.store = store
        self.sites = dict(sites)
        self.max_gap_seconds = max_gap_seconds
        self.stale_after_seconds = stale_after_seconds
        self.clock = clock
        self._monotonic = monotonic
        names = sorted(self.sites)
        self._site_index = {name: i for i, name in enumerate(names)}
        self._prices = SitePrices([self.sites[name] for name in names])
        self._site_names = names
        self._day_clocks = [DayClock(self.sites[name].zone) for name in names]
        #: GPU models seen, numbered (the plan's statistics are per model)
        self._models: dict[str, int] = {}
        self._chargeback = Chargeback(dict(teams or {}), self._prices, self._site_index,
                                      {name: self.sites[name].device_pue for name in names},
                                      [name for name in names if self.sites[name].shares_cooling])
        self._minutes = MinuteBooker([self.sites[name] for name in names], names, self._prices)
        self._sharer = CoolingSharer(names, self._prices)
        #: the (site, cluster) pairs readings are filed under, numbered
        self._groups: list[tuple[str, str]] = []
        self._group_index: dict[tuple[str, str], int] = {}
        self._group_site: list[int] = []
        #: transactions this process committed: the read model's read-your-writes mark
        self.commits = 0
        self._conflict_logged: dict[str, float] = {}

    def share_cooling(self, limit: int = SHARE_LIMIT, rounds: int = 50) -> int:
        """Share the chiller and metered sites' changed minutes out by their holders' IT
        (ingest/sharing.py): one transaction of up to ``limit`` site-minutes at a time, until
        none is left (or ``rounds`` were done: the rest is taken next time); how many."""
        if not any(site.shares_cooling for site in self.sites.values()):
            return 0
        total = 0
        for _ in range(rounds):
            with self.store.ingest() as unit:
                done = self._sharer.share(unit, limit)
            if done:
                self.commits += 1
            total += done
            if done < limit:
                break
        return total

    def check(self, vb: ValidBatch) -> None:
        """Raise the refusal that needs no store: a site this collector does not have."""
        site, _ = site_and_cluster(vb.batch)
        if site not in self.sites:
            raise UnknownSite(site)

    def _group(self, site: str, cluster: str) -> int:
        key = (site, cluster)
        index = self._group_index.get(key)
        if index is None:
            index = self._group_index[key] = len(self._groups)
            self._groups.append(key)
            self._group_site.append(self._site_index[site])
        return index

    def ingest(self, batches: Sequence[ValidBatch]) -> list[IngestResult | BatchError]:
        """Dedupe, account and commit the batches in ONE transaction; one result per batch: an
        IngestResult, or the BatchError that refuses that batch alone (409, two agents).

        A batch that must refuse the whole call (unknown site, another node's stream) raises its
        BatchError before anything is written, with ``batch_index`` set to its position; the
        other batches of the call are then not committed either (send them again).
        """
        for number, vb in enumerate(batches):
            try:
                self.check(vb)
            except BatchError as exc:
                exc.batch_index = number  # type: ignore[attr-defined]
                raise
        now = self.clock()
        firsts: dict[str, tuple[str, int]] = {}
        keys: dict[tuple[str, str], int] = {}  # (node, device id) -> the group's number of it
        batch_keys: list[list[int]] = []  # per batch, its devices' numbers
        for vb in batches:
            b = vb.batch
            first = firsts.get(b.stream)
            if not vb.remote and (first is None or b.seq < first[1]):
                firsts[b.stream] = (b.node, b.seq)
            batch_keys.append([keys.setdefault((b.node, info.id), len(keys)) for info in b.devices])
        key_list = list(keys)
        writes, reads = self._minutes.outdoor_locks(
            {self._site_index[site_and_cluster(vb.batch)[0]] for vb in batches},
            {info.id for vb in batches for info in vb.batch.devices if info.kind == "sensor"},
        ) if self._minutes.sensor_ids() else ([], [])
        with self.store.ingest() as unit:
            if writes or reads:  # first: the lock order (store/postgres.py)
                unit.hold_outdoor(writes, reads)
            states, held = unit.hold(firsts, key_list)
            for number, vb in enumerate(batches):
                if vb.remote:
                    continue
                owner = states[vb.batch.stream].node
                if owner != vb.batch.node:
                    wrong = StreamOfAnotherNode(vb.batch.stream, owner)
                    wrong.batch_index = number  # type: ignore[attr-defined]
                    raise wrong
            is_fresh = dedupe.fresh(batches, states)
            results: list[IngestResult | BatchError] = [IngestResult(0, True)] * len(batches)
            fresh = [number for number, new in enumerate(is_fresh) if new]
            if not fresh:
                return results
            infos: dict[int, DeviceInfo] = {}
            declared: set[int] = set()  # devices an agent's batch of the group declares
            for number in sorted(fresh, key=lambda n: not batches[n].remote):  # an agent's info wins
                infos.update(zip(batch_keys[number], batches[number].batch.devices, strict=True))
                if not batches[number].remote:
                    declared.update(batch_keys[number])
            # remote-write declares less than an agent (no limits, no thresholds): it leaves the
            # metadata of a device an agent feeds as the agent declared it
            keep_info = {k for k in infos if k not in declared and held.owner[k] is not None}
            # the rest of remote-write's declarations add to what is stored, never erase it
            merge_info = {k for k in infos if k not in declared and k not in keep_info}
            slots = held.slots.copy()
            new = [k for k in sorted(infos) if slots[k] < 0]
            if new:
                slots[new] = unit.create_devices([(key_list[k][0], infos[k]) for k in new])
            owners, seen, last_ts = list(held.owner), held.owner_seen.tolist(), held.last_ts.tolist()
            accepted: list[int] = []
            conflicts: dict[str, NodeConflicts] = {}
            for number in fresh:
                refusal = None if batches[number].remote else self._claim(
                    batches[number], batch_keys[number], key_list, owners, seen, last_ts, now)
                if refusal is None:
                    accepted.append(number)
                    results[number] = IngestResult(len(batches[number].columns), False)
                else:
                    results[number] = refusal
                    b = batches[number].batch
                    before = conflicts.get(b.node)
                    conflicts[b.node] = NodeConflicts(b.node, 1 + (before.refused if before else 0), now,
                                                      b.stream)
            changes = Changes(conflicts=[conflicts[n] for n in sorted(conflicts)])
            if accepted:
                # an agent's live stream is the ledger's source for its devices: remote-write's
                # readings of them are left out (its counter values lag their timestamps, so
                # interleaved with the agent's they could even seem to go back: a false reset)
                live = np.array([o is not None and now - s <= self.stale_after_seconds
                                 for o, s in zip(owners, seen, strict=True)], dtype=bool)
                agent_fed = {n: live[np.array(batch_keys[n], dtype=np.int64)][batches[n].columns.device]
                             for n in accepted if batches[n].remote}
                booked = [_without(batches[n], agent_fed[n]) if n in agent_fed else batches[n]
                          for n in accepted]
                lates = self._book(unit, booked, [batch_keys[n] for n in accepted],
                                   held, slots, infos, keep_info, merge_info, owners, seen, now, changes,
                                   states, key_list)
                for n, late in zip(accepted, lates, strict=True):
                    if n in agent_fed:
                        skipped = agent_fed[n]
                        every = skipped.copy()
                        every[~skipped] = late
                        results[n] = IngestResult(int((~every).sum()), False, every & ~skipped, skipped)
            unit.write(changes)
        self.commits += 1
        return results

    def _claim(self, vb: ValidBatch, ks: Sequence[int], key_list: Sequence[tuple[str, str]],
               owners: list[str | None], seen: list[float], last_ts: list[float], now: float
               ) -> DuplicateAgent | None:
        """Give the devices the batch has readings of to its stream, or the refusal when another
        stream holds one of them and is live (had a batch of it committed within stale_after)
        and this batch's readings of it do not start after its last committed reading.

        A stream whose readings start after the last committed one takes a live stream's device
        over at once: a hand-over (a re-imaged host, a salvaged spool, the demo's backfill
        followed by its live agent). Should the old stream come back, it is the one refused.
        """
        b, cols = vb.batch, vb.columns
        stream = b.stream
        if all(owners[k] is None or owners[k] == stream for k in ks):
            # the usual case, a stream's own devices: no reading to compare; the batch's newest
            # reading bounds each device's (enough for a later batch of the group to compare to)
            top = float(cols.ts.max()) if len(cols) else -math.inf
            for k in ks:
                owners[k] = stream
                seen[k] = now
                last = last_ts[k]
                last_ts[k] = top if last != last or top > last else last  # NaN: none committed
            return None
        n = len(b.devices)
        first = np.full(n, np.inf)
        newest = np.full(n, -np.inf)
        np.minimum.at(first, cols.device, cols.ts)
        np.maximum.at(newest, cols.device, cols.ts)
        measured = [(k, i) for i, k in enumerate(ks) if first[i] < np.inf]
        for k, i in measured:
            owner = owners[k]
            live = now - seen[k] <= self.stale_after_seconds
            if owner is not None and owner != b.stream and live and first[i] <= last_ts[k]:
                age = float(now - seen[k])
                device = key_list[k][1]
                self._log_conflict(b, device, owner, age)
                return DuplicateAgent(b.node, b.stream, device, owner, age, self.stale_after_seconds)
        taken = sorted({owner for k, _ in measured if (owner := owners[k]) is not None and owner != b.stream})
        if taken:
            log.warning("node %s: stream %s takes its devices over from stream %s (its readings start after "
                        "the last committed ones, or those are older than %g s)", b.node, b.stream,
                        ", ".join(taken), self.stale_after_seconds)
        for k, i in measured:
            owners[k] = b.stream
            seen[k] = now
            last = last_ts[k]
            last_ts[k] = float(newest[i]) if last != last or newest[i] > last else last
        return None

    def _log_conflict(self, b: Batch, device: str, owner: str, age: float) -> None:
        tick = self._monotonic()
        last = self._conflict_logged.get(b.node)
        if last is not None and tick - last < CONFLICT_LOG_SECONDS:
            return
        self._conflict_logged[b.node] = tick
        log.warning("node %s: two agents push for it (a cloned host or a copied token?): stream %s sent "
                    "readings of device %s that overlap those of stream %s, which sent it %.0f s ago; "
                    "%s's batches are refused (409) until %s has been silent for %g s", b.node, b.stream,
                    device, owner, age, b.stream, owner, self.stale_after_seconds)

    def _book(self, unit: IngestUnit, batches: Sequence[ValidBatch], batch_keys: Sequence[Sequence[int]],
              held: HeldDevices,
              slots: np.ndarray, infos: Mapping[int, DeviceInfo], keep_info: set[int], merge_info: set[int],
              owners: Sequence[str | None], seen: Sequence[float], now: float, changes: Changes,
              states: Mapping[str, StreamState],
              key_list: Sequence[tuple[str, str]]) -> list[npt.NDArray[np.bool_]]:
        """Account the accepted batches into ``changes``; per batch, which of its readings were late."""
        changes.streams, changes.seqs_added, changes.seqs_dropped = dedupe.advance(
            states, [vb for vb in batches if not vb.remote])
        used = sorted({k for ks in batch_keys for k in ks})
        local = {k: i for i, k in enumerate(used)}
        nodes: dict[str, NodeChange] = {}
        parts: dict[str, list[np.ndarray]] = {name: [] for name in READINGS_FIELDS}
        node_of: dict[int, str] = {}
        group_batches: list[GroupBatch] = []
        for vb, ks in zip(batches, batch_keys, strict=True):
            b, cols = vb.batch, vb.columns
            node_of.update(dict.fromkeys(ks, b.node))
            site, cluster = site_and_cluster(b)
            before = nodes.get(b.node)
            count = len(cols) + (before.readings if before else 0)
            if before is not None and vb.remote and not before.keep_labels:  # an agent's labels win
                nodes[b.node] = NodeChange(b.node, before.site, before.cluster, before.labels, now, count)
            else:
                nodes[b.node] = NodeChange(b.node, site, cluster, b.labels, now, count, keep_labels=vb.remote)
            at = np.array([local[k] for k in ks], dtype=np.int64)
            group_batches.append(GroupBatch(b.node, site, cluster, at, b.allocations, vb.remote))
            parts["device"].append(at[cols.device])
            parts["group"].append(np.full(len(cols), self._group(site, cluster), dtype=np.int64))
            for name in READINGS_FIELDS[2:]:
                parts[name].append(getattr(cols, name))
        readings = Readings(**{name: np.concatenate(arrays) for name, arrays in parts.items()})
        used_infos = [infos[k] for k in used]
        limits = np.array([np.nan if i.power_limit_w is None else i.power_limit_w for i in used_infos])
        # a device only remote-write declares in this group is held to its stored limit when the
        # request gave none (the anomaly rule bounds a counter that seems to go back)
        remote_only = np.array([k in keep_info or k in merge_info for k in used], dtype=bool)
        limits = np.where(remote_only & np.isnan(limits), held.power_limit_w[used], limits)
        metered = np.array([i.kind == NODE_METER_KIND
                            or (i.kind == "meter" and i.role in ("cooling", "facility"))
                            for i in used_infos], dtype=bool)
        state = DeviceStates(held.last_ts[used], held.last_power_w[used], held.last_energy_j[used], limits,
                             np.array([i.kind in PART_KINDS for i in used_infos], dtype=bool), metered)
        done = account(readings, state, max_gap_seconds=self.max_gap_seconds)
        node_names = sorted(nodes)
        node_number = {name: i for i, name in enumerate(node_names)}
        device_node = np.array([node_number[key_list[k][0]] for k in used], dtype=np.int64)
        group_site = np.array(self._group_site, dtype=np.int64)
        priced = price(done.intervals, done.interval_group, group_site, self._prices, device_node,
                       np.array([i.kind == "gpu" for i in used_infos], dtype=bool))
        group_nodes = GroupNodes(
            node_names, np.array([self._site_index[nodes[n].site] for n in node_names], dtype=np.int64),
            [nodes[n].cluster for n in node_names], device_node, [i.kind for i in used_infos],
            [i.role for i in used_infos])
        used_slots = slots[used]
        newest = {name: getattr(done.newest, name) for name in ("ts", "power_w", "energy_j", *LATEST,
                                                                "clock_events", "has_clock_events")}
        owner_seen = np.array([seen[k] for k in used], dtype=np.float64)
        changes.devices = DeviceChanges(
            used_slots, used_infos, [owners[k] for k in used], owner_seen, done.energy_j, done.unmeasured_s,
            done.resets, done.anomalies, done.late, used_slots[done.updated], newest,
            keep_info=np.array([k in keep_info for k in used], dtype=bool),
            merge_info=np.array([k in merge_info for k in used], dtype=bool))
        changes.nodes = [nodes[n] for n in sorted(nodes)]
        # rows built column-wise (one .tolist() per column, not one float() per value)
        (u_month, u_device, u_group), usage = priced.usage_keys, priced.usage
        groups = [self._groups[g] for g in u_group.tolist()]
        texts = {m: month_text(m) for m in np.unique(u_month).tolist()}
        changes.usage = list(zip([texts[m] for m in u_month.tolist()], used_slots[u_device].tolist(),
                                 [site for site, _ in groups], [cluster for _, cluster in groups],
                                 *(v.tolist() for v in usage), strict=True))
        (m_group, m_month), months = priced.month_keys, priced.months
        changes.site_months = [(self._groups[g][0], m, *values) for g, m, *values in
                               zip(m_group.tolist(), m_month.tolist(), *(v.tolist() for v in months),
                                   strict=True)]
        (q_group, q_start, q_month), quarters = priced.quarter_keys, priced.quarters
        changes.quarters = [(*self._groups[g], start, month_text(m), it_j, facility_j, cost)
                            for g, start, m, it_j, facility_j, cost in
                            zip(q_group.tolist(), q_start.tolist(), q_month.tolist(),
                                *(v.tolist() for v in quarters), strict=True)]
        # the plan's statistics per (site, GPU model, local day): accounting/profiles.py
        devices = group_devices([i.kind for i in used_infos], [i.model for i in used_infos],
                                [node_of[k] for k in used], used_slots, self._models)
        kept = done.kept
        changes.plan_days = plan_rows(kept.device, kept.group, kept.ts, kept.power_w, kept.util,
                                      _with_node_meters(done, used_infos), devices,
                                      np.array(self._group_site, dtype=np.int64),
                                      self._day_clocks, self._site_names, list(self._models))
        # the whole node and the site's cooling (adding to the sums above), then the teams, who
        # share what they change
        shares = self._minutes.book(unit, changes, done, priced, group_site, group_nodes,
                                    self._sensor_readings(readings, used_infos))
        reading_batch = np.repeat(np.arange(len(batches), dtype=np.int64),
                                  [len(vb.columns) for vb in batches])
        self._chargeback.book(unit, group_batches, used_infos, reading_batch, readings.util, done, changes,
                              shares)
        ends = np.cumsum([len(vb.columns) for vb in batches])
        return np.split(done.late_reading, ends[:-1])

    def _sensor_readings(self, readings: Readings, infos: Sequence[DeviceInfo]
                         ) -> dict[str, list[tuple[float, float]]]:
        """(ts, temp_c) of the group's readings of the sensors a chiller site reads."""
        wanted = set(self._minutes.sensor_ids().values())
        out: dict[str, list[tuple[float, float]]] = {}
        for local, info in enumerate(infos):
            if info.kind == "sensor" and info.id in wanted:
                mine = (readings.device == local) & ~np.isnan(readings.temp_c)
                out.setdefault(info.id, []).extend(
                    zip(readings.ts[mine].tolist(), readings.temp_c[mine].tolist(), strict=True))
        return out



def _with_node_meters(done: Accounted, infos: Sequence[DeviceInfo]) -> Intervals:
    """The parts' intervals and the node meters' (the plan's statistics measure the node overhead
    per model from both), in (device, time) order as accounted."""
    meters = done.meter_intervals
    node = np.array([infos[int(s)].kind == NODE_METER_KIND for s in meters.slot.tolist()], dtype=bool)
    both = [np.concatenate([getattr(done.intervals, f.name), getattr(meters, f.name)[node]])
            for f in fields(Intervals)]
    merged = Intervals(*both)
    order = np.lexsort((merged.end, merged.slot))
    return Intervals(*(getattr(merged, f.name)[order] for f in fields(Intervals)))
