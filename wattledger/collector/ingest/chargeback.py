"""Chargeback in the ingest transaction: who held the GPUs, and what each holder's share is worth
(DESIGN.md "Allocations" and "Teams, budgets and chargeback"; docs/chargeback.md).

For a group of accepted batches, inside their one store transaction:

1. holders: every allocation the batches carry (one per node, keyed by owner and start) and each
   node's idle holder are found or made (``unit.holders``), with their team (``teams.py``);
2. the split: every GPU interval's energy and time goes to its holders minute by minute
   (``accounting/allocation.py``: per batch and board, by the allocations of the batch that
   carries the interval's end; MIG partitions are lanes of their board);
3. the node-minutes: the holders' GPU energy and the node's non-GPU IT energy (CPU and host
   parts, node devices) are added to ``holder_minutes``, which returns every row of each
   node-minute touched. Each holder's IT energy in a node-minute is its GPU energy plus its share
   of the non-GPU energy (by GPU energy; a minute without GPU energy gives it to idle): computed
   on the minute's rows after and before the addition, the difference is booked. So a minute that
   gets more readings from a later batch is re-shared, and the result never depends on how the
   readings were batched;
4. the money: cooling = IT x (pue - 1) (a chiller's or metered site's: see ingest/sharing.py),
   priced at the minute's tariff, carbon of facility energy
   (the same prices as the site's), into each holder's month (``holder_months``) and each team's
   quarter-hour (``team_quarters``: the demand charge's share and the forecast's 24 h rate), and
   each team's month (``team_months``: what the store's team totals and caches add).

Summed over holders (idle included), every minute's IT energy is the node's, so teams add up to
the site exactly (``tests/collector/ledgerkit.py`` checks it after every ledger test).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wattledger.collector.accounting.aggregation import Floats, Ints, sum_by
from wattledger.collector.accounting.allocation import (
    Holdings,
    Lanes,
    Pieces,
    idle_pieces,
    node_minute_it,
    split_board,
)
from wattledger.collector.accounting.intervals import split_by_minute
from wattledger.collector.accounting.pricing import JOULES_PER_KWH, SitePrices
from wattledger.collector.accounting.readings import Accounted
from wattledger.collector.accounting.siteclock import month_text
from wattledger.collector.ingest.minutes import Shares
from wattledger.collector.ingest.sharing import pending_holder, priced_cooling
from wattledger.collector.store.base import NON_GPU_HOLDER, Changes, HolderInfo, IngestUnit, MinuteRow, Row
from wattledger.collector.teams import IDLE, UNSHARED, team_of
from wattledger.contract import PARTITION_KIND
from wattledger.wire import Allocation, DeviceInfo

GPU_KIND = "gpu"


@dataclass(frozen=True)
class GroupBatch:
    """One accepted batch as the chargeback sees it."""

    node: str
    site: str
    cluster: str
    devices: Ints  # the group's device number of each position
    allocations: Sequence[Allocation]
    #: from remote-write: its allocations' ``from`` is the previous reading of the request (or 0),
    #: not when the pod began, so its holders are keyed by node and owner alone (start 0)
    remote: bool = False

    def key(self, a: Allocation) -> tuple[str, str, float]:
        """The holder of an allocation: (node, owner, start)."""
        return (self.node, owner_text(a.owner), 0.0 if self.remote else a.start)


def owner_text(owner: Mapping[str, str]) -> str:
    """An owner as canonical JSON (the holder's key, stable across batches)."""
    return json.dumps(dict(owner), sort_keys=True, separators=(",", ":"))


class Chargeback:
    """Books a group's GPU energy to its holders and teams (see the module's docstring)."""

    def __init__(self, rules: Mapping[str, list[dict[str, str]]], prices: SitePrices,
                 site_index: Mapping[str, int], pue: Mapping[str, float],
                 shared_sites: Collection[str] = ()) -> None:
        self.rules = rules
        self.prices = prices
        self.site_index = dict(site_index)
        self.pue = dict(pue)
        #: the chiller and metered sites: what their holders are booked per site-minute is kept,
        #: and their minutes are shared out again by IT (ingest/sharing.py)
        self.shared_sites = frozenset(shared_sites)

    def book(self, unit: IngestUnit, batches: Sequence[GroupBatch], infos: Sequence[DeviceInfo],
             reading_batch: Ints, util: Floats, done: Accounted, changes: Changes,
             shares: Shares | None = None) -> None:
        """``shares``: what the group's node and site minutes changed (ingest/minutes.py): node
        overhead is non-GPU IT energy of its node-minute. On a chiller or metered site the
        change of a minute's cooling and other load goes to the site's holder of team
        ``unshared``, each holder's IT per site-minute is kept and the site-minutes are marked:
        ingest/sharing.py then shares them out exactly by IT."""
        shares = shares if shares is not None else Shares()
        self._book_holders(unit, batches, infos, reading_batch, util, done, changes, whole=shares)
        if not self.shared_sites:
            return
        touched = [(site, m, e) for site, m, e in shares.touched if site in self.shared_sites]
        self._pending(unit, [(site, m, e) for site, m, e in touched if e], changes)
        marked = {(site, minute) for site, minute, _ in touched}
        if changes.site_holder_minutes:
            changes.site_holder_minutes = _merged(changes.site_holder_minutes, 3)
            marked.update((site, minute) for site, minute, *_ in changes.site_holder_minutes)
        changes.unshared = sorted(marked)

    def _pending(self, unit: IngestUnit, rows: Sequence[tuple[str, int, float]], changes: Changes) -> None:
        """A chiller's or metered site's change of cooling + other load per site-minute, priced,
        to the site's holder of team ``unshared`` until the minute is shared out by IT: so the
        teams add up to the site at every commit."""
        if not rows:
            return
        sites = sorted({site for site, _, _ in rows})
        made = unit.holders([pending_holder(s) for s in sites])
        holder_of = {s: ident for s, (ident, _) in zip(sites, made, strict=True)}
        site_no = np.array([self.site_index[s] for s, _, _ in rows], dtype=np.int64)
        minutes = np.array([m for _, m, _ in rows], dtype=np.int64)
        energy = np.array([e for _, _, e in rows], dtype=np.float64)
        changes.site_holder_minutes.extend((s, m, holder_of[s], 0.0, e) for s, m, e in rows)
        holder_months, team_months, team_quarters = priced_cooling(
            self.prices, sorted(self.site_index, key=self.site_index.__getitem__), site_no, minutes,
            np.array([holder_of[s] for s, _, _ in rows], dtype=np.int64), [UNSHARED] * len(rows), energy)
        changes.holder_months = _merged([*changes.holder_months, *holder_months], 2)
        changes.team_months = _merged([*changes.team_months, *team_months], 3)
        changes.team_quarters = _merged([*changes.team_quarters, *team_quarters], 4, skip=(2,))

    def _book_holders(self, unit: IngestUnit, batches: Sequence[GroupBatch], infos: Sequence[DeviceInfo],
                      reading_batch: Ints, util: Floats, done: Accounted, changes: Changes,
                      whole: Shares) -> None:
        iv = done.intervals
        measured = iv.unmeasured_s == 0.0
        closing = done.closing
        batch_of = reading_batch[closing]
        kinds = np.array([info.kind for info in infos])
        gpu = measured & (kinds[iv.slot] == GPU_KIND) if len(iv.slot) else measured
        other = measured & ~gpu

        # 1. holders: each node's idle holder, each allocation of each batch (latest batch wins)
        found: dict[tuple[str, str, float], HolderInfo] = {}
        for b in batches:
            found[(b.node, "", 0.0)] = HolderInfo(b.node, "", 0.0, b.site, b.cluster, IDLE, None, "[]")
            for a in b.allocations:
                key = b.key(a)
                before = found.get(key)
                ended = a.end if before is None or before.ended is None or a.end is None else max(
                    a.end, before.ended)
                ids = sorted({infos[int(b.devices[p])].id for p in a.devices})
                team = team_of(a.owner, self.rules)
                found[key] = HolderInfo(b.node, key[1], key[2], b.site, b.cluster, team, ended,
                                        json.dumps(ids))
        keys = sorted(found)
        made = unit.holders([found[k] for k in keys])
        holder_id = {k: ident for k, (ident, _) in zip(keys, made, strict=True)}
        node_of: dict[int, str] = {ident: k[0] for k, ident in holder_id.items()}
        site_of_node = {b.node: b.site for b in batches}
        idle_of = {b.node: holder_id[(b.node, "", 0.0)] for b in batches}

        # 2. the split of GPU intervals, per (batch, board) with holdings; the rest is idle
        pieces: list[Pieces] = []
        split = np.zeros(len(iv.slot), dtype=bool)
        for number, b in enumerate(batches):
            if not b.allocations:
                continue
            boards = self._holdings(b, infos, holder_id)
            for board, (lanes, held) in boards.items():
                mine = np.flatnonzero(gpu & (batch_of == number) & (iv.slot == board))
                if not mine.shape[0]:
                    continue
                split[mine] = True
                lane, start, end, weight, holder = zip(*held, strict=True)
                holdings = Holdings(np.array(lane, dtype=np.int64), np.array(start, dtype=np.float64),
                                    np.array(end, dtype=np.float64), np.array(weight, dtype=np.float64),
                                    np.array(holder, dtype=np.int64))
                pieces.append(split_board(iv.start[mine], iv.end[mine], iv.energy_j[mine],
                                          util[closing[mine]], lanes, holdings, idle_of[b.node]))
        rest = np.flatnonzero(gpu & ~split)
        if rest.shape[0]:
            batch_idle = np.array([idle_of[b.node] for b in batches], dtype=np.int64)
            pieces.append(idle_pieces(iv.start[rest], iv.end[rest], iv.energy_j[rest],
                                      batch_idle[batch_of[rest]]))
        p = Pieces.concat(pieces)
        (h_holder, h_minute), (h_energy, h_gpu_s, h_idle_s, h_waste) = sum_by(
            (p.holder, p.minute), (p.energy_j, p.gpu_s, p.idle_s, p.waste_j))
        own = Pieces(h_minute, h_holder, h_energy, h_gpu_s, h_idle_s, h_waste)

        # 3. node-minutes: GPU energy per holder, non-GPU energy per node, a row for idle in each
        rows: list[MinuteRow] = [(node_of[h], m, h, e) for h, m, e in
                                 zip(h_holder.tolist(), h_minute.tolist(), h_energy.tolist(), strict=True)]
        others = np.flatnonzero(other)
        if others.shape[0]:
            shares = split_by_minute(iv.start[others], iv.end[others])
            k = others[shares.interval]
            names = sorted(idle_of)
            batch_node = np.array([names.index(b.node) for b in batches], dtype=np.int64)
            (o_node, o_minute), (o_energy,) = sum_by((batch_node[batch_of[k]], shares.minute),
                                                     (iv.energy_j[k] * shares.share,))
            rows.extend((names[n], m, NON_GPU_HOLDER, e) for n, m, e in
                        zip(o_node.tolist(), o_minute.tolist(), o_energy.tolist(), strict=True))
        # the node's overhead (node meter or node_overhead_ratio) is non-GPU IT energy too
        rows.extend((node, minute, NON_GPU_HOLDER, energy) for node, minute, energy in whole.overhead
                    if node in idle_of)
        touched = sorted({(node, minute) for node, minute, _, _ in rows})
        rows.extend((node, minute, idle_of[node], 0.0) for node, minute in touched)
        if not touched:
            return
        added: dict[tuple[str, int, int], float] = defaultdict(float)
        for row_node, row_minute, row_holder, energy in rows:
            added[(row_node, row_minute, row_holder)] += energy
        after = unit.add_minutes([(*key, energy) for key, energy in sorted(added.items())])
        self._rebook(after, added, idle_of, site_of_node, own, changes)

    # ---- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _holdings(b: GroupBatch, infos: Sequence[DeviceInfo], holder_id: Mapping[tuple[str, str, float], int]
                  ) -> dict[int, tuple[Lanes, list[tuple[int, float, float, float, int]]]]:
        """Per board of the batch that some allocation holds: its lanes and holdings."""
        by_id = {infos[int(d)].id: int(d) for d in b.devices.tolist()}
        partitions: dict[int, list[int]] = defaultdict(list)  # board -> its partitions (group numbers)
        for d in b.devices.tolist():
            info = infos[int(d)]
            if info.kind == PARTITION_KIND and info.parent in by_id:
                partitions[by_id[info.parent]].append(int(d))
        out: dict[int, tuple[Lanes, list[tuple[int, float, float, float, int]]]] = {}
        for a in b.allocations:
            holder = holder_id[b.key(a)]
            end = math.inf if a.end is None else a.end
            for position in a.devices:
                d = int(b.devices[position])
                info = infos[d]
                if info.kind == GPU_KIND:
                    board = d
                elif info.kind == PARTITION_KIND and info.parent in by_id:
                    board = by_id[info.parent]
                else:  # a CPU, a meter, a partition of a board the batch lacks: nothing to hold
                    continue
                if board not in out:
                    out[board] = (Lanes.of([infos[q].share or 0.0 for q in partitions[board]]), [])
                lanes, holdings = out[board]
                lane = lanes.own if board == d else partitions[board].index(d)
                holdings.append((lane, a.start, end, a.weight, holder))
        return out

    def _rebook(self, after: Sequence[tuple[str, int, int, float, str]],
                added: Mapping[tuple[str, int, int], float], idle_of: Mapping[str, int],
                site_of_node: Mapping[str, str], own: Pieces, changes: Changes) -> None:
        """Book each holder's new minus old share of its node-minutes, priced; ``own`` is what
        the group itself split to each (holder, minute) (its GPU time and waste: additive)."""
        nm_index: dict[tuple[str, int], int] = {}
        other_new: list[float] = []
        other_old: list[float] = []
        row_nm, row_holder, row_new, row_old, row_team = [], [], [], [], []
        for node, minute, holder, energy, team in sorted(after):
            n = nm_index.setdefault((node, minute), len(nm_index))
            if n == len(other_new):
                other_new.append(0.0)
                other_old.append(0.0)
            inc = added.get((node, minute, holder), 0.0)
            if holder == NON_GPU_HOLDER:
                other_new[n] += energy
                other_old[n] += energy - inc
                continue
            row_nm.append(n)
            row_holder.append(holder)
            row_new.append(energy)
            row_old.append(energy - inc)
            row_team.append(team)
        nm = np.array(row_nm, dtype=np.int64)
        holders = np.array(row_holder, dtype=np.int64)
        keys = list(nm_index)
        is_idle = holders == np.array([idle_of[keys[n][0]] for n in row_nm], dtype=np.int64)
        d_it = (node_minute_it(nm, np.array(row_new), is_idle, np.array(other_new))
                - node_minute_it(nm, np.array(row_old), is_idle, np.array(other_old)))
        minutes = np.array([keys[n][1] for n in row_nm], dtype=np.int64)
        sites = [site_of_node[keys[n][0]] for n in row_nm]
        # the holders' own additions this group (time, waste: additive, no re-share)
        where = {(h, m): i for i, (h, m) in
                 enumerate(zip(own.holder.tolist(), own.minute.tolist(), strict=True))}
        gpu_j, gpu_s, idle_s, waste_j = (np.zeros(len(row_nm)) for _ in range(4))
        for i, (h, m) in enumerate(zip(row_holder, minutes.tolist(), strict=True)):
            j = where.get((h, m))
            if j is not None:
                gpu_j[i], gpu_s[i] = own.energy_j[j], own.gpu_s[j]
                idle_s[i], waste_j[i] = own.idle_s[j], own.waste_j[j]
        pue = np.array([self.pue[s] for s in sites])
        carbon_rate = np.array([self.prices.carbon_g_per_kwh[self.site_index[s]] for s in sites])
        site_numbers = np.array([self.site_index[s] for s in sites], dtype=np.int64)
        price, month, quarter = self.prices.lookup(site_numbers, minutes)
        d_cool = d_it * (pue - 1.0)  # a chiller's or metered site's (pue 1 here): ingest/sharing.py
        self._keep_shares(sites, minutes, holders, d_it, changes)
        it_cost = d_it / JOULES_PER_KWH * price
        cool_cost = d_cool / JOULES_PER_KWH * price
        carbon = (d_it + d_cool) / JOULES_PER_KWH * carbon_rate
        waste_cost = waste_j / JOULES_PER_KWH * price
        (m_holder, m_month), sums = sum_by((holders, month), (
            gpu_j, d_it, d_cool, it_cost, cool_cost, carbon, gpu_s, idle_s, waste_j, waste_cost))
        texts = {m: month_text(m) for m in np.unique(m_month).tolist()}
        changes.holder_months = [
            (h, texts[m], *values) for h, m, *values in
            zip(m_holder.tolist(), m_month.tolist(), *(v.tolist() for v in sums), strict=True)]
        team_names = sorted(set(row_team))
        team_number = np.array([team_names.index(t) for t in row_team], dtype=np.int64)
        names = sorted(self.site_index, key=self.site_index.__getitem__)
        (t_site, t_month, t_team), team_sums = sum_by((site_numbers, month, team_number), (
            gpu_j, d_it, d_cool, it_cost, cool_cost, carbon, gpu_s, idle_s, waste_j, waste_cost))
        changes.team_months = [
            (names[s], month_text(m), team_names[t], *values) for s, m, t, *values in
            zip(t_site.tolist(), t_month.tolist(), t_team.tolist(), *(v.tolist() for v in team_sums),
                strict=True)]
        (q_site, q_start, q_month, q_team), (q_facility, q_cost) = sum_by(
            (site_numbers, quarter, month, team_number), (d_it + d_cool, it_cost + cool_cost))
        changes.team_quarters = [
            (names[s], start, month_text(m), team_names[t], f, c) for s, start, m, t, f, c in
            zip(q_site.tolist(), q_start.tolist(), q_month.tolist(), q_team.tolist(), q_facility.tolist(),
                q_cost.tolist(), strict=True)]

    def _keep_shares(self, sites: Sequence[str], minutes: Ints, holders: Ints, d_it: Floats,
                     changes: Changes) -> None:
        """On a chiller or metered site, each holder row's IT energy change, per site-minute."""
        if not self.shared_sites:
            return
        changes.site_holder_minutes.extend(
            (site, m, h, i, 0.0) for site, m, h, i in
            zip(sites, minutes.tolist(), holders.tolist(), d_it.tolist(), strict=True)
            if site in self.shared_sites and i)


def _merged(rows: Sequence[Row], keys: int, skip: tuple[int, ...] = ()) -> list[Row]:
    """Rows summed by their first ``keys`` columns (a statement adds to a row once); columns in
    ``skip`` (among the keys' positions' followers, e.g. a month text) are kept as first seen."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key_cols = [i for i in range(keys) if i not in skip]
        key = tuple(row[i] for i in key_cols)
        held = out.get(key)
        if held is None:
            out[key] = list(row)
            continue
        for i in range(keys, len(row)):
            held[i] += row[i]
    return [tuple(v) for v in out.values()]
