"""The plan's sufficient statistics of one ingest: per (site, GPU model, local day), the sums that
``wattledger.collector.accounting.history`` names, as rows for the ledger to add (table ``plan_days``).

Every figure is a sum (or a min/max) over readings or intervals, so the ledger keeps it with
additive upserts and the result never depends on how readings were batched, on which replica
booked them, or in which order (docs/planning.md, "The ledger's statistics"):

- part ``all`` (bin 0): ``n, Σu, Σp, Σu², Σup, Σp²`` over the GPU readings that have both a
  utilization (0..1) and a power; the readings under 5 % utilization (``idle_n``, ``idle_sum_p``);
  the first and last such reading; the GPU intervals' measured seconds and energy (``gpu_s``,
  ``gpu_j``), those closed by a reading under 5 % (``idle_s``, ``idle_j``: idle but powered);
  ``it_j``, the energy of the parts (``gpu``, ``cpu``, ``host``) of the nodes whose GPUs are that
  model; and, over the node meters' intervals that every part of their node covers
  (``nodemeters.py``), the meters' seconds and energy and the parts' and GPUs' energy and
  GPU-seconds in them (``meter_*``): the node overhead;
- part ``util`` (bin 0..19): readings and their power sum per 5 % utilization bin;
- part ``power`` (bin 0..300): readings per 10 W power bin (the last: 3 kW and above);
- part ``gpu`` (bin = the device's ledger slot): its readings of that day, so the day's
  distinct GPUs are its ``gpu`` rows; part ``node`` (bin = the node meter's slot): its covered
  intervals of that day, so the day's distinct metered nodes are its ``node`` rows.

An interval belongs to the local day of the reading that closes it (an interval across
midnight, normally a second long, is not split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from wattledger.collector.accounting.aggregation import Floats, Ints
from wattledger.collector.accounting.history import IDLE_UTILIZATION, POWER_BIN_W, POWER_BINS, UTIL_BINS
from wattledger.collector.accounting.intervals import Intervals
from wattledger.collector.accounting.nodemeters import covered_meter_intervals

Bools = npt.NDArray[np.bool_]
#: the kinds whose energy is a node's parts (a ``node`` device is the whole node's wall power)
PART_KINDS = frozenset({"gpu", "cpu", "host"})

#: the table's value columns, in order, after the key (site, model, day, part, bin)
VALUE_COLUMNS = ("n", "sum_u", "sum_p", "sum_uu", "sum_up", "sum_pp", "idle_n", "idle_sum_p",
                 "gpu_s", "gpu_j", "idle_s", "idle_j", "it_j", "meter_s", "meter_j", "meter_parts_j",
                 "meter_gpu_j", "meter_gpu_s", "first_ts", "last_ts")
KEY_COLUMNS = ("site", "model", "day", "part", "bin")
#: the additive columns (all but first_ts and last_ts)
SUM_COLUMNS = VALUE_COLUMNS[:-2]
_AT = {name: i for i, name in enumerate(SUM_COLUMNS)}
_DAY_CACHE_LIMIT = 100_000


class DayClock:
    """The local day (a proleptic ordinal) of UTC seconds, on one site's clock, cached per UTC
    minute (every offset change falls on a minute)."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._cache: dict[int, int] = {}

    def days(self, ts: Floats) -> Ints:
        minutes = np.floor(ts / 60.0).astype(np.int64)
        unique, inverse = np.unique(minutes, return_inverse=True)
        if len(self._cache) > _DAY_CACHE_LIMIT:
            self._cache.clear()
        out = np.empty(unique.shape[0], dtype=np.int64)
        for i, minute in enumerate(unique.tolist()):
            day = self._cache.get(minute)
            if day is None:
                day = self._cache[minute] = (
                    datetime.fromtimestamp(minute * 60, UTC).astimezone(self.zone).date().toordinal())
            out[i] = day
        return out[inverse]


@dataclass(frozen=True)
class GroupDevices:
    """The group's devices (0..k-1) as the statistics see them."""

    model: Ints       # index into ``models`` of a GPU; -1 for every other kind
    node_model: Ints  # the model of the GPUs of the device's node; -1: a node without GPUs
    slot: Ints        # the device's ledger slot
    node: Ints        # the device's node, numbered within the group
    is_meter: Bools   # a ``node`` device: the node's wall power
    is_part: Bools    # a ``gpu``, ``cpu`` or ``host`` device: a part of the node's IT


def _groups(keys: Sequence[Ints]) -> tuple[Ints, Ints]:
    """The distinct rows of the key columns (sorted) and each row's group number: each column
    numbered by its distinct values, the numbers combined into one integer (a group has few
    distinct values per column), one sort of that."""
    n = keys[0].shape[0]
    code = np.zeros(n, dtype=np.int64)
    values = []
    for column in keys:
        distinct, number = np.unique(column, return_inverse=True)
        code = code * distinct.shape[0] + number.reshape(-1)
        values.append(distinct)
    codes, inverse = np.unique(code, return_inverse=True)
    rows = np.empty((codes.shape[0], len(keys)), dtype=np.int64)
    for i in range(len(keys) - 1, -1, -1):
        size = values[i].shape[0]
        rows[:, i] = values[i][codes % size]
        codes = codes // size
    return rows, inverse.reshape(-1)


def _within(group: Ints, bin_: Ints, bins: int, ones: Floats, weights: Floats | None = None,
            extremes_of: Floats | None = None) -> list[tuple[int, int, tuple[float, ...], float]]:
    """Per (group, bin) present: the group, the bin, (count[, first, last of ``extremes_of``]) and
    the sum of ``weights`` (0 without)."""
    code = group * bins + bin_
    codes, inverse = np.unique(code, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse, weights=ones, minlength=codes.shape[0])
    total = (np.bincount(inverse, weights=weights, minlength=codes.shape[0]) if weights is not None
             else np.zeros(codes.shape[0]))
    stats: list[tuple[float, ...]] = [(c,) for c in count.tolist()]
    if extremes_of is not None:
        first = np.full(codes.shape[0], np.inf)
        last = np.full(codes.shape[0], -np.inf)
        np.minimum.at(first, inverse, extremes_of)
        np.maximum.at(last, inverse, extremes_of)
        stats = list(zip(count.tolist(), first.tolist(), last.tolist(), strict=True))
    return list(zip((codes // bins).tolist(), (codes % bins).tolist(), stats, total.tolist(), strict=True))


def _sums(inverse: Ints, count: int, values: Sequence[Floats]) -> list[Floats]:
    return [np.bincount(inverse, weights=v, minlength=count).astype(np.float64) for v in values]


def plan_rows(kept_device: Ints, kept_group: Ints, kept_ts: Floats, kept_power_w: Floats,
              kept_util: Floats, iv: Intervals, devices: GroupDevices, group_site: Ints,
              clocks: Sequence[DayClock], site_names: Sequence[str], models: Sequence[str],
              ) -> list[tuple[object, ...]]:
    """The ``plan_days`` rows (key columns, then ``VALUE_COLUMNS``) that one group adds.

    ``kept_*`` are the group's accepted readings (late ones removed) that ``iv.reading``
    indexes; ``group_site`` maps a reading's (site, cluster) group to its site (``clocks`` and
    ``site_names`` are by site)."""
    site = group_site[kept_group] if kept_group.shape[0] else np.zeros(0, dtype=np.int64)
    model = devices.model[kept_device]
    gpu = model >= 0
    day = np.zeros(kept_ts.shape[0], dtype=np.int64)
    for s in np.unique(site[gpu]).tolist():
        mask = gpu & (site == s)
        day[mask] = clocks[s].days(kept_ts[mask])
    with np.errstate(invalid="ignore"):
        line = (gpu & (kept_util >= 0.0) & (kept_util <= 1.0) & (kept_power_w >= 0.0)
                & np.isfinite(kept_power_w))
    rows: list[tuple[object, ...]] = []
    text_day: dict[int, str] = {}

    def key(s: int, m: int, d: int) -> tuple[str, str, str]:
        if d not in text_day:
            text_day[d] = date.fromordinal(d).isoformat()
        return site_names[s], models[m], text_day[d]

    zero: tuple[float | int, ...] = _zeros()
    totals: dict[tuple[int, int, int], list[float | int]] = {}
    extremes: dict[tuple[int, int, int], tuple[float, float]] = {}
    idx = np.flatnonzero(line)
    if idx.shape[0]:
        u, p, ts = kept_util[idx], kept_power_w[idx], kept_ts[idx]
        s_, m_, d_ = site[idx], model[idx], day[idx]
        idle = (u < IDLE_UTILIZATION).astype(np.float64)
        unique, inverse = _groups((s_, m_, d_))
        ones = np.ones(idx.shape[0])
        n, su, sp, suu, sup, spp, idle_n, idle_p = _sums(
            inverse, unique.shape[0], (ones, u, p, u * u, u * p, p * p, idle, idle * p))
        first = np.full(unique.shape[0], np.inf)
        last = np.full(unique.shape[0], -np.inf)
        np.minimum.at(first, inverse, ts)
        np.maximum.at(last, inverse, ts)
        for g, (s, m, d) in enumerate(unique.tolist()):
            totals[(s, m, d)] = [int(n[g]), float(su[g]), float(sp[g]), float(suu[g]), float(sup[g]),
                                 float(spp[g]), int(idle_n[g]), float(idle_p[g]), *_zeros()[8:]]
            extremes[(s, m, d)] = (float(first[g]), float(last[g]))
        base = [key(s, m, d) for s, m, d in unique.tolist()]
        ubin = np.clip((u * UTIL_BINS).astype(np.int64), 0, UTIL_BINS - 1)
        for g, b, (count,), power_sum in _within(inverse, ubin, UTIL_BINS, ones, p):
            rows.append((*base[g], "util", b, int(count), 0.0, power_sum, *zero[3:], None, None))
        pbin = np.clip((p // POWER_BIN_W).astype(np.int64), 0, POWER_BINS)
        for g, b, (count,), _ in _within(inverse, pbin, POWER_BINS + 1, ones):
            rows.append((*base[g], "power", b, int(count), *zero[1:], None, None))
        slots = devices.slot[kept_device[idx]]
        for g, slot, (count, seen_first, seen_last), _ in _within(inverse, slots, int(slots.max()) + 1, ones,
                                                                   extremes_of=ts):
            rows.append((*base[g], "gpu", slot, int(count), *zero[1:], seen_first, seen_last))
    _add_intervals(totals, iv, devices, site, day, kept_ts, kept_util, clocks)
    rows.extend(_add_meters(totals, iv, devices, site, kept_ts, clocks, key))
    for (s, m, d), values in sorted(totals.items()):
        span = extremes.get((s, m, d))
        rows.append((*key(s, m, d), "all", 0, *values, *(span if span is not None else (None, None))))
    return rows


def _zeros() -> tuple[float | int, ...]:
    """The additive columns at zero (counts as integers)."""
    return tuple(0 if name in ("n", "idle_n") else 0.0 for name in SUM_COLUMNS)


def _add_meters(totals: dict[tuple[int, int, int], list[float | int]], iv: Intervals, devices: GroupDevices,
                site: Ints, kept_ts: Floats, clocks: Sequence[DayClock],
                key: Callable[[int, int, int], tuple[str, str, str]]) -> list[tuple[object, ...]]:
    """Add the covered node-meter intervals into ``totals`` (each to its closing reading's day);
    the ``node`` rows of the metered nodes."""
    if not devices.is_meter.any() or not iv.reading.shape[0]:
        return []
    spans = covered_meter_intervals(iv, devices.node, devices.is_meter, devices.is_part, devices.model >= 0)
    if not spans.meter.shape[0]:
        return []
    m_site = site[spans.reading]
    m_model = devices.node_model[spans.meter]
    m_day = np.zeros(spans.meter.shape[0], dtype=np.int64)
    for s in np.unique(m_site).tolist():
        mask = m_site == s
        m_day[mask] = clocks[s].days(kept_ts[spans.reading[mask]])
    unique, inverse = _groups((m_site, m_model, m_day))
    sums = _sums(inverse, unique.shape[0],
                 (spans.seconds, spans.node_j, spans.parts_j, spans.gpu_j, spans.gpu_s))
    for g, (s, m, d) in enumerate(unique.tolist()):
        row = totals.setdefault((s, m, d), list(_zeros()))
        for name, values in zip(("meter_s", "meter_j", "meter_parts_j", "meter_gpu_j", "meter_gpu_s"), sums,
                                strict=True):
            row[_AT[name]] += float(values[g])
    base = [key(s, m, d) for s, m, d in unique.tolist()]
    ones = np.ones(spans.meter.shape[0])
    slots = devices.slot[spans.meter]
    return [(*base[g], "node", slot, int(count), *_zeros()[1:], None, None)
            for g, slot, (count,), _ in _within(inverse, slots, int(slots.max()) + 1, ones)]


def _add_intervals(totals: dict[tuple[int, int, int], list[float | int]], iv: Intervals,
                   devices: GroupDevices, site: Ints, day: Ints, kept_ts: Floats, kept_util: Floats,
                   clocks: Sequence[DayClock]) -> None:
    """Add the intervals' GPU seconds and energy, idle ones, and the nodes' IT energy (each to
    the day of its closing reading) into ``totals``."""
    if not iv.reading.shape[0]:
        return
    closing = iv.reading
    node_model = devices.node_model[iv.slot]
    carried = node_model >= 0
    if not carried.any():
        return
    iv_site = site[closing]
    iv_day = day[closing].copy()
    not_gpu = carried & (devices.model[iv.slot] < 0)  # a CPU's interval: its day was not computed
    for s in np.unique(iv_site[not_gpu]).tolist():
        mask = not_gpu & (iv_site == s)
        iv_day[mask] = clocks[s].days(kept_ts[closing[mask]])
    is_gpu = devices.model[iv.slot] >= 0
    measured = iv.unmeasured_s == 0.0
    seconds = np.where(is_gpu & measured, iv.end - iv.start, 0.0)
    gpu_j = np.where(is_gpu, iv.energy_j, 0.0)
    with np.errstate(invalid="ignore"):
        idle = is_gpu & (kept_util[closing] < IDLE_UTILIZATION)
    sel = np.flatnonzero(carried)
    unique, inverse = _groups((iv_site[sel], node_model[sel], iv_day[sel]))
    gs, gj, is_, ij, it = _sums(inverse, unique.shape[0], (
        seconds[sel], gpu_j[sel], np.where(idle, seconds, 0.0)[sel], np.where(idle, gpu_j, 0.0)[sel],
        np.where(devices.is_part[iv.slot], iv.energy_j, 0.0)[sel]))
    for g, (s, m, d) in enumerate(unique.tolist()):
        row = totals.setdefault((s, m, d), list(_zeros()))
        row[_AT["gpu_s"]] += float(gs[g])
        row[_AT["gpu_j"]] += float(gj[g])
        row[_AT["idle_s"]] += float(is_[g])
        row[_AT["idle_j"]] += float(ij[g])
        row[_AT["it_j"]] += float(it[g])


def group_devices(kinds: Sequence[str], model_names: Sequence[str | None], nodes: Sequence[str],
                  slots: Ints, models: dict[str, int]) -> GroupDevices:
    """Each device's model number (GPUs; a GPU without a model is ``unknown``), its node's GPU
    model (the first GPU's of that node in the group) and slot; ``models`` grows as models
    are seen (name -> number)."""
    model = np.full(len(kinds), -1, dtype=np.int64)
    node_of: dict[str, int] = {}
    for i, (kind, name, node) in enumerate(zip(kinds, model_names, nodes, strict=True)):
        if kind != "gpu":
            continue
        model[i] = models.setdefault(name or "unknown", len(models))
        node_of.setdefault(node, int(model[i]))
    node_model = np.array([node_of.get(node, -1) for node in nodes], dtype=np.int64)
    numbers = {name: i for i, name in enumerate(dict.fromkeys(nodes))}
    return GroupDevices(model, node_model, slots, np.array([numbers[n] for n in nodes], dtype=np.int64),
                        np.array([k == "node" for k in kinds], dtype=bool),
                        np.array([k in PART_KINDS for k in kinds], dtype=bool))

