"""The embedded store: SQLite (stdlib) in WAL mode, for one collector process.

One process holds the ledger (``wattledger collector`` takes ``<db>.lock``), so the truth can
live in memory as well as on disk: this store keeps the ledger's state — dedupe marks, each
device's last reading, node states, the sums behind /metrics — as a write-through cache of its
tables, loaded at open. An ingest then reads nothing from the disk: it decides against memory,
writes every row it changed in ONE transaction with ``synchronous=FULL`` (when the agent hears
200, the batch, its seq and its money are on disk together) and, if that transaction fails,
reloads the cache from what is stored. /metrics reads the cache directly.

Schema and migrations: ``store/migrations.py``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from wattledger.collector.accounting.pricing import SiteSums
from wattledger.collector.accounting.readings import LATEST
from wattledger.collector.accounting.siteclock import parse_month
from wattledger.collector.store import sql
from wattledger.collector.store.base import (
    KEEP_QUARTERS_SECONDS,
    NODE_MINUTE_DERIVED,
    NODE_MINUTE_INPUTS,
    NODE_USAGE_VALUES,
    SITE_MINUTE_DERIVED,
    SITE_MINUTE_INPUTS,
    Changes,
    FleetData,
    HeldDevices,
    HolderInfo,
    Ints,
    Level,
    MinuteRow,
    MinuteSums,
    NodeState,
    NodeTotals,
    Row,
    ShareRow,
    StoreError,
    StreamState,
    TeamData,
    Upkeep,
    team_total_rows,
)
from wattledger.collector.store.devicetable import DEVICE_COLUMNS, DeviceTable
from wattledger.collector.store.migrations import SQLITE_MIGRATIONS
from wattledger.wire import DeviceInfo

SCHEMA_VERSION = len(SQLITE_MIGRATIONS)
#: site minutes kept in memory: the last two hours (the PUE gauge reads the last one)
RECENT_MINUTES = 120
MIGRATIONS = SQLITE_MIGRATIONS


def sqlite_path(db_url: str) -> str:
    """``sqlite:///abs/path.db`` -> ``/abs/path.db``; ``sqlite:///:memory:`` -> ``:memory:``."""
    prefix = "sqlite:///"
    if not db_url.startswith(prefix):
        raise StoreError(f"unsupported db URL {db_url!r} (expected sqlite:///PATH)")
    path = db_url[len(prefix):]
    if not path:
        raise StoreError(f"db URL {db_url!r} names no file")
    if path == ":memory:":
        return path
    return path if path.startswith("/") else "/" + path


def _upsert(table: str, columns: Sequence[str], key: Sequence[str], add: bool) -> str:
    """INSERT .. ON CONFLICT DO UPDATE: add to the stored values (add) or replace them."""
    values = ", ".join("?" for _ in columns)
    rest = [c for c in columns if c not in key]
    sets = ", ".join(f"{c} = {table}.{c} + excluded.{c}" if add else f"{c} = excluded.{c}"
                     for c in rest)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")


def _site_sums(values: Sequence[float]) -> SiteSums:
    """SiteSums of sql.SITE_TOTAL_VALUES' values (IT energy and the peak are not all-time counters)."""
    return SiteSums(**dict(zip(sql.SITE_TOTAL_VALUES, map(float, values), strict=True)))


def _raised(shown: object, booked: object, names: Sequence[str]) -> list[float]:
    """Raise each of ``shown``'s counters to ``booked``'s where that is higher (a counter shown
    never goes down); the booked values, then the shown ones (a site_totals/node_totals row's)."""
    for name in names:
        setattr(shown, name, max(float(getattr(shown, name)), float(getattr(booked, name))))
    return [float(getattr(booked, n)) for n in names] + [float(getattr(shown, n)) for n in names]


NODE_COLUMNS = ("node", "site", "cluster", "labels", "last_seen", "readings", "conflicts", "conflict_at")
_UPSERT_STREAM = _upsert("streams", ("stream", "node", "low_seq"), ("stream",), add=False)
_UPSERT_NODE = _upsert("nodes", NODE_COLUMNS, ("node",), add=False)
_UPSERT_DEVICE = _upsert("devices", DEVICE_COLUMNS, ("slot",), add=False)
SITE_TOTAL_COLUMNS = ("site", *sql.SITE_TOTAL_VALUES, *sql.shown(sql.SITE_TOTAL_VALUES))
_UPSERT_SITE_TOTALS = _upsert("site_totals", SITE_TOTAL_COLUMNS, ("site",), add=False)
NODE_MINUTE_COLUMNS = ("node", "minute", "site", "cluster", *NODE_MINUTE_INPUTS, *NODE_MINUTE_DERIVED)
SITE_MINUTE_COLUMNS = ("site", "minute", *SITE_MINUTE_INPUTS, *SITE_MINUTE_DERIVED)
_PUT_NODE_MINUTE = _upsert("node_minutes", NODE_MINUTE_COLUMNS, ("node", "minute"), add=False)
_PUT_SITE_MINUTE = _upsert("site_minutes", SITE_MINUTE_COLUMNS, ("site", "minute"), add=False)
_LAST_OUTDOOR_READING = sql.dialect(sql.LAST_OUTDOOR_READING, "?")
_ADD_OUTDOOR_READING = ("INSERT INTO outdoor_readings (device, ts, temp_c) VALUES (?, ?, ?) "
                        "ON CONFLICT DO NOTHING")
_BOOKED_SITE_MINUTES = "SELECT site, minute FROM site_minutes WHERE site = ? AND minute >= ? AND minute <= ?"
_ADD_NODE_USAGE = _upsert("node_usage", ("month", "site", "cluster", "node", *NODE_USAGE_VALUES),
                          ("month", "site", "cluster", "node"), add=True)
NODE_TOTAL_COLUMNS = ("node", "site", "cluster", *sql.NODE_TOTAL_VALUES, *sql.shown(sql.NODE_TOTAL_VALUES))
_PUT_NODE_TOTALS = _upsert("node_totals", NODE_TOTAL_COLUMNS, ("node",), add=False)
_ADD_USAGE = _upsert("usage", ("month", "slot", "site", "cluster", "it_j", "cooling_j", "it_cost",
                               "cooling_cost", "carbon_g", "unmeasured_s"),
                     ("month", "slot", "site", "cluster"), add=True)
_UPSERT_HOLDER = (
    "INSERT INTO holders (id, site, cluster, node, owner, start, team, ended, devices) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET site = excluded.site, "
    "cluster = excluded.cluster, ended = COALESCE(excluded.ended, holders.ended), devices = excluded.devices")
_ADD_HOLDER_MINUTE = _upsert("holder_minutes", ("node", "minute", "holder", "energy_j"),
                             ("node", "minute", "holder"), add=True)
_ADD_SITE_HOLDER_MINUTE = _upsert("site_holder_minutes", ("site", "minute", "holder", "it_j", "cooling_j"),
                                  ("site", "minute", "holder"), add=True)
_MARK_UNSHARED = "INSERT INTO unshared_minutes (site, minute) VALUES (?, ?) ON CONFLICT DO NOTHING"
_DROP_UNSHARED = "DELETE FROM unshared_minutes WHERE site = ? AND minute = ?"
_HOLDER_SHARES = ("SELECT m.site, m.minute, m.holder, m.it_j, m.cooling_j, COALESCE(h.team, ''), "
                  "COALESCE(h.node, '') FROM site_holder_minutes m LEFT JOIN holders h ON h.id = m.holder "
                  "WHERE m.site = ? AND m.minute = ? ORDER BY m.holder")
_ADD_HOLDER_MONTH = _upsert("holder_months", ("holder", "month", "gpu_j", "it_j", "cooling_j", "it_cost",
                                              "cooling_cost", "carbon_g", "gpu_s", "idle_gpu_s", "waste_j",
                                              "waste_cost"), ("holder", "month"), add=True)
#: the team totals as held in memory (SQLite's one writer knows them exactly)
_UPSERT_TEAM_TOTALS = _upsert(
    "team_totals", ("site", "team", "it_j", "cost", "carbon_g", "gpu_s", "idle_gpu_s", "shown_it_j",
                    "shown_cost", "shown_carbon_g"), ("site", "team"), add=False)
_MINUTE_ROWS = ("SELECT m.holder, m.energy_j, COALESCE(h.team, '') FROM holder_minutes m "
                "LEFT JOIN holders h ON h.id = m.holder WHERE m.node = ? AND m.minute = ?")
_ADD_TEAM_QUARTER = (
    "INSERT INTO team_quarters (site, start_minute, month, team, facility_j, cost) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (site, start_minute, team) DO UPDATE SET "
    "facility_j = team_quarters.facility_j + excluded.facility_j, cost = team_quarters.cost + excluded.cost")
_ADD_QUARTER = (
    "INSERT INTO quarters (site, cluster, start_minute, month, it_j, facility_j, cost) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, cluster, start_minute) DO UPDATE SET "
    "it_j = quarters.it_j + excluded.it_j, facility_j = quarters.facility_j + excluded.facility_j, "
    "cost = quarters.cost + excluded.cost")
_ADD_PLAN = (f"INSERT INTO plan_days ({', '.join(sql.PLAN_KEYS + sql.PLAN_VALUES)}) "
             f"VALUES ({', '.join('?' for _ in sql.PLAN_KEYS + sql.PLAN_VALUES)}) {sql.PLAN_MERGE}")


class SqliteStore(sql.PlanQueries):
    """One SQLite connection and the ledger's state in memory, used under ``lock``."""

    backend = "sqlite"
    shared = False

    def __init__(self, db_url: str, clock: Callable[[], float] = time.time) -> None:
        path = sqlite_path(db_url)
        if path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise StoreError(f"cannot open the ledger {path}: folder {parent} does not exist")
        self._clock = clock
        self.lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the ledger {path}: {exc}") from None
        self._load()

    # ---- schema ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(f"the ledger has schema version {version}; this collector knows "
                             f"up to {SCHEMA_VERSION} (upgrade wattledger)")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in SQLITE_MIGRATIONS[target - 1]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of one read-only statement (diagnostics and tests; the ledger uses the methods)."""
        with self.lock:
            return self._db.execute(statement, params).fetchall()

    # ---- the cache --------------------------------------------------------------------------

    def _load(self) -> None:
        """(Re)build every in-memory structure from the tables."""
        db = self._db
        self.devices = DeviceTable()
        self.devices.load(db.execute(f"SELECT {', '.join(DEVICE_COLUMNS)} FROM devices").fetchall())
        self.streams = {s: StreamState(node, int(low))
                        for s, node, low in db.execute("SELECT stream, node, low_seq FROM streams")}
        for stream, seq in db.execute("SELECT stream, seq FROM stream_seqs"):
            self.streams[stream].above.add(int(seq))
        self.node_states = {
            node: NodeState(site, cluster, json.loads(labels), float(seen), int(readings), int(conflicts),
                            conflict_at)
            for node, site, cluster, labels, seen, readings, conflicts, conflict_at in db.execute(
                f"SELECT {', '.join(NODE_COLUMNS)} FROM nodes")}
        #: per site: all-time sums (the counters of /metrics) as booked and as shown (never
        #: lower: sql.SITE_TOTAL_VALUES), and per month
        self.site_totals: dict[str, SiteSums] = {}
        self.shown_site_totals: dict[str, SiteSums] = {}
        n = len(sql.SITE_TOTAL_VALUES)
        for site, *values in db.execute(f"SELECT {', '.join(SITE_TOTAL_COLUMNS)} FROM site_totals"):
            self.site_totals[site] = _site_sums(values[:n])
            self.shown_site_totals[site] = _site_sums(values[n:])
        self.node_totals: dict[str, NodeTotals] = {}
        self.shown_node_totals: dict[str, NodeTotals] = {}
        for node, site, cluster, est, meas, disagree, *shown in db.execute(
                f"SELECT {', '.join(NODE_TOTAL_COLUMNS)} FROM node_totals"):
            self.node_totals[node] = NodeTotals(site, cluster, est, meas, disagree)
            self.shown_node_totals[node] = NodeTotals(site, cluster, *shown)
        #: the last hours' site minutes (what /metrics shows), kept without reading the disk
        self.recent_minutes: dict[tuple[str, int], tuple[float, float, float, float | None]] = {}
        since = int(self._clock() // 60) - RECENT_MINUTES
        for site, minute, it_j, cooling_j, other_j, outdoor_c in db.execute(
                "SELECT site, minute, it_j, cooling_j, other_j, outdoor_c FROM site_minutes "
                "WHERE minute >= ?",
                (since,)):
            self.recent_minutes[(site, int(minute))] = (it_j, cooling_j, other_j, outdoor_c)
        self.site_months: dict[tuple[str, int], SiteSums] = {}
        for site, month, it_j, cool_j, it_cost, cool_cost, carbon in db.execute(
                "SELECT site, month, SUM(it_j), SUM(cooling_j), SUM(it_cost), SUM(cooling_cost), "
                "SUM(carbon_g) FROM usage GROUP BY site, month"):
            self.site_months[(site, parse_month(month))] = SiteSums(it_j, cool_j, it_cost, cool_cost, carbon)
        for site, month, it_j, cool_j, it_cost, cool_cost, carbon, other_j, other_cost in db.execute(
                sql.NODE_MONTHS):
            self.site_months.setdefault((site, parse_month(month)), SiteSums()).add(
                it_j, cool_j, it_cost, cool_cost, carbon, other_j, other_cost)
        #: per (site, quarter start minute): facility joules and energy cost, all clusters
        self.quarters: dict[tuple[str, int], list[float]] = {}
        horizon = self._clock() - KEEP_QUARTERS_SECONDS
        for site, month, start, facility_j, cost in db.execute(
                "SELECT site, month, start_minute, SUM(facility_j), SUM(cost) FROM quarters "
                "GROUP BY site, month, start_minute"):
            sums = self.site_months.setdefault((site, parse_month(month)), SiteSums())
            sums.peak_quarter_facility_j = max(sums.peak_quarter_facility_j, facility_j)
            if start * 60.0 >= horizon:
                self.quarters[(site, int(start))] = [facility_j, cost]
        #: chargeback's figures that /metrics shows: per (site, team) its totals as booked and as
        #: shown (team_totals), per (site, month, team) its sums, per (site, quarter start) each
        #: team's [facility J, cost] of the recent quarter-hours, with the quarter's month
        self.team_totals: dict[tuple[str, str], list[float]] = {
            (site, team): [float(v) for v in values] for site, team, *values in db.execute(
                "SELECT site, team, it_j, cost, carbon_g, gpu_s, idle_gpu_s, shown_it_j, shown_cost, "
                "shown_carbon_g FROM team_totals")}
        self.team_months: dict[tuple[str, str, str], list[float]] = {
            (site, month, team): [float(v) for v in values] for site, month, team, *values in db.execute(
                f"SELECT h.site, m.month, h.team, {sql.HOLDER_SUMS} FROM holders h JOIN holder_months m "
                "ON m.holder = h.id GROUP BY h.site, m.month, h.team")}
        self.team_quarters: dict[tuple[str, int], tuple[str, dict[str, list[float]]]] = {}
        for site, start, month, team, facility_j, cost in db.execute(
                "SELECT site, start_minute, month, team, facility_j, cost FROM team_quarters "
                "WHERE start_minute >= ?", (horizon / 60.0,)):
            held = self.team_quarters.setdefault((site, int(start)), (month, {}))
            held[1][team] = [float(facility_j), float(cost)]
        #: the next holder id (ids are made here: one writer)
        self.next_holder = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM holders").fetchone()[0])
        #: every holder's row by its key (node, owner, start): a batch's holders are found, and
        #: written only when they change (an idle holder: once), without a query
        self.holder_rows: dict[tuple[str, str, float], Row] = {
            (row[3], row[4], float(row[5])): tuple(row) for row in db.execute(
                "SELECT id, site, cluster, node, owner, start, team, ended, devices FROM holders")}
        # the peaks of quarter-hours rolled up into hours (kept before they went)
        for site, month, facility_j in db.execute("SELECT site, month, facility_j FROM month_peaks"):
            sums = self.site_months.setdefault((site, parse_month(month)), SiteSums())
            sums.peak_quarter_facility_j = max(sums.peak_quarter_facility_j, facility_j)

    # ---- ingest -----------------------------------------------------------------------------

    @contextmanager
    def ingest(self) -> Iterator[_Unit]:
        with self.lock:
            unit = _Unit(self)
            try:
                yield unit
                unit.finish()
            except BaseException:
                if unit.dirty:
                    self._load()  # the transaction rolled back: memory back to what is stored
                else:  # refused before anything was written: only new streams to forget
                    for stream in unit.new_streams:
                        self.streams.pop(stream, None)
                raise

    def _stored_quarter(self, site: str, start: int) -> list[float]:
        """[facility J, cost] of a site's quarter-hour as committed (all clusters)."""
        ((facility_j, cost),) = self._db.execute(
            "SELECT COALESCE(SUM(facility_j), 0), COALESCE(SUM(cost), 0) FROM quarters "
            "WHERE site = ? AND start_minute = ?", (site, start)).fetchall()
        return [float(facility_j), float(cost)]

    def _commit(self, *, streams: Iterable[Row], seqs_added: Iterable[Row], seqs_dropped: Iterable[Row],
                nodes: Iterable[Row], devices: Iterable[Row], usage: Iterable[Row], quarters: Iterable[Row],
                site_totals: Iterable[Row], plan_days: Iterable[Row] = (), holders: Iterable[Row] = (),
                minutes: Iterable[Row] = (), holder_months: Iterable[Row] = (),
                team_quarters: Iterable[Row] = (), team_totals: Iterable[Row] = (),
                node_minutes: Iterable[Row] = (), site_minutes: Iterable[Row] = (),
                node_usage: Iterable[Row] = (), node_totals: Iterable[Row] = (),
                outdoor_readings: Iterable[Row] = (),
                site_holder_minutes: Iterable[Row] = (), unshared: Iterable[Row] = (),
                shared: Iterable[Row] = ()) -> None:
        """Write everything one ingest changed, in one transaction (all or nothing)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_UPSERT_STREAM, streams)
            db.executemany("INSERT INTO stream_seqs (stream, seq) VALUES (?, ?)", seqs_added)
            db.executemany("DELETE FROM stream_seqs WHERE stream = ? AND seq = ?", seqs_dropped)
            db.executemany(_UPSERT_NODE, nodes)
            db.executemany(_UPSERT_DEVICE, devices)
            db.executemany(_ADD_USAGE, usage)
            db.executemany(_PUT_NODE_MINUTE, node_minutes)
            db.executemany(_PUT_SITE_MINUTE, site_minutes)
            db.executemany(_ADD_OUTDOOR_READING, outdoor_readings)
            db.executemany(_ADD_NODE_USAGE, node_usage)
            db.executemany(_PUT_NODE_TOTALS, node_totals)
            db.executemany(_ADD_QUARTER, quarters)
            db.executemany(_UPSERT_SITE_TOTALS, site_totals)
            db.executemany(_ADD_PLAN, plan_days)
            db.executemany(_UPSERT_HOLDER, holders)
            db.executemany(_ADD_HOLDER_MINUTE, minutes)
            db.executemany(_ADD_HOLDER_MONTH, holder_months)
            db.executemany(_ADD_TEAM_QUARTER, team_quarters)
            db.executemany(_UPSERT_TEAM_TOTALS, team_totals)
            db.executemany(_ADD_SITE_HOLDER_MINUTE, site_holder_minutes)
            db.executemany(_DROP_UNSHARED, shared)
            db.executemany(_MARK_UNSHARED, unshared)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                db.execute("ROLLBACK")
            raise

    # ---- reading ----------------------------------------------------------------------------

    def fleet(self, months: Mapping[str, int], since_minute: float, until_minute: float) -> FleetData:
        with self.lock:
            return FleetData(
                site_totals={site: replace(sums) for site, sums in self.shown_site_totals.items()},
                month_sums={site: replace(self.site_months.get((site, month), SiteSums()))
                            for site, month in months.items()},
                day_cost={site: self.day_cost(site, since_minute, until_minute) for site in months},
                nodes={name: replace(state, labels=dict(state.labels))
                       for name, state in self.node_states.items()},
                devices=self.devices.snapshot(),
                node_totals={name: replace(t) for name, t in self.shown_node_totals.items()},
                minutes=self.minutes(int(until_minute) - 60, int(until_minute)))

    def month_sums(self, site: str, month: int) -> SiteSums:
        with self.lock:
            return replace(self.site_months.get((site, month), SiteSums()))

    def minutes(self, since_minute: int, until_minute: int) -> MinuteSums:
        with self.lock:
            if since_minute >= int(self._clock() // 60) - RECENT_MINUTES:
                rows = [(site, minute, *values)
                        for (site, minute), values in sorted(self.recent_minutes.items())
                        if since_minute <= minute <= until_minute]
            else:
                rows = self._db.execute(sql.dialect(sql.MINUTE_SUMS, "?"),
                                        (since_minute, until_minute)).fetchall()
        return sql.minute_sums(rows)

    def day_cost(self, site: str, since_minute: float, until_minute: float) -> float:
        """Energy cost of the site's quarter-hours that start in [since, until] (kept in memory)."""
        with self.lock:
            return sum(cost for (s, start), (_, cost) in self.quarters.items()
                       if s == site and since_minute <= start <= until_minute)

    def spend_sums(self, site: str, month: str, group_by: Level) -> list[Row]:
        return sql.merge_spend(group_by,
                               self.query(sql.dialect(sql.spend_sums(group_by), "?"), (month, site)),
                               self.query(sql.dialect(sql.node_spend_sums(group_by), "?"), (month, site)))

    def cluster_day_cost(self, site: str, since_minute: float, until_minute: float) -> dict[str, float]:
        return {str(cluster): float(cost) for cluster, cost in self.query(
            sql.dialect(sql.CLUSTER_DAY_COST, "?"), (site, since_minute, until_minute))}

    def team_data(self, site: str, month: str, since_minute: float, until_minute: float) -> TeamData:
        """From memory (a scrape reads no disk); the month's quarter-hours older than memory keeps
        (a month more than KEEP_QUARTERS_SECONDS ago) from the store."""
        with self.lock:
            months = [(team, *values) for (s, m, team), values in sorted(self.team_months.items())
                      if s == site and m == month]
            quarters: list[Row] = []
            day_cost: dict[str, float] = {}
            for (s, start), (m, teams) in self.team_quarters.items():
                if s != site:
                    continue
                for team, (facility_j, cost) in teams.items():
                    if m == month:
                        quarters.append((start, team, facility_j, cost))
                    if since_minute <= start <= until_minute:
                        day_cost[team] = day_cost.get(team, 0.0) + cost
            if not quarters and months:  # a month older than memory keeps: ask the store
                quarters = self.query(sql.dialect(sql.TEAM_QUARTERS_OF_MONTH, "?"), (site, month))
            totals = [(team, v[5], v[6], v[7], v[3], v[4])
                      for (s, team), v in sorted(self.team_totals.items()) if s == site]
            return TeamData(months=months, quarters=quarters, day_cost=day_cost, totals=totals)

    def holders_of_month(self, site: str, month: str) -> list[Row]:
        return self.query(sql.dialect(sql.HOLDERS_OF_MONTH, "?"), (site, month))

    def jobs(self, site: str, since: float, until: float) -> list[Row]:
        return self.query(sql.dialect(sql.JOBS, "?"), (site, until, since))

    def stream(self, stream: str) -> StreamState | None:
        with self.lock:
            state = self.streams.get(stream)
            return None if state is None else StreamState(state.node, state.low, set(state.above))

    def node_names(self) -> list[str]:
        with self.lock:
            return sorted(self.node_states)

    # ---- upkeep -----------------------------------------------------------------------------

    def upkeep(self, rollup_before_minute: int | None, forget_before_minute: float) -> Upkeep:
        """Forget quarter-hours older than memory keeps; roll up the old ones (one transaction)."""
        with self.lock:
            for key in [k for k in self.quarters if k[1] < forget_before_minute]:
                del self.quarters[key]
            recent = int(self._clock() // 60) - RECENT_MINUTES
            for minute_key in [k for k in self.recent_minutes if k[1] < recent]:
                del self.recent_minutes[minute_key]
            rolled = 0 if rollup_before_minute is None else self._roll_up(rollup_before_minute)
            return Upkeep(rolled, {name: s.last_seen for name, s in self.node_states.items()})

    def _roll_up(self, before_minute: int) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(sql.dialect(sql.KEEP_PEAKS, "?"), (before_minute,))
            db.execute(sql.dialect(sql.ADD_HOURS, "?"), (before_minute,))
            rolled = db.execute(sql.dialect(sql.DROP_QUARTERS, "?"), (before_minute,)).rowcount
            db.execute(sql.dialect(sql.DROP_HOLDER_MINUTES, "?"), (before_minute,))
            db.execute(sql.dialect(sql.DROP_NODE_MINUTES, "?"), (before_minute,))
            db.execute(sql.dialect(sql.DROP_SITE_MINUTES, "?"), (before_minute,))
            db.execute(sql.dialect(sql.DROP_OUTDOOR_READINGS, "?"), sql.outdoor_cutoff(before_minute))
            for statement in sql.DROP_SHARED_MINUTES:
                db.execute(sql.dialect(statement, "?"), (before_minute,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return int(rolled)

    def ping(self) -> None:
        with self.lock:
            self._db.execute("SELECT 1").fetchall()

    def size_bytes(self) -> int:
        """Bytes the database takes (pages in use, WAL folded in first)."""
        with self.lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
            free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            return (pages - free) * int(self._db.execute("PRAGMA page_size").fetchone()[0])

    def close(self) -> None:
        with self.lock:
            self._db.close()


class _Unit:
    """One ingest against the cache; its rows are written by ``write`` in one transaction."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.new_streams: list[str] = []
        self._new_slots: list[int] = []
        self.dirty = False  # memory changed beyond new streams (devices added, rows written)
        self._written = False
        self._holders: dict[int, Row] = {}  # the holder rows to write (new or changed)
        self._teams: dict[int, str] = {}  # the team of each holder this group names
        self._minutes: list[MinuteRow] = []
        #: the minutes' rows as ``add_*_minutes`` left them (inputs added), keyed by (name, minute)
        self._node_minutes: dict[tuple[str, int], list[Any]] = {}
        self._site_minutes: dict[tuple[str, int], list[Any]] = {}

    def holders(self, infos: Sequence[HolderInfo]) -> list[tuple[int, str]]:
        store = self._store
        out: list[tuple[int, str]] = []
        for h in infos:
            key = (h.node, h.owner, h.start)
            held = store.holder_rows.get(key)
            if held is None:
                ident, team, ended = store.next_holder, h.team, h.ended
                store.next_holder += 1
            else:
                ident, team = int(held[0]), str(held[6])
                ended = h.ended if h.ended is not None else held[7]  # as COALESCE in _UPSERT_HOLDER
            row = (ident, h.site, h.cluster, h.node, h.owner, h.start, team, ended, h.devices)
            if row != held:
                store.holder_rows[key] = self._holders[ident] = row
                self.dirty = True
            self._teams[ident] = team
            out.append((ident, team))
        return out

    def add_minutes(self, rows: Sequence[MinuteRow]) -> list[tuple[str, int, int, float, str]]:
        db = self._store._db
        after: dict[tuple[str, int, int], float] = {}
        teams = dict(self._teams)
        for node, minute in sorted({(node, minute) for node, minute, _, _ in rows}):
            for holder, energy, team in db.execute(_MINUTE_ROWS, (node, minute)):
                after[(node, minute, int(holder))] = float(energy)
                teams.setdefault(int(holder), str(team))
        for node, minute, holder, energy in rows:
            key = (node, minute, holder)
            after[key] = after.get(key, 0.0) + energy
        self._minutes.extend(rows)
        return [(node, minute, holder, energy, teams.get(holder, "")) for (node, minute, holder), energy
                in after.items()]

    def hold(self, streams: Mapping[str, tuple[str, int]], devices: Sequence[tuple[str, str]]
             ) -> tuple[dict[str, StreamState], HeldDevices]:
        store = self._store
        states: dict[str, StreamState] = {}
        for stream, (node, first_seq) in streams.items():
            state = store.streams.get(stream)
            if state is None:  # a new stream starts where its first batch is (sent in seq order)
                state = store.streams[stream] = StreamState(node, first_seq - 1)
                self.new_streams.append(stream)
            states[stream] = state
        table = store.devices
        slots = np.fromiter((table.find(node, device) for node, device in devices), dtype=np.int64,
                            count=len(devices))
        known = slots >= 0

        def column(name: str) -> Any:
            values = np.full(len(devices), np.nan)
            values[known] = table.floats[name][slots[known]]
            return values

        owner = [table.stream[slot] if slot >= 0 else None for slot in slots.tolist()]
        return states, HeldDevices(slots, column("last_ts"), column("last_power_w"),
                                   column("last_energy_j"), owner, column("stream_seen"),
                                   column("power_limit_w"))

    def create_devices(self, keys: Sequence[tuple[str, DeviceInfo]]) -> Ints:
        table = self._store.devices
        slots = [table.add_info(node, info) for node, info in keys]
        self._new_slots.extend(slots)
        self.dirty = True
        return np.array(slots, dtype=np.int64)

    def _stored_minutes(self, table: str, key: str, columns: Sequence[str],
                        keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], list[Any]]:
        """The stored rows of these (name, minute) keys: one range query per name."""
        spans: dict[str, list[int]] = {}
        for name, minute in keys:
            span = spans.setdefault(name, [minute, minute])
            span[0], span[1] = min(span[0], minute), max(span[1], minute)
        found: dict[tuple[str, int], list[Any]] = {}
        db = self._store._db
        for name, (low, high) in spans.items():
            for row in db.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = ? "
                                  "AND minute >= ? AND minute <= ?", (name, low, high)):
                found[(row[0], int(row[1]))] = list(row)
        return found

    def _add_minutes(self, table: str, columns: Sequence[str], labels: int, blank: Sequence[Any],
                     rows: Sequence[Row], held_rows: dict[tuple[str, int], list[Any]]) -> list[Row]:
        """Add the inputs of (name, minute, *labels, *inputs) rows to the held (else stored, else
        new: ``blank`` derived values) rows; per row its new inputs and derived values."""
        stored = self._stored_minutes(table, columns[0], columns, ((r[0], int(r[1])) for r in rows))
        first = 2 + labels
        out: list[Row] = []
        for name, minute, *rest in rows:
            key = (name, int(minute))
            inputs = rest[labels:]
            held = held_rows.get(key) or stored.get(key) or [name, int(minute), *rest[:labels],
                                                             *([0.0] * len(inputs)), *blank]
            held[2:first] = rest[:labels]
            for i, value in enumerate(inputs):
                held[first + i] += value
            held_rows[key] = held
            out.append(tuple(held[first:]))
        return out

    def add_node_minutes(self, rows: Sequence[Row]) -> list[Row]:
        return self._add_minutes("node_minutes", NODE_MINUTE_COLUMNS, 2, (0.0, 0, 0.0), rows,
                                 self._node_minutes)

    def add_site_minutes(self, rows: Sequence[Row]) -> list[Row]:
        return self._add_minutes("site_minutes", SITE_MINUTE_COLUMNS, 0, (0.0, 0.0, None, 0.0), rows,
                                 self._site_minutes)

    def hold_outdoor(self, writes: Sequence[str], reads: Sequence[str]) -> None:
        """Nothing to do: the one writer runs one group at a time (``SqliteStore.lock``)."""

    def outdoor_history(self, asks: Sequence[tuple[str, float]]) -> dict[str, list[tuple[float, float]]]:
        db = self._store._db
        found: dict[str, set[tuple[float, float]]] = {}
        for device, at in sorted(set(asks)):
            held = found.setdefault(device, set())
            held.update((float(t), float(c)) for t, c in db.execute(_LAST_OUTDOOR_READING, (device, at)))
        return {device: sorted(pairs) for device, pairs in found.items()}

    def booked_site_minutes(self, spans: Sequence[tuple[str, int, int]]) -> list[tuple[str, int]]:
        db = self._store._db
        found = {key for key in self._site_minutes for site, low, high in spans
                 if key[0] == site and low <= key[1] <= high}
        for site, low, high in spans:
            found.update((str(s), int(m)) for s, m in db.execute(_BOOKED_SITE_MINUTES, (site, low, high)))
        return sorted(found)

    def sensors(self, devices: Sequence[str]) -> dict[str, tuple[float, float]]:
        table = self._store.devices
        wanted = set(devices)
        found: dict[str, tuple[float, float]] = {}
        for slot in range(table.size):
            if table.kind[slot] == "sensor" and table.device[slot] in wanted:
                ts, temp = float(table.floats["last_ts"][slot]), float(table.floats["temp_c"][slot])
                if ts == ts and temp == temp and (table.device[slot] not in found
                                                  or ts > found[table.device[slot]][0]):
                    found[table.device[slot]] = (ts, temp)
        return found

    def unshared(self, limit: int) -> list[tuple[str, int, float]]:
        return [(str(site), int(minute), float(energy)) for site, minute, energy in
                self._store._db.execute(sql.dialect(sql.UNSHARED, "?"), (limit,))]

    def holder_shares(self, keys: Sequence[tuple[str, int]]) -> list[ShareRow]:
        db = self._store._db
        return [(str(site), int(minute), int(holder), float(it_j), float(cooling_j), str(team), str(node))
                for key in keys
                for site, minute, holder, it_j, cooling_j, team, node in db.execute(_HOLDER_SHARES, key)]

    def write(self, changes: Changes) -> None:
        """Apply the changes to memory, then write every row they touched (one transaction)."""
        store = self._store
        self.dirty = self._written = True
        touched_nodes: set[str] = set()
        for change in changes.nodes:
            node = store.node_states.get(change.node)
            if node is None:
                node = store.node_states[change.node] = NodeState(change.site, change.cluster,
                                                                  dict(change.labels), change.seen, 0)
            elif not change.keep_labels:
                node.site, node.cluster, node.labels = change.site, change.cluster, dict(change.labels)
            node.last_seen = change.seen
            node.readings += change.readings
            touched_nodes.add(change.node)
        for conflict in changes.conflicts:
            state = store.node_states.get(conflict.node)
            if state is not None:
                state.conflicts += conflict.refused
                state.conflict_at = conflict.at
                touched_nodes.add(conflict.node)
        slots = set(self._new_slots)
        if changes.devices is not None:
            self._apply_devices(changes)
            slots.update(changes.devices.slots.tolist())
        for site, month, *values in changes.site_months:
            store.site_totals.setdefault(site, SiteSums()).add(*values)
            store.site_months.setdefault((site, month), SiteSums()).add(*values)
        for site, _, start, month, _, facility_j, cost in changes.quarters:
            held = store.quarters.get((site, start))
            if held is None:  # new, or older than memory keeps (a late backfill): ask the store
                held = store.quarters[(site, start)] = store._stored_quarter(site, start)
            held[0] += facility_j
            held[1] += cost
            sums = store.site_months.setdefault((site, parse_month(month)), SiteSums())
            sums.peak_quarter_facility_j = max(sums.peak_quarter_facility_j, held[0])
        team_totals = self._apply_teams(changes)
        stream_rows = {stream: (stream, node, low) for stream, node, low in changes.streams}
        for stream in self.new_streams:
            if stream not in stream_rows:
                mark = store.streams[stream]
                stream_rows[stream] = (stream, mark.node, mark.low)
        self.new_streams = []
        node_rows = [(n, s.site, s.cluster, json.dumps(s.labels, sort_keys=True), s.last_seen, s.readings,
                      s.conflicts, s.conflict_at)
                     for n in sorted(touched_nodes) for s in [store.node_states[n]]]
        sites = sorted({row[0] for row in changes.site_months})
        totals = [(site, *_raised(store.shown_site_totals.setdefault(site, SiteSums()),
                                  store.site_totals[site], sql.SITE_TOTAL_VALUES)) for site in sites]
        n_in = len(NODE_MINUTE_INPUTS)
        for node, minute, *derived in changes.node_minutes:
            self._node_minutes[(node, int(minute))][4 + n_in:] = derived
        n_in = len(SITE_MINUTE_INPUTS)
        recent = int(store._clock() // 60) - RECENT_MINUTES
        for site, minute, *derived in changes.site_minutes:
            row = self._site_minutes[(site, int(minute))]
            row[2 + n_in:] = derived
            if minute >= recent:
                store.recent_minutes[(site, int(minute))] = (row[2], *row[2 + n_in:5 + n_in])
        for node, site, cluster, est, meas, disagree in changes.node_totals:
            held_totals = store.node_totals.setdefault(node, NodeTotals(site, cluster, 0.0, 0.0, 0.0))
            held_totals.site, held_totals.cluster = site, cluster
            held_totals.overhead_est_j += est
            held_totals.overhead_meas_j += meas
            held_totals.disagree_s += disagree
            held_shown = store.shown_node_totals.setdefault(node, NodeTotals(site, cluster, 0.0, 0.0, 0.0))
            held_shown.site, held_shown.cluster = site, cluster
        node_totals = [(node, t.site, t.cluster,
                        *_raised(store.shown_node_totals[node], t, sql.NODE_TOTAL_VALUES))
                       for node in sorted({row[0] for row in changes.node_totals})
                       for t in [store.node_totals[node]]]
        store._commit(streams=[stream_rows[s] for s in sorted(stream_rows)], seqs_added=changes.seqs_added,
                      seqs_dropped=changes.seqs_dropped, nodes=node_rows,
                      devices=store.devices.rows(sorted(slots)), usage=changes.usage,
                      quarters=changes.quarters, site_totals=totals, plan_days=changes.plan_days,
                      holders=[self._holders[i] for i in sorted(self._holders)], minutes=self._minutes,
                      holder_months=changes.holder_months, team_quarters=changes.team_quarters,
                      team_totals=team_totals,
                      node_minutes=[tuple(self._node_minutes[k]) for k in sorted(self._node_minutes)],
                      site_minutes=[tuple(self._site_minutes[k]) for k in sorted(self._site_minutes)],
                      node_usage=changes.node_usage, node_totals=node_totals,
                      outdoor_readings=changes.outdoor_readings,
                      site_holder_minutes=changes.site_holder_minutes, unshared=changes.unshared,
                      shared=changes.shared)

    def _apply_teams(self, changes: Changes) -> list[Row]:
        """Chargeback's sums into memory; the team_totals rows to write (their new values)."""
        store = self._store
        for site, month, team, *values in changes.team_months:
            acc = store.team_months.setdefault((site, month, team), [0.0] * len(values))
            for i, value in enumerate(values):
                acc[i] += value
        horizon = (store._clock() - KEEP_QUARTERS_SECONDS) / 60.0
        for site, start, month, team, facility_j, cost in changes.team_quarters:
            held = store.team_quarters.get((site, start))
            if held is None:
                if start < horizon:  # older than memory keeps: the disk has it
                    continue
                held = store.team_quarters[(site, start)] = (month, {})
            sums = held[1].setdefault(team, [0.0, 0.0])
            sums[0] += facility_j
            sums[1] += cost
        rows = []
        for site, team, *increments in team_total_rows(changes.team_months):
            t = store.team_totals.setdefault((site, team), [0.0] * 8)
            for i, value in enumerate(increments):
                t[i] += value
            for i in range(3):  # what is shown never goes down
                t[5 + i] = max(t[5 + i], t[i])
            rows.append((site, team, *t))
        return rows

    def _apply_devices(self, changes: Changes) -> None:
        ch = changes.devices
        assert ch is not None
        table = self._store.devices
        f, counts, slots = table.floats, table.counts, ch.slots
        keep = ch.keep_info.tolist() if ch.keep_info is not None else [False] * len(ch.infos)
        merge = ch.merge_info.tolist() if ch.merge_info is not None else [False] * len(ch.infos)
        for slot, info, owner, kept, merged in zip(slots.tolist(), ch.infos, ch.owner, keep, merge,
                                                   strict=True):
            if merged:
                table.set_info(slot, table.merged_info(slot, info))
            elif not kept:
                table.set_info(slot, info)
            table.stream[slot] = owner
        # a group's devices are distinct: plain fancy-index additions are exact here
        f["energy_j"][slots] += ch.energy_j
        f["unmeasured_s"][slots] += ch.unmeasured_s
        f["stream_seen"][slots] = ch.owner_seen
        counts["resets"][slots] += ch.resets
        counts["anomalies"][slots] += ch.anomalies
        counts["late"][slots] += ch.late
        up, newest = ch.updated, ch.newest
        f["last_ts"][up] = newest["ts"]
        f["last_power_w"][up] = newest["power_w"]
        f["last_energy_j"][up] = newest["energy_j"]
        for name in LATEST:
            f[name][up] = newest[name]
        table.clock_events[up] = newest["clock_events"]
        table.has_clock_events[up] = newest["has_clock_events"]

    def finish(self) -> None:
        """At the end of a clean ingest: new streams or devices not yet written are written."""
        if not self._written and (self.new_streams or self._new_slots):
            self.write(Changes())
