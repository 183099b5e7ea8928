"""The node and site minutes of one ingest transaction (DESIGN.md "The whole node", "Cooling").

After the devices' intervals are accounted and priced (``accounting/pricing.py``: each part's
energy, per device and minute), this adds each node-minute's inputs (its parts' energy, its node
meter's energy and measured seconds) and each site-minute's (its nodes' IT energy, its cooling
and facility meters) to the store's minute rows, which the store locks; from the new totals
``accounting/wholenode.py`` derives the node's overhead and the site's cooling and other
facility energy, and what changed since they were last booked is priced here and added to the
sums (node usage, quarter-hours, site months and totals). A minute that gets more readings in a
later batch is so re-booked by its difference: batching never changes the result.

Who carries a chiller minute's cooling: the nodes whose IT energy this transaction brings to
the minute, in proportion to it (the site's total is exact; a node's share is the cooling its
energy added). A metered site's cooling and other facility load are the site's own (node '').
Among teams and jobs both are then shared exactly by IT (ingest/sharing.py).

A chiller minute's outdoor temperature depends on the sensor's readings up to its end, which may
come before or after its IT. The chiller sensors' readings are kept (``outdoor_readings``): IT
that comes after newer readings takes the one at or before its minute's end. Readings that come
after a minute's IT (the sensor's batch came after the nodes') re-book the minutes they may
change: the booked minutes whose end lies in [first new reading, last new reading + 15 min]
(with only a sensor configured: from the first new reading on) are re-derived on their stored
inputs, in the same transaction as the readings, and the difference is booked as any other. A
re-booked minute that no node of the transaction carries books its cooling change as the site's
own (node ''; the teams' split follows by ingest/sharing.py, the minute being touched).
Across replicas, ``IngestUnit.hold_outdoor`` makes the two kinds of group take turns
(``outdoor_locks``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wattledger.collector.accounting.aggregation import Floats, Ints, sum_by
from wattledger.collector.accounting.cooling import ChillerCooling, MeteredCooling, PueCooling
from wattledger.collector.accounting.pricing import JOULES_PER_KWH, Priced, SitePrices
from wattledger.collector.accounting.readings import Accounted
from wattledger.collector.accounting.siteclock import month_text
from wattledger.collector.accounting.wholenode import (
    MINUTE_S,
    SENSOR_STALE_S,
    Outdoor,
    meter_minutes,
    node_minutes,
    sensor_series,
    share_by,
    site_minutes,
)
from wattledger.collector.sites import SiteConfig
from wattledger.collector.store.base import Changes, IngestUnit, Row
from wattledger.contract import NODE_METER_KIND

#: the node and cluster of a site's own figures (metered cooling, other facility load)
SITE_WIDE = ""
_NO_SENSOR = (np.zeros(0), np.zeros(0))
#: a minute after any the ledger books (a signed 64-bit minute number, as the stores keep it)
LAST_MINUTE = 2**62


@dataclass(frozen=True)
class Shares:
    """What a group's node and site minutes changed that the teams share (ingest/chargeback.py):
    (node, minute, overhead J) as the node-minute's non-GPU IT energy; every (site, minute) the
    group booked, with the change of its cooling + other facility energy (a chiller's or metered
    site's: shared out among teams by ingest/sharing.py)."""

    overhead: list[tuple[str, int, float]] = field(default_factory=list)
    touched: list[tuple[str, int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class _OutdoorSeries:
    """Per chiller site with an outdoor sensor that the group touches, the sensor's (ts, °C)
    series its minutes take their temperature from; and the site-minutes booked before that
    the group's new sensor readings may change (re-derived with the group's own)."""

    series: dict[int, tuple[Floats, Floats]]
    rebooked: tuple[Ints, Ints]


@dataclass(frozen=True)
class _Entries:
    """What changed per node-minute of the group (aligned arrays)."""

    site: Ints
    node: Ints
    minute: Ints
    it: Floats  # IT energy added: parts + overhead change
    over: Floats  # overhead change
    est: Floats  # of which estimated
    dis: Floats  # disagreement seconds change


@dataclass(frozen=True)
class GroupNodes:
    """The group's nodes, numbered, and each device's node, kind and role."""

    names: Sequence[str]
    site: Ints  # site index of each node
    cluster: Sequence[str]
    device_node: Ints
    device_kind: Sequence[str]
    device_role: Sequence[str | None]


class MinuteBooker:
    """Books the node and site minutes of ingest transactions for a collector's sites."""

    def __init__(self, sites: Sequence[SiteConfig], names: Sequence[str], prices: SitePrices) -> None:
        self.sites = list(sites)
        self.names = list(names)
        self.prices = prices
        self.ratio = np.array([s.node_overhead_ratio for s in sites], dtype=np.float64)
        self.outdoor: dict[int, Outdoor] = {}
        for i, site in enumerate(sites):
            model = site.cooling_model
            if isinstance(model, ChillerCooling):
                self.outdoor[i] = Outdoor(model.outdoor, site.zone)
        self._sensor_ids = {i: s for i, o in self.outdoor.items() if (s := o.source.sensor) is not None}

    def sensor_ids(self) -> dict[int, str]:
        """Site index -> the sensor device id its chiller reads the outdoor temperature from."""
        return self._sensor_ids

    def outdoor_locks(self, sites: set[int], sensors: set[str]) -> tuple[list[str], list[str]]:
        """The outdoor sensors a group writes (carries readings of: ``sensors``, the ids of its
        batches' sensor devices) and reads (those of the chiller sites ``sites`` its batches
        belong to): what ``IngestUnit.hold_outdoor`` serializes the group on."""
        chiller = self.sensor_ids()
        writes = sorted(sensors & set(chiller.values()))
        reads = sorted({chiller[s] for s in sites if s in chiller} - set(writes))
        return writes, reads

    def book(
        self,
        unit: IngestUnit,
        changes: Changes,
        done: Accounted,
        priced: Priced,
        group_site: Ints,
        nodes: GroupNodes,
        sensor_readings: Mapping[str, Sequence[tuple[float, float]]],
    ) -> Shares:
        """Book the group's node and site minutes; what the teams' chargeback must share out."""
        node_rows = self._node_inputs(done, priced, nodes)
        site_extra = self._meter_inputs(done, group_site, nodes)
        outdoor = self._outdoor_series(
            unit,
            changes,
            sensor_readings,
            np.concatenate([nodes.site[node_rows[0]], site_extra[0]]),
            np.concatenate([node_rows[1], site_extra[1]]),
        )
        if not node_rows[0].size and not site_extra[0].size and not outdoor.rebooked[0].size:
            return Shares()
        entries = self._book_nodes(unit, changes, node_rows, nodes)
        return self._book_sites(unit, changes, entries, site_extra, outdoor, nodes)

    # ---- inputs ----------------------------------------------------------------------------

    @staticmethod
    def _node_inputs(done: Accounted, priced: Priced, nodes: GroupNodes) -> tuple[Ints, Ints, list[Floats]]:
        """Per (node, minute): parts_j, gpu_j, meter_j, meter_s added by this group."""
        (p_node, p_minute), (parts, gpu) = priced.node_keys, priced.node_parts
        iv = done.meter_intervals
        mm = meter_minutes(iv)
        slot = iv.slot[mm.interval]
        kinds = np.array([k == NODE_METER_KIND for k in nodes.device_kind], dtype=bool)
        is_node = kinds[slot] if len(slot) else np.zeros(0, dtype=bool)
        m_node, m_minute = nodes.device_node[slot[is_node]], mm.minute[is_node]
        zeros_p, zeros_m = np.zeros(len(p_node)), np.zeros(len(m_node))
        (node, minute), values = sum_by(
            (np.concatenate([p_node, m_node]), np.concatenate([p_minute, m_minute])),
            (
                np.concatenate([parts, zeros_m]),
                np.concatenate([gpu, zeros_m]),
                np.concatenate([zeros_p, mm.energy_j[is_node]]),
                np.concatenate([zeros_p, mm.measured_s[is_node]]),
            ),
        )
        return node, minute, values

    @staticmethod
    def _meter_inputs(
        done: Accounted, group_site: Ints, nodes: GroupNodes
    ) -> tuple[Ints, Ints, list[Floats]]:
        """Per (site, minute): cooling_meter_j, facility_meter_j, facility_meter_s added."""
        iv = done.meter_intervals
        mm = meter_minutes(iv)
        slot = iv.slot[mm.interval]
        code = {"cooling": 0, "facility": 1}
        roles = np.array(
            [
                code.get(r or "", -1) if k == "meter" else -1
                for k, r in zip(nodes.device_kind, nodes.device_role, strict=True)
            ],
            dtype=np.int64,
        )
        role = roles[slot] if len(slot) else np.zeros(0, dtype=np.int64)
        take = role >= 0
        site = group_site[done.meter_group[mm.interval][take]]
        role, energy, seconds = role[take], mm.energy_j[take], mm.measured_s[take]
        (s_site, s_minute), values = sum_by(
            (site, mm.minute[take]),
            (
                np.where(role == 0, energy, 0.0),
                np.where(role == 1, energy, 0.0),
                np.where(role == 1, seconds, 0.0),
            ),
        )
        return s_site, s_minute, values

    # ---- nodes -----------------------------------------------------------------------------

    def _book_nodes(
        self, unit: IngestUnit, changes: Changes, rows: tuple[Ints, Ints, list[Floats]], nodes: GroupNodes
    ) -> _Entries:
        node, minute, (parts, gpu, meter_j, meter_s) = rows
        site = nodes.site[node]
        got = unit.add_node_minutes(
            [
                (nodes.names[n], m, self.names[s], nodes.cluster[n], p, g, mj, ms)
                for n, m, s, p, g, mj, ms in zip(
                    node.tolist(),
                    minute.tolist(),
                    site.tolist(),
                    parts.tolist(),
                    gpu.tolist(),
                    meter_j.tolist(),
                    meter_s.tolist(),
                    strict=True,
                )
            ]
        )
        table = np.array(got, dtype=np.float64).reshape(len(got), 7)
        new_parts, new_meter_j, new_meter_s = table[:, 0], table[:, 2], table[:, 3]
        old_over, old_est, old_dis = table[:, 4], table[:, 5] > 0, table[:, 6]
        new = node_minutes(new_parts, new_meter_j, new_meter_s, self.ratio[site])
        changes.node_minutes = [
            (nodes.names[n], m, o, int(e), d)
            for n, m, o, e, d in zip(
                node.tolist(),
                minute.tolist(),
                new.overhead_j.tolist(),
                new.estimated.tolist(),
                new.disagree_s.tolist(),
                strict=True,
            )
        ]
        d_over = new.overhead_j - old_over
        d_est = np.where(new.estimated, new.overhead_j, 0.0) - np.where(old_est, old_over, 0.0)
        return _Entries(
            site=site,
            node=node,
            minute=minute,
            it=parts + d_over,
            over=d_over,
            est=d_est,
            dis=new.disagree_s - old_dis,
        )

    # ---- sites -----------------------------------------------------------------------------

    def _book_sites(
        self,
        unit: IngestUnit,
        changes: Changes,
        e: _Entries,
        meters: tuple[Ints, Ints, list[Floats]],
        outdoor_series: _OutdoorSeries,
        nodes: GroupNodes,
    ) -> Shares:
        m_site, m_minute, (cool_m, fac_m, fac_s) = meters
        r_site, r_minute = outdoor_series.rebooked
        sensors = outdoor_series.series
        n_e, n_m, n_r = len(e.site), len(m_site), len(r_site)
        # the re-booked minutes add nothing: they are re-derived on their stored inputs
        (site, minute), (it, cool_in, fac_in, fac_s_in) = sum_by(
            (np.concatenate([e.site, m_site, r_site]), np.concatenate([e.minute, m_minute, r_minute])),
            (
                np.concatenate([e.it, np.zeros(n_m + n_r)]),
                np.concatenate([np.zeros(n_e), cool_m, np.zeros(n_r)]),
                np.concatenate([np.zeros(n_e), fac_m, np.zeros(n_r)]),
                np.concatenate([np.zeros(n_e), fac_s, np.zeros(n_r)]),
            ),
        )
        got = unit.add_site_minutes(
            [
                (self.names[s], m, a, b, c, d)
                for s, m, a, b, c, d in zip(
                    site.tolist(),
                    minute.tolist(),
                    it.tolist(),
                    cool_in.tolist(),
                    fac_in.tolist(),
                    fac_s_in.tolist(),
                    strict=True,
                )
            ]
        )
        table = np.array(
            [[np.nan if v is None else v for v in row] for row in got], dtype=np.float64
        ).reshape(len(got), 8)
        cooling, other, outdoor, fallback = (np.zeros(len(site)) for _ in range(4))
        outdoor[:] = np.nan
        for s in np.unique(site).tolist():
            mask = site == s
            derived = site_minutes(
                self.sites[s].cooling_model,
                minute[mask],
                table[mask, 0],
                table[mask, 1],
                table[mask, 2],
                table[mask, 3],
                self.outdoor.get(s),
                sensors.get(s, _NO_SENSOR),
            )
            cooling[mask], other[mask] = derived.cooling_j, derived.other_j
            outdoor[mask], fallback[mask] = derived.outdoor_c, derived.fallback_s
        changes.site_minutes = [
            (self.names[s], m, c, o, None if t != t else t, f)
            for s, m, c, o, t, f in zip(
                site.tolist(),
                minute.tolist(),
                cooling.tolist(),
                other.tolist(),
                outdoor.tolist(),
                fallback.tolist(),
                strict=True,
            )
        ]
        d_cool, d_other, d_fallback = cooling - table[:, 4], other - table[:, 5], fallback - table[:, 7]
        return self._price(changes, nodes, e, site, minute, d_cool, d_other, d_fallback)

    def _outdoor_series(
        self,
        unit: IngestUnit,
        changes: Changes,
        readings: Mapping[str, Sequence[tuple[float, float]]],
        minute_site: Ints,
        minute: Ints,
    ) -> _OutdoorSeries:
        """The outdoor series of the chiller sites the group books minutes of or has sensor
        readings for, and the booked minutes its new readings re-book; the new readings go to
        ``changes.outdoor_readings`` (kept for minutes whose IT comes later)."""
        touched = set(minute_site.tolist())
        ids = {s: d for s, d in self.sensor_ids().items() if s in touched or readings.get(d)}
        if not ids:
            return _OutdoorSeries({}, (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))
        committed = unit.sensors(sorted(set(ids.values())))
        newer: dict[str, list[tuple[float, float]]] = {}
        for d in sorted(set(ids.values())):
            # a sensor's readings arrive in time order within its stream: one not newer than the
            # last committed reading is late (accounting drops it, the ledger never holds it), so
            # only the newer ones count, here and for the minutes they re-book
            after = committed[d][0] if d in committed else -math.inf
            newer[d] = sorted((t, c) for t, c in readings.get(d, ()) if t > after and c == c)
        windows = {
            s: changed_minutes(newer[d][0][0], newer[d][-1][0], until_next=self._sensor_only(s))
            for s, d in ids.items()
            if newer[d]
        }
        r_site, r_minute = self._rebooked(unit, windows)
        # a minute takes the last reading at or before its end: the committed one for the minutes
        # ending after it, else the one kept (outdoor_readings) when it came
        asks: list[tuple[str, float]] = []
        for s, d in ids.items():
            if d in committed:
                ends = (np.concatenate([minute[minute_site == s], r_minute[r_site == s]]) + 1) * MINUTE_S
                asks.extend((d, e) for e in np.unique(ends[ends < committed[d][0]]).tolist())
        kept = unit.outdoor_history(asks) if asks else {}
        series = {
            s: sensor_series([*kept.get(d, ()), *([committed[d]] if d in committed else []), *newer[d]])
            for s, d in ids.items()
        }
        changes.outdoor_readings = [(d, t, c) for d in sorted(newer) for t, c in newer[d]]
        return _OutdoorSeries(series, (r_site, r_minute))

    def _sensor_only(self, site: int) -> bool:
        """The site's chiller has no outdoor source but its sensor (its stale minutes take the
        sensor's last reading however old)."""
        source = self.outdoor[site].source
        return source.epw is None and source.fixed_c is None

    def _rebooked(self, unit: IngestUnit, windows: Mapping[int, tuple[int, int]]) -> tuple[Ints, Ints]:
        """(site, minute) of the site-minutes booked in the windows: re-derived with the group's
        (those the group also adds to are merged with its own by ``sum_by``)."""
        if not windows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        index = {self.names[s]: s for s in windows}
        spans = [(self.names[s], low, high) for s, (low, high) in sorted(windows.items())]
        keys = unit.booked_site_minutes(spans)
        return (
            np.array([index[name] for name, _ in keys], dtype=np.int64),
            np.array([m for _, m in keys], dtype=np.int64),
        )

    # ---- money -----------------------------------------------------------------------------

    def _price(
        self,
        changes: Changes,
        nodes: GroupNodes,
        e: _Entries,
        site: Ints,
        minute: Ints,
        d_cool: Floats,
        d_other: Floats,
        d_fallback: Floats,
    ) -> Shares:
        """Price what changed: per node-minute its overhead (and, on a pue site, the overhead's
        cooling; on a chiller site, its share of the minute's cooling), per site-minute the
        site's own cooling and other load; add it all to the sums."""
        pue = np.array(
            [m.pue if isinstance(m, PueCooling) else 1.0 for m in (s.cooling_model for s in self.sites)],
            dtype=np.float64,
        )
        metered = np.array([isinstance(s.cooling_model, MeteredCooling) for s in self.sites], dtype=bool)
        is_chiller = np.array([isinstance(s.cooling_model, ChillerCooling) for s in self.sites], dtype=bool)
        node_cool = e.over * (pue[e.site] - 1.0)
        # a chiller minute's cooling change, spread over the nodes that brought IT energy to it
        wide_cool = np.where(metered[site], d_cool, 0.0)
        chiller = np.flatnonzero(is_chiller[site] & (d_cool != 0))
        if len(chiller):
            by_minute: dict[tuple[int, int], list[int]] = {}
            for i, key in enumerate(zip(e.site.tolist(), e.minute.tolist(), strict=True)):
                by_minute.setdefault(key, []).append(i)
            for j in chiller.tolist():
                carriers = by_minute.get((int(site[j]), int(minute[j])), [])
                weights = np.maximum(e.it[carriers], 0.0) if carriers else np.zeros(0)
                if not carriers or weights.sum() <= 0:
                    wide_cool[j] = d_cool[j]
                    continue
                node_cool[carriers] += share_by(weights, float(d_cool[j]))
        wide_other = d_other
        # one table of what to price: the node-minutes, then the site's own minutes
        n_e = len(e.site)
        all_site = np.concatenate([e.site, site])
        all_minute = np.concatenate([e.minute, minute])
        over = np.concatenate([e.over, np.zeros(len(site))])
        est = np.concatenate([e.est, np.zeros(len(site))])
        cool = np.concatenate([node_cool, wide_cool])
        other = np.concatenate([np.zeros(n_e), wide_other])
        dis = np.concatenate([e.dis, np.zeros(len(site))])
        fallback = np.concatenate([np.zeros(n_e), d_fallback])
        who = np.concatenate([e.node, np.full(len(site), -1, dtype=np.int64)])  # -1: the site's own
        price_kwh, month, quarter = self.prices.lookup(all_site, all_minute)
        carbon_rate = self.prices.carbon_g_per_kwh[all_site]
        over_cost = over / JOULES_PER_KWH * price_kwh
        cool_cost = cool / JOULES_PER_KWH * price_kwh
        other_cost = other / JOULES_PER_KWH * price_kwh
        carbon = (over + cool + other) / JOULES_PER_KWH * carbon_rate
        self._sums(
            changes,
            nodes,
            all_site,
            who,
            month,
            quarter,
            (over, est, over_cost, cool, cool_cost, other, other_cost, carbon, dis, fallback),
        )
        self._node_totals(changes, nodes, e)
        # for the teams: each node-minute's overhead change (non-GPU IT energy) and each
        # site-minute's change of cooling and other load
        names = nodes.names
        return Shares(
            overhead=[
                (names[n], m, o)
                for n, m, o in zip(e.node.tolist(), e.minute.tolist(), e.over.tolist(), strict=True)
                if o
            ],
            touched=[(self.names[s], m, c + o) for s, m, c, o in
                     zip(site.tolist(), minute.tolist(), d_cool.tolist(), d_other.tolist(), strict=True)],
        )

    def _sums(
        self,
        changes: Changes,
        nodes: GroupNodes,
        site: Ints,
        who: Ints,
        month: Ints,
        quarter: Ints,
        values: tuple[Floats, ...],
    ) -> None:
        over, est, over_cost, cool, cool_cost, other, other_cost, carbon, dis, fallback = values
        names, clusters = nodes.names, nodes.cluster
        (u_month, u_site, u_who), usage = sum_by(
            (month, site, who), (over, est, over_cost, cool, cool_cost, other, other_cost, carbon, dis)
        )
        texts = {m: month_text(m) for m in np.unique(u_month).tolist()}
        changes.node_usage = [
            (
                texts[m],
                self.names[s],
                clusters[w] if w >= 0 else SITE_WIDE,
                names[w] if w >= 0 else SITE_WIDE,
                *row,
            )
            for m, s, w, *row in zip(
                u_month.tolist(), u_site.tolist(), u_who.tolist(), *(v.tolist() for v in usage), strict=True
            )
            if any(row)
        ]
        cluster_names = sorted({*clusters, SITE_WIDE})
        cluster_index = {c: i for i, c in enumerate(cluster_names)}
        cluster_no = np.array(
            [cluster_index[clusters[w] if w >= 0 else SITE_WIDE] for w in who.tolist()], dtype=np.int64
        )
        (q_site, q_cluster, q_start, q_month), (q_it, q_fac, q_cost) = sum_by(
            (site, cluster_no, quarter, month),
            (over, over + cool + other, over_cost + cool_cost + other_cost),
        )
        changes.quarters = _merged_quarters(
            changes.quarters,
            [
                (self.names[s], cluster_names[c], start, month_text(m), it, fac, cost)
                for s, c, start, m, it, fac, cost in zip(
                    q_site.tolist(),
                    q_cluster.tolist(),
                    q_start.tolist(),
                    q_month.tolist(),
                    q_it.tolist(),
                    q_fac.tolist(),
                    q_cost.tolist(),
                    strict=True,
                )
                if it or fac or cost
            ],
        )
        (m_site, m_month), (a, b, c, d, e, f, g, h) = sum_by(
            (site, month), (over, cool, over_cost, cool_cost, carbon, other, other_cost, fallback)
        )
        changes.site_months.extend(
            (self.names[s], m, *row)
            for s, m, *row in zip(
                m_site.tolist(),
                m_month.tolist(),
                a.tolist(),
                b.tolist(),
                c.tolist(),
                d.tolist(),
                e.tolist(),
                f.tolist(),
                g.tolist(),
                h.tolist(),
                strict=True,
            )
            if any(row)
        )

    def _node_totals(self, changes: Changes, nodes: GroupNodes, e: _Entries) -> None:
        (node,), (est, over, dis) = sum_by((e.node,), (e.est, e.over, e.dis))
        changes.node_totals = [
            (nodes.names[n], self.names[int(nodes.site[n])], nodes.cluster[n], a, o - a, d)
            for n, a, o, d in zip(node.tolist(), est.tolist(), over.tolist(), dis.tolist(), strict=True)
        ]


def changed_minutes(first: float, last: float, *, until_next: bool = False) -> tuple[int, int]:
    """The minutes [low, high] whose outdoor temperature new sensor readings from ``first`` to
    ``last`` may change: a minute takes the last reading at or before its end, stale after 15
    min, so those ending in [first, last + 15 min] (the ends compared as ``Outdoor`` compares
    them); with ``until_next`` (a site with only the sensor, whose stale minutes take its last
    reading however old) every minute ending from ``first`` on, up to the sensor's next reading,
    which has not come yet. Exactly those: a minute ending before ``first`` takes none of them."""
    low = math.ceil(first / MINUTE_S) - 1
    while low * MINUTE_S >= first:  # the minute before ends at or after first too
        low -= 1
    while (low + 1) * MINUTE_S < first:
        low += 1
    if until_next:
        return low, LAST_MINUTE
    high = math.floor((last + SENSOR_STALE_S) / MINUTE_S) - 1
    while (high + 2) * MINUTE_S - last <= SENSOR_STALE_S:
        high += 1
    while high >= low and (high + 1) * MINUTE_S - last > SENSOR_STALE_S:
        high -= 1
    return low, high


def _merged_quarters(rows: list[Row], more: list[Row]) -> list[Row]:
    """Quarter-hour rows with one row per (site, cluster, start): a statement may add to a row once."""
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for site, cluster, start, month, it_j, facility_j, cost in [*rows, *more]:
        held = merged.get((site, cluster, start))
        if held is None:
            merged[(site, cluster, start)] = [month, it_j, facility_j, cost]
        else:
            held[1] += it_j
            held[2] += facility_j
            held[3] += cost
    return [(*key, *values) for key, values in merged.items()]
