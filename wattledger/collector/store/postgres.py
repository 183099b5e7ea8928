"""The shared store: PostgreSQL (psycopg 3 and psycopg-pool), for any number of collector replicas.

A batch may reach any replica, so nothing a replica holds in memory decides anything: each
group of batches is ONE transaction that reads the state it continues from and locks it.

- Dedupe: the group's stream rows are upserted and locked (``INSERT ... ON CONFLICT DO UPDATE
  ... RETURNING``: a new stream is created, an existing one locked, and either way its
  committed low-water mark comes back), with the few seqs above the mark. Two replicas given
  the same batch at the same instant queue on that row lock; the second reads the first's mark
  once it commits and answers "duplicate".
- Accounting state: the group's device rows are locked (``SELECT ... FOR UPDATE``), their last
  committed readings read, and advanced in the same transaction.
- Locks are always taken in one global order — the outdoor sensors' advisory locks
  (``hold_outdoor``), streams, devices, nodes, usage, quarter-hours, plan days, site totals,
  each by key — so transactions queue and never deadlock; the rows every
  transaction shares (the current quarter-hour, each site's totals) come last, so their locks
  are held for the shortest time (to the commit).
- Sums are additive updates (``x = x + excluded.x``): a replica never writes a total it read.
- ``synchronous_commit`` stays on: the 200 an agent hears means the batch is on disk.

The periodic work runs under ``pg_try_advisory_xact_lock``: one replica at a time does it, the
others skip that round. Reads (``fleet``) are one REPEATABLE READ READ ONLY transaction, so a
view is consistent. Connection errors become ``StoreUnavailable`` (answered 503).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from wattledger.collector.accounting.pricing import SiteSums
from wattledger.collector.accounting.readings import LATEST
from wattledger.collector.accounting.siteclock import month_text
from wattledger.collector.store import sql
from wattledger.collector.store.base import (
    NODE_MINUTE_INPUTS,
    NODE_USAGE_VALUES,
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
    StoreUnavailable,
    StreamState,
    TeamData,
    Upkeep,
    team_total_rows,
)
from wattledger.collector.store.devicetable import DEVICE_COLUMNS, DeviceTable
from wattledger.collector.store.migrations import POSTGRES_MIGRATIONS
from wattledger.wire import DeviceInfo

log = logging.getLogger(__name__)

SCHEMA_VERSION = len(POSTGRES_MIGRATIONS)
#: advisory lock keys (one 64-bit namespace per database): migrations, periodic work
MIGRATE_LOCK = 0x776C_6D69_6772
UPKEEP_LOCK = 0x776C_7570_6B70
#: the two-key advisory locks of the outdoor sensors (``hold_outdoor``): this class, and a key
#: per sensor device id (a 32-bit hash: two ids that share one only wait for each other)
OUTDOOR_LOCKS = 0x776C_6F64


def outdoor_lock_key(device: str) -> int:
    """A sensor's advisory key: the signed 32-bit CRC of its id (the same on every replica)."""
    crc = zlib.crc32(device.encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc
#: libpq settings the collector brings unless the URL gives its own (milliseconds for timeouts)
CONNECTION_DEFAULTS = {
    "connect_timeout": "5", "application_name": "wattledger-collector",
    "keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3",
    # a statement or lock wait this long is a broken database, not load; a replica killed in a
    # transaction leaves no lock behind for longer than the idle timeout
    "options": "-c statement_timeout=30000 -c lock_timeout=20000 "
               "-c idle_in_transaction_session_timeout=60000",
}

_UPSERT_STREAMS = (
    "INSERT INTO streams (stream, node, low_seq) "
    "SELECT s.stream, s.node, s.low_seq FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
    "AS s(stream, node, low_seq) ORDER BY s.stream "
    # a no-op update: the row is locked and returned, new or not
    "ON CONFLICT (stream) DO UPDATE SET low_seq = streams.low_seq RETURNING stream, node, low_seq")
_ABOVE = "SELECT stream, seq FROM stream_seqs WHERE stream = ANY(%s::text[])"
_LOCK_DEVICES = (
    "SELECT d.node, d.device, d.slot, COALESCE(d.last_ts, 'NaN'), COALESCE(d.last_power_w, 'NaN'), "
    "COALESCE(d.last_energy_j, 'NaN'), d.stream, COALESCE(d.stream_seen, 'NaN'), "
    "COALESCE(d.power_limit_w, 'NaN') "
    "FROM devices d JOIN unnest(%s::text[], %s::text[]) AS k(node, device) "
    "ON d.node = k.node AND d.device = k.device ORDER BY d.node, d.device FOR UPDATE OF d")
_META = ("kind", "idx", "model", "power_limit_w", "slowdown_c", "shutdown_c", "role", "parent", "share")
_META_TYPES = ("text", "integer", "text", "float8", "float8", "float8", "text", "text", "float8")
_CREATE_DEVICES = (
    f"INSERT INTO devices (node, device, {', '.join(_META)}, energy_j, unmeasured_s, resets, anomalies, "
    "late) SELECT k.*, 0, 0, 0, 0, 0 FROM unnest(%s::text[], %s::text[], "
    + ", ".join(f"%s::{t}[]" for t in _META_TYPES)
    + f") AS k(node, device, {', '.join(_META)}) ORDER BY k.node, k.device "
    "ON CONFLICT (node, device) DO NOTHING RETURNING node, device, slot")
_ADVANCE_STREAMS = ("UPDATE streams SET low_seq = u.low FROM unnest(%s::text[], %s::bigint[]) "
                    "AS u(stream, low) WHERE streams.stream = u.stream")
_ADD_SEQS = ("INSERT INTO stream_seqs (stream, seq) SELECT * FROM unnest(%s::text[], %s::bigint[]) "
             "ON CONFLICT DO NOTHING")
_DROP_SEQS = ("DELETE FROM stream_seqs USING unnest(%s::text[], %s::bigint[]) AS u(stream, seq) "
              "WHERE stream_seqs.stream = u.stream AND stream_seqs.seq = u.seq")
#: per device: metadata, owner, counters added, and (``fresh``) the newest reading as its state
_STATE = ("last_ts", "last_power_w", "last_energy_j", *LATEST)
_UPDATE_DEVICES = (
    "UPDATE devices SET "
    + ", ".join(f"{c} = CASE WHEN u.keep THEN devices.{c} WHEN u.merge THEN COALESCE(u.{c}, devices.{c}) "
                f"ELSE u.{c} END" for c in _META)
    + ", stream = u.stream, stream_seen = NULLIF(u.stream_seen, 'NaN'), "
    "energy_j = devices.energy_j + u.energy_j, unmeasured_s = devices.unmeasured_s + u.unmeasured_s, "
    "resets = devices.resets + u.resets, anomalies = devices.anomalies + u.anomalies, "
    "late = devices.late + u.late, "
    + ", ".join(f"{c} = CASE WHEN u.fresh THEN NULLIF(u.{c}, 'NaN') ELSE devices.{c} END" for c in _STATE)
    + ", clock_events = CASE WHEN u.fresh THEN u.clock_events ELSE devices.clock_events END "
    "FROM unnest(%s::bigint[], "
    + ", ".join(f"%s::{t}[]" for t in _META_TYPES)
    + ", %s::text[], %s::float8[], %s::float8[], %s::float8[], %s::bigint[], %s::bigint[], %s::bigint[], "
    "%s::bool[], " + ", ".join("%s::float8[]" for _ in _STATE) + ", %s::bigint[], %s::bool[], %s::bool[]) "
    f"AS u(slot, {', '.join(_META)}, stream, stream_seen, energy_j, unmeasured_s, resets, anomalies, late, "
    f"fresh, {', '.join(_STATE)}, clock_events, keep, merge) WHERE devices.slot = u.slot")
_UPSERT_NODES = (
    "INSERT INTO nodes (node, site, cluster, labels, last_seen, readings) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::bigint[]) "
    "AS n(node, site, cluster, labels, last_seen, readings) ORDER BY n.node "
    "ON CONFLICT (node) DO UPDATE SET site = excluded.site, cluster = excluded.cluster, "
    "labels = excluded.labels, last_seen = GREATEST(nodes.last_seen, excluded.last_seen), "
    "readings = nodes.readings + excluded.readings")
#: remote-write's nodes: a node already known keeps its site, cluster and labels
_UPSERT_NODES_KEEPING_LABELS = _UPSERT_NODES.replace(
    "site = excluded.site, cluster = excluded.cluster, labels = excluded.labels, ", "")
_ADD_CONFLICTS = (
    "UPDATE nodes SET conflicts = nodes.conflicts + u.refused, "
    "conflict_at = GREATEST(nodes.conflict_at, u.at) "
    "FROM unnest(%s::text[], %s::bigint[], %s::float8[]) AS u(node, refused, at) WHERE nodes.node = u.node")
_ADD_USAGE = (
    "INSERT INTO usage (month, slot, site, cluster, it_j, cooling_j, it_cost, cooling_cost, carbon_g, "
    "unmeasured_s) SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::float8[], "
    "%s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::float8[]) "
    "AS u(month, slot, site, cluster, it_j, cooling_j, it_cost, cooling_cost, carbon_g, unmeasured_s) "
    "ORDER BY u.month, u.slot, u.site, u.cluster "
    "ON CONFLICT (month, slot, site, cluster) DO UPDATE SET it_j = usage.it_j + excluded.it_j, "
    "cooling_j = usage.cooling_j + excluded.cooling_j, it_cost = usage.it_cost + excluded.it_cost, "
    "cooling_cost = usage.cooling_cost + excluded.cooling_cost, "
    "carbon_g = usage.carbon_g + excluded.carbon_g, "
    "unmeasured_s = usage.unmeasured_s + excluded.unmeasured_s")
_ADD_QUARTERS = (
    "INSERT INTO quarters (site, cluster, start_minute, month, it_j, facility_j, cost) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::float8[], %s::float8[], "
    "%s::float8[]) AS q(site, cluster, start_minute, month, it_j, facility_j, cost) "
    "ORDER BY q.site, q.cluster, q.start_minute "
    "ON CONFLICT (site, cluster, start_minute) DO UPDATE SET it_j = quarters.it_j + excluded.it_j, "
    "facility_j = quarters.facility_j + excluded.facility_j, cost = quarters.cost + excluded.cost")
_SITE_TOTALS = sql.SITE_TOTAL_VALUES
_ADD_SITE_TOTALS = (
    f"INSERT INTO site_totals (site, {', '.join(_SITE_TOTALS + sql.shown(_SITE_TOTALS))}) "
    "SELECT t.site, " + ", ".join([f"SUM(t.{c})" for c in _SITE_TOTALS]
                                  + [f"GREATEST(SUM(t.{c}), 0)" for c in _SITE_TOTALS]) + " "
    "FROM unnest(%s::text[], " + ", ".join("%s::float8[]" for _ in _SITE_TOTALS) + ") "
    f"AS t(site, {', '.join(_SITE_TOTALS)}) GROUP BY t.site ORDER BY t.site "
    "ON CONFLICT (site) DO UPDATE SET "
    + ", ".join(sql.add_and_raise("site_totals", _SITE_TOTALS, _SITE_TOTALS, "GREATEST")))
_PLAN_TYPES = ("text", "text", "text", "text", "bigint", "bigint", *("float8",) * 5, "bigint",
               *("float8",) * 13)
_ADD_PLAN = (
    f"INSERT INTO plan_days ({', '.join(sql.PLAN_KEYS + sql.PLAN_VALUES)}) "
    f"SELECT * FROM unnest({', '.join(f'%s::{t}[]' for t in _PLAN_TYPES)}) "
    f"AS p({', '.join(sql.PLAN_KEYS + sql.PLAN_VALUES)}) "
    f"ORDER BY {', '.join('p.' + k for k in sql.PLAN_KEYS)} "
    f"{sql.PLAN_MERGE}")
_MONTH_SUMS = (
    "SELECT u.site, SUM(u.it_j), SUM(u.cooling_j), SUM(u.it_cost), SUM(u.cooling_cost), SUM(u.carbon_g) "
    "FROM usage u JOIN unnest(%s::text[], %s::text[]) AS k(site, month) "
    "ON u.site = k.site AND u.month = k.month GROUP BY u.site")
_NODE_MONTH_SUMS = sql.NODE_MONTHS_OF.replace(
    "{K}", "JOIN unnest(%s::text[], %s::text[]) AS k(site, month) ON n.site = k.site AND n.month = k.month")
def _minute_statements(table: str, key: str, labels: Sequence[str], inputs: Sequence[str],
                       derived: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """(add, set) for a minute table: add the inputs to its rows (made at 0 when new) and return
    the new inputs with the derived values as booked; then set the derived ones."""
    columns = (key, "minute", *labels, *inputs)
    names = [name for name, _ in derived]
    zeroed = [n for n in names if n != "outdoor_c"]  # outdoor_c starts NULL: no temperature taken
    add = (f"INSERT INTO {table} ({', '.join(columns)}, {', '.join(zeroed)}) "
           f"SELECT r.*, {', '.join('0' for _ in zeroed)} FROM unnest(%s::text[], %s::bigint[], "
           + ", ".join(["%s::text[]"] * len(labels) + ["%s::float8[]"] * len(inputs))
           + f") AS r({', '.join(columns)}) ORDER BY r.{key}, r.minute "
           f"ON CONFLICT ({key}, minute) DO UPDATE SET "
           + ", ".join([*(f"{c} = excluded.{c}" for c in labels),
                        *(f"{c} = {table}.{c} + excluded.{c}" for c in inputs)])
           + f" RETURNING {key}, minute, {', '.join(inputs)}, {', '.join(names)}")
    update = (f"UPDATE {table} SET " + ", ".join(f"{c} = u.{c}" for c in names)
              + " FROM unnest(%s::text[], %s::bigint[], " + ", ".join(f"%s::{t}[]" for _, t in derived) + ") "
              f"AS u({key}, minute, {', '.join(names)}) "
              f"WHERE {table}.{key} = u.{key} AND {table}.minute = u.minute")
    return add, update


_ADD_NODE_MINUTES, _SET_NODE_MINUTES = _minute_statements(
    "node_minutes", "node", ("site", "cluster"), NODE_MINUTE_INPUTS,
    (("overhead_j", "float8"), ("estimated", "integer"), ("disagree_s", "float8")))
_ADD_SITE_MINUTES, _SET_SITE_MINUTES = _minute_statements(
    "site_minutes", "site", (), SITE_MINUTE_INPUTS,
    (("cooling_j", "float8"), ("other_j", "float8"), ("outdoor_c", "float8"), ("fallback_s", "float8")))
_ADD_NODE_USAGE = (
    f"INSERT INTO node_usage (month, site, cluster, node, {', '.join(NODE_USAGE_VALUES)}) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
    + ", ".join("%s::float8[]" for _ in NODE_USAGE_VALUES)
    + f") AS u(month, site, cluster, node, {', '.join(NODE_USAGE_VALUES)}) "
    "ORDER BY u.month, u.site, u.cluster, u.node "
    "ON CONFLICT (month, site, cluster, node) DO UPDATE SET "
    + ", ".join(f"{c} = node_usage.{c} + excluded.{c}" for c in NODE_USAGE_VALUES))
_NODE_TOTALS = sql.NODE_TOTAL_VALUES
_ADD_NODE_TOTALS = (
    f"INSERT INTO node_totals (node, site, cluster, {', '.join(_NODE_TOTALS + sql.shown(_NODE_TOTALS))}) "
    "SELECT t.*, " + ", ".join(f"GREATEST(t.{c}, 0)" for c in _NODE_TOTALS) + " "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[], %s::float8[]) "
    f"AS t(node, site, cluster, {', '.join(_NODE_TOTALS)}) ORDER BY t.node "
    "ON CONFLICT (node) DO UPDATE SET site = excluded.site, cluster = excluded.cluster, "
    + ", ".join(sql.add_and_raise("node_totals", _NODE_TOTALS, _NODE_TOTALS, "GREATEST")))
#: no FOR UPDATE: the rows are locked by add_site_minutes with the group's, in one key-ordered
#: statement (``IngestUnit.booked_site_minutes``)
_BOOKED_SITE_MINUTES = (
    "SELECT m.site, m.minute FROM site_minutes m JOIN unnest(%s::text[], %s::bigint[], %s::bigint[]) "
    "AS r(site, low, high) ON m.site = r.site AND m.minute >= r.low AND m.minute <= r.high "
    "ORDER BY m.site, m.minute")
#: per (device, time): the last kept reading at or before it (distinct, in order)
_OUTDOOR_HISTORY = (
    "SELECT DISTINCT r.device, r.ts, r.temp_c FROM unnest(%s::text[], %s::float8[]) AS k(device, at) "
    "CROSS JOIN LATERAL (SELECT o.device, o.ts, o.temp_c FROM outdoor_readings o WHERE o.device = k.device "
    "AND o.ts <= k.at ORDER BY o.ts DESC LIMIT 1) AS r ORDER BY r.device, r.ts")
_ADD_OUTDOOR_READINGS = (
    "INSERT INTO outdoor_readings (device, ts, temp_c) SELECT * FROM unnest(%s::text[], %s::float8[], "
    "%s::float8[]) AS r(device, ts, temp_c) ORDER BY r.device, r.ts ON CONFLICT DO NOTHING")
_LOCK_OUTDOOR = "SELECT pg_advisory_xact_lock(%s, %s)"
_SHARE_OUTDOOR = "SELECT pg_advisory_xact_lock_shared(%s, %s)"
_SENSORS = ("SELECT device, last_ts, temp_c FROM devices WHERE kind = 'sensor' AND device = ANY(%s::text[]) "
            "AND last_ts IS NOT NULL AND temp_c IS NOT NULL")
_MONTH_PEAKS = (
    "SELECT q.site, MAX(q.facility_j) FROM (SELECT q.site, SUM(q.facility_j) AS facility_j FROM quarters q "
    "JOIN unnest(%s::text[], %s::text[]) AS k(site, month) ON q.site = k.site AND q.month = k.month "
    "GROUP BY q.site, q.start_minute) AS q GROUP BY q.site "
    "UNION ALL SELECT p.site, p.facility_j FROM month_peaks p "
    "JOIN unnest(%s::text[], %s::text[]) AS k(site, month) ON p.site = k.site AND p.month = k.month")
_DAY_COST = ("SELECT site, SUM(cost) FROM quarters WHERE start_minute >= %s AND start_minute <= %s "
             "GROUP BY site")
_UPSERT_HOLDERS = (
    "INSERT INTO holders (site, cluster, node, owner, start, team, ended, devices) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::text[], "
    "%s::float8[], %s::text[]) AS h(site, cluster, node, owner, start, team, ended, devices) "
    "ORDER BY h.node, h.owner, h.start "
    "ON CONFLICT (node, owner, start) DO UPDATE SET site = excluded.site, cluster = excluded.cluster, "
    "ended = COALESCE(excluded.ended, holders.ended), devices = excluded.devices "
    "RETURNING node, owner, start, id, team")
_ADD_HOLDER_MINUTES = (
    "INSERT INTO holder_minutes (node, minute, holder, energy_j) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::float8[]) "
    "AS m(node, minute, holder, energy_j) ORDER BY m.node, m.minute, m.holder "
    "ON CONFLICT (node, minute, holder) DO UPDATE SET energy_j = holder_minutes.energy_j + excluded.energy_j")
#: every row of the node-minutes just added to (their rows are locked by the addition: each
#: node-minute has its idle holder's row in every addition)
_MINUTE_ROWS = (
    "SELECT m.node, m.minute, m.holder, m.energy_j, COALESCE(h.team, '') FROM holder_minutes m "
    "JOIN unnest(%s::text[], %s::bigint[]) AS k(node, minute) ON m.node = k.node AND m.minute = k.minute "
    "LEFT JOIN holders h ON h.id = m.holder")
_ADD_HOLDER_MONTHS = (
    "INSERT INTO holder_months (holder, month, gpu_j, it_j, cooling_j, it_cost, cooling_cost, carbon_g, "
    "gpu_s, idle_gpu_s, waste_j, waste_cost) SELECT * FROM unnest(%s::bigint[], %s::text[], "
    + ", ".join("%s::float8[]" for _ in range(10)) + ") AS m(holder, month, gpu_j, it_j, cooling_j, it_cost, "
    "cooling_cost, carbon_g, gpu_s, idle_gpu_s, waste_j, waste_cost) ORDER BY m.holder, m.month "
    "ON CONFLICT (holder, month) DO UPDATE SET "
    + ", ".join(f"{c} = holder_months.{c} + excluded.{c}" for c in (
        "gpu_j", "it_j", "cooling_j", "it_cost", "cooling_cost", "carbon_g", "gpu_s", "idle_gpu_s", "waste_j",
        "waste_cost")))
_ADD_TEAM_QUARTERS = (
    "INSERT INTO team_quarters (site, start_minute, month, team, facility_j, cost) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::float8[], %s::float8[]) "
    "AS q(site, start_minute, month, team, facility_j, cost) ORDER BY q.site, q.start_minute, q.team "
    "ON CONFLICT (site, start_minute, team) DO UPDATE SET "
    "facility_j = team_quarters.facility_j + excluded.facility_j, cost = team_quarters.cost + excluded.cost")
_ADD_TEAM_TOTALS = (
    "INSERT INTO team_totals (site, team, it_j, cost, carbon_g, gpu_s, idle_gpu_s, shown_it_j, shown_cost, "
    "shown_carbon_g) SELECT t.*, GREATEST(t.it_j, 0), GREATEST(t.cost, 0), GREATEST(t.carbon_g, 0) "
    "FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[], %s::float8[], %s::float8[], "
    "%s::float8[]) AS t(site, team, it_j, cost, carbon_g, gpu_s, idle_gpu_s) ORDER BY t.site, t.team"
    + sql.add_team_totals("GREATEST"))
_ADD_SITE_HOLDER_MINUTES = (
    "INSERT INTO site_holder_minutes (site, minute, holder, it_j, cooling_j) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::float8[], %s::float8[]) "
    "AS m(site, minute, holder, it_j, cooling_j) ORDER BY m.site, m.minute, m.holder "
    "ON CONFLICT (site, minute, holder) DO UPDATE SET it_j = site_holder_minutes.it_j + excluded.it_j, "
    "cooling_j = site_holder_minutes.cooling_j + excluded.cooling_j")
_MARK_UNSHARED = ("INSERT INTO unshared_minutes (site, minute) "
                  "SELECT * FROM unnest(%s::text[], %s::bigint[]) AS u(site, minute) "
                  "ORDER BY u.site, u.minute ON CONFLICT DO NOTHING")
_DROP_UNSHARED = ("DELETE FROM unshared_minutes USING unnest(%s::text[], %s::bigint[]) AS u(site, minute) "
                  "WHERE unshared_minutes.site = u.site AND unshared_minutes.minute = u.minute")
#: a site-minute's shares are guarded by its site_minutes row: every transaction that books to
#: them holds it (``add_site_minutes``); the re-share takes it too, skipping those held now
_UNSHARED = sql.dialect(sql.UNSHARED, "%s") + " FOR UPDATE OF s SKIP LOCKED"
_HOLDER_SHARES = (
    "SELECT m.site, m.minute, m.holder, m.it_j, m.cooling_j, COALESCE(h.team, ''), COALESCE(h.node, '') "
    "FROM site_holder_minutes m "
    "JOIN unnest(%s::text[], %s::bigint[]) AS k(site, minute) ON m.site = k.site AND m.minute = k.minute "
    "LEFT JOIN holders h ON h.id = m.holder ORDER BY m.site, m.minute, m.holder")
_NODE_COLUMNS = "node, site, cluster, labels, last_seen, readings, conflicts, conflict_at"


def array_literal(values: Sequence[Any]) -> str:
    """A list as PostgreSQL's array text (``{1.5,nan,NULL}``, ``{"a","b"}``) for a ``%s::type[]``
    parameter. psycopg's own list dumper searches every element with a regex: at a few thousand
    elements per transaction that was a third of a replica's CPU (docs/performance.md)."""
    if not values:
        return "{}"
    first = next((v for v in values if v is not None), None)  # a column is of one type
    if isinstance(first, str):
        return "{" + ",".join("NULL" if v is None else
                              '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
    if None in values:
        return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    return "{" + ",".join(map(str, values)) + "}"


def arrays(params: Sequence[Any]) -> list[Any]:
    """Parameters with every list as its array text (see ``array_literal``)."""
    return [array_literal(p) if isinstance(p, list) else p for p in params]


def connection_kwargs(db_url: str) -> dict[str, str]:
    """The collector's libpq settings for keys the URL does not set itself."""
    try:
        given = conninfo_to_dict(db_url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"db URL: {exc}") from None
    return {key: value for key, value in CONNECTION_DEFAULTS.items() if key not in given}


class PostgresStore(sql.PlanQueries):
    """A pool of connections to one PostgreSQL database, migrated at open."""

    backend = "postgresql"
    shared = True

    def __init__(self, db_url: str, clock: Callable[[], float] = time.time, *, pool_size: int = 8,
                 open_timeout: float = 30.0) -> None:
        self._clock = clock
        self.pool = ConnectionPool(db_url, min_size=2, max_size=pool_size, open=False, timeout=10.0,
                                   kwargs=connection_kwargs(db_url), name="wattledger")
        try:
            self.pool.open(wait=True, timeout=open_timeout)
        except PoolTimeout:
            self.pool.close()
            raise StoreError(f"cannot connect within {open_timeout:g} s") from None
        try:
            self._migrate()
        except BaseException:
            self.pool.close()
            raise

    # ---- schema ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._errors(), self.pool.connection() as conn:
            conn.autocommit = True
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS wattledger_schema (version INTEGER NOT NULL)")
                if conn.execute("SELECT count(*) FROM wattledger_schema").fetchone() == (0,):
                    conn.execute("INSERT INTO wattledger_schema VALUES (0)")
                version = self._version(conn)
                if version > SCHEMA_VERSION:
                    raise StoreError(f"the ledger has schema version {version}; this collector knows "
                                     f"up to {SCHEMA_VERSION} (upgrade wattledger)")
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    with conn.transaction():
                        for statement in POSTGRES_MIGRATIONS[target - 1]:
                            conn.execute(statement)
                        conn.execute("UPDATE wattledger_schema SET version = %s", (target,))
                    log.info("store: schema migrated to version %d", target)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
                conn.autocommit = False

    @staticmethod
    def _version(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT version FROM wattledger_schema").fetchone()
        return int(row[0]) if row else 0

    @property
    def schema_version(self) -> int:
        with self._errors(), self.pool.connection() as conn:
            return self._version(conn)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The database's outages as StoreUnavailable (a refusal to send again, not a fault)."""
        try:
            yield
        except PoolTimeout as exc:
            raise StoreUnavailable(f"no database connection: {exc}") from None
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(f"database: {first}") from None

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of one read-only statement (diagnostics and tests; the ledger uses the methods)."""
        with self._errors(), self.pool.connection() as conn:
            return conn.execute(statement.replace("?", "%s"), params).fetchall()

    # ---- ingest -----------------------------------------------------------------------------

    @contextmanager
    def ingest(self) -> Iterator[_Unit]:
        """One transaction; committed when the block ends cleanly, rolled back otherwise."""
        with self._errors(), self.pool.connection() as conn:
            yield _Unit(conn)

    # ---- reading ----------------------------------------------------------------------------

    @contextmanager
    def _snapshot(self) -> Iterator[psycopg.Connection[Any]]:
        with self._errors(), self.pool.connection() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    def fleet(self, months: Mapping[str, int], since_minute: float, until_minute: float) -> FleetData:
        with self._snapshot() as conn:
            totals = {site: SiteSums(0.0, cool_j, it_cost, cool_cost, carbon, 0.0, other_j, other_cost,
                                     fallback)
                      for site, cool_j, it_cost, cool_cost, carbon, other_j, other_cost, fallback
                      in conn.execute(f"SELECT site, {', '.join(sql.shown(_SITE_TOTALS))} FROM site_totals")}
            sums = self._month_sums(conn, months)
            day_cost = dict.fromkeys(months, 0.0)
            for site, cost in conn.execute(_DAY_COST, (since_minute, until_minute)):
                if site in day_cost:
                    day_cost[site] = float(cost)
            nodes = self._nodes(conn)
            devices = DeviceTable.from_rows(conn.execute(
                f"SELECT {', '.join(DEVICE_COLUMNS)} FROM devices ORDER BY slot").fetchall())
            node_totals = {str(node): NodeTotals(site, cluster, est, meas, disagree)
                           for node, site, cluster, est, meas, disagree in conn.execute(
                               f"SELECT node, site, cluster, {', '.join(sql.shown(_NODE_TOTALS))} "
                               "FROM node_totals")}
            minutes = sql.minute_sums(conn.execute(sql.dialect(sql.MINUTE_SUMS, "%s"),
                                                   (int(until_minute) - 60, int(until_minute))).fetchall())
        return FleetData(totals, sums, day_cost, nodes, devices, node_totals, minutes)

    @staticmethod
    def _month_sums(conn: psycopg.Connection[Any], months: Mapping[str, int]) -> dict[str, SiteSums]:
        sites = sorted(months)
        texts = [month_text(months[site]) for site in sites]
        sums = {site: SiteSums() for site in sites}
        found = conn.execute(_MONTH_SUMS, arrays((sites, texts)))
        for site, it_j, cool_j, it_cost, cool_cost, carbon in found:
            sums[site] = SiteSums(it_j, cool_j, it_cost, cool_cost, carbon)
        for site, *values in conn.execute(_NODE_MONTH_SUMS, arrays((sites, texts))):
            sums[site].add(*(float(v) for v in values))
        for site, facility_j in conn.execute(_MONTH_PEAKS, arrays((sites, texts, sites, texts))):
            held = sums[site]
            held.peak_quarter_facility_j = max(held.peak_quarter_facility_j, float(facility_j))
        return sums

    @staticmethod
    def _nodes(conn: psycopg.Connection[Any]) -> dict[str, NodeState]:
        return {node: NodeState(site, cluster, json.loads(labels), float(seen), int(readings), int(conflicts),
                                conflict_at)
                for node, site, cluster, labels, seen, readings, conflicts, conflict_at in conn.execute(
                    f"SELECT {_NODE_COLUMNS} FROM nodes")}

    def month_sums(self, site: str, month: int) -> SiteSums:
        with self._snapshot() as conn:
            return self._month_sums(conn, {site: month})[site]

    def minutes(self, since_minute: int, until_minute: int) -> MinuteSums:
        return sql.minute_sums(self.query(sql.dialect(sql.MINUTE_SUMS, "?"), (since_minute, until_minute)))

    def day_cost(self, site: str, since_minute: float, until_minute: float) -> float:
        with self._errors(), self.pool.connection() as conn:
            row = conn.execute("SELECT COALESCE(SUM(cost), 0) FROM quarters WHERE site = %s AND "
                               "start_minute >= %s AND start_minute <= %s",
                               (site, since_minute, until_minute)).fetchone()
        return float(row[0]) if row else 0.0

    def spend_sums(self, site: str, month: str, group_by: Level) -> list[Row]:
        return sql.merge_spend(group_by,
                               self.query(sql.dialect(sql.spend_sums(group_by), "%s"), (month, site)),
                               self.query(sql.dialect(sql.node_spend_sums(group_by), "%s"), (month, site)))

    def cluster_day_cost(self, site: str, since_minute: float, until_minute: float) -> dict[str, float]:
        return {str(cluster): float(cost) for cluster, cost in self.query(
            sql.dialect(sql.CLUSTER_DAY_COST, "%s"), (site, since_minute, until_minute))}

    def team_data(self, site: str, month: str, since_minute: float, until_minute: float) -> TeamData:
        with self._snapshot() as conn:
            def rows(statement: str, params: Sequence[Any]) -> list[Row]:
                return conn.execute(sql.dialect(statement, "%s"), params).fetchall()
            return TeamData(
                months=rows(sql.TEAM_MONTHS, (site, month)),
                quarters=rows(sql.TEAM_QUARTERS_OF_MONTH, (site, month)),
                day_cost={str(team): float(cost) for team, cost in rows(
                    sql.TEAM_DAY_COST, (site, since_minute, until_minute))},
                totals=[row[1:] for row in rows(sql.TEAM_TOTALS, ()) if row[0] == site])

    def holders_of_month(self, site: str, month: str) -> list[Row]:
        return self.query(sql.dialect(sql.HOLDERS_OF_MONTH, "%s"), (site, month))

    def jobs(self, site: str, since: float, until: float) -> list[Row]:
        return self.query(sql.dialect(sql.JOBS, "%s"), (site, until, since))

    def stream(self, stream: str) -> StreamState | None:
        with self._snapshot() as conn:
            row = conn.execute("SELECT node, low_seq FROM streams WHERE stream = %s", (stream,)).fetchone()
            if row is None:
                return None
            above = {int(seq) for (seq,) in conn.execute(
                "SELECT seq FROM stream_seqs WHERE stream = %s", (stream,))}
        return StreamState(str(row[0]), int(row[1]), above)

    def node_names(self) -> list[str]:
        return [str(node) for (node,) in self.query("SELECT node FROM nodes ORDER BY node")]

    # ---- upkeep -----------------------------------------------------------------------------

    def upkeep(self, rollup_before_minute: int | None, forget_before_minute: float) -> Upkeep | None:
        """The periodic work, on one replica at a time (None: another one holds the lock)."""
        with self._errors(), self.pool.connection() as conn:
            # one snapshot: a quarter-hour that an ingest changes meanwhile fails the roll-up (it is
            # tried again next round) rather than being summed into hours without its change
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (UPKEEP_LOCK,)).fetchone()
            if not row or not row[0]:
                return None
            rolled = 0
            if rollup_before_minute is not None:
                conn.execute(sql.dialect(sql.KEEP_PEAKS, "%s"), (rollup_before_minute,))
                conn.execute(sql.dialect(sql.ADD_HOURS, "%s"), (rollup_before_minute,))
                rolled = conn.execute(sql.dialect(sql.DROP_QUARTERS, "%s"),
                                      (rollup_before_minute,)).rowcount
                conn.execute(sql.dialect(sql.DROP_HOLDER_MINUTES, "%s"), (rollup_before_minute,))
                conn.execute(sql.dialect(sql.DROP_NODE_MINUTES, "%s"), (rollup_before_minute,))
                conn.execute(sql.dialect(sql.DROP_SITE_MINUTES, "%s"), (rollup_before_minute,))
                conn.execute(sql.dialect(sql.DROP_OUTDOOR_READINGS, "%s"),
                             sql.outdoor_cutoff(rollup_before_minute))
                for statement in sql.DROP_SHARED_MINUTES:
                    conn.execute(sql.dialect(statement, "%s"), (rollup_before_minute,))
            seen = {str(node): float(last)
                    for node, last in conn.execute("SELECT node, last_seen FROM nodes")}
        return Upkeep(int(rolled), seen)

    def ping(self) -> None:
        with self._errors(), self.pool.connection(timeout=5.0) as conn:
            conn.execute("SELECT 1")

    def size_bytes(self) -> int:
        row = self.query("SELECT pg_database_size(current_database())")
        return int(row[0][0])

    def close(self) -> None:
        self.pool.close()


def _floats(values: Any) -> list[float]:
    out: list[float] = np.asarray(values, dtype=np.float64).tolist()
    return out


class _Unit:
    """One ingest transaction on one connection (see ``store/base.py``)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def hold(self, streams: Mapping[str, tuple[str, int]], devices: Sequence[tuple[str, str]]
             ) -> tuple[dict[str, StreamState], HeldDevices]:
        conn = self._conn
        names = list(streams)
        with conn.pipeline():
            got = conn.execute(_UPSERT_STREAMS, arrays((names, [streams[s][0] for s in names],
                                                        [streams[s][1] - 1 for s in names])))
            above = conn.execute(_ABOVE, arrays((names,)))
            locked = conn.execute(_LOCK_DEVICES, arrays(([n for n, _ in devices], [d for _, d in devices])))
        states = {str(stream): StreamState(str(node), int(low)) for stream, node, low in got.fetchall()}
        for stream, seq in above.fetchall():
            states[str(stream)].above.add(int(seq))
        position = {key: i for i, key in enumerate(devices)}
        n = len(devices)
        slots = np.full(n, -1, dtype=np.int64)
        state = np.full((5, n), np.nan)
        owner: list[str | None] = [None] * n
        for node, device, slot, last_ts, last_power, last_energy, stream, seen, limit in locked.fetchall():
            i = position[(node, device)]
            slots[i] = slot
            state[:, i] = (last_ts, last_power, last_energy, seen, limit)
            owner[i] = stream
        return states, HeldDevices(slots, state[0], state[1], state[2], owner, state[3], state[4])

    def create_devices(self, keys: Sequence[tuple[str, DeviceInfo]]) -> Ints:
        infos = [info for _, info in keys]
        columns = [[node for node, _ in keys], [info.id for info in infos],
                   *([getattr(info, "index" if name == "idx" else name) for info in infos] for name in _META)]
        made = {(node, device): slot for node, device, slot in
                self._conn.execute(_CREATE_DEVICES, arrays(columns)).fetchall()}
        if len(made) != len(keys):
            # another replica made one of these devices meanwhile (two agents' first batches at
            # once): its state is not what this transaction read; the writer tries again
            raise psycopg.errors.SerializationFailure("a new device was made by another transaction")
        return np.array([made[(node, info.id)] for node, info in keys], dtype=np.int64)

    def holders(self, infos: Sequence[HolderInfo]) -> list[tuple[int, str]]:
        if not infos:
            return []
        got = self._conn.execute(_UPSERT_HOLDERS, arrays((
            [h.site for h in infos], [h.cluster for h in infos], [h.node for h in infos],
            [h.owner for h in infos], [h.start for h in infos], [h.team for h in infos],
            [h.ended for h in infos], [h.devices for h in infos]))).fetchall()
        found = {(str(node), str(owner), float(start)): (int(ident), str(team))
                 for node, owner, start, ident, team in got}
        return [found[(h.node, h.owner, h.start)] for h in infos]

    def add_minutes(self, rows: Sequence[MinuteRow]) -> list[tuple[str, int, int, float, str]]:
        if not rows:
            return []
        conn = self._conn
        columns = [list(c) for c in zip(*rows, strict=True)]
        conn.execute(_ADD_HOLDER_MINUTES, arrays(columns))
        keys = sorted({(node, minute) for node, minute, _, _ in rows})
        return [(str(node), int(minute), int(holder), float(energy), str(team))
                for node, minute, holder, energy, team in
                conn.execute(_MINUTE_ROWS, arrays(([n for n, _ in keys], [m for _, m in keys]))).fetchall()]
    def _add_minutes(self, statement: str, rows: Sequence[Row]) -> list[Row]:
        if not rows:
            return []
        columns = [list(c) for c in zip(*rows, strict=True)]
        got = {(str(r[0]), int(r[1])): tuple(r[2:])
               for r in self._conn.execute(statement, arrays(columns)).fetchall()}
        return [got[(str(r[0]), int(r[1]))] for r in rows]

    def add_node_minutes(self, rows: Sequence[Row]) -> list[Row]:
        return self._add_minutes(_ADD_NODE_MINUTES, rows)

    def add_site_minutes(self, rows: Sequence[Row]) -> list[Row]:
        return self._add_minutes(_ADD_SITE_MINUTES, rows)

    def hold_outdoor(self, writes: Sequence[str], reads: Sequence[str]) -> None:
        keys = {outdoor_lock_key(device): True for device in writes}
        for device in reads:
            keys.setdefault(outdoor_lock_key(device), False)
        conn = self._conn
        with conn.pipeline():
            for key, exclusive in sorted(keys.items()):  # one order: no two groups wait on each other
                conn.execute(_LOCK_OUTDOOR if exclusive else _SHARE_OUTDOOR, (OUTDOOR_LOCKS, key))

    def outdoor_history(self, asks: Sequence[tuple[str, float]]) -> dict[str, list[tuple[float, float]]]:
        found: dict[str, list[tuple[float, float]]] = {}
        if not asks:
            return found
        pairs = sorted(set(asks))
        got = self._conn.execute(_OUTDOOR_HISTORY, arrays(([d for d, _ in pairs], [t for _, t in pairs])))
        for device, ts, temp in got.fetchall():
            found.setdefault(str(device), []).append((float(ts), float(temp)))
        return found

    def booked_site_minutes(self, spans: Sequence[tuple[str, int, int]]) -> list[tuple[str, int]]:
        if not spans:
            return []
        got = self._conn.execute(_BOOKED_SITE_MINUTES, arrays([list(c) for c in zip(*spans, strict=True)]))
        return [(str(site), int(minute)) for site, minute in got.fetchall()]

    def sensors(self, devices: Sequence[str]) -> dict[str, tuple[float, float]]:
        found: dict[str, tuple[float, float]] = {}
        for device, ts, temp in self._conn.execute(_SENSORS, arrays((list(devices),))).fetchall():
            if str(device) not in found or float(ts) > found[str(device)][0]:
                found[str(device)] = (float(ts), float(temp))
        return found

    def unshared(self, limit: int) -> list[tuple[str, int, float]]:
        return [(str(site), int(minute), float(energy)) for site, minute, energy in
                self._conn.execute(_UNSHARED, (limit,)).fetchall()]

    def holder_shares(self, keys: Sequence[tuple[str, int]]) -> list[ShareRow]:
        if not keys:
            return []
        got = self._conn.execute(_HOLDER_SHARES, arrays(([s for s, _ in keys], [m for _, m in keys])))
        return [(str(site), int(minute), int(holder), float(it_j), float(cooling_j), str(team), str(node))
                for site, minute, holder, it_j, cooling_j, team, node in got.fetchall()]

    def write(self, ch: Changes) -> None:
        """Everything the group changes, in lock order, in one pipeline (one round trip)."""
        conn = self._conn
        with conn.pipeline():
            if ch.streams:
                conn.execute(_ADVANCE_STREAMS, arrays(([s for s, _, _ in ch.streams],
                                                       [low for _, _, low in ch.streams])))
            if ch.seqs_added:
                added = ch.seqs_added
                conn.execute(_ADD_SEQS, arrays(([s for s, _ in added], [q for _, q in added])))
            if ch.seqs_dropped:
                dropped = ch.seqs_dropped
                conn.execute(_DROP_SEQS, arrays(([s for s, _ in dropped], [q for _, q in dropped])))
            if ch.devices is not None:
                conn.execute(_UPDATE_DEVICES, arrays(self._device_columns(ch)))
            for keeping, statement in ((False, _UPSERT_NODES), (True, _UPSERT_NODES_KEEPING_LABELS)):
                nodes = [c for c in ch.nodes if c.keep_labels is keeping]
                if nodes:
                    conn.execute(statement, arrays((
                        [c.node for c in nodes], [c.site for c in nodes], [c.cluster for c in nodes],
                        [json.dumps(dict(c.labels), sort_keys=True) for c in nodes],
                        [c.seen for c in nodes], [c.readings for c in nodes])))
            if ch.conflicts:
                refused = ch.conflicts
                conn.execute(_ADD_CONFLICTS, arrays(([c.node for c in refused], [c.refused for c in refused],
                                                     [c.at for c in refused])))
            if ch.usage:
                conn.execute(_ADD_USAGE, arrays([list(column) for column in zip(*ch.usage, strict=True)]))
            if ch.node_minutes:
                conn.execute(_SET_NODE_MINUTES, arrays([list(c) for c in zip(*ch.node_minutes, strict=True)]))
            if ch.site_minutes:
                conn.execute(_SET_SITE_MINUTES, arrays([list(c) for c in zip(*ch.site_minutes, strict=True)]))
            if ch.outdoor_readings:
                conn.execute(_ADD_OUTDOOR_READINGS, arrays([list(c) for c in
                                                            zip(*ch.outdoor_readings, strict=True)]))
            if ch.node_usage:
                conn.execute(_ADD_NODE_USAGE, arrays([list(c) for c in zip(*ch.node_usage, strict=True)]))
            if ch.node_totals:
                conn.execute(_ADD_NODE_TOTALS, arrays([list(c) for c in zip(*ch.node_totals, strict=True)]))
            if ch.quarters:
                conn.execute(_ADD_QUARTERS, arrays([list(c) for c in zip(*ch.quarters, strict=True)]))
            if ch.plan_days:  # before the site totals: a day's rows are shared by the site's nodes
                conn.execute(_ADD_PLAN, arrays([list(c) for c in zip(*ch.plan_days, strict=True)]))
            if ch.holder_months:
                conn.execute(_ADD_HOLDER_MONTHS, arrays([list(c) for c in
                                                         zip(*ch.holder_months, strict=True)]))
            if ch.team_quarters:
                conn.execute(_ADD_TEAM_QUARTERS, arrays([list(c) for c in
                                                         zip(*ch.team_quarters, strict=True)]))
            if ch.site_holder_minutes:  # guarded by the site-minutes' rows, locked already
                conn.execute(_ADD_SITE_HOLDER_MINUTES, arrays([list(c) for c in zip(
                    *ch.site_holder_minutes, strict=True)]))
            if ch.shared:
                conn.execute(_DROP_UNSHARED, arrays([list(c) for c in zip(*ch.shared, strict=True)]))
            if ch.unshared:  # sorted and distinct (Chargeback.book)
                conn.execute(_MARK_UNSHARED, arrays([list(c) for c in zip(*ch.unshared, strict=True)]))
            team_totals = team_total_rows(ch.team_months)
            if team_totals:  # shared by the site's transactions too: just before the site's totals
                conn.execute(_ADD_TEAM_TOTALS, arrays([list(c) for c in zip(*team_totals, strict=True)]))
            if ch.site_months:  # the rows every transaction shares: last, held until the commit
                padded = [(*row, *([0.0] * (10 - len(row)))) for row in ch.site_months]
                columns = list(zip(*padded, strict=True))
                conn.execute(_ADD_SITE_TOTALS, arrays([list(columns[0]), *(list(c) for c in columns[3:])]))

    @staticmethod
    def _device_columns(ch: Changes) -> list[Any]:
        d = ch.devices
        assert d is not None
        n = len(d.slots)
        position = {slot: i for i, slot in enumerate(d.slots.tolist())}
        fresh = np.zeros(n, dtype=bool)
        state = np.full((len(_STATE), n), np.nan)
        events: list[int | None] = [None] * n
        where = [position[slot] for slot in d.updated.tolist()]
        fresh[where] = True
        for row, name in enumerate(("ts", "power_w", "energy_j", *LATEST)):
            state[row, where] = d.newest[name]
        bits = np.asarray(d.newest["clock_events"], dtype=np.uint64).view(np.int64).tolist()
        known_bits = np.asarray(d.newest["has_clock_events"]).tolist()
        for i, value, known in zip(where, bits, known_bits, strict=True):
            events[i] = int(value) if known else None
        meta = [[getattr(info, "index" if name == "idx" else name) for info in d.infos] for name in _META]
        keep = d.keep_info.tolist() if d.keep_info is not None else [False] * n
        merge = d.merge_info.tolist() if d.merge_info is not None else [False] * n
        return [d.slots.tolist(), *meta, list(d.owner), _floats(d.owner_seen), _floats(d.energy_j),
                _floats(d.unmeasured_s), d.resets.tolist(), d.anomalies.tolist(), d.late.tolist(),
                fresh.tolist(), *(row.tolist() for row in state), events, keep, merge]

