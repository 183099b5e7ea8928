"""The ledger's in-memory table of devices: one row (slot) per (node, device id).

Columns the accounting reads for a whole ingest at once (last committed reading, power limit,
whether the device's energy is IT energy) are numpy arrays indexed by slot; what is only shown
(model, thresholds, role) are Python lists. The latest ``clock_events`` is kept exactly, as an
unsigned 64-bit integer (a float would round bits above 2^53). The table is a write-through
cache of the store's ``devices`` table (SQLite), or a copy of it loaded for the read model.
A device's *owner* is the stream whose batches its readings come from (docs/collector.md,
"Two agents for one node").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from wattledger.collector.accounting.readings import LATEST
from wattledger.contract import PART_KINDS
from wattledger.wire import DeviceInfo

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

#: float columns: the accounting state, the latest reading, the all-time sums, the owner's time
FLOATS = ("last_ts", "last_power_w", "last_energy_j", "power_limit_w", *LATEST, "energy_j",
          "unmeasured_s", "stream_seen")
#: event counters
COUNTS = ("resets", "anomalies", "late")
#: the store's ``devices`` columns, in the order of :meth:`DeviceTable.rows`
#: (the latest values are the wire table's ``latest`` columns: one added there needs its column
#: in a migration of both backends, tests/collector/test_store.py checks it)
DEVICE_COLUMNS = ("slot", "node", "device", "kind", "idx", "model", "power_limit_w", "slowdown_c",
                  "shutdown_c", "last_ts", "last_power_w", "last_energy_j", *LATEST, "energy_j",
                  "unmeasured_s", "resets", "anomalies", "late", "clock_events", "role", "parent",
                  "share", "stream", "stream_seen")


class DeviceTable:
    """Devices by slot: ``find`` the slot of (node, device id), ``add_info`` a new one."""

    def __init__(self) -> None:
        self.size = 0
        self.floats: dict[str, Floats] = {name: np.zeros(0) for name in FLOATS}
        self.counts: dict[str, Ints] = {name: np.zeros(0, dtype=np.int64) for name in COUNTS}
        self.clock_events: npt.NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)
        self.has_clock_events: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        #: whether a device is one of its node's parts (gpu, cpu, host): its energy is IT energy of its own
        self.it_energy: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self.node: list[str] = []
        self.device: list[str] = []
        self.kind: list[str] = []
        self.index: list[int] = []
        self.model: list[str | None] = []
        self.slowdown_c: list[float | None] = []
        self.shutdown_c: list[float | None] = []
        self.role: list[str | None] = []
        self.parent: list[str | None] = []
        self.share: list[float | None] = []
        self.stream: list[str | None] = []  # the owner stream
        self._slots: dict[tuple[str, str], int] = {}

    def _grow(self, size: int) -> None:
        capacity = self.floats["last_ts"].shape[0]
        if size <= capacity:
            return
        new = max(size, 2 * capacity, 64)
        for name, old in self.floats.items():
            grown = np.full(new, np.nan)
            grown[:capacity] = old
            self.floats[name] = grown
        for name, old_counts in self.counts.items():
            grown_counts = np.zeros(new, dtype=np.int64)
            grown_counts[:capacity] = old_counts
            self.counts[name] = grown_counts
        for attr, dtype in (("clock_events", np.uint64), ("has_clock_events", np.bool_),
                            ("it_energy", np.bool_)):
            grown_any = np.zeros(new, dtype=dtype)
            grown_any[:capacity] = getattr(self, attr)
            setattr(self, attr, grown_any)

    def add(self, node: str, device: str, kind: str, index: int, model: str | None,
            power_limit_w: float | None, slowdown_c: float | None, shutdown_c: float | None,
            role: str | None = None, parent: str | None = None, share: float | None = None) -> int:
        slot = self.size
        self._grow(slot + 1)
        self.size += 1
        self._slots[(node, device)] = slot
        self.node.append(node)
        self.device.append(device)
        self.kind.append(kind)
        self.index.append(index)
        self.model.append(model)
        self.slowdown_c.append(slowdown_c)
        self.shutdown_c.append(shutdown_c)
        self.role.append(role)
        self.parent.append(parent)
        self.share.append(share)
        self.stream.append(None)
        self.it_energy[slot] = kind in PART_KINDS
        self.clock_events[slot] = 0
        self.has_clock_events[slot] = False
        for name in FLOATS:
            self.floats[name][slot] = np.nan
        self.floats["power_limit_w"][slot] = np.nan if power_limit_w is None else power_limit_w
        self.floats["energy_j"][slot] = 0.0
        self.floats["unmeasured_s"][slot] = 0.0
        for name in COUNTS:
            self.counts[name][slot] = 0
        return slot

    def find(self, node: str, device: str) -> int:
        """The slot of this device of this node; -1 when there is none."""
        return self._slots.get((node, device), -1)

    def add_info(self, node: str, info: DeviceInfo) -> int:
        """A new device, with its metadata; its slot."""
        return self.add(node, info.id, info.kind, info.index, info.model, info.power_limit_w,
                        info.slowdown_c, info.shutdown_c, info.role, info.parent, info.share)

    def merged_info(self, slot: int, info: DeviceInfo) -> DeviceInfo:
        """``info`` with the fields it leaves out (None) as this device has them."""
        limit = float(self.floats["power_limit_w"][slot])
        stored = {"model": self.model[slot], "power_limit_w": None if limit != limit else limit,
                  "slowdown_c": self.slowdown_c[slot], "shutdown_c": self.shutdown_c[slot]}
        return info.model_copy(update={k: v for k, v in stored.items() if getattr(info, k) is None})

    def set_info(self, slot: int, info: DeviceInfo) -> None:
        """Bring a device's metadata up to date."""
        self.kind[slot] = info.kind
        self.it_energy[slot] = info.kind in PART_KINDS
        self.role[slot] = info.role
        self.parent[slot] = info.parent
        self.share[slot] = info.share
        self.index[slot] = info.index
        self.model[slot] = info.model
        self.slowdown_c[slot] = info.slowdown_c
        self.shutdown_c[slot] = info.shutdown_c
        self.floats["power_limit_w"][slot] = (np.nan if info.power_limit_w is None
                                              else info.power_limit_w)

    def snapshot(self) -> DeviceTable:
        """A copy to read without the ledger's lock (e.g. while /metrics is being written)."""
        copy = DeviceTable()
        copy.size = self.size
        copy.floats = {name: values[:self.size].copy() for name, values in self.floats.items()}
        copy.counts = {name: values[:self.size].copy() for name, values in self.counts.items()}
        for attr in ("clock_events", "has_clock_events", "it_energy"):
            setattr(copy, attr, getattr(self, attr)[:self.size].copy())
        for name in ("node", "device", "kind", "index", "model", "slowdown_c", "shutdown_c", "role",
                     "parent", "share", "stream"):
            setattr(copy, name, list(getattr(self, name)))
        return copy

    def view(self, name: str) -> Floats:
        """A float column, trimmed to the devices there are."""
        return self.floats[name][:self.size]

    def rows(self, slots: Sequence[int]) -> list[tuple[Any, ...]]:
        """The store's ``devices`` rows of these slots (DEVICE_COLUMNS order).

        Built column-wise from the arrays; NaN goes to SQLite as NULL (which it is there), and
        ``clock_events`` as a signed 64-bit integer (two's complement: what a BIGINT holds).
        """
        take = np.asarray(slots, dtype=np.int64)
        f = self.floats

        def floats(name: str) -> list[float]:
            values: list[float] = f[name][take].tolist()
            return values

        def counts(name: str) -> list[int]:
            values: list[int] = self.counts[name][take].tolist()
            return values

        meta = [(s, self.node[s], self.device[s], self.kind[s], self.index[s], self.model[s])
                for s in slots]
        limits = floats("power_limit_w")
        thresholds = [(self.slowdown_c[s], self.shutdown_c[s]) for s in slots]
        events = [int(v) if known else None for v, known in
                  zip(self.clock_events[take].view(np.int64).tolist(),
                      self.has_clock_events[take].tolist(), strict=True)]
        seen = floats("stream_seen")
        extra = [(e, self.role[s], self.parent[s], self.share[s], self.stream[s], t)
                 for e, s, t in zip(events, slots, seen, strict=True)]
        columns = zip(*(floats(name) for name in ("last_ts", "last_power_w", "last_energy_j", *LATEST,
                                                    "energy_j", "unmeasured_s")),
                      *(counts(name) for name in COUNTS), strict=True)
        return [(*m, limit, *t, *rest, *x)
                for m, limit, t, rest, x in zip(meta, limits, thresholds, columns, extra, strict=True)]

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Any, ...]]) -> DeviceTable:
        """A table of exactly these devices (DEVICE_COLUMNS order, sorted by slot), numbered
        0, 1, 2... whatever their slots (the read model's copy of a shared store), built column
        by column: at 40,000 devices ~20x faster than ``load``."""
        table = cls()
        table.size = len(rows)
        columns = dict(zip(DEVICE_COLUMNS, zip(*rows, strict=True), strict=True)) if rows else \
            {name: () for name in DEVICE_COLUMNS}
        # numpy reads None as NaN in a float array: a NULL is "not reported", as in the table
        table.floats = {name: np.array(columns[name], dtype=np.float64) for name in FLOATS}
        table.counts = {name: np.array(columns[name], dtype=np.int64) for name in COUNTS}
        events = columns["clock_events"]
        table.has_clock_events = np.array([v is not None for v in events], dtype=bool)
        table.clock_events = np.array([0 if v is None else v for v in events], dtype=np.int64).view(np.uint64)
        table.it_energy = np.array([kind in PART_KINDS for kind in columns["kind"]], dtype=bool)
        for name in ("node", "device", "kind", "model", "slowdown_c", "shutdown_c", "role", "parent",
                     "share", "stream"):
            setattr(table, name, list(columns[name]))
        table.index = list(columns["idx"])
        table._slots = {key: slot for slot, key in enumerate(zip(table.node, table.device, strict=True))}
        return table

    def load(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Fill the table from the store's rows (DEVICE_COLUMNS order, by slot): SQLite's slots
        are the table's own numbers, so a hole is an error."""
        for row in sorted(rows, key=lambda r: int(r[0])):
            (slot, node, device, kind, index, model, limit, slowdown, shutdown,
             last_ts, last_power, last_energy, *rest) = row
            latest, rest = rest[:len(LATEST)], rest[len(LATEST):]
            energy, unmeasured, resets, anomalies, late, events, role, parent, share, stream, seen = rest
            if slot != self.size:
                raise ValueError(f"devices table has a hole before slot {slot}")
            self.add(node, device, kind, index, model, limit, slowdown, shutdown, role, parent, share)
            self.stream[slot] = stream
            values = dict(zip(LATEST, latest, strict=True))
            values.update(last_ts=last_ts, last_power_w=last_power, last_energy_j=last_energy,
                          energy_j=energy, unmeasured_s=unmeasured, stream_seen=seen)
            for name, value in values.items():
                self.floats[name][slot] = np.nan if value is None else value
            for name, count in zip(COUNTS, (resets, anomalies, late), strict=True):
                self.counts[name][slot] = count
            if events is not None:  # stored as a signed 64-bit integer: back to its unsigned bits
                self.clock_events[slot] = int(events) & 0xFFFF_FFFF_FFFF_FFFF
                self.has_clock_events[slot] = True
