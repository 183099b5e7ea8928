"""The accounting rules of DESIGN.md ("Accounting"), vectorized over a whole ingest at once.

Readings come in sorted by (device slot, ts) with every device's previous committed reading
given as state, so an interval that spans two batches, two streams or a restart is the same
interval as if it had come in one batch. No Python object is made per reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

SECONDS_PER_MINUTE = 60
#: an interval longer than this (a device silent for over a month) is unmeasured even when its
#: counter moved: too long to trust one counter delta, and too many minutes to split it over
MAX_INTERVAL_SECONDS = 31 * 86400.0


@dataclass(frozen=True)
class Intervals:
    """Consecutive readings a -> b of one device: what each adds to the ledger."""

    reading: Ints       # index (into the sorted readings) of b, the reading that closes it
    slot: Ints          # the device
    start: Floats       # ts of a
    end: Floats         # ts of b
    energy_j: Floats    # IT energy (rule 1 or 2); 0 where unmeasured
    unmeasured_s: Floats  # dt where neither rule applies (rule 3), else 0
    reset: Bools        # the energy counter went backwards (counted; b is what was used since)
    anomaly: Bools      # counter delta above 2 x power limit x dt (counted; rule 2 used instead)


def group_starts(slot: Ints) -> Bools:
    """True where a reading is the first of its device in readings sorted by slot."""
    first = np.ones(slot.shape[0], dtype=bool)
    first[1:] = slot[1:] != slot[:-1]
    return first


def previous(values: Floats, first: Bools, state: Floats, slot: Ints) -> Floats:
    """Each reading's predecessor value: the reading before it, or the device's committed state."""
    prev = np.empty_like(values)
    prev[1:] = values[:-1]
    prev[first] = state[slot[first]]
    return prev


def late_readings(slot: Ints, ts: Floats, state_ts: Floats) -> Bools:
    """Readings not newer than the device's last committed reading (or repeating a ts just seen).

    Such a reading came late (another batch already carried the device past it): it cannot be
    placed between two committed readings without counting that interval twice, so it adds no
    energy; it is counted as late.
    """
    first = group_starts(slot)
    repeated = np.zeros(ts.shape[0], dtype=bool)
    repeated[1:] = ts[1:] == ts[:-1]
    with np.errstate(invalid="ignore"):
        behind = ts <= state_ts[slot]  # NaN (no state yet) compares False
    return behind | (repeated & ~first)


def account(slot: Ints, ts: Floats, power_w: Floats, energy_j: Floats, *, state_ts: Floats,
            state_power_w: Floats, state_energy_j: Floats, power_limit_w: Floats,
            max_gap_seconds: float) -> Intervals:
    """Apply rules 1-3 to every interval; readings sorted by (slot, ts), late ones removed."""
    first = group_starts(slot)
    prev_ts = previous(ts, first, state_ts, slot)
    has_prev = ~np.isnan(prev_ts)
    reading = np.flatnonzero(has_prev)
    s = slot[reading]
    a_ts, b_ts = prev_ts[reading], ts[reading]
    a_p = previous(power_w, first, state_power_w, slot)[reading]
    a_e = previous(energy_j, first, state_energy_j, slot)[reading]
    b_p, b_e = power_w[reading], energy_j[reading]
    dt = b_ts - a_ts

    counters = ~np.isnan(a_e) & ~np.isnan(b_e) & (dt <= MAX_INTERVAL_SECONDS)
    delta = np.where(counters, b_e - a_e, 0.0)
    reset = counters & (delta < 0)
    delta = np.where(reset, b_e, delta)  # the counter restarted at 0: b is what was used since
    with np.errstate(invalid="ignore"):
        anomaly = counters & (delta > 2.0 * power_limit_w[s] * dt)  # unknown limit: never
    by_counter = counters & ~anomaly
    by_power = ~by_counter & (dt <= max_gap_seconds) & ~np.isnan(a_p) & ~np.isnan(b_p)
    trapezoid = np.where(by_power, (a_p + b_p) * 0.5 * dt, 0.0)
    energy = np.where(by_counter, delta, trapezoid)
    unmeasured = np.where(by_counter | by_power, 0.0, dt)
    return Intervals(reading=reading, slot=s, start=a_ts, end=b_ts, energy_j=energy,
                     unmeasured_s=unmeasured, reset=reset, anomaly=anomaly)


@dataclass(frozen=True)
class MinuteShares:
    """Intervals cut at minute boundaries: interval ``interval`` has ``share`` of its time in
    UTC minute ``minute`` (unix seconds // 60)."""

    interval: Ints
    minute: Ints
    share: Floats


def split_by_minute(start: Floats, end: Floats) -> MinuteShares:
    """Split each interval (start < end) over the minutes it spans, in proportion to time."""
    first = np.floor(start / SECONDS_PER_MINUTE).astype(np.int64)
    last = np.ceil(end / SECONDS_PER_MINUTE).astype(np.int64) - 1
    last = np.maximum(last, first)
    count = last - first + 1
    n = start.shape[0]
    if n == 0 or int(count.max()) == 1:
        return MinuteShares(np.arange(n, dtype=np.int64), first, np.ones(n))
    interval = np.repeat(np.arange(n, dtype=np.int64), count)
    offsets = np.cumsum(count) - count
    minute = first[interval] + (np.arange(interval.shape[0], dtype=np.int64) - offsets[interval])
    lo = np.maximum(start[interval], minute * float(SECONDS_PER_MINUTE))
    hi = np.minimum(end[interval], (minute + 1) * float(SECONDS_PER_MINUTE))
    share = (hi - lo) / (end - start)[interval]
    keep = share > 0
    return MinuteShares(interval[keep], minute[keep], share[keep])


def split_for_pricing(start: Floats, end: Floats, unmeasured: Bools) -> MinuteShares:
    """Split measured intervals over their minutes; book each unmeasured one whole to the
    minute it ends in.

    An unmeasured interval carries no energy, only its length, so there is nothing to price
    minute by minute; splitting it would cost one row per minute of the gap (a clock that was
    years behind would make millions) for no figure that changes.
    """
    measured = np.flatnonzero(~unmeasured)
    gaps = np.flatnonzero(unmeasured)
    split = split_by_minute(start[measured], end[measured])
    end_minute = np.ceil(end[gaps] / SECONDS_PER_MINUTE).astype(np.int64) - 1
    return MinuteShares(
        np.concatenate([measured[split.interval], gaps]),
        np.concatenate([split.minute, end_minute]),
        np.concatenate([split.share, np.ones(gaps.shape[0])]),
    )
