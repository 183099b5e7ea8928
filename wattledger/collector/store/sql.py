"""SQL that both backends speak the same way (SQLite 3.35+ and PostgreSQL 15): reports over
usage rows, the roll-up of old quarter-hours. ``P`` in a statement is the driver's placeholder
(``?`` for sqlite3, ``%s`` for psycopg), filled in by :func:`dialect`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wattledger.collector.accounting.wholenode import MINUTE_S, SENSOR_STALE_S
from wattledger.collector.store.base import SPEND_KEYS, Level, MinuteSums, Row

#: a spend level's keys -> SQL columns (usage ``u``, devices ``d``)
_COLUMNS = {"site": "u.site", "cluster": "u.cluster", "node": "d.node", "device": "d.device",
            "kind": "d.kind", "index": "d.idx", "model": "d.model"}


def dialect(statement: str, placeholder: str) -> str:
    return statement.replace("{P}", placeholder)


def spend_sums(group_by: Level) -> str:
    """A month's usage of one site summed by the level's keys: (keys..., it_j, cooling_j,
    it_cost, cooling_cost, carbon_g, unmeasured_s, gpu_j, gpu_cost), sorted by the keys."""
    keys = ", ".join(_COLUMNS[k] for k in SPEND_KEYS[group_by])
    gpu = "CASE WHEN d.kind = 'gpu' THEN {} ELSE 0 END"
    return (f"SELECT {keys}, SUM(u.it_j), SUM(u.cooling_j), SUM(u.it_cost), SUM(u.cooling_cost), "
            f"SUM(u.carbon_g), SUM(u.unmeasured_s), SUM({gpu.format('u.it_j')}), "
            f"SUM({gpu.format('u.it_cost')}) "
            "FROM usage u JOIN devices d ON d.slot = u.slot "
            f"WHERE u.month = {{P}} AND u.site = {{P}} GROUP BY {keys} ORDER BY {keys}")


#: a spend level's keys -> node_usage's columns (a node's own figures are a device row with
#: device '' of kind 'node'; the site's own, node '', of kind 'site')
_NODE_COLUMNS = {"site": "n.site", "cluster": "n.cluster", "node": "n.node", "device": "''",
                 "kind": "CASE WHEN n.node = '' THEN 'site' ELSE 'node' END", "index": "0", "model": "NULL"}


def node_spend_sums(group_by: Level) -> str:
    """What the node and site minutes added to a month of one site, by the level's keys:
    (keys..., overhead_j, overhead_est_j, overhead_cost, cooling_j, cooling_cost, other_j,
    other_cost, carbon_g, disagree_s)."""
    keys = ", ".join(_NODE_COLUMNS[k] for k in SPEND_KEYS[group_by])
    groups = ", ".join(str(i + 1) for i in range(len(SPEND_KEYS[group_by])))
    return (f"SELECT {keys}, SUM(n.overhead_j), SUM(n.overhead_est_j), SUM(n.overhead_cost), "
            "SUM(n.cooling_j), "
            "SUM(n.cooling_cost), SUM(n.other_j), SUM(n.other_cost), SUM(n.carbon_g), SUM(n.disagree_s) "
            f"FROM node_usage n WHERE n.month = {{P}} AND n.site = {{P}} GROUP BY {groups}")


#: the figures of a spend row, in order (after its keys)
SPEND_VALUES = ("it_j", "cooling_j", "it_cost", "cooling_cost", "carbon_g", "unmeasured_s", "gpu_j",
                "gpu_cost",
                "overhead_j", "overhead_est_j", "overhead_cost", "other_j", "other_cost", "disagree_s")


def merge_spend(group_by: Level, usage: list[Row], nodes: list[Row]) -> list[Row]:
    """One row per key: the devices' usage with the node minutes' figures added (IT, cooling,
    cost, carbon), sorted by the keys. Rows are (keys..., *SPEND_VALUES)."""
    n = len(SPEND_KEYS[group_by])
    merged: dict[tuple[Any, ...], list[float]] = {}
    for row in usage:
        it_j, cooling_j, it_cost, cooling_cost, carbon_g, unmeasured, gpu_j, gpu_cost = (
            float(v) for v in row[n:])
        merged[tuple(row[:n])] = [it_j, cooling_j, it_cost, cooling_cost, carbon_g, unmeasured, gpu_j,
                                  gpu_cost, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    for row in nodes:
        over, over_est, over_cost, cool, cool_cost, other, other_cost, carbon, disagree = (
            float(v) for v in row[n:])
        held = merged.setdefault(tuple(row[:n]), [0.0] * len(SPEND_VALUES))
        for i, value in ((0, over), (1, cool), (2, over_cost), (3, cool_cost), (4, carbon), (8, over),
                         (9, over_est), (10, over_cost), (11, other), (12, other_cost), (13, disagree)):
            held[i] += value
    return [(*key, *values) for key, values in sorted(merged.items(), key=lambda kv: _sort_key(kv[0]))]


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("" if v is None else v for v in key)


#: energy cost per cluster of a site's quarter-hours that start in [since, until]
CLUSTER_DAY_COST = ("SELECT cluster, SUM(cost) FROM quarters WHERE site = {P} AND start_minute >= {P} "
                    "AND start_minute <= {P} GROUP BY cluster")

# the month's highest site quarter-hour (all clusters) among those about to be rolled up, kept
# if higher than the one kept before
KEEP_PEAKS = (
    "INSERT INTO month_peaks (site, month, facility_j) "
    "SELECT site, month, MAX(facility_j) FROM (SELECT site, month, SUM(facility_j) AS facility_j "
    "FROM quarters WHERE start_minute < {P} GROUP BY site, month, start_minute) AS site_quarters "
    "GROUP BY site, month "
    "ON CONFLICT (site, month) DO UPDATE SET "
    "facility_j = CASE WHEN excluded.facility_j > month_peaks.facility_j "
    "THEN excluded.facility_j ELSE month_peaks.facility_j END")
ADD_HOURS = (
    "INSERT INTO hours (site, cluster, month, start_minute, it_j, facility_j, cost) "
    "SELECT site, cluster, month, (start_minute / 60) * 60, SUM(it_j), SUM(facility_j), SUM(cost) "
    "FROM quarters WHERE start_minute < {P} GROUP BY site, cluster, month, start_minute / 60 "
    "ON CONFLICT (site, cluster, month, start_minute) DO UPDATE SET "
    "it_j = hours.it_j + excluded.it_j, facility_j = hours.facility_j + excluded.facility_j, "
    "cost = hours.cost + excluded.cost")
DROP_QUARTERS = "DELETE FROM quarters WHERE start_minute < {P}"
#: chargeback's node-minutes as old as the rolled-up quarter-hours: a late reading into one is
#: shared among what that reading brings alone (teams still add up; docs/chargeback.md)
DROP_HOLDER_MINUTES = "DELETE FROM holder_minutes WHERE minute < {P}"
#: the whole node's and the site's minutes as old: their sums are in node_usage and the totals; a
#: late reading into one is booked on what it brings alone (docs/accounting.md, "The whole node")
DROP_NODE_MINUTES = "DELETE FROM node_minutes WHERE minute < {P}"
DROP_SITE_MINUTES = "DELETE FROM site_minutes WHERE minute < {P}"
#: the outdoor sensors' readings no kept minute can take (older than 15 min before the first
#: kept minute's end), but each sensor's newest of them: the "however old" reading of a site with
#: only a sensor configured (both parameters: the cut-off, in seconds)
DROP_OUTDOOR_READINGS = (
    "DELETE FROM outdoor_readings WHERE ts < {P} AND ts < (SELECT MAX(o.ts) FROM outdoor_readings o "
    "WHERE o.device = outdoor_readings.device AND o.ts < {P})")


def outdoor_cutoff(before_minute: int) -> tuple[float, float]:
    """DROP_OUTDOOR_READINGS' parameters when the minutes before ``before_minute`` are dropped."""
    cut = (before_minute + 1) * MINUTE_S - SENSOR_STALE_S
    return cut, cut


#: the last kept reading of a sensor at or before a time
LAST_OUTDOOR_READING = ("SELECT ts, temp_c FROM outdoor_readings WHERE device = {P} AND ts <= {P} "
                        "ORDER BY ts DESC LIMIT 1")
#: and the shares of a chiller's or metered site's minutes as old (a late reading into one is
#: shared as it is booked: the site's figures stay exact, docs/chargeback.md)
DROP_SHARED_MINUTES = ("DELETE FROM site_holder_minutes WHERE minute < {P}",
                       "DELETE FROM unshared_minutes WHERE minute < {P}")
#: the site-minutes to share out again, with their shared energy (ingest/sharing.py)
UNSHARED = ("SELECT u.site, u.minute, s.cooling_j + s.other_j FROM unshared_minutes u "
            "JOIN site_minutes s ON s.site = u.site AND s.minute = u.minute "
            "ORDER BY u.site, u.minute LIMIT {P}")


#: the plan's statistics (``plan_days``): key and value columns (accounting/profiles.py)
PLAN_KEYS = ("site", "model", "day", "part", "bin")
PLAN_VALUES = ("n", "sum_u", "sum_p", "sum_uu", "sum_up", "sum_pp", "idle_n", "idle_sum_p", "gpu_s", "gpu_j",
               "idle_s", "idle_j", "it_j", "meter_s", "meter_j", "meter_parts_j", "meter_gpu_j",
               "meter_gpu_s", "first_ts", "last_ts")
#: on a row that exists: sums added; first and last reading the earlier and the later (NULL: none)
PLAN_MERGE = (
    f"ON CONFLICT ({', '.join(PLAN_KEYS)}) DO UPDATE SET "
    + ", ".join(f"{c} = plan_days.{c} + excluded.{c}" for c in PLAN_VALUES[:-2])
    + ", first_ts = CASE WHEN excluded.first_ts IS NULL OR plan_days.first_ts <= excluded.first_ts "
    "THEN plan_days.first_ts ELSE excluded.first_ts END"
    ", last_ts = CASE WHEN excluded.last_ts IS NULL OR plan_days.last_ts >= excluded.last_ts "
    "THEN plan_days.last_ts ELSE excluded.last_ts END")
#: one site's plan rows of sums and histogram bins (a few dozen per model and day, whatever the
#: fleet's size): model, day, part, bin, the value columns
PLAN_ROWS = (
    f"SELECT model, day, part, bin, {', '.join(PLAN_VALUES)} FROM plan_days "
    "WHERE site = {P} AND part IN ('all', 'util', 'power') ORDER BY model, day, part, bin")
#: per model and day: distinct GPUs ('gpu' rows) and metered nodes ('node' rows), counted here
#: (a row per GPU per day is millions of rows a year on a big site: never read one by one)
PLAN_COUNTS = ("SELECT model, day, part, COUNT(*) FROM plan_days WHERE site = {P} "
               "AND part IN ('gpu', 'node') GROUP BY model, day, part ORDER BY model, day, part")
#: per model over the days first..last (YYYY-MM-DD): distinct GPUs and the distinct nodes they are in
PLAN_FLEET = ("SELECT p.model, COUNT(DISTINCT p.bin), COUNT(DISTINCT d.node) FROM plan_days p "
              "LEFT JOIN devices d ON d.slot = p.bin WHERE p.site = {P} AND p.part = 'gpu' "
              "AND p.day >= {P} AND p.day <= {P} GROUP BY p.model ORDER BY p.model")
#: one site's IT energy per month: its devices' (usage) and its nodes' overhead (node_usage)
USAGE_MONTHS = ("SELECT month, SUM(it_j), SUM(cooling_j) FROM usage WHERE site = {P} GROUP BY month "
                "ORDER BY month")
OVERHEAD_MONTHS = ("SELECT month, SUM(overhead_j) FROM node_usage WHERE site = {P} GROUP BY month "
                   "ORDER BY month")
#: one site's minutes [since, until): cooling and facility meter energy and the facility meter's
#: seconds; the outdoor temperature of the minutes that had the sensor's (no fallback): sum, count
SITE_MINUTE_SUMS = (
    "SELECT COALESCE(SUM(cooling_meter_j), 0), COALESCE(SUM(facility_meter_j), 0), "
    "COALESCE(SUM(facility_meter_s), 0), "
    "COALESCE(SUM(CASE WHEN outdoor_c IS NOT NULL AND fallback_s = 0 THEN outdoor_c END), 0), "
    "COALESCE(SUM(CASE WHEN outdoor_c IS NOT NULL AND fallback_s = 0 THEN 1 ELSE 0 END), 0) "
    "FROM site_minutes WHERE site = {P} AND minute >= {P} AND minute < {P}")


class PlanQueries:
    """The plan's reads (``base.PlanReads``) over a ``query(statement, params)`` that takes
    ``?`` placeholders: the stores and the read-only reader share them."""

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def plan_rows(self, site: str) -> list[Row]:
        return self.query(dialect(PLAN_ROWS, "?"), (site,))

    def plan_counts(self, site: str) -> list[Row]:
        return self.query(dialect(PLAN_COUNTS, "?"), (site,))

    def plan_fleet(self, site: str, first_day: str, last_day: str) -> list[Row]:
        return self.query(dialect(PLAN_FLEET, "?"), (site, first_day, last_day))

    def usage_months(self, site: str) -> list[Row]:
        return self.query(dialect(USAGE_MONTHS, "?"), (site,))

    def overhead_months(self, site: str) -> list[Row]:
        return self.query(dialect(OVERHEAD_MONTHS, "?"), (site,))

    def site_minute_sums(self, site: str, since_minute: int, until_minute: int) -> Row:
        return self.query(dialect(SITE_MINUTE_SUMS, "?"), (site, since_minute, until_minute))[0]


# ---- chargeback (docs/chargeback.md): holders, their minutes and months, teams' quarter-hours ----

#: one holder's sums: its row, then its months' sums (all months, or one)
HOLDER_SUMS = ("SUM(m.gpu_j), SUM(m.it_j), SUM(m.cooling_j), SUM(m.it_cost), SUM(m.cooling_cost), "
                "SUM(m.carbon_g), SUM(m.gpu_s), SUM(m.idle_gpu_s), SUM(m.waste_j), SUM(m.waste_cost)")
HOLDER_COLUMNS = "h.id, h.node, h.cluster, h.owner, h.start, h.ended, h.team, h.devices"
#: a site's holders with their sums in one month (idle holders included)
HOLDERS_OF_MONTH = (f"SELECT {HOLDER_COLUMNS}, {HOLDER_SUMS} FROM holders h JOIN holder_months m "
                    f"ON m.holder = h.id WHERE h.site = {{P}} AND m.month = {{P}} "
                    f"GROUP BY {HOLDER_COLUMNS} ORDER BY h.id")
#: a site's allocations (idle holders left out) held at some instant of [since, until], all-time sums
JOBS = (f"SELECT {HOLDER_COLUMNS}, {HOLDER_SUMS} FROM holders h JOIN holder_months m ON m.holder = h.id "
        f"WHERE h.site = {{P}} AND h.owner <> '' AND h.start <= {{P}} "
        f"AND (h.ended IS NULL OR h.ended >= {{P}}) GROUP BY {HOLDER_COLUMNS} ORDER BY h.start, h.id")
#: a site's teams in one month: (team, sums...)
TEAM_MONTHS = (f"SELECT h.team, {HOLDER_SUMS} FROM holders h JOIN holder_months m ON m.holder = h.id "
               f"WHERE h.site = {{P}} AND m.month = {{P}} GROUP BY h.team ORDER BY h.team")
#: every site's teams, all time, as shown: (site, team, IT J, energy cost, carbon g, GPU-s, held-idle GPU-s)
TEAM_TOTALS = ("SELECT site, team, shown_it_j, shown_cost, shown_carbon_g, gpu_s, idle_gpu_s "
               "FROM team_totals ORDER BY site, team")


def add_and_raise(table: str, added: Sequence[str], raised: Sequence[str], greatest: str) -> list[str]:
    """SET clauses of an upsert that adds to ``added`` and raises each ``raised`` column's
    ``shown_`` twin to the new booked value where it is higher (``greatest``: GREATEST on
    PostgreSQL, the scalar MAX on SQLite): a counter shown never goes down, though what is
    booked may (a minute re-booked lower)."""
    sets = [f"{c} = {table}.{c} + excluded.{c}" for c in added]
    return sets + [f"shown_{c} = {greatest}({table}.shown_{c}, {table}.{c} + excluded.{c})" for c in raised]


def add_team_totals(greatest: str) -> str:
    """Add to the team totals and raise what is shown to the new booked value where it is
    higher; rows as (site, team, it_j, cost, carbon_g, gpu_s, idle_gpu_s) from {P}-placeholders
    or a SELECT."""
    booked = ("it_j", "cost", "carbon_g")
    return (" ON CONFLICT (site, team) DO UPDATE SET "
            + ", ".join(add_and_raise("team_totals", (*booked, "gpu_s", "idle_gpu_s"), booked, greatest)))


#: the all-time counters of ``site_totals`` and ``node_totals`` (/metrics). Each is kept as
#: booked and as shown (``shown_<name>``: the highest value booked so far, what /metrics
#: exposes), because a minute re-booked by difference can lower what was booked: an estimated
#: node overhead replaced by a lower measured one, a metered minute's other load shrinking as
#: its IT arrives, a chiller minute's fallback time gone when a fresh sensor reading arrives.
SITE_TOTAL_VALUES = ("cooling_j", "it_cost", "cooling_cost", "carbon_g", "other_j", "other_cost",
                     "fallback_s")
NODE_TOTAL_VALUES = ("overhead_est_j", "overhead_meas_j", "disagree_s")


def shown(values: Sequence[str]) -> tuple[str, ...]:
    """The ``shown_`` twins of counter columns."""
    return tuple(f"shown_{c}" for c in values)


TEAM_QUARTERS_OF_MONTH = ("SELECT start_minute, team, facility_j, cost FROM team_quarters "
                          "WHERE site = {P} AND month = {P}")
TEAM_DAY_COST = ("SELECT team, SUM(cost) FROM team_quarters WHERE site = {P} AND start_minute >= {P} "
                 "AND start_minute <= {P} GROUP BY team")
#: per (site, month): what the node and site minutes added beyond the devices' usage, as the
#: SiteSums' it_j, cooling_j, it_cost, cooling_cost, carbon_g, other_j, other_cost
NODE_MONTHS = ("SELECT site, month, SUM(overhead_j), SUM(cooling_j), SUM(overhead_cost), SUM(cooling_cost), "
               "SUM(carbon_g), SUM(other_j), SUM(other_cost) FROM node_usage GROUP BY site, month")
#: the same for chosen (site, month) pairs ({K}: the pairs' join)
NODE_MONTHS_OF = ("SELECT n.site, SUM(n.overhead_j), SUM(n.cooling_j), SUM(n.overhead_cost), "
                  "SUM(n.cooling_cost), SUM(n.carbon_g), SUM(n.other_j), SUM(n.other_cost) FROM node_usage n "
                  "{K} GROUP BY n.site")
#: per site, the minutes [since, until]: sums, and the newest minute's cooling and outdoor °C
MINUTE_SUMS = ("SELECT site, minute, it_j, cooling_j, other_j, outdoor_c FROM site_minutes "
               "WHERE minute >= {P} AND minute <= {P} ORDER BY site, minute")


def minute_sums(rows: list[Row]) -> MinuteSums:
    """MinuteSums from MINUTE_SUMS' rows."""
    sums = MinuteSums()
    for site, minute, it_j, cooling_j, other_j, outdoor_c in rows:
        sums.rows.setdefault(str(site), []).append(
            (int(minute), float(it_j), float(cooling_j), float(other_j),
             None if outdoor_c is None else float(outdoor_c)))
    return sums
