"""A site's local clock for accounting: price, billing month and demand quarter of a UTC minute.

Everything the ledger needs per minute is looked up once per distinct (site, minute) of an
ingest and cached, so the zoneinfo work is a few dozen calls per ingest, not one per reading.
UTC minutes are unambiguous across DST changes; local time is only used to find the price,
the month and the quarter-hour of each minute.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from wattledger.collector.sites import MINUTES_PER_DAY, SiteConfig

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

QUARTER_MINUTES = 15
_CACHE_LIMIT = 200_000  # minutes (about 4.6 months of one site) before the cache starts over


def month_id(year: int, month: int) -> int:
    """A month as the integer yyyymm (sorts and compares like the month)."""
    return year * 100 + month


def month_text(mid: int) -> str:
    return f"{mid // 100:04d}-{mid % 100:02d}"


def parse_month(text: str) -> int:
    year, month = text.split("-")
    return month_id(int(year), int(month))


def next_month(mid: int) -> int:
    year, month = divmod(mid, 100)
    return month_id(year + 1, 1) if month == 12 else month_id(year, month + 1)


class SiteClock:
    """Per-minute price, month and quarter-hour of one site, cached by UTC minute."""

    def __init__(self, site: SiteConfig) -> None:
        self.site = site
        self._cache: dict[int, tuple[float, int, int]] = {}

    def _compute(self, minute: int) -> tuple[float, int, int]:
        local = datetime.fromtimestamp(minute * 60, UTC).astimezone(self.site.zone)
        minute_of_day = local.hour * 60 + local.minute
        price = self.site.week_prices[local.weekday() * MINUTES_PER_DAY + minute_of_day]
        assert price is not None  # validated at load: every minute of the week has a price
        # the quarter-hour of the local clock (:00 :15 :30 :45) that holds this minute, named by
        # the UTC minute it starts at: the two 01:00-01:15 of a fall-back night stay apart
        quarter_start = minute - minute_of_day % QUARTER_MINUTES
        return price, month_id(local.year, local.month), quarter_start

    def lookup(self, minutes: Ints) -> tuple[Floats, Ints, Ints]:
        """Price per kWh, month (yyyymm) and quarter start (UTC minute) of each UTC minute."""
        unique, inverse = np.unique(minutes, return_inverse=True)
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()
        rows = []
        for minute in unique.tolist():
            row = self._cache.get(minute)
            if row is None:
                row = self._cache[minute] = self._compute(minute)
            rows.append(row)
        prices = np.array([r[0] for r in rows], dtype=np.float64)
        months = np.array([r[1] for r in rows], dtype=np.int64)
        quarters = np.array([r[2] for r in rows], dtype=np.int64)
        return prices[inverse], months[inverse], quarters[inverse]

    def month_at(self, unix_s: float) -> int:
        local = datetime.fromtimestamp(unix_s, UTC).astimezone(self.site.zone)
        return month_id(local.year, local.month)

    def month_bounds(self, mid: int) -> tuple[float, float]:
        """Unix seconds at which the month starts and ends (local midnight of the 1st)."""
        def start(m: int) -> float:
            return datetime(m // 100, m % 100, 1, tzinfo=self.site.zone).timestamp()
        return start(mid), start(next_month(mid))
