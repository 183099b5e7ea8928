"""Who used a device's energy: the split rule of DESIGN.md ("Allocations"), exactly.

The energy of a device interval ``(a, b]`` is spread evenly over its time; at each instant it
goes to the allocations of that device (in the batch that carries ``b``) active at that
instant, split by their weights; an instant covered by none is *idle*. Allocated + idle = the
interval's energy.

A board in MIG mode is one measured device with *lanes*: each MIG partition of it (a
``partition`` device of the same batch whose ``parent`` is the board) is a lane of capacity
its ``share``; what the partitions leave (1 - their shares) is the board's own lane, held by
allocations of the board itself. A lane's part of the energy goes to the allocations holding
that lane, by the rule above; a lane nobody holds is idle. A board without partitions is one
lane of capacity 1. Shares that add up to more than 1 (a broken agent) are scaled down to 1.

GPU-seconds follow the same split (an allocation holding a 3/7 partition for 10 s has 30/7
GPU-seconds), so held + idle GPU-seconds = the device's measured seconds. Seconds held while
the board's utilization (the interval's closing reading) is under ``IDLE_UTILIZATION`` are
*held idle* (waste), with the energy they carried.

Pure functions over numpy arrays; the ingest transaction calls ``split_board`` once per
(batch, board) that has holdings, and ``idle_pieces`` for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wattledger.collector.accounting.intervals import SECONDS_PER_MINUTE, split_by_minute

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

#: utilization under this, while held, is waste (DESIGN.md: "utilization under 5 %")
IDLE_UTILIZATION = 0.05


@dataclass(frozen=True)
class Lanes:
    """A board's lanes: capacity of each (a fraction of the board; they add up to 1)."""

    capacity: Floats

    @staticmethod
    def of(partition_shares: list[float]) -> Lanes:
        """Lanes of a board whose partitions have these shares: one per partition (in that
        order), then the board's own lane (what the partitions leave, possibly 0)."""
        shares = np.array(partition_shares, dtype=np.float64)
        total = float(shares.sum())
        if total > 1.0:
            shares = shares / total
            total = 1.0
        return Lanes(np.append(shares, max(0.0, 1.0 - total)))

    @property
    def own(self) -> int:
        """The board's own lane (its allocations of the board itself)."""
        return int(self.capacity.shape[0]) - 1


@dataclass(frozen=True)
class Holdings:
    """Allocations of one board in one batch: each holds one lane over [start, end]."""

    lane: Ints
    start: Floats
    end: Floats  # inf: still held
    weight: Floats
    holder: Ints  # the holder (allocation) each is booked to


@dataclass(frozen=True)
class Pieces:
    """Energy and time of a board booked to holders, per minute: one row per piece."""

    minute: Ints
    holder: Ints
    energy_j: Floats
    gpu_s: Floats      # GPU-seconds (time x the fraction of the board)
    idle_s: Floats     # of those, held while the board's utilization was under IDLE_UTILIZATION
    waste_j: Floats    # the energy of the held-idle seconds

    @staticmethod
    def empty() -> Pieces:
        z = np.zeros(0)
        return Pieces(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), z, z, z, z)

    @staticmethod
    def concat(parts: list[Pieces]) -> Pieces:
        if not parts:
            return Pieces.empty()
        return Pieces(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                        ("minute", "holder", "energy_j", "gpu_s", "idle_s", "waste_j")))


def _minute_pieces(start: Floats, end: Floats) -> tuple[Ints, Ints, Floats, Floats]:
    """Intervals cut at minute boundaries: (interval, minute, piece start, piece end)."""
    shares = split_by_minute(start, end)
    k = shares.interval
    lo = np.maximum(start[k], shares.minute * float(SECONDS_PER_MINUTE))
    hi = np.minimum(end[k], (shares.minute + 1) * float(SECONDS_PER_MINUTE))
    return k, shares.minute, lo, hi


def idle_pieces(start: Floats, end: Floats, energy_j: Floats, holder: Ints) -> Pieces:
    """Intervals nobody held: all their energy and time to their idle ``holder``, per minute."""
    k, minute, lo, hi = _minute_pieces(start, end)
    fraction = (hi - lo) / (end - start)[k]
    zero = np.zeros(k.shape[0])
    return Pieces(minute, holder[k], energy_j[k] * fraction, hi - lo, zero, zero)


def split_board(start: Floats, end: Floats, energy_j: Floats, util: Floats, lanes: Lanes,
                holdings: Holdings, idle_holder: int) -> Pieces:
    """One board's intervals (closing in one batch) split over its holdings, minute by minute.

    ``util`` is each interval's utilization (NaN: unknown, never waste). Pieces are cut at every
    minute boundary and every holding's start and end, so that within a piece the set of
    active holdings is constant; each piece's energy is its share of its interval's by time.
    """
    k, minute, lo, hi = _minute_pieces(start, end)
    cuts = np.unique(np.concatenate([holdings.start, holdings.end[np.isfinite(holdings.end)]]))
    # cut each piece at the holding boundaries strictly inside it
    first = np.searchsorted(cuts, lo, side="right")
    last = np.searchsorted(cuts, hi, side="left")
    count = last - first + 1
    total = int(count.sum())
    owner = np.repeat(np.arange(k.shape[0], dtype=np.int64), count)
    offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    inner = first[owner] + offset  # index into cuts of a sub-piece's start (offset >= 1)
    padded = np.concatenate([cuts, [np.inf]])
    sub_lo = np.where(offset == 0, lo[owner], padded[np.minimum(inner - 1, len(cuts))])
    sub_hi = np.where(offset == count[owner] - 1, hi[owner], padded[np.minimum(inner, len(cuts))])
    interval = k[owner]
    seconds = sub_hi - sub_lo
    energy = energy_j[interval] * seconds / (end - start)[interval]
    mid = (sub_lo + sub_hi) * 0.5
    # holding h is active at the instants of a sub-piece: start <= t <= end
    active = (holdings.start[None, :] <= mid[:, None]) & (mid[:, None] <= holdings.end[None, :])
    weights = np.where(active, holdings.weight[None, :], 0.0)
    n_lanes = lanes.capacity.shape[0]
    lane_weight = np.zeros((total, n_lanes))
    for lane in range(n_lanes):
        lane_weight[:, lane] = weights[:, holdings.lane == lane].sum(axis=1)
    held_weight = lane_weight[:, holdings.lane]
    cap = lanes.capacity[holdings.lane]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(active, cap[None, :] * weights / held_weight, 0.0)
    idle_fraction = (lanes.capacity[None, :] * (lane_weight == 0.0)).sum(axis=1)
    wasted = util[interval] < IDLE_UTILIZATION  # NaN compares False: unknown is never waste
    rows, cols = np.nonzero(fraction > 0.0)
    f = fraction[rows, cols]
    held = Pieces(minute[owner][rows], holdings.holder[cols], energy[rows] * f, seconds[rows] * f,
                  np.where(wasted[rows], seconds[rows] * f, 0.0),
                  np.where(wasted[rows], energy[rows] * f, 0.0))
    idle = np.flatnonzero(idle_fraction > 0.0)
    zero = np.zeros(idle.shape[0])
    free = Pieces(minute[owner][idle], np.full(idle.shape[0], idle_holder, dtype=np.int64),
                  energy[idle] * idle_fraction[idle], seconds[idle] * idle_fraction[idle], zero, zero)
    return Pieces.concat([held, free])


def node_minute_it(row_minute: Ints, gpu_j: Floats, is_idle: npt.NDArray[np.bool_], other_j: Floats
                   ) -> Floats:
    """Each holder row's IT energy in its node-minute (DESIGN.md "Teams, budgets and chargeback").

    ``row_minute`` numbers each row's node-minute (0..m-1), ``gpu_j`` is the row's GPU energy
    (idle's included), ``other_j`` each node-minute's non-GPU energy (CPU and host parts, node
    overhead). The non-GPU energy goes to the rows in proportion to their GPU energy; a minute
    without GPU energy gives it all to its idle row (every node-minute has exactly one). The
    rows of a node-minute add up to its GPU + non-GPU energy.
    """
    m = other_j.shape[0]
    total_gpu = np.bincount(row_minute, weights=gpu_j, minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total_gpu > 0.0, other_j / total_gpu, 0.0)
    no_gpu = (total_gpu <= 0.0)[row_minute]
    return gpu_j + gpu_j * ratio[row_minute] + np.where(no_gpu & is_idle, other_j[row_minute], 0.0)
