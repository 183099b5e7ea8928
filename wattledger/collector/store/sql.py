"""SQL that both backends speak the same way (SQLite 3.35+ and PostgreSQL 15): reports over
usage rows, the roll-up of old quarter-hours. ``P`` in a statement is the driver's placeholder
(``?`` for sqlite3, ``%s`` for psycopg), filled in by :func:`dialect`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wattledger.collector.store.base import SPEND_KEYS, Level, Row

#: a spend level's keys -> SQL columns (usage ``u``, devices ``d``)
_COLUMNS = {"site": "u.site", "cluster": "u.cluster", "node": "d.node", "device": "d.device",
            "kind": "d.kind", "index": "d.idx", "model": "d.model"}


def dialect(statement: str, placeholder: str) -> str:
    return statement.replace("{P}", placeholder)


def spend_sums(group_by: Level) -> str:
    """A month's usage of one site summed by the level's keys: (keys..., it_j, cooling_j,
    it_cost, cooling_cost, carbon_g, unmeasured_s), sorted by the keys."""
    keys = ", ".join(_COLUMNS[k] for k in SPEND_KEYS[group_by])
    join = " JOIN devices d ON d.slot = u.slot" if group_by in ("node", "device") else ""
    return (f"SELECT {keys}, SUM(u.it_j), SUM(u.cooling_j), SUM(u.it_cost), SUM(u.cooling_cost), "
            f"SUM(u.carbon_g), SUM(u.unmeasured_s) FROM usage u{join} "
            f"WHERE u.month = {{P}} AND u.site = {{P}} GROUP BY {keys} ORDER BY {keys}")


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
#: one site's IT energy per month (usage), for the plan's site months
USAGE_MONTHS = ("SELECT month, SUM(it_j), SUM(cooling_j) FROM usage WHERE site = {P} GROUP BY month "
                "ORDER BY month")


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


def add_team_totals(greatest: str) -> str:
    """Add to the team totals and raise what is shown to the new booked value where it is
    higher (``greatest``: GREATEST on PostgreSQL, the scalar MAX on SQLite); rows as
    (site, team, it_j, cost, carbon_g, gpu_s, idle_gpu_s) from {P}-placeholders or a SELECT."""
    booked = ("it_j", "cost", "carbon_g")
    sets = [f"{c} = team_totals.{c} + excluded.{c}" for c in (*booked, "gpu_s", "idle_gpu_s")]
    sets += [f"shown_{c} = {greatest}(team_totals.shown_{c}, team_totals.{c} + excluded.{c})" for c in booked]
    return (" ON CONFLICT (site, team) DO UPDATE SET " + ", ".join(sets))


TEAM_QUARTERS_OF_MONTH = ("SELECT start_minute, team, facility_j, cost FROM team_quarters "
                          "WHERE site = {P} AND month = {P}")
TEAM_DAY_COST = ("SELECT team, SUM(cost) FROM team_quarters WHERE site = {P} AND start_minute >= {P} "
                 "AND start_minute <= {P} GROUP BY team")
