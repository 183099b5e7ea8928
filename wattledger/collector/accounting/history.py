"""What a plan needs from a site's measured history, and the interface a ledger provides it by.

Everything here is a *sufficient statistic*: a figure that a ledger can keep additively as
readings arrive (one row per site, GPU model and local day) and that replicas can add up, and
from which the plan's figures follow exactly:

- :class:`PowerStats`: per GPU model and day, ``n, Σu, Σp, Σu², Σup, Σp²`` over the readings
  that have both a utilization ``u`` (0..1) and a power ``p`` (W) give the least-squares line
  ``p = a + b·u`` and its R² over the raw readings; the readings with ``u`` < 5 % give the idle
  power; a power histogram of fixed 10 W bins gives the 95th percentile; a utilization
  histogram of 5 % bins gives the binned points of the power-vs-utilization chart.
- :class:`NodeOverheadDay`: per model and day, the wall energy of nodes with a node meter beside
  their GPUs' energy over the same seconds: node overhead = (node - GPUs) / time.
- :class:`MeasuredFleet`: the fleet as measured over a window (GPUs, servers, utilization, IT
  energy per model) for the plan's ``measured: true`` entry.
- :class:`SiteMonth`: per local month, the site's IT, cooling and facility energy, mean outdoor
  temperature and the idle-but-powered GPU-hours and energy: the cooling ratio by month.

:class:`MeasuredHistory` is the Protocol the ledger's read model implements (one site's history
through five calls); :class:`HistorySnapshot` is an in-memory implementation of it, and
:func:`model_days_from_readings` builds the per-day statistics from raw readings exactly as a
ledger accumulates them at ingest. docs/planning.md, "Measured profiles", lists the data
requirements.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

#: a reading below this utilization counts as idle (the GPU is powered but does no work)
IDLE_UTILIZATION = 0.05
#: width and count of the power histogram's bins; the last bin holds every reading at or above
#: POWER_BIN_W x POWER_BINS (3 kW: above any single GPU board sold today)
POWER_BIN_W = 10.0
POWER_BINS = 300
#: utilization histogram: 20 bins of 5 % (a reading at exactly 100 % goes to the last)
UTIL_BINS = 20


def _power_bin(power_w: float) -> int:
    return min(max(int(power_w // POWER_BIN_W), 0), POWER_BINS)


def _util_bin(utilization: float) -> int:
    return min(max(int(utilization * UTIL_BINS), 0), UTIL_BINS - 1)


def _add_tuples(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _min_opt(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max_opt(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass(frozen=True, slots=True)
class PowerStats:
    """Sufficient statistics of (utilization, power) readings; ``a + b`` is the statistics of
    both sets of readings together (replicas and days add up)."""

    n: int = 0
    sum_u: float = 0.0
    sum_p: float = 0.0
    sum_uu: float = 0.0
    sum_up: float = 0.0
    sum_pp: float = 0.0
    idle_n: int = 0
    idle_sum_p: float = 0.0
    #: unix seconds of the first and last reading (min and max add up too)
    first_ts: float | None = None
    last_ts: float | None = None
    #: per 5 % utilization bin: readings, and the sum of their power (W)
    util_n: tuple[int, ...] = (0,) * UTIL_BINS
    util_sum_p: tuple[float, ...] = (0.0,) * UTIL_BINS
    #: readings per 10 W power bin; the last bin is [3000 W, ∞)
    power_hist: tuple[int, ...] = (0,) * (POWER_BINS + 1)

    def __add__(self, other: PowerStats) -> PowerStats:
        return PowerStats(
            self.n + other.n,
            self.sum_u + other.sum_u,
            self.sum_p + other.sum_p,
            self.sum_uu + other.sum_uu,
            self.sum_up + other.sum_up,
            self.sum_pp + other.sum_pp,
            self.idle_n + other.idle_n,
            self.idle_sum_p + other.idle_sum_p,
            _min_opt(self.first_ts, other.first_ts),
            _max_opt(self.last_ts, other.last_ts),
            tuple(int(v) for v in _add_tuples(self.util_n, other.util_n)),
            _add_tuples(self.util_sum_p, other.util_sum_p),
            tuple(int(v) for v in _add_tuples(self.power_hist, other.power_hist)),
        )

    @classmethod
    def of(cls, readings: Iterable[tuple[float, float, float]]) -> PowerStats:
        """The statistics of ``(unix seconds, utilization 0..1, power W)`` readings. A reading
        with a utilization outside 0..1, a negative power or a NaN is not a reading of the line
        (the wire refuses such values; here they would bias every sum)."""
        n = idle_n = 0
        su = sp = suu = sup = spp = idle_sp = 0.0
        first: float | None = None
        last: float | None = None
        util_n = [0] * UTIL_BINS
        util_sp = [0.0] * UTIL_BINS
        hist = [0] * (POWER_BINS + 1)
        for ts, u, p in readings:
            if not (0.0 <= u <= 1.0 and p >= 0.0 and math.isfinite(p) and math.isfinite(ts)):
                continue
            n += 1
            su += u
            sp += p
            suu += u * u
            sup += u * p
            spp += p * p
            if u < IDLE_UTILIZATION:
                idle_n += 1
                idle_sp += p
            first = ts if first is None else min(first, ts)
            last = ts if last is None else max(last, ts)
            b = _util_bin(u)
            util_n[b] += 1
            util_sp[b] += p
            hist[_power_bin(p)] += 1
        return cls(
            n, su, sp, suu, sup, spp, idle_n, idle_sp, first, last, tuple(util_n), tuple(util_sp), tuple(hist)
        )


def sum_stats(items: Iterable[PowerStats]) -> PowerStats:
    total = PowerStats()
    for item in items:
        total = total + item
    return total


@dataclass(frozen=True, slots=True)
class ModelDay:
    """One (site, GPU model, local day) row of power-vs-utilization statistics."""

    model: str
    day: date
    #: distinct GPUs of the model with a reading that day
    gpus: int
    power: PowerStats


@dataclass(frozen=True, slots=True)
class NodeOverheadDay:
    """One (site, GPU model, local day) row of node-meter figures: over the seconds in which a
    node of that model (a node's model is its GPUs') had a node meter reading, the meters'
    energy and the energy of the node's GPUs. Overhead (CPUs, fans, NICs, storage, PSU losses)
    = node - GPUs."""

    model: str
    day: date
    nodes: int  # distinct metered nodes that day
    metered_seconds: float  # node-seconds with a node meter reading
    node_energy_j: float
    gpu_energy_j: float
    gpu_seconds: float  # GPU-seconds of those nodes over the same seconds


@dataclass(frozen=True, slots=True)
class FleetModel:
    """One GPU model of the measured fleet over the window."""

    model: str
    gpus: int
    servers: int  # nodes whose GPUs are this model
    mean_utilization: float  # 0..1, over the GPUs' readings
    gpu_energy_kwh: float  # the GPUs' own energy
    it_energy_kwh: float  # the nodes' IT energy (node meter, else parts + estimated overhead)


@dataclass(frozen=True, slots=True)
class MeasuredFleet:
    """The site's fleet as the ledger measured it between ``since`` and ``until`` (unix s)."""

    since: float
    until: float
    models: tuple[FleetModel, ...]

    @property
    def hours(self) -> float:
        return (self.until - self.since) / 3600.0

    @property
    def gpus(self) -> int:
        return sum(m.gpus for m in self.models)

    @property
    def servers(self) -> int:
        return sum(m.servers for m in self.models)

    @property
    def it_energy_kwh(self) -> float:
        return sum(m.it_energy_kwh for m in self.models)

    @property
    def mean_utilization(self) -> float | None:
        """GPU-weighted mean utilization of the fleet."""
        gpus = self.gpus
        return sum(m.mean_utilization * m.gpus for m in self.models) / gpus if gpus else None


@dataclass(frozen=True, slots=True)
class SiteMonth:
    """A local month of the site as the ledger booked it."""

    month: str  # "YYYY-MM", site local time
    days: int  # days with readings
    it_kwh: float
    cooling_kwh: float | None  # measured by cooling meters; None where the site has none
    facility_kwh: float | None  # measured by a facility meter; None where the site has none
    outdoor_mean_c: float | None  # mean of the outdoor sensor's readings; None without one
    outdoor_hours: float  # hours that mean covers
    idle_gpu_hours: float  # GPU-hours of readings with utilization < 5 %
    idle_energy_kwh: float  # the GPUs' own energy in those hours


@dataclass(frozen=True, slots=True)
class LedgerSpan:
    """The first and last reading of a site (unix seconds)."""

    first: float
    last: float


class ClosableHistory(Protocol):
    """A measured history that holds something to let go of when the plan is made."""

    def close(self) -> None: ...


@runtime_checkable
class MeasuredHistory(Protocol):
    """A site's measured history, as ``wattledger plan`` reads it. The ledger's read model
    implements this; every call is about one site, and answers from the additive per-day rows
    (no raw reading is read back)."""

    def span(self, site: str) -> LedgerSpan | None:
        """None when the ledger has no reading of the site."""
        ...

    def model_days(self, site: str) -> Sequence[ModelDay]: ...

    def node_overhead_days(self, site: str) -> Sequence[NodeOverheadDay]: ...

    def fleet(self, site: str, since: float, until: float) -> MeasuredFleet: ...

    def site_months(self, site: str) -> Sequence[SiteMonth]: ...


@dataclass(frozen=True)
class SiteHistory:
    """One site's history held in memory."""

    span: LedgerSpan | None = None
    model_days: tuple[ModelDay, ...] = ()
    node_overhead_days: tuple[NodeOverheadDay, ...] = ()
    fleet: MeasuredFleet | None = None
    site_months: tuple[SiteMonth, ...] = ()


@dataclass(frozen=True)
class HistorySnapshot:
    """:class:`MeasuredHistory` over histories held in memory, one per site (a site it does not
    hold has no history). The fleet window is the one it holds, whatever window is asked."""

    sites: dict[str, SiteHistory] = field(default_factory=dict)

    def _site(self, site: str) -> SiteHistory:
        return self.sites.get(site, SiteHistory())

    def span(self, site: str) -> LedgerSpan | None:
        return self._site(site).span

    def model_days(self, site: str) -> Sequence[ModelDay]:
        return self._site(site).model_days

    def node_overhead_days(self, site: str) -> Sequence[NodeOverheadDay]:
        return self._site(site).node_overhead_days

    def fleet(self, site: str, since: float, until: float) -> MeasuredFleet:
        found = self._site(site).fleet
        return found if found is not None else MeasuredFleet(since, until, ())

    def site_months(self, site: str) -> Sequence[SiteMonth]:
        return self._site(site).site_months

    def close(self) -> None:
        """Nothing to let go of (a ledger's history closes its connection)."""


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU reading as the ledger sees it at ingest (the fields the statistics need)."""

    ts: float
    gpu: str  # the device's id (UUID)
    model: str
    utilization: float | None  # 0..1; None when the GPU did not report it
    power_w: float | None


def model_days_from_readings(readings: Iterable[GpuReading], zone: ZoneInfo) -> list[ModelDay]:
    """Per (model, local day) statistics of GPU readings, as a ledger accumulates them at
    ingest: readings without a utilization or a power are not points of the line."""
    points: dict[tuple[str, date], list[tuple[float, float, float]]] = {}
    gpus: dict[tuple[str, date], set[str]] = {}
    for r in readings:
        if r.utilization is None or r.power_w is None:
            continue
        key = (r.model, datetime.fromtimestamp(r.ts, UTC).astimezone(zone).date())
        points.setdefault(key, []).append((r.ts, r.utilization, r.power_w))
        gpus.setdefault(key, set()).add(r.gpu)
    return [
        ModelDay(model, day, len(gpus[(model, day)]), PowerStats.of(rows))
        for (model, day), rows in sorted(points.items())
    ]
