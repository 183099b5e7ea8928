"""The whole node and the site's cooling, minute by minute (DESIGN.md, "The whole node" and
"Cooling: three models per site"; docs/accounting.md, "The whole node" and "Cooling").

A node's IT energy in a minute is its node meter's when the meter measured that minute, else
its parts' (gpu/cpu/host) plus the site's ``node_overhead_ratio`` x parts; a site's cooling in a
minute follows its model on the minute's *whole* IT energy. Both depend on everything that a
minute gets, which may come in several batches, so the ledger keeps each minute's additive
inputs in a row (``node_minutes``, ``site_minutes``) and, each time a batch adds to them,
recomputes the derived values here from the new totals and books the difference: the result
never depends on how the readings were batched. Pure functions on numpy columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from wattledger.collector.accounting import intervals
from wattledger.collector.accounting.cooling import (
    ChillerCooling,
    Cooling,
    MeteredCooling,
    OutdoorSource,
    PueCooling,
    chiller_cooling,
)
from wattledger.collector.accounting.weather import epw_hourly_c

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

MINUTE_S = 60.0
#: a minute the node meter measured whole (to float error): only such a minute can disagree
WHOLE_MINUTE_S = MINUTE_S - 1e-6
#: a sensor's reading older than this at a minute's end is stale
SENSOR_STALE_S = 900.0
#: the outdoor temperature when nothing else is known: the curves' rating point (AHRI 95 °F)
RATING_OUTDOOR_C = 35.0


@dataclass(frozen=True)
class NodeDerived:
    overhead_j: Floats
    estimated: Bools  # the overhead is node_overhead_ratio x parts (no meter reading that minute)
    disagree_s: Floats  # a whole metered minute whose meter read below its parts: 60, else 0


def node_minutes(parts_j: Floats, meter_j: Floats, meter_s: Floats, ratio: Floats) -> NodeDerived:
    """Overhead of node-minutes from their inputs: measured where the node meter read in the minute
    (``max(meter - parts, 0)``), else estimated (``ratio x parts``). IT = parts + overhead."""
    measured = meter_s > 0
    overhead = np.where(measured, np.maximum(meter_j - parts_j, 0.0), ratio * parts_j)
    disagree = np.where(measured & (meter_s >= WHOLE_MINUTE_S) & (meter_j < parts_j), MINUTE_S, 0.0)
    return NodeDerived(overhead, ~measured, disagree)


@dataclass(frozen=True)
class MeterMinutes:
    """Metered intervals cut at minute boundaries: energy and measured seconds per piece."""

    interval: Ints  # into the intervals given
    minute: Ints
    energy_j: Floats
    measured_s: Floats


def meter_minutes(iv: intervals.Intervals) -> MeterMinutes:
    """Each measured interval split over its minutes in proportion to time (unmeasured ones carry
    neither energy nor measured time)."""
    measured = np.flatnonzero(iv.unmeasured_s == 0)
    split = intervals.split_by_minute(iv.start[measured], iv.end[measured])
    k = measured[split.interval]
    return MeterMinutes(
        k, split.minute, iv.energy_j[k] * split.share, (iv.end[k] - iv.start[k]) * split.share
    )


# ------------------------------------------------------------------------------- site minutes


class Outdoor:
    """A chiller site's outdoor temperature per minute: the sensor's last reading at or before
    the minute's end (stale after 15 min), else the EPW file's hour, else ``fixed_c``. A minute
    whose temperature is not from the first source configured is a fallback minute."""

    def __init__(self, source: OutdoorSource, zone: ZoneInfo) -> None:
        self.source = source
        self.zone = zone

    @cached_property
    def _epw(self) -> dict[tuple[int, int, int], float]:
        path: Path | None = self.source.epw
        return {} if path is None else epw_hourly_c(path)

    def _epw_at(self, minute: int) -> float | None:
        local = datetime.fromtimestamp(minute * MINUTE_S, UTC).astimezone(self.zone)
        day = 28 if (local.month, local.day) == (2, 29) else local.day
        return self._epw.get((local.month, day, local.hour))

    def temperatures(self, minutes: Ints, sensor_ts: Floats, sensor_c: Floats) -> tuple[Floats, Bools]:
        """(°C, fallback) of each minute; the sensor's readings are (ts ascending, °C) and hold,
        for each minute, the last reading at or before its end (if any)."""
        n = len(minutes)
        temps = np.full(n, np.nan)
        fallback = np.zeros(n, dtype=bool)
        ends = (minutes + 1) * MINUTE_S
        first = True
        at = np.searchsorted(sensor_ts, ends, side="right") - 1  # the last reading at or before the end
        ok = at >= 0
        if self.source.sensor is not None:
            fresh = np.zeros(n, dtype=bool)
            fresh[ok] = ends[ok] - sensor_ts[at[ok]] <= SENSOR_STALE_S
            temps[fresh] = sensor_c[at[fresh]]
            first = False
        if self.source.epw is not None:
            for i in np.flatnonzero(np.isnan(temps)).tolist():
                value = self._epw_at(int(minutes[i]))
                if value is not None:
                    temps[i] = value
                    fallback[i] = not first
            first = False
        todo = np.isnan(temps)
        if self.source.fixed_c is not None:
            temps[todo] = self.source.fixed_c
            fallback[todo] = not first
        elif todo.any():
            # nothing fresh and nothing else configured: the sensor's last reading at or before
            # the minute's end however old, else (none yet) the curves' rating point; never a
            # later reading, so that a minute depends on no reading after it
            temps[todo & ok] = sensor_c[at[todo & ok]]
            temps[todo & ~ok] = RATING_OUTDOOR_C
            fallback[todo] = True
        return temps, fallback


@dataclass(frozen=True)
class SiteDerived:
    cooling_j: Floats
    other_j: Floats
    outdoor_c: Floats  # NaN where the model takes none
    fallback_s: Floats


def chiller_minute_j(chiller: ChillerCooling, it_j: float, outdoor_c: float) -> float:
    """Cooling energy of a minute whose whole IT energy is ``it_j``: the chiller (and the
    auxiliaries) at the minute's mean IT power as its heat load, x 60 s."""
    point = chiller_cooling(chiller, it_j / MINUTE_S / 1000.0, outdoor_c)
    return point.cooling_kw * 1000.0 * MINUTE_S


def site_minutes(
    model: Cooling,
    minutes: Ints,
    it_j: Floats,
    cooling_meter_j: Floats,
    facility_meter_j: Floats,
    facility_meter_s: Floats,
    outdoor: Outdoor | None,
    sensor: tuple[Floats, Floats],
) -> SiteDerived:
    """A site's cooling and other facility energy of each minute, from the minute's totals."""
    n = len(minutes)
    zeros = np.zeros(n)
    if isinstance(model, PueCooling):
        return SiteDerived(it_j * (model.pue - 1.0), zeros, np.full(n, np.nan), zeros)
    if isinstance(model, MeteredCooling):
        cooling = cooling_meter_j.copy()
        other = np.where(facility_meter_s > 0, np.maximum(facility_meter_j - it_j - cooling, 0.0), 0.0)
        return SiteDerived(cooling, other, np.full(n, np.nan), zeros)
    assert outdoor is not None
    temps, fallback = outdoor.temperatures(minutes, *sensor)
    cooling = np.array(
        [
            chiller_minute_j(model, float(e), float(t)) if e > 0 else 0.0
            for e, t in zip(it_j.tolist(), temps.tolist(), strict=True)
        ],
        dtype=np.float64,
    )
    with_it = it_j > 0  # cooling (and its fallback time) is booked for minutes with IT energy
    return SiteDerived(
        cooling, zeros, np.where(with_it, temps, np.nan), np.where(with_it & fallback, MINUTE_S, 0.0)
    )


def share_by(weights: Floats, total: float) -> Floats:
    """``total`` spread over ``weights`` in proportion (evenly when they add up to 0)."""
    s = float(weights.sum())
    if s > 0:
        return total * weights / s
    return np.full(len(weights), total / len(weights)) if len(weights) else weights


def sensor_series(readings: Sequence[tuple[float, float]]) -> tuple[Floats, Floats]:
    """(ts, °C) ascending, from (ts, °C) pairs (the committed latest and the group's)."""
    pairs = sorted((t, c) for t, c in readings if t == t and c == c)
    return (
        np.array([t for t, _ in pairs], dtype=np.float64),
        np.array([c for _, c in pairs], dtype=np.float64),
    )
