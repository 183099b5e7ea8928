"""From one group's readings to intervals and each device's next state (DESIGN.md, "Accounting").

The readings of a group of batches arrive with the accounting state of every device they
name — its last committed reading, its power limit, whether its energy is IT energy — with
the devices numbered 0..k-1 for this group only. What comes out is what the ledger adds and
the state it leaves behind: the intervals of IT devices (rules 1-3, ``intervals.py``), each
device's counter increments and its newest reading. An interval that spans two batches, two
streams or a restart is the same interval as if it had come in one batch, because the state
is the device's last *committed* reading, wherever it was committed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from wattledger.collector.accounting import intervals
from wattledger.collector.accounting.intervals import Intervals
from wattledger.contract import LATEST_COLUMNS, READING_COLUMNS

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Events = npt.NDArray[np.uint64]

#: the latest values of a device (NaN = not reported), as shown on /metrics and /v1/nodes: the
#: columns the wire's table (contract.READING_COLUMNS) marks ``latest``, in its order
LATEST = LATEST_COLUMNS
#: the fields of :class:`Readings`, in its order: the wire's columns, the (site, cluster) group
#: after the device, and whether a reading carries ``clock_events`` (its NaN, an integer has none)
READINGS_FIELDS: tuple[str, ...] = ("device", "group", *(c.name for c in READING_COLUMNS[1:]),
                                    "has_clock_events")


@dataclass(frozen=True)
class DeviceStates:
    """Per device of the group (0..k-1): where its accounting stands before this group."""

    last_ts: Floats        # NaN: no reading committed yet
    last_power_w: Floats
    last_energy_j: Floats
    power_limit_w: Floats  # as the group's batches declare it (NaN: unknown, never anomalous)
    it_energy: Bools       # a node's parts (gpu, cpu, host): False for node meters, meters, sensors
    #: devices whose energy feeds the node and site minutes: node meters, cooling/facility meters
    metered: Bools | None = None


@dataclass(frozen=True)
class Readings:
    """A group's readings, any order; ``device`` numbers the group's devices 0..k-1.

    Its fields are the wire's columns (contract.READING_COLUMNS, in that order) with ``group``
    after ``device`` and ``has_clock_events`` at the end (:data:`READINGS_FIELDS`); they are
    written out, not generated, so that mypy knows each one's type (tests/test_wire_columns.py
    fails when a column is added to the table and not here).
    """

    device: Ints
    group: Ints  # the (site, cluster) each reading is filed under
    ts: Floats
    power_w: Floats
    energy_j: Floats
    temp_c: Floats
    util: Floats
    mem_temp_c: Floats
    mem_util: Floats
    sm_clock_hz: Floats
    clock_events: Events
    mem_used_bytes: Floats
    has_clock_events: Bools

    def take(self, index: Ints | Bools) -> Readings:
        return Readings(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass(frozen=True)
class Accounted:
    """What one group adds to its devices, and the state it leaves them in."""

    intervals: intervals.Intervals  # of IT devices; ``slot`` is the group's device number
    interval_group: Ints            # the (site, cluster) of each interval (its closing reading's)
    closing: Ints                   # each interval's closing reading: its index in the readings given
    #: intervals of the ``metered`` devices (node meters, facility and cooling meters), and theirs
    meter_intervals: Intervals
    meter_group: Ints
    # increments per device of the group (0..k-1)
    energy_j: Floats
    unmeasured_s: Floats
    resets: Ints
    anomalies: Ints
    late: Ints
    #: per reading, in the order given: late (not newer than its device's last committed reading)
    late_reading: Bools
    # the newest reading of each device that had one (its new state and latest values)
    updated: Ints  # device numbers, ascending
    newest: Readings  # aligned with ``updated``
    #: the readings accounted (late ones removed), sorted by (device, ts): ``intervals.reading``
    #: indexes them
    kept: Readings


def account(readings: Readings, state: DeviceStates, *, max_gap_seconds: float) -> Accounted:
    """Apply the accounting rules to a group's readings against its devices' committed state."""
    k = state.last_ts.shape[0]
    order = np.lexsort((readings.ts, readings.device))
    r = readings.take(order)
    late = intervals.late_readings(r.device, r.ts, state.last_ts)
    late_reading = np.empty_like(late)
    late_reading[order] = late
    late_counts = np.bincount(r.device[late], minlength=k).astype(np.int64)
    if late.any():
        r = r.take(~late)
        order = order[~late]
    iv = intervals.account(
        r.device, r.ts, r.power_w, r.energy_j, state_ts=state.last_ts, state_power_w=state.last_power_w,
        state_energy_j=state.last_energy_j, power_limit_w=state.power_limit_w,
        max_gap_seconds=max_gap_seconds)
    if r.device.shape[0]:
        last = np.flatnonzero(np.append(r.device[1:] != r.device[:-1], True))
    else:
        last = np.zeros(0, dtype=np.int64)
    # node meters, meters, sensors and partitions add no device IT energy and no unmeasured
    # time: their readings move the device's state and latest values; the node meters' and the
    # facility and cooling meters' intervals go on to the node and site minutes
    metered = state.metered if state.metered is not None else np.zeros(k, dtype=bool)
    meters = _take(iv, metered[iv.slot])
    it = state.it_energy[iv.slot]
    if not it.all():
        iv = _take(iv, it)
    return Accounted(
        intervals=iv, interval_group=r.group[iv.reading], closing=order[iv.reading],
        meter_intervals=meters, meter_group=r.group[meters.reading],
        energy_j=np.bincount(iv.slot, weights=iv.energy_j, minlength=k).astype(np.float64),
        unmeasured_s=np.bincount(iv.slot, weights=iv.unmeasured_s, minlength=k).astype(np.float64),
        resets=np.bincount(iv.slot[iv.reset], minlength=k).astype(np.int64),
        anomalies=np.bincount(iv.slot[iv.anomaly], minlength=k).astype(np.int64),
        late=late_counts, late_reading=late_reading, updated=r.device[last], newest=r.take(last),
        kept=r)


def _take(iv: intervals.Intervals, which: Bools) -> intervals.Intervals:
    return intervals.Intervals(*(getattr(iv, f.name)[which] for f in fields(intervals.Intervals)))
