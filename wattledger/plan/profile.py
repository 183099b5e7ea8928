"""A GPU model's measured power profile, fitted from the ledger's sufficient statistics.

From ``n, Σu, Σp, Σu², Σup, Σp²`` the least-squares line ``p = a + b·u`` over the raw readings
is exact: ``b = Sup / Suu`` and ``a = (Σp - b Σu) / n`` with the centred sums ``Suu = Σu² -
(Σu)²/n``, ``Sup = Σup - Σu Σp / n``, ``Spp = Σp² - (Σp)²/n``, and ``R² = Sup² / (Suu Spp)``.
A projection at a mean utilization ū takes ``a + b ū``: for a line, the mean power of readings
whose mean utilization is ū (docs/planning.md, "Measured profiles").

A profile is *usable* for ``power: measured`` only with enough data; otherwise it says why, and
the planner gives ``power: {idle_w, max_w, node_overhead_w}`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from wattledger.collector.accounting.history import (
    POWER_BIN_W,
    UTIL_BINS,
    ModelDay,
    NodeOverheadDay,
    PowerStats,
    sum_stats,
)

#: the data a profile needs before the plan uses it
MIN_READINGS = 1000
MIN_HOURS = 24.0  # from the first reading to the last
MIN_UTILIZATION_SPREAD = 0.25  # between the 5th and the 95th percentile of utilization
MIN_METERED_NODE_HOURS = 24.0  # node-hours with a node meter, for the node overhead


@dataclass(frozen=True, slots=True)
class LineFit:
    intercept_w: float  # power at utilization 0 on the line
    slope_w: float  # W per unit of utilization (0..1): the line rises this much from 0 to 100 %
    r2: float

    def power_at(self, utilization: float) -> float:
        return self.intercept_w + self.slope_w * utilization


def fit_line(stats: PowerStats) -> LineFit | None:
    """The least-squares line of the readings; None without two distinct utilizations."""
    n = stats.n
    if n < 2:
        return None
    suu = stats.sum_uu - stats.sum_u * stats.sum_u / n
    sup = stats.sum_up - stats.sum_u * stats.sum_p / n
    spp = stats.sum_pp - stats.sum_p * stats.sum_p / n
    # the centred sums cancel large raw sums: below this scale they are rounding, not spread
    if suu <= 1e-12 * max(stats.sum_uu, 1e-300):
        return None
    slope = sup / suu
    intercept = (stats.sum_p - slope * stats.sum_u) / n
    # every reading with the same power: the (flat) line explains all there is
    flat = spp <= 1e-12 * max(stats.sum_pp, 1e-300)
    r2 = 1.0 if flat else min(max(sup * sup / (suu * spp), 0.0), 1.0)
    return LineFit(intercept, slope, r2)


def _quantile(counts: Sequence[int], width: float, q: float) -> float | None:
    """The q-quantile of a histogram of bins ``[i·width, (i+1)·width)``, linear within a bin."""
    total = sum(counts)
    if total == 0:
        return None
    target = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= target:
            return (i + (target - seen) / count) * width
        seen += count
    return len(counts) * width


def power_percentile(stats: PowerStats, q: float) -> float | None:
    """The q-quantile of power from the 10 W histogram (good to a bin; the last bin, 3 kW and
    above, is counted as [3000, 3010) W)."""
    return _quantile(stats.power_hist, POWER_BIN_W, q)


def utilization_percentile(stats: PowerStats, q: float) -> float | None:
    return _quantile(stats.util_n, 1.0 / UTIL_BINS, q)


@dataclass(frozen=True, slots=True)
class Coverage:
    """The data a profile came from."""

    days: int  # days with readings
    gpus: int  # the most GPUs of the model seen on one day
    readings: int
    hours: float  # from the first reading to the last
    first_day: date | None
    last_day: date | None


@dataclass(frozen=True, slots=True)
class NodeOverhead:
    overhead_w: float  # per node: node meter power - its GPUs' power
    nodes: int  # the most metered nodes seen on one day
    metered_node_hours: float
    gpus_per_node: float


@dataclass(frozen=True, slots=True)
class BinnedPoint:
    utilization: float  # the bin's centre
    mean_power_w: float
    readings: int


@dataclass(frozen=True, slots=True)
class PowerProfile:
    """A GPU model's power against utilization as measured, with the data it came from."""

    model: str
    coverage: Coverage
    fit: LineFit | None
    idle_w: float | None  # mean power of the readings below 5 % utilization
    idle_readings: int
    p95_w: float | None
    mean_utilization: float | None
    utilization_p5: float | None
    utilization_p95: float | None
    binned: tuple[BinnedPoint, ...]
    node_overhead: NodeOverhead | None
    stats: PowerStats
    #: why the line cannot stand for the model (empty: it can)
    problems: tuple[str, ...]

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def line_idle_w(self) -> float:
        """``idle_w`` of the contract's GPU power formula: the line at 0 %."""
        assert self.fit is not None
        return self.fit.intercept_w

    @property
    def line_max_w(self) -> float:
        """``max_w`` of the contract's formula: the line at 100 %."""
        assert self.fit is not None
        return self.fit.power_at(1.0)


def node_overhead_of(days: Sequence[NodeOverheadDay]) -> NodeOverhead | None:
    seconds = sum(d.metered_seconds for d in days)
    if seconds <= 0:
        return None
    node_j = sum(d.node_energy_j for d in days)
    gpu_j = sum(d.gpu_energy_j for d in days)
    return NodeOverhead(
        overhead_w=(node_j - gpu_j) / seconds,
        nodes=max(d.nodes for d in days),
        metered_node_hours=seconds / 3600.0,
        gpus_per_node=sum(d.gpu_seconds for d in days) / seconds,
    )


def profile_of(
    model: str, days: Sequence[ModelDay], overhead_days: Sequence[NodeOverheadDay] = ()
) -> PowerProfile:
    """The profile of one model from its per-day rows (and its node-meter rows)."""
    own = [d for d in days if d.model == model]
    stats = sum_stats(d.power for d in own)
    hours = (
        (stats.last_ts - stats.first_ts) / 3600.0
        if stats.first_ts is not None and stats.last_ts is not None
        else 0.0
    )
    coverage = Coverage(
        days=len({d.day for d in own}),
        gpus=max((d.gpus for d in own), default=0),
        readings=stats.n,
        hours=hours,
        first_day=min((d.day for d in own), default=None),
        last_day=max((d.day for d in own), default=None),
    )
    fit = fit_line(stats)
    p5, p95u = utilization_percentile(stats, 0.05), utilization_percentile(stats, 0.95)
    problems: list[str] = []
    if stats.n < MIN_READINGS:
        problems.append(f"{stats.n} readings (at least {MIN_READINGS} needed)")
    if hours < MIN_HOURS:
        problems.append(f"{hours:.1f} hours of readings (at least {MIN_HOURS:g} needed)")
    spread = (p95u - p5) if p5 is not None and p95u is not None else 0.0
    if spread < MIN_UTILIZATION_SPREAD:
        problems.append(
            f"utilization spans only {spread:.0%} between its 5th and 95th percentile "
            f"(at least {MIN_UTILIZATION_SPREAD:.0%} needed to place a line)"
        )
    if fit is not None and fit.slope_w < 0:
        problems.append(f"power falls as utilization rises ({fit.slope_w:.1f} W per 100 %)")
    if fit is None and not problems:
        problems.append("no two readings at different utilizations")
    binned = tuple(
        BinnedPoint((i + 0.5) / UTIL_BINS, stats.util_sum_p[i] / count, count)
        for i, count in enumerate(stats.util_n)
        if count
    )
    own_overhead = [d for d in overhead_days if d.model == model]
    return PowerProfile(
        model=model,
        coverage=coverage,
        fit=fit,
        idle_w=stats.idle_sum_p / stats.idle_n if stats.idle_n else None,
        idle_readings=stats.idle_n,
        p95_w=power_percentile(stats, 0.95),
        mean_utilization=stats.sum_u / stats.n if stats.n else None,
        utilization_p5=p5,
        utilization_p95=p95u,
        binned=binned,
        node_overhead=node_overhead_of(own_overhead),
        stats=stats,
        problems=tuple(problems),
    )


def profiles_of(
    days: Sequence[ModelDay], overhead_days: Sequence[NodeOverheadDay] = ()
) -> dict[str, PowerProfile]:
    """Every model's profile, by model name."""
    return {model: profile_of(model, days, overhead_days) for model in sorted({d.model for d in days})}
