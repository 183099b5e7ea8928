"""The ledger's durable store: SQLite (stdlib) in WAL mode, schema versioned by migrations.

Tables (all money and energy in base units; see docs/accounting.md):
- ``streams``/``stream_seqs``: dedupe state. A stream's committed seqs are every seq up to
  ``low_seq`` plus the few above it in ``stream_seqs`` (normally none: agents send in order).
- ``nodes``: labels, site, cluster, last seen, readings committed.
- ``devices``: one row per (node, device id), numbered by ``slot``: metadata, the last
  committed reading (the accounting state an interval continues from) and all-time counters.
- ``usage``: the ledger proper, per (month, device, site, cluster): IT and cooling energy,
  their cost, carbon and unmeasured time.
- ``quarters``: per (site, cluster, local quarter-hour): IT and facility energy and cost, for
  demand charges and the trailing-24 h cost rate of forecasts.
- ``site_totals``: per site, the all-time sums shown as /metrics counters (schema 2).
- ``hours`` and ``month_peaks`` (schema 3): where the roll-up puts old quarter-hours — summed
  per UTC hour, and the month's highest quarter-hour (the demand charge's peak) kept first.
- schema 4: ``devices.clock_events`` exact (a BIGINT of the bitmask's two's complement, no
  longer a DOUBLE), and a device's ``role``, ``parent`` and ``share``.

Every write of one ingest happens in ONE transaction with ``synchronous=FULL``: when the agent
hears 200, the batch, its seq and its money are on disk together. The SQL is kept to what
PostgreSQL also speaks (``INSERT ... ON CONFLICT ... DO UPDATE``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

Row = tuple[Any, ...]

#: each migration takes the schema from version i to i + 1
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE streams (
             stream TEXT PRIMARY KEY,
             node TEXT NOT NULL,
             low_seq INTEGER NOT NULL)""",
        """CREATE TABLE stream_seqs (
             stream TEXT NOT NULL,
             seq INTEGER NOT NULL,
             PRIMARY KEY (stream, seq))""",
        """CREATE TABLE nodes (
             node TEXT PRIMARY KEY,
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             labels TEXT NOT NULL,
             last_seen DOUBLE PRECISION NOT NULL,
             readings BIGINT NOT NULL)""",
        """CREATE TABLE devices (
             slot INTEGER PRIMARY KEY,
             node TEXT NOT NULL,
             device TEXT NOT NULL,
             kind TEXT NOT NULL,
             idx INTEGER NOT NULL,
             model TEXT,
             power_limit_w DOUBLE PRECISION,
             slowdown_c DOUBLE PRECISION,
             shutdown_c DOUBLE PRECISION,
             last_ts DOUBLE PRECISION,
             last_power_w DOUBLE PRECISION,
             last_energy_j DOUBLE PRECISION,
             temp_c DOUBLE PRECISION,
             mem_temp_c DOUBLE PRECISION,
             util DOUBLE PRECISION,
             mem_util DOUBLE PRECISION,
             sm_clock_hz DOUBLE PRECISION,
             clock_events DOUBLE PRECISION,
             mem_used_bytes DOUBLE PRECISION,
             energy_j DOUBLE PRECISION NOT NULL,
             unmeasured_s DOUBLE PRECISION NOT NULL,
             resets BIGINT NOT NULL,
             anomalies BIGINT NOT NULL,
             late BIGINT NOT NULL,
             UNIQUE (node, device))""",
        """CREATE TABLE usage (
             month TEXT NOT NULL,
             slot INTEGER NOT NULL,
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             cooling_j DOUBLE PRECISION NOT NULL,
             it_cost DOUBLE PRECISION NOT NULL,
             cooling_cost DOUBLE PRECISION NOT NULL,
             carbon_g DOUBLE PRECISION NOT NULL,
             unmeasured_s DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (month, slot, site, cluster))""",
        """CREATE TABLE quarters (
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             start_minute BIGINT NOT NULL,
             month TEXT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             cost DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, cluster, start_minute))""",
        "CREATE INDEX quarters_by_month ON quarters (site, month)",
    ),
    (
        # the all-time sums behind /metrics counters, stored as the exact values shown: a sum of
        # usage rows re-added at start could come out a rounding error lower, and a counter
        # that goes down is a reset to Prometheus
        """CREATE TABLE site_totals (
             site TEXT PRIMARY KEY,
             cooling_j DOUBLE PRECISION NOT NULL,
             it_cost DOUBLE PRECISION NOT NULL,
             cooling_cost DOUBLE PRECISION NOT NULL,
             carbon_g DOUBLE PRECISION NOT NULL)""",
        """INSERT INTO site_totals (site, cooling_j, it_cost, cooling_cost, carbon_g)
             SELECT site, SUM(cooling_j), SUM(it_cost), SUM(cooling_cost), SUM(carbon_g)
             FROM usage GROUP BY site""",
    ),
    (
        # the roll-up of old quarter-hours (rollup_after_days): their sums per UTC hour (every
        # quarter-hour of a site's clock lies in one UTC hour: offsets are multiples of 15 min),
        # and, kept before they go, each month's highest site quarter-hour
        """CREATE TABLE hours (
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             month TEXT NOT NULL,
             start_minute BIGINT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             cost DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, cluster, month, start_minute))""",
        """CREATE TABLE month_peaks (
             site TEXT NOT NULL,
             month TEXT NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, month))""",
    ),
    (
        # clock_events is NVML's unsigned 64-bit bitmask: kept exactly as a BIGINT holding its
        # two's complement (a DOUBLE rounds bits above 2^53, and 2^70 made /v1/nodes fail). A
        # stored value that no bitmask can be (negative, 2^64 or more) is forgotten.
        "ALTER TABLE devices ADD COLUMN clock_events_bits BIGINT",
        """UPDATE devices SET clock_events_bits = CASE
             WHEN clock_events >= 0 AND clock_events < 9223372036854775808.0
               THEN CAST(clock_events AS BIGINT)
             WHEN clock_events >= 9223372036854775808.0 AND clock_events < 18446744073709551616.0
               THEN CAST(clock_events - 18446744073709551616.0 AS BIGINT)
             ELSE NULL END""",
        "ALTER TABLE devices DROP COLUMN clock_events",
        "ALTER TABLE devices RENAME COLUMN clock_events_bits TO clock_events",
        # the device kinds' extra fields: a meter's or sensor's role, a partition's parent and share
        "ALTER TABLE devices ADD COLUMN role TEXT",
        "ALTER TABLE devices ADD COLUMN parent TEXT",
        "ALTER TABLE devices ADD COLUMN share DOUBLE PRECISION",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

DEVICE_COLUMNS = ("slot", "node", "device", "kind", "idx", "model", "power_limit_w", "slowdown_c",
                  "shutdown_c", "last_ts", "last_power_w", "last_energy_j", "temp_c", "mem_temp_c",
                  "util", "mem_util", "sm_clock_hz", "mem_used_bytes", "energy_j",
                  "unmeasured_s", "resets", "anomalies", "late", "clock_events", "role", "parent",
                  "share")


class StoreError(RuntimeError):
    """The store cannot be opened or is of a newer schema than this collector knows."""


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


_UPSERT_STREAM = _upsert("streams", ("stream", "node", "low_seq"), ("stream",), add=False)
_UPSERT_NODE = _upsert("nodes", ("node", "site", "cluster", "labels", "last_seen", "readings"),
                       ("node",), add=False)
_UPSERT_DEVICE = _upsert("devices", DEVICE_COLUMNS, ("slot",), add=False)
_UPSERT_SITE_TOTALS = _upsert("site_totals", ("site", "cooling_j", "it_cost", "cooling_cost", "carbon_g"),
                              ("site",), add=False)
_ADD_USAGE = _upsert("usage", ("month", "slot", "site", "cluster", "it_j", "cooling_j", "it_cost",
                               "cooling_cost", "carbon_g", "unmeasured_s"),
                     ("month", "slot", "site", "cluster"), add=True)
_ADD_QUARTER = (
    "INSERT INTO quarters (site, cluster, start_minute, month, it_j, facility_j, cost) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, cluster, start_minute) DO UPDATE SET "
    "it_j = quarters.it_j + excluded.it_j, facility_j = quarters.facility_j + excluded.facility_j, "
    "cost = quarters.cost + excluded.cost")

# the month's highest site quarter-hour (all clusters) among those about to be rolled up, kept
# if higher than the one kept before
_KEEP_PEAKS = (
    "INSERT INTO month_peaks (site, month, facility_j) "
    "SELECT site, month, MAX(facility_j) FROM (SELECT site, month, SUM(facility_j) AS facility_j "
    "FROM quarters WHERE start_minute < ? GROUP BY site, month, start_minute) AS site_quarters "
    "GROUP BY site, month "
    "ON CONFLICT (site, month) DO UPDATE SET "
    "facility_j = CASE WHEN excluded.facility_j > month_peaks.facility_j "
    "THEN excluded.facility_j ELSE month_peaks.facility_j END")
_ADD_HOURS = (
    "INSERT INTO hours (site, cluster, month, start_minute, it_j, facility_j, cost) "
    "SELECT site, cluster, month, (start_minute / 60) * 60, SUM(it_j), SUM(facility_j), SUM(cost) "
    "FROM quarters WHERE start_minute < ? GROUP BY site, cluster, month, start_minute / 60 "
    "ON CONFLICT (site, cluster, month, start_minute) DO UPDATE SET "
    "it_j = hours.it_j + excluded.it_j, facility_j = hours.facility_j + excluded.facility_j, "
    "cost = hours.cost + excluded.cost")


class Store:
    """One SQLite connection, used under the ledger's lock (so from any one thread at a time)."""

    def __init__(self, db_url: str) -> None:
        path = sqlite_path(db_url)
        if path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise StoreError(f"cannot open the ledger {path}: folder {parent} does not exist")
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the ledger {path}: {exc}") from None

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(f"the ledger has schema version {version}; this collector knows "
                             f"up to {SCHEMA_VERSION} (upgrade wattledger)")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target - 1]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, params).fetchall()

    def commit_ingest(self, *, streams: Iterable[Row], seqs_added: Iterable[Row],
                      seqs_dropped: Iterable[Row], nodes: Iterable[Row], devices: Iterable[Row],
                      usage: Iterable[Row], quarters: Iterable[Row], site_totals: Iterable[Row]) -> None:
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
            db.executemany(_ADD_QUARTER, quarters)
            db.executemany(_UPSERT_SITE_TOTALS, site_totals)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                db.execute("ROLLBACK")
            raise

    def roll_up(self, before_minute: int) -> int:
        """Roll quarter-hours that start before ``before_minute`` (a UTC hour) up into ``hours``,
        keeping each month's highest site quarter-hour in ``month_peaks`` first; one transaction.
        Returns the quarter rows rolled up."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_KEEP_PEAKS, (before_minute,))
            db.execute(_ADD_HOURS, (before_minute,))
            rolled = db.execute("DELETE FROM quarters WHERE start_minute < ?", (before_minute,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return int(rolled)

    def size_bytes(self) -> int:
        """Bytes the database takes (pages in use, WAL folded in first)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * int(self._db.execute("PRAGMA page_size").fetchone()[0])

    def close(self) -> None:
        self._db.close()
