"""The agent's durable spool: every sample on disk before ``record()`` returns, cut into
ready-to-send batches of one stream with seq 1, 2, 3… (issue 4, docs/delivery.md).

One SQLite file, ``<spool dir>/spool.db``, in WAL mode with ``synchronous=FULL`` so that a
committed transaction survives a kill -9 or a power cut:

- ``meta``: the stream id (uuid4) of this spool, the next seq, the last successful delivery.
- ``samples``: the open batch, one row per sample (compact JSON), appended one transaction
  per sample, so a crash loses at most the sample being written.
- ``batches``: cut batches, each a gzip'd JSON body in the wire format, in the order they
  are to be sent (``id``). A batch leaves this table only when the collector acknowledged
  it, when it is moved to ``dead_letters``, or when the spool is full (dropped, counted).
- ``dead_letters``: batches the collector refused as bad (a 4xx other than auth), kept with
  the answer for an operator to inspect.
- ``allocations``: who held which device when (the AllocationTracker's output), written in the
  sample's transaction; each cut batch carries those that overlap its devices' spans, and an
  ended one is deleted once no later batch can need it.
- ``device_cuts``: each device's last reading cut into a batch (where its next span starts).

Schema version 1 (``PRAGMA user_version``) names devices by position: opening an older spool
rewrites its cut batches, whose ``readings.device`` held hardware indexes (unique in each of
them, so the rewrite is exact), before anything is sent.

Cutting turns the samples into batches and deletes them in one transaction, so a reading
is either in the open batch or in exactly one batch, never both, whatever the crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from wattledger import contract
from wattledger.agent.allocations import Allocation, for_batch, still_needed
from wattledger.agent.reading import DeviceReading
from wattledger.contract import DEVICE_KINDS, Device

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.db"
LOCK_FILE = "spool.lock"

#: the wire's value columns (contract.READING_COLUMNS), in the order a sample row stores them
VALUE_COLUMNS = tuple(c.name for c in contract.VALUE_COLUMNS)
#: (wire column, DeviceReading attribute it is written from), in that order
_ENCODED = tuple((c.name, c.attribute) for c in contract.VALUE_COLUMNS)
_REQUIRED = frozenset(c.name for c in contract.VALUE_COLUMNS if c.required)
_NON_NEGATIVE = frozenset(c.name for c in contract.VALUE_COLUMNS if c.non_negative)
_RATIOS = frozenset(c.name for c in contract.VALUE_COLUMNS if c.ratio)
_MAXIMA = {c.name: c.maximum for c in contract.VALUE_COLUMNS if c.maximum is not None}
_UINT64 = frozenset(c.name for c in contract.VALUE_COLUMNS if c.type == "uint64")

# SQLite primary result codes that mean "this file is damaged", as opposed to busy, locked,
# read-only or out of disk (which must never make the agent throw a spool away).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, readings INTEGER NOT NULL,
                                    data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL,
                                    readings INTEGER NOT NULL, bytes INTEGER NOT NULL,
                                    first_ts REAL NOT NULL, last_ts REAL NOT NULL, body BLOB NOT NULL,
                                    UNIQUE (stream, seq));
CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL,
                                         readings INTEGER NOT NULL, bytes INTEGER NOT NULL,
                                         status INTEGER NOT NULL, reason TEXT NOT NULL,
                                         at REAL NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS allocations (source TEXT NOT NULL, key TEXT NOT NULL, start REAL NOT NULL,
                                        end_ts REAL, devices TEXT NOT NULL, owner TEXT NOT NULL,
                                        weight REAL NOT NULL, PRIMARY KEY (source, key, start));
CREATE TABLE IF NOT EXISTS device_cuts (device TEXT PRIMARY KEY, last_ts REAL NOT NULL);
"""
#: what ``PRAGMA user_version`` says of a spool: 1 = batches name devices by position
SPOOL_VERSION = 1
_ALLOCATION_COLUMNS = "source, key, start, end_ts, devices, owner, weight"
_UPSERT_ALLOCATION = (f"INSERT INTO allocations ({_ALLOCATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (source, key, start) DO UPDATE SET end_ts = excluded.end_ts, "
                      "devices = excluded.devices, owner = excluded.owner, weight = excluded.weight")
_UPSERT_CUT = ("INSERT INTO device_cuts (device, last_ts) VALUES (?, ?) "
               "ON CONFLICT (device) DO UPDATE SET last_ts = excluded.last_ts")


class SpoolError(RuntimeError):
    """The spool cannot be used at all (locked by another agent, unwritable directory)."""


class SpoolCorrupt(sqlite3.DatabaseError):
    """SQLite opened the file but its integrity check failed."""


def is_corruption(exc: BaseException) -> bool:
    if isinstance(exc, SpoolCorrupt):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None and code & 0xFF in (
        _SQLITE_CORRUPT, _SQLITE_NOTADB)


@dataclass(frozen=True)
class SpooledBatch:
    stream: str
    seq: int
    readings: int
    body: bytes  # gzip'd JSON, exactly what is POSTed


@dataclass(frozen=True)
class SpoolCounts:
    batches: int
    readings: int
    bytes: int  # bodies of waiting batches + dead letters + the open samples
    dead_letters: int
    open_readings: int


# ---------------------------------------------------------------------------- sample rows


def _clean(name: str, value: float | int | None) -> float | int | None:
    """A value the wire accepts, or None: a source's NaN or out-of-range value must not make
    the collector refuse (and dead-letter) a whole batch of good readings."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if name in _NON_NEGATIVE and value < 0:
        return None
    if name in _RATIOS and not 0 <= value <= 1:
        return None
    if name in _MAXIMA and value > _MAXIMA[name]:
        return None
    if name in _UINT64 and (isinstance(value, bool) or not isinstance(value, int)
                            or value > contract.MAX_CLOCK_EVENTS):
        return None
    return value


class DeviceDicts:
    """Device -> its wire dict, memoised: the same few devices come every second."""

    def __init__(self) -> None:
        self._cache: dict[Device, dict[str, Any]] = {}

    def __call__(self, device: Device) -> dict[str, Any]:
        found = self._cache.get(device)
        if found is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            found = self._cache[device] = device.wire_dict()
        return found


def encode_sample(readings: Sequence[DeviceReading], device_dict: Callable[[Device], dict[str, Any]]
                  ) -> bytes:
    """One sample as a compact row: ``{"dev": [device dicts], "rows": [[dev#, ts, values…]]}``."""
    devices: list[dict[str, Any]] = []
    position: dict[str, int] = {}
    rows: list[list[Any]] = []
    for r in readings:
        pos = position.get(r.device.id)
        if pos is None:
            pos = position[r.device.id] = len(devices)
            devices.append(device_dict(r.device))
        rows.append([pos, r.ts, *(_clean(name, getattr(r, attribute)) for name, attribute in _ENCODED)])
    return orjson.dumps({"dev": devices, "rows": rows})


# ---------------------------------------------------------------------------- batch bodies


def device_order(dev: Mapping[str, Any]) -> tuple[int, int, str]:
    """Where a device goes in a batch's ``devices``: GPUs first, then by kind, index and id, so
    that a position equals the device's index wherever it can (every batch of a GPU-only node)."""
    kind = dev.get("kind")
    rank = DEVICE_KINDS.index(kind) if kind in DEVICE_KINDS else len(DEVICE_KINDS)
    return rank, int(dev.get("index", 0)), str(dev.get("id"))


class _BatchBuilder:
    """Columns of one batch being built; refuses a reading that would make it invalid.

    Readings name their device by a local number (the order devices first came); the body
    sorts the devices (:func:`device_order`) and writes each reading's position among them."""

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, Any]] = {}  # id -> latest wire dict
        self.number: dict[str, int] = {}  # id -> local number
        self.first_ts: dict[str, float] = {}
        self.last_ts: dict[str, float] = {}
        self.device: list[int] = []  # local numbers, one per reading
        self.ts: list[float] = []
        self.columns: dict[str, list[Any]] = {c: [] for c in VALUE_COLUMNS}
        self.raw_bytes = 0

    def __len__(self) -> int:
        return len(self.ts)

    def fits(self, dev: dict[str, Any], ts: float) -> bool:
        """False when this reading must start a new batch: its time does not move forward for
        its device (a clock step back), which would make the collector refuse the whole batch.
        Two kinds sharing an index is fine (positions, not indexes, name devices), and so is a
        device whose description changed: the batch carries its latest."""
        last = self.last_ts.get(dev["id"])
        return last is None or ts > last

    def add(self, dev: dict[str, Any], row: list[Any], size: int) -> None:
        dev_id = dev["id"]
        number = self.number.get(dev_id)
        if number is None:
            number = self.number[dev_id] = len(self.number)
            self.first_ts[dev_id] = row[1]
        self.devices[dev_id] = dev
        self.last_ts[dev_id] = row[1]
        self.device.append(number)
        self.ts.append(row[1])
        for name, value in zip(VALUE_COLUMNS, row[2:], strict=True):
            self.columns[name].append(value)
        self.raw_bytes += size

    def ordered(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The batch's ``devices`` in wire order, and each device id's position there."""
        devices = sorted(self.devices.values(), key=device_order)
        return devices, {d["id"]: i for i, d in enumerate(devices)}

    def body(self, node: str, stream: str, seq: int, labels: Mapping[str, str],
             allocations: Sequence[Mapping[str, Any]] = ()) -> bytes:
        devices, position = self.ordered()
        at = [0] * len(self.number)
        for dev_id, number in self.number.items():
            at[number] = position[dev_id]
        readings: dict[str, list[Any]] = {"device": [at[n] for n in self.device], "ts": self.ts}
        for name in VALUE_COLUMNS:
            column = self.columns[name]
            if name in _REQUIRED or any(v is not None for v in column):  # an all-null optional: left out
                readings[name] = column
        doc: dict[str, Any] = {"node": node, "stream": stream, "seq": seq, "labels": dict(labels),
                               "devices": devices, "readings": readings}
        if allocations:
            doc["allocations"] = list(allocations)
        return gzip.compress(orjson.dumps(doc), compresslevel=6, mtime=0)


def build_batches(samples: Sequence[bytes], max_readings: int, max_raw_bytes: int) -> list[_BatchBuilder]:
    """Split the open samples into valid batches, each within the size limits."""
    batches: list[_BatchBuilder] = []
    current = _BatchBuilder()
    for data in samples:
        try:
            sample = orjson.loads(data)
            devices, rows = sample["dev"], sample["rows"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("spool: skipped an unreadable sample row (%d bytes)", len(data))
            continue
        size = max(1, len(data) // max(1, len(rows)))
        for row in rows:
            dev = devices[row[0]]
            if len(current) and (not current.fits(dev, row[1]) or len(current) >= max_readings
                                 or current.raw_bytes + size > max_raw_bytes):
                batches.append(current)
                current = _BatchBuilder()
            current.add(dev, row, size)
    if len(current):
        batches.append(current)
    return batches


# ---------------------------------------------------------------------------- the spool


def allocation_row(a: Allocation) -> tuple[Any, ...]:
    return (a.source, a.key, a.start, a.end, orjson.dumps(list(a.device_ids)).decode(),
            orjson.dumps(dict(a.owner), option=orjson.OPT_SORT_KEYS).decode(), a.weight)


def allocation_of(row: Sequence[Any]) -> Allocation:
    source, key, start, end, devices, owner, weight = row
    return Allocation(source, key, tuple(orjson.loads(devices)), orjson.loads(owner), float(weight),
                      float(start), None if end is None else float(end))


def positions_body(body: bytes) -> bytes | None:
    """A batch cut by a spool before version 1 (``readings.device`` = each device's index, unique
    in the batch) with positions instead; None when it reads the same either way (its indexes
    were 0, 1, 2… in order: every batch of a GPU-only node) or cannot be read."""
    try:
        doc = orjson.loads(gzip.decompress(body))
        index_at = {int(d["index"]): i for i, d in enumerate(doc["devices"])}
        device = doc["readings"]["device"]
        moved = [index_at.get(v, v) for v in device]  # an unknown index stays (and stays refused)
    except (OSError, EOFError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if moved == device or len(index_at) != len(doc["devices"]):
        return None
    doc["readings"]["device"] = moved
    return gzip.compress(orjson.dumps(doc), compresslevel=6, mtime=0)


class Spool:
    """The SQLite spool of one agent. Thread-safe: the sampler appends, the shipper reads,
    acknowledges and dead-letters, each under one lock (every operation is short)."""

    def __init__(
        self,
        directory: Path,
        *,
        node: str,
        labels: Mapping[str, str],
        max_bytes: int = 1 << 30,
        max_batch_readings: int = 20_000,
        max_batch_bytes: int = 4 << 20,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILE
        self.node = node
        self.labels = dict(labels)
        self.max_bytes = max_bytes
        self.max_batch_readings = max_batch_readings
        # a single open batch never takes more than a quarter of the spool
        self.max_batch_bytes = max(1, min(max_batch_bytes, max_bytes // 4))
        self._wall = wall_clock
        self._lock = threading.RLock()
        self._device_dict = DeviceDicts()
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self.stream = ""
        self._next_seq = 1
        #: (stream, seq) of the batch handed to the shipper: set by next_batch() under the lock,
        #: cleared by ack(), dead_letter() and release(); the trim never drops it (issue 16)
        self.in_flight: tuple[str, int] | None = None
        # running totals, kept in memory so a scrape never touches the database
        self._batches = self._readings = self._bytes = self._dead = 0
        self._open_readings = self._open_bytes = 0
        self.dropped_readings = 0  # since this process started (a Prometheus counter)
        self.dead_lettered_batches = 0
        self.corruptions = 0
        self.last_success: float | None = None

    # ------------------------------------------------------------------ open / close

    def open(self) -> None:
        """Open (or create) the spool; move a damaged file aside and start a new stream."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {self.directory}: {exc.strerror or exc}") from None
        with self._lock:
            try:
                self._connect(check=True)
            except sqlite3.DatabaseError as exc:  # SpoolCorrupt included
                if not is_corruption(exc):
                    self._close_conn()
                    raise SpoolError(f"cannot open spool {self.path}: {exc}") from None
                try:
                    self._rotate(str(exc))
                except (sqlite3.Error, OSError) as again:
                    self._close_conn()
                    raise SpoolError(f"spool {self.path} is damaged and cannot be replaced: {again}"
                                     ) from None
        if self._open_readings:
            log.info("spool: %d readings of an interrupted batch found; cutting them now",
                     self._open_readings)
            self.cut()

    def _take_lock(self) -> None:
        """One agent per spool: two writers of one stream would reuse seq numbers, and the
        collector would then drop the second writer's batches as duplicates."""
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"spool directory {self.directory} is in use by another agent") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _connect(self, check: bool) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._conn = conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("spool: SQLite refused WAL mode (%s); using %s", self.path, mode)
        conn.execute("PRAGMA synchronous=FULL")
        if check:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise SpoolCorrupt(f"integrity check failed: {result}")
        conn.executescript(_SCHEMA)
        self._upgrade(conn)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "stream" not in meta:
            meta = {"stream": str(uuid.uuid4()), "next_seq": "1"}
            with self._tx() as c:
                c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
            log.info("spool: new stream %s in %s", meta["stream"], self.path)
        self.stream = meta["stream"]
        self._next_seq = int(meta["next_seq"])
        self.last_success = float(meta["last_success"]) if "last_success" in meta else None
        self._recount()

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Bring a spool of an older agent to SPOOL_VERSION without losing a batch."""
        if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= SPOOL_VERSION:
            return
        rewritten = 0
        with self._tx() as c:
            for row_id, body in c.execute("SELECT id, body FROM batches").fetchall():
                new = positions_body(bytes(body))
                if new is not None:
                    c.execute("UPDATE batches SET body = ?, bytes = ? WHERE id = ?", (new, len(new), row_id))
                    rewritten += 1
            c.execute(f"PRAGMA user_version = {SPOOL_VERSION}")
        if rewritten:
            log.info("spool: %d batches cut by an older agent now name their devices by position",
                     rewritten)

    def _recount(self) -> None:
        conn = self._db()
        self._batches, self._readings, batch_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(readings), 0), coalesce(sum(bytes), 0) FROM batches").fetchone()
        self._dead, dead_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM dead_letters").fetchone()
        self._open_readings, self._open_bytes = conn.execute(
            "SELECT coalesce(sum(readings), 0), coalesce(sum(length(data)), 0) FROM samples").fetchone()
        self._bytes = batch_bytes + dead_bytes + self._open_bytes

    def _rotate(self, reason: str) -> None:
        """Move a damaged spool aside (``spool.db.corrupt-<ts>``), salvage what can still be
        read from it, and start a new stream."""
        self._close_conn()
        self.corruptions += 1
        aside = self.path.with_name(f"{SPOOL_FILE}.corrupt-{int(self._wall())}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{SPOOL_FILE}.corrupt-{int(self._wall())}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{aside}{suffix}")
        log.error("spool: %s is damaged (%s); moved it to %s and started a new stream",
                  self.path, reason, aside.name)
        self._connect(check=False)
        self._salvage(aside)

    def _salvage(self, aside: Path) -> None:
        """Copy the batches (under their own stream and seq, so the collector still dedupes
        them) and open samples that can still be read from a damaged spool."""
        batches = samples = 0
        try:
            old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            with self._tx() as c:
                version = 0
                with contextlib.suppress(sqlite3.Error):
                    version = int(old.execute("PRAGMA user_version").fetchone()[0])
                with contextlib.suppress(sqlite3.Error):
                    for row in old.execute("SELECT stream, seq, readings, bytes, first_ts, last_ts, body "
                                           "FROM batches ORDER BY id"):
                        new = positions_body(bytes(row[6])) if version < SPOOL_VERSION else None
                        if new is not None:
                            row = (*row[:3], len(new), *row[4:6], new)
                        c.execute("INSERT OR IGNORE INTO batches (stream, seq, readings, bytes, first_ts, "
                                  "last_ts, body) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                        batches += 1
                with contextlib.suppress(sqlite3.Error):
                    c.executemany(_UPSERT_ALLOCATION,
                                  old.execute(f"SELECT {_ALLOCATION_COLUMNS} FROM allocations").fetchall())
                    c.executemany(_UPSERT_CUT,
                                  old.execute("SELECT device, last_ts FROM device_cuts").fetchall())
                with contextlib.suppress(sqlite3.Error):
                    for row in old.execute("SELECT readings, data FROM samples ORDER BY id"):
                        c.execute("INSERT INTO samples (readings, data) VALUES (?, ?)", row)
                        samples += 1
        finally:
            old.close()
        self._recount()
        if batches or samples:
            log.warning("spool: salvaged %d batches and %d samples from %s", batches, samples, aside.name)

    def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close_conn()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolError("spool is closed")
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _guarded(self, what: str, op: Callable[[], Any]) -> Any:
        """Run ``op``; if the file turns out to be damaged, rotate it and run ``op`` again."""
        with self._lock:
            try:
                return op()
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                log.error("spool: %s failed: %s", what, exc)
                self._rotate(str(exc))
                return op()

    # ------------------------------------------------------------------ the sampler's side

    @property
    def open_readings(self) -> int:
        return self._open_readings

    def append(self, readings: Sequence[DeviceReading], allocations: Sequence[Allocation] = ()) -> bool:
        """Durably append one sample and the allocations that changed with it, in one
        transaction; True when the open batch reached a size limit."""
        if not readings and not allocations:
            return False
        data = encode_sample(readings, self._device_dict) if readings else b""
        rows = [allocation_row(a) for a in allocations]

        def op() -> bool:
            with self._tx() as c:
                if readings:
                    c.execute("INSERT INTO samples (readings, data) VALUES (?, ?)", (len(readings), data))
                if rows:
                    c.executemany(_UPSERT_ALLOCATION, rows)
            self._open_readings += len(readings)
            self._open_bytes += len(data)
            self._bytes += len(data)
            return (self._open_readings >= self.max_batch_readings
                    or self._open_bytes >= self.max_batch_bytes)

        full: bool = self._guarded("append", op)
        return full

    def cut(self) -> int:
        """Turn the open samples into batches (next seqs of this stream); returns how many."""

        def op() -> int:
            rows = self._db().execute("SELECT id, data FROM samples ORDER BY id").fetchall()
            if not rows:
                return 0
            built = build_batches([r[1] for r in rows], self.max_batch_readings, self.max_batch_bytes)
            seq = self._next_seq
            added_bytes = added_readings = 0
            allocations, cuts = self._allocations_and_cuts()
            with self._tx() as c:
                for b in built:
                    _, position = b.ordered()
                    spans = {d: (min(cuts.get(d, first), first), b.last_ts[d])
                             for d, first in b.first_ts.items()}
                    body = b.body(self.node, self.stream, seq, self.labels,
                                  for_batch(allocations, spans, position, cuts=cuts) if allocations else ())
                    cuts.update(b.last_ts)
                    c.execute("INSERT INTO batches (stream, seq, readings, bytes, first_ts, last_ts, body) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (self.stream, seq, len(b), len(body), min(b.ts), max(b.ts), body))
                    added_bytes += len(body)
                    added_readings += len(b)
                    seq += 1
                c.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(seq),))
                c.execute("DELETE FROM samples WHERE id <= ?", (rows[-1][0],))
                self._settle_allocations(c, allocations, cuts, built)
            self._next_seq = seq
            self._batches += len(built)
            self._readings += added_readings
            self._bytes += added_bytes - self._open_bytes
            self._open_readings = self._open_bytes = 0
            return len(built)

        with self._lock:
            n: int = self._guarded("cut", op)
            if self._bytes > self.max_bytes:
                self._guarded("trim", self._trim)
            return n

    def _allocations_and_cuts(self) -> tuple[list[Allocation], dict[str, float]]:
        conn = self._db()
        allocations = [allocation_of(r) for r in
                       conn.execute(f"SELECT {_ALLOCATION_COLUMNS} FROM allocations ORDER BY start")]
        cuts = {str(d): float(t) for d, t in conn.execute("SELECT device, last_ts FROM device_cuts")}
        return allocations, cuts

    @staticmethod
    def _settle_allocations(c: sqlite3.Connection, allocations: Sequence[Allocation],
                            cuts: Mapping[str, float], built: Sequence[_BatchBuilder]) -> None:
        """After a cut: where each device's next span starts, and the ended allocations that
        no later batch can need go."""
        moved = {d for b in built for d in b.last_ts}
        c.executemany(_UPSERT_CUT, [(d, cuts[d]) for d in sorted(moved)])
        if allocations and cuts:
            newest = max(cuts.values())
            c.executemany("DELETE FROM allocations WHERE source = ? AND key = ? AND start = ?",
                          [(a.source, a.key, a.start) for a in allocations
                           if not still_needed(a, cuts, newest)])

    def open_allocations(self) -> tuple[list[Allocation], float | None]:
        """The allocations the spool holds (for the tracker to take up at a start) and the time
        of the last reading cut into a batch (where open ones were last seen held)."""
        with self._lock:
            allocations, cuts = self._allocations_and_cuts()
        return allocations, max(cuts.values()) if cuts else None

    def _trim(self) -> None:
        """Over the size limit: drop dead letters first, then the oldest batches. Every
        dropped reading is counted and logged."""
        conn = self._db()
        while self._bytes > self.max_bytes:
            dead = conn.execute("SELECT id, bytes FROM dead_letters ORDER BY id LIMIT 1").fetchone()
            if dead is not None:
                with self._tx() as c:
                    c.execute("DELETE FROM dead_letters WHERE id = ?", (dead[0],))
                self._dead -= 1
                self._bytes -= dead[1]
                continue
            oldest = conn.execute("SELECT id, stream, seq, readings, bytes FROM batches ORDER BY id LIMIT 2"
                                  ).fetchall()
            victim = next((b for b in oldest if (b[1], b[2]) != self.in_flight), None)
            if victim is None:
                return
            with self._tx() as c:
                c.execute("DELETE FROM batches WHERE id = ?", (victim[0],))
            self._batches -= 1
            self._readings -= victim[3]
            self._bytes -= victim[4]
            self.dropped_readings += victim[3]
            log.error("spool full (%d bytes > limit %d): dropped batch %s/%d with %d readings",
                      self._bytes + victim[4], self.max_bytes, victim[1], victim[2], victim[3])

    # ------------------------------------------------------------------ the shipper's side

    def next_batch(self) -> SpooledBatch | None:
        """The oldest waiting batch (streams in the order they were spooled, seq order within),
        marked in flight in the same step, under the lock: from here until ``ack``,
        ``dead_letter`` or ``release`` the trim drops other batches, never this one (a batch
        dropped while being sent would be counted dropped and shipped)."""

        def op() -> SpooledBatch | None:
            row = self._db().execute(
                "SELECT stream, seq, readings, body FROM batches ORDER BY id LIMIT 1").fetchone()
            self.in_flight = None if row is None else (str(row[0]), int(row[1]))
            return None if row is None else SpooledBatch(row[0], row[1], row[2], bytes(row[3]))

        found: SpooledBatch | None = self._guarded("read", op)
        return found

    def release(self, batch: SpooledBatch) -> None:
        """The shipper is done with ``batch`` for now (no answer, or one to retry later): it
        waits like any other batch, and a full spool may drop it, counted, before its next try."""
        with self._lock:
            self._settled(batch)

    def _settled(self, batch: SpooledBatch) -> None:
        if self.in_flight == (batch.stream, batch.seq):
            self.in_flight = None

    @staticmethod
    def _remove(c: sqlite3.Connection, batch: SpooledBatch) -> tuple[int, int] | None:
        """Delete a waiting batch inside a transaction; its (readings, bytes), or None."""
        row = c.execute("SELECT readings, bytes FROM batches WHERE stream = ? AND seq = ?",
                        (batch.stream, batch.seq)).fetchone()
        if row is not None:
            c.execute("DELETE FROM batches WHERE stream = ? AND seq = ?", (batch.stream, batch.seq))
        return None if row is None else (int(row[0]), int(row[1]))

    def ack(self, batch: SpooledBatch) -> None:
        """The collector committed ``batch`` (or had it already): it leaves the spool."""

        def op() -> None:
            with self._tx() as c:
                row = self._remove(c, batch)
                now = self._wall()
                c.execute("INSERT OR REPLACE INTO meta VALUES ('last_success', ?)", (repr(now),))
            self.last_success = now
            self._settled(batch)  # only once it is gone: until then the trim must spare it
            if row is not None:
                self._batches -= 1
                self._readings -= row[0]
                self._bytes -= row[1]

        self._guarded("ack", op)

    def dead_letter(self, batch: SpooledBatch, status: int, reason: str) -> None:
        """Park a batch the collector refused as bad, with its answer, so the stream moves on."""

        def op() -> None:
            with self._tx() as c:
                row = self._remove(c, batch)
                if row is not None:
                    c.execute("INSERT INTO dead_letters (stream, seq, readings, bytes, status, reason, at, "
                              "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (batch.stream, batch.seq, row[0], row[1], status, reason[:2000], self._wall(),
                               batch.body))
            self._settled(batch)  # only once it is parked: until then the trim must spare it
            if row is None:
                return
            self._batches -= 1
            self._readings -= row[0]
            self._dead += 1
            self.dead_lettered_batches += 1

        self._guarded("dead-letter", op)

    def dead_letters(self) -> list[tuple[str, int, int, int, str]]:
        """(stream, seq, readings, status, reason) of every parked batch, oldest first."""
        with self._lock:
            rows = self._db().execute(
                "SELECT stream, seq, readings, status, reason FROM dead_letters ORDER BY id").fetchall()
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4])) for r in rows]

    # ------------------------------------------------------------------ observation

    def counts(self) -> SpoolCounts:
        with self._lock:
            return SpoolCounts(self._batches, self._readings, self._bytes, self._dead, self._open_readings)

    def oldest_timestamp(self) -> float | None:
        """Time of the oldest reading waiting to be shipped (delivery lag), if any."""
        with self._lock:
            if self._conn is None:
                return None
            # the oldest batch spooled (by id, an index walk of one row, not a scan)
            row = self._conn.execute("SELECT first_ts FROM batches ORDER BY id LIMIT 1").fetchone()
        return None if row is None or row[0] is None else float(row[0])
