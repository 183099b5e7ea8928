"""A site's months as a plan sees them: real local hours and the time-weighted tariff price.

A month runs from local midnight of its first day to local midnight of the next month's, so a
month with a DST change has 743 or 745 hours. Its price is the mean of the tariff's price over
every real local minute of the month: the site's bands are matched by the collector's own code
(``SiteConfig.week_prices``, ``SiteConfig.local_minute_of_week``, ``SiteClock.month_bounds``),
never a second time here; this module only counts how many minutes of the month fall on each
minute of the local week.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wattledger.collector.accounting.siteclock import SiteClock
from wattledger.collector.sites import MINUTES_PER_WEEK, SiteConfig


@dataclass(frozen=True, slots=True)
class MonthClock:
    month: int  # yyyymm
    hours: float  # real local hours
    price_per_kwh: float  # time-weighted over the month's minutes, before escalation


def week_minute_counts(site: SiteConfig, start_s: float, end_s: float) -> npt.NDArray[np.int64]:
    """How many UTC minutes of [start_s, end_s) fall on each minute of the site's local week.

    One local-time lookup per UTC hour: within an hour whose start and last minute are 59 local
    minutes apart no offset changed, so its minutes are consecutive minutes of the week; an hour
    that holds a DST change (or a zone's odd transition minute) is looked up minute by minute.
    """
    counts = np.zeros(MINUTES_PER_WEEK, dtype=np.int64)
    first, end = int(start_s // 60), int(end_s // 60)
    minute = first
    while minute < end:
        span = min(60, end - minute)
        at = site.local_minute_of_week(minute)
        last = site.local_minute_of_week(minute + span - 1)
        if (last - at) % MINUTES_PER_WEEK == span - 1:
            counts[(at + np.arange(span)) % MINUTES_PER_WEEK] += 1
        else:
            for k in range(span):
                counts[site.local_minute_of_week(minute + k)] += 1
        minute += span
    return counts


def month_clock(site: SiteConfig, month: int) -> MonthClock:
    start_s, end_s = SiteClock(site).month_bounds(month)
    counts = week_minute_counts(site, start_s, end_s)
    # validated at load: every minute of the week has a price (no None)
    prices = np.array(site.week_prices, dtype=np.float64)
    minutes = int(counts.sum())
    # each distinct price times the share of the month's minutes at it: a flat price stays exact
    levels, where = np.unique(prices, return_inverse=True)
    shares = np.bincount(where, weights=counts, minlength=len(levels)) / minutes
    price = float(sum(float(level) * float(share) for level, share in zip(levels, shares, strict=True)))
    return MonthClock(month=month, hours=(end_s - start_s) / 3600.0, price_per_kwh=price)
