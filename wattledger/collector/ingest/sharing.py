"""A chiller's or a metered site's minutes shared out exactly among their holders (DESIGN.md
"Teams, budgets and chargeback": cooling goes to each team in proportion to its IT energy in
that minute; a metered site's other facility load is shared like cooling; docs/chargeback.md).

A chiller's cooling is not linear in IT (its efficiency changes with the load), and a metered
site's cooling and facility meters come in their own batches: so the share of a holder in a
minute is only known once the minute's whole IT is. Re-sharing a minute in every ingest
transaction that touches it would rewrite every holder row of the site's minute (thousands on a
large site) for each batch; booking a provisional split at ingest and correcting it later would
move cost between teams whose /metrics counters never go down (a team would keep a peak it
never owed). Instead:

1. each ingest transaction books the site's figures at once (exact at every commit), books the
   holders their IT energy and no cooling, keeps per (site, minute, holder) the holder's IT
   energy (``site_holder_minutes``), and marks the site-minutes it touched (``unshared_minutes``);
2. ``share`` (the collector's periodic work, ``Ledger.refresh``, every
   ``refresh_interval_seconds``) takes the marked site-minutes in (site, minute) order, each
   with its shared energy E (cooling + other, as booked), and books to every holder of the
   minute E x its IT / the minute's IT less what it was booked so far (priced at the minute's
   tariff, carbon at the site's rate), into its month, its team's month and quarter-hour, and
   notes it in the minute's row. A minute without IT energy gives E to the site's own holder
   ``:<site>`` (team ``unassigned``) until IT arrives.

Each share books only what moves among one minute's holders and what was not yet booked to any:
once a minute is shared its split is the contract's whatever the batching, and the teams add up
to the site (tests/collector/test_sharing.py); between a reading and the next share, the teams
lack that minute's chiller or metered cooling (at most ``refresh_interval_seconds``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from wattledger.collector.accounting.aggregation import Floats, Ints, sum_by
from wattledger.collector.accounting.pricing import JOULES_PER_KWH, SitePrices
from wattledger.collector.accounting.siteclock import month_text
from wattledger.collector.accounting.wholenode import share_by
from wattledger.collector.store.base import Changes, HolderInfo, IngestUnit, Row
from wattledger.collector.teams import UNASSIGNED, UNSHARED

log = logging.getLogger(__name__)

#: site-minutes shared per transaction (a transaction holds their rows' locks: keep it short)
SHARE_LIMIT = 200
#: below this many joules of IT a minute has no IT to share by
NO_IT_J = 1e-6


def site_holder(site: str) -> HolderInfo:
    """The site's own holder, of team ``unassigned``: a minute's cooling when it has no IT
    (no node is named so: a node name has no ':')."""
    return HolderInfo(f":{site}", "", 0.0, site, "", UNASSIGNED, None, "[]")


def pending_holder(site: str) -> HolderInfo:
    """The site's holder of team ``unshared``: its minutes' cooling changes until they are shared."""
    return HolderInfo(f":{site}:unshared", "", 0.0, site, "", UNSHARED, None, "[]")


def priced_cooling(prices: SitePrices, names: Sequence[str], site_no: Ints, minutes: Ints, holders: Ints,
                   teams: Sequence[str], energy: Floats) -> tuple[list[Row], list[Row], list[Row]]:
    """Cooling energy booked to holders in site-minutes (any sign), at the minute's tariff and
    the site's carbon: the rows of ``Changes.holder_months``, ``team_months``, ``team_quarters``."""
    price, month, quarter = prices.lookup(site_no, minutes)
    cost = energy / JOULES_PER_KWH * price
    carbon = energy / JOULES_PER_KWH * prices.carbon_g_per_kwh[site_no]
    zeros = (0.0, 0.0, 0.0, 0.0)  # GPU-s, held-idle GPU-s, waste J and cost: not cooling's
    (h_holder, h_month), (h_j, h_cost, h_carbon) = sum_by((holders, month), (energy, cost, carbon))
    holder_months: list[Row] = [
        (h, month_text(m), 0.0, 0.0, j, 0.0, c, g, *zeros) for h, m, j, c, g in
        zip(h_holder.tolist(), h_month.tolist(), h_j.tolist(), h_cost.tolist(), h_carbon.tolist(),
            strict=True)]
    team_names = sorted(set(teams))
    team_no = np.array([team_names.index(t) for t in teams], dtype=np.int64)
    (t_site, t_month, t_team), (t_j, t_cost, t_carbon) = sum_by((site_no, month, team_no),
                                                                (energy, cost, carbon))
    team_months: list[Row] = [
        (names[s], month_text(m), team_names[t], 0.0, 0.0, j, 0.0, c, g, *zeros)
        for s, m, t, j, c, g in zip(t_site.tolist(), t_month.tolist(), t_team.tolist(), t_j.tolist(),
                                    t_cost.tolist(), t_carbon.tolist(), strict=True)]
    (q_site, q_start, q_month, q_team), (q_j, q_cost) = sum_by((site_no, quarter, month, team_no),
                                                               (energy, cost))
    team_quarters: list[Row] = [
        (names[s], start, month_text(m), team_names[t], j, c) for s, start, m, t, j, c in
        zip(q_site.tolist(), q_start.tolist(), q_month.tolist(), q_team.tolist(), q_j.tolist(),
            q_cost.tolist(), strict=True)]
    return holder_months, team_months, team_quarters


def targets(energy: float, it_j: Floats, own: int | None) -> Floats:
    """Each holder's part of a minute's shared ``energy``: by its IT energy; all of it to row
    ``own`` (the site's holder) when the minute has no IT energy."""
    weights = np.maximum(it_j, 0.0)
    if float(weights.sum()) > NO_IT_J or own is None:
        return share_by(weights, energy)
    out = np.zeros(len(it_j))
    out[own] = energy
    return out


def _own_row(site: str, rows: Sequence[tuple[int, float, float, str, str]]) -> int | None:
    """The position of the site's own holder among a minute's rows, if it has one."""
    node = site_holder(site).node
    return next((i for i, row in enumerate(rows) if row[4] == node), None)


class CoolingSharer:
    """Shares out the marked site-minutes (see the module's docstring)."""

    def __init__(self, names: Sequence[str], prices: SitePrices) -> None:
        self.names = list(names)
        self.site_index = {name: i for i, name in enumerate(names)}
        self.prices = prices

    def share(self, unit: IngestUnit, limit: int = SHARE_LIMIT) -> int:
        """Share out up to ``limit`` marked site-minutes in this transaction; how many."""
        todo = [(s, m, e) for s, m, e in unit.unshared(limit) if s in self.site_index]
        if not todo:
            return 0
        keys = [(s, m) for s, m, _ in todo]
        by_key: dict[tuple[str, int], list[tuple[int, float, float, str, str]]] = {k: [] for k in keys}
        for site, minute, holder, it_j, cooling_j, team, node in unit.holder_shares(keys):
            by_key[(site, minute)].append((holder, it_j, cooling_j, team, node))
        # a minute with energy to share but no IT energy keeps it with the site's own holder
        lacking = [(s, m) for s, m, e in todo if e and _own_row(s, by_key[(s, m)]) is None and sum(
            max(row[1], 0.0) for row in by_key[(s, m)]) <= NO_IT_J]
        if lacking:
            sites = sorted({s for s, _ in lacking})
            made = dict(zip(sites, unit.holders([site_holder(s) for s in sites]), strict=True))
            for s, m in lacking:
                ident, team = made[s]
                by_key[(s, m)].append((ident, 0.0, 0.0, team, site_holder(s).node))
        out_site, out_minute, out_holder, out_team, out_diff = [], [], [], [], []
        for site, minute, energy in todo:
            held = by_key[(site, minute)]
            diff = targets(energy, np.array([it for _, it, *_ in held]), _own_row(site, held)) - np.array(
                [c for _, _, c, *_ in held])
            for (holder, _, _, team, _), d in zip(held, diff.tolist(), strict=True):
                if d:
                    out_site.append(site)
                    out_minute.append(minute)
                    out_holder.append(holder)
                    out_team.append(team)
                    out_diff.append(d)
        changes = Changes(shared=keys)
        if out_diff:
            diff = np.array(out_diff)
            changes.site_holder_minutes = [(s, m, h, 0.0, d) for s, m, h, d in
                                           zip(out_site, out_minute, out_holder, out_diff, strict=True)]
            changes.holder_months, changes.team_months, changes.team_quarters = priced_cooling(
                self.prices, self.names, np.array([self.site_index[s] for s in out_site], dtype=np.int64),
                np.array(out_minute, dtype=np.int64), np.array(out_holder, dtype=np.int64), out_team, diff)
        unit.write(changes)
        return len(keys)
