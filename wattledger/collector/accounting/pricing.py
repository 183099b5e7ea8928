"""What a joule costs: intervals split by minute, priced at the site's tariff in local time,
with cooling and carbon, summed per (month, device), per quarter-hour and per site-month.

DESIGN.md, "Accounting": an interval's energy is split over the minutes it spans in proportion
to time; cooling = IT x (pue - 1); cost = kWh x the price in force in that minute; carbon =
facility kWh x the grid's intensity. Everything here is arithmetic on numpy columns: the
ledger's transaction (per group of batches) and nothing else calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wattledger.collector.accounting import intervals
from wattledger.collector.accounting.aggregation import Floats, Ints, sum_by
from wattledger.collector.accounting.siteclock import SiteClock
from wattledger.collector.sites import SiteConfig

JOULES_PER_KWH = 3.6e6
QUARTER_SECONDS = 900.0


@dataclass
class SiteSums:
    """What a site used (in one billing month, or since the ledger began)."""

    it_j: float = 0.0
    cooling_j: float = 0.0
    it_cost: float = 0.0
    cooling_cost: float = 0.0
    carbon_g: float = 0.0
    peak_quarter_facility_j: float = 0.0  # the month's highest quarter-hour, all clusters
    #: other facility load (a metered site's facility meter less IT and cooling), its cost
    other_j: float = 0.0
    other_cost: float = 0.0
    #: chiller minutes whose outdoor temperature came from a fallback (x 60 s)
    fallback_s: float = 0.0

    @property
    def energy_cost(self) -> float:
        return self.it_cost + self.cooling_cost + self.other_cost

    def add(self, it_j: float, cooling_j: float, it_cost: float, cooling_cost: float,
            carbon_g: float, other_j: float = 0.0, other_cost: float = 0.0, fallback_s: float = 0.0) -> None:
        self.it_j += it_j
        self.cooling_j += cooling_j
        self.it_cost += it_cost
        self.cooling_cost += cooling_cost
        self.carbon_g += carbon_g
        self.other_j += other_j
        self.other_cost += other_cost
        self.fallback_s += fallback_s


class SitePrices:
    """Per site (by index in ``names``): its clock (tariff, month, quarter), PUE and carbon."""

    def __init__(self, sites: Sequence[SiteConfig]) -> None:
        self.clocks = [SiteClock(site) for site in sites]
        self.pue = np.array([site.device_pue for site in sites], dtype=np.float64)
        self.carbon_g_per_kwh = np.array([site.carbon_g_per_kwh for site in sites], dtype=np.float64)

    def lookup(self, site: Ints, minutes: Ints) -> tuple[Floats, Ints, Ints]:
        """Per (site index, UTC minute): the price per kWh in force, the billing month (yyyymm)
        and the local quarter-hour's start minute."""
        price = np.zeros(len(minutes))
        month = np.zeros(len(minutes), dtype=np.int64)
        quarter = np.zeros(len(minutes), dtype=np.int64)
        for s in np.unique(site).tolist():
            mask = site == s
            price[mask], month[mask], quarter[mask] = self.clocks[s].lookup(minutes[mask])
        return price, month, quarter


@dataclass(frozen=True)
class Priced:
    """A group's energy in money: the rows the ledger adds (every one a sum to add)."""

    # per (month yyyymm, device, group): it_j, cooling_j, it_cost, cooling_cost, carbon_g, unmeasured_s
    usage_keys: tuple[Ints, Ints, Ints]
    usage: list[Floats]
    # per (group, quarter start minute, month): it_j, facility_j, cost
    quarter_keys: tuple[Ints, Ints, Ints]
    quarters: list[Floats]
    # per (group, month): it_j, cooling_j, it_cost, cooling_cost, carbon_g
    month_keys: tuple[Ints, Ints]
    months: list[Floats]
    # per (node, minute): the parts' energy and its GPUs' part (the node minutes' inputs)
    node_keys: tuple[Ints, Ints]
    node_parts: list[Floats]


def price(iv: intervals.Intervals, interval_group: Ints, group_site: Ints, prices: SitePrices,
          device_node: Ints | None = None, device_gpu: npt.NDArray[np.bool_] | None = None) -> Priced:
    """Split intervals by minute, price them, roll up per (month, device), quarter-hour and month,
    and per (node, minute) the parts' energy.

    ``interval_group`` is each interval's (site, cluster) group and ``group_site`` each group's
    site index (into ``prices``); devices are ``iv.slot``, ``device_node`` numbers each device's
    node and ``device_gpu`` says which are GPUs (default: one node, no GPUs).
    """
    shares = intervals.split_for_pricing(iv.start, iv.end, iv.unmeasured_s > 0)
    k = shares.interval
    it_j = iv.energy_j[k] * shares.share
    unmeasured = iv.unmeasured_s[k] * shares.share
    device, grp, minute = iv.slot[k], interval_group[k], shares.minute
    site = group_site[grp] if len(grp) else np.zeros(0, dtype=np.int64)
    price_kwh, month, quarter = prices.lookup(site, minute)
    cooling_j = it_j * (prices.pue[site] - 1.0)
    it_cost = it_j / JOULES_PER_KWH * price_kwh
    cooling_cost = cooling_j / JOULES_PER_KWH * price_kwh
    carbon_g = (it_j + cooling_j) / JOULES_PER_KWH * prices.carbon_g_per_kwh[site]

    (u_month, u_device, u_group), usage = sum_by(
        (month, device, grp), (it_j, cooling_j, it_cost, cooling_cost, carbon_g, unmeasured))
    # the site sums take one addition per (site and cluster, month), not one per device
    (m_group, m_month), months = sum_by((u_group, u_month), usage[:5])
    (q_group, q_start, q_month), quarters = sum_by(
        (grp, quarter, month), (it_j, it_j + cooling_j, it_cost + cooling_cost))
    measured = unmeasured == 0
    dev_node = device_node if device_node is not None else np.zeros(int(device.max(initial=-1)) + 1,
                                                                    dtype=np.int64)
    gpu = device_gpu[device] if device_gpu is not None else np.zeros(len(device), dtype=bool)
    (n_node, n_minute), node_parts = sum_by(
        (dev_node[device][measured], minute[measured]), (it_j[measured], np.where(gpu, it_j, 0.0)[measured]))
    return Priced((u_month, u_device, u_group), usage, (q_group, q_start, q_month), quarters,
                  (m_group, m_month), months, (n_node, n_minute), node_parts)
