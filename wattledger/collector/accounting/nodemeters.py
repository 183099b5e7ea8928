"""A node meter beside its node's parts, interval by interval: what the plan's node overhead per
GPU model is measured from (``profiles.py``, table ``plan_days``).

A ``node`` device (the BMC's wall power) closes measured intervals ``(a, b]`` with the node's
energy in them. Such an interval counts only when every part of the node in the group (its
``gpu``, ``cpu`` and ``host`` devices) has measured intervals covering all of ``(a, b]``: then
the parts' energy within it is exact (each part's energy spread evenly over its own intervals,
as the accounting does), and node - parts is the overhead of those seconds. An interval whose
parts do not all cover it (a part's reading still to come in a later batch, a gap) is left
out, never guessed: the figure is booked once, with the meter interval, and batching can only
leave seconds out of the coverage, never count them twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wattledger.collector.accounting.aggregation import Floats, Ints
from wattledger.collector.accounting.intervals import Intervals


@dataclass(frozen=True)
class MeterSpans:
    """The covered meter intervals of one group: the meter device (group number), its closing
    reading (an index of the group's kept readings), and each interval's sums."""

    meter: Ints
    reading: Ints
    seconds: Floats
    node_j: Floats
    parts_j: Floats
    gpu_j: Floats
    gpu_s: Floats  # GPU-seconds of the node's GPUs over the interval


def _energy_at(start: Floats, end: Floats, energy: Floats, at: Floats) -> Floats:
    """A device's cumulative energy at the times ``at``, over its consecutive intervals."""
    xs = np.concatenate([start[:1], end])
    cum = np.concatenate([[0.0], np.cumsum(energy)])
    out: Floats = np.interp(at, xs, cum)
    return out


def covered_meter_intervals(iv: Intervals, node: Ints, is_meter: np.ndarray, is_part: np.ndarray,
                            is_gpu: np.ndarray) -> MeterSpans:
    """The meter intervals of the group that every part of their node covers, with the node's,
    the parts' and the GPUs' energy in them. ``node`` numbers each group device's node;
    ``is_meter``/``is_part``/``is_gpu`` say what each device is (a GPU is a part)."""
    out: dict[str, list[Floats] | list[Ints]] = {k: [] for k in
                                                 ("meter", "reading", "seconds", "node_j", "parts_j", "gpu_j",
                                                  "gpu_s")}
    meters = np.unique(iv.slot[is_meter[iv.slot]])
    for m in meters.tolist():
        own = np.flatnonzero((iv.slot == m) & (iv.unmeasured_s == 0.0) & (iv.end > iv.start))
        if not own.shape[0]:
            continue
        a, b = iv.start[own], iv.end[own]
        covered = np.ones(own.shape[0], dtype=bool)
        parts_j = np.zeros(own.shape[0])
        gpu_j = np.zeros(own.shape[0])
        gpus = 0
        devices = np.flatnonzero(is_part & (node == node[m]))
        for d in devices.tolist():
            mine = np.flatnonzero(iv.slot == d)  # consecutive, in time order
            if not mine.shape[0]:
                covered[:] = False
                break
            start, end, energy = iv.start[mine], iv.end[mine], iv.energy_j[mine]
            covered &= (a >= start[0]) & (b <= end[-1])
            gaps = iv.unmeasured_s[mine] > 0.0
            if gaps.any():  # a gap of the part inside the meter's interval: its energy is unknown
                ga, gb = start[gaps], end[gaps]
                covered &= ~((ga[None, :] < b[:, None]) & (gb[None, :] > a[:, None])).any(axis=1)
            within = _energy_at(start, end, energy, b) - _energy_at(start, end, energy, a)
            parts_j += within
            if is_gpu[d]:
                gpu_j += within
                gpus += 1
        keep = np.flatnonzero(covered) if gpus else np.zeros(0, dtype=np.int64)
        seconds = (b - a)[keep]
        for name, values in (("meter", np.full(keep.shape[0], m, dtype=np.int64)),
                             ("reading", iv.reading[own][keep]), ("seconds", seconds),
                             ("node_j", iv.energy_j[own][keep]), ("parts_j", parts_j[keep]),
                             ("gpu_j", gpu_j[keep]), ("gpu_s", seconds * gpus)):
            out[name].append(values)  # type: ignore[arg-type]

    def joined(name: str, dtype: type) -> np.ndarray:
        return np.concatenate(out[name]) if out[name] else np.zeros(0, dtype=dtype)

    return MeterSpans(*(joined(name, np.int64) for name in ("meter", "reading")),
                      *(joined(name, np.float64)
                        for name in ("seconds", "node_j", "parts_j", "gpu_j", "gpu_s")))
