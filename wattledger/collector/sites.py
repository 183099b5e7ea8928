"""Sites and plan of the collector configuration (DESIGN.md, "Collector configuration").

A site says how a joule becomes money and carbon: its clock (timezone), its price (flat or
time-of-use bands), its PUE, its demand charge and its grid's carbon intensity. Everything is
validated when the configuration is loaded, so a bad price or a tariff with a hole is one clear
line at start, never a surprise in a bill. See docs/accounting.md for the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from wattledger.collector.accounting.cooling import Cooling, CoolingModel, PueCooling
from wattledger.contract import MONTH_PATTERN

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CLOCK_TIME_PATTERN = r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$"
CURRENCY_PATTERN = r"^[A-Za-z]{3}$"
ClockTime = Annotated[str, StringConstraints(pattern=CLOCK_TIME_PATTERN)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Month = Annotated[str, StringConstraints(pattern=MONTH_PATTERN)]
SiteName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _minute_of_day(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _clock(minute_of_day: int) -> str:
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"


class TariffBand(BaseModel):
    """One time-of-use band: a price for the minutes it matches (site local time).

    ``days`` absent = every day; ``from``/``to`` absent = 00:00/24:00. A minute matches when its
    own weekday is in ``days`` and its time of day is in [from, to); with ``from`` > ``to`` the
    band wraps midnight (22:00-06:00 = 22:00-24:00 and 00:00-06:00 of each listed day).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    price_per_kwh: NonNegative
    days: Annotated[list[Day], Field(min_length=1)] | None = None
    from_: ClockTime | None = Field(default=None, alias="from")
    to: ClockTime | None = None

    @model_validator(mode="after")
    def _check_span(self) -> TariffBand:
        if self.from_ == "24:00":
            raise ValueError("a band cannot start at 24:00 (use 00:00)")
        start, end = self.minutes()
        if start == end:
            raise ValueError(f"band from {self.from_} to {self.to} is empty "
                             "(leave out from and to for the whole day)")
        return self

    def minutes(self) -> tuple[int, int]:
        """The band's [start, end) as minutes of the day; end < start wraps midnight."""
        start = _minute_of_day(self.from_) if self.from_ is not None else 0
        end = _minute_of_day(self.to) if self.to is not None else MINUTES_PER_DAY
        return start, end


def _inject_site_names(value: Any) -> Any:
    """Give each site its key as ``name`` so that its errors can say which site is wrong."""
    if isinstance(value, Mapping):
        return {key: ({**site, "name": str(key)} if isinstance(site, Mapping) else site)
                for key, site in value.items()}
    return value


class SiteConfig(BaseModel):
    """How one site turns IT joules into facility energy, money and carbon."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the site's key in ``sites`` (filled in by ``Sites``); only used in messages
    name: str = Field(default="", exclude=True)
    timezone: str = "UTC"
    currency: Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN, to_upper=True)] = "USD"
    pue: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.5
    price_per_kwh: NonNegative | None = None
    tariff: Annotated[list[TariffBand], Field(min_length=1)] | None = None
    demand_charge_per_kw: NonNegative = 0.0
    carbon_g_per_kwh: NonNegative = 0.0
    #: the cooling model (DESIGN.md "Cooling: three models per site"); absent: ``pue`` above
    cooling: CoolingModel | None = None
    #: a node without a node meter: overhead (fans, NICs, PSU losses) = this x its parts' energy
    node_overhead_ratio: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _pue_or_cooling(self) -> SiteConfig:
        if self.cooling is not None and "pue" in self.model_fields_set:
            who = f"site {self.name!r}" if self.name else "a site"
            raise ValueError(f"{who}: give either pue or cooling, not both (cooling: {{model: pue, "
                             "pue: 1.4} is the long form of pue: 1.4)")
        return self

    @property
    def cooling_model(self) -> Cooling:
        """The site's cooling model: ``cooling``, else ``pue`` (a bare ``pue:`` key means this)."""
        return self.cooling if self.cooling is not None else PueCooling(pue=self.pue)

    @property
    def device_pue(self) -> float:
        """The factor a device's IT energy is multiplied by for its facility energy at once:
        the PUE of a ``pue`` site; 1 where cooling is booked per site and minute instead."""
        model = self.cooling_model
        return model.pue if isinstance(model, PueCooling) else 1.0

    @property
    def shares_cooling(self) -> bool:
        """Whether the site's cooling (and other facility load) is shared out per minute by the
        holders' IT energy (``chiller``, ``metered``: ingest/sharing.py) rather than booked as
        each joule's IT x (pue - 1)."""
        return not isinstance(self.cooling_model, PueCooling)

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        from wattledger.collector.accounting.money import minor_units
        minor_units(value)  # ValueError for a code ISO 4217 does not have: its CSV could not be rounded
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as "
                             "'Europe/Berlin' or 'UTC')") from None
        return value

    @model_validator(mode="after")
    def _one_price(self) -> SiteConfig:
        who = f"site {self.name!r}" if self.name else "a site"
        if (self.price_per_kwh is None) == (self.tariff is None):
            raise ValueError(f"{who} needs exactly one of price_per_kwh or tariff")
        gap = self._first_unpriced_minute()
        if gap is not None:
            weekday, minute = divmod(gap, MINUTES_PER_DAY)
            subject = f"tariff bands of site {self.name!r}" if self.name else "tariff bands"
            raise ValueError(f"{subject} leave {DAYS[weekday]} {_clock(minute)} without a price")
        return self

    def _first_unpriced_minute(self) -> int | None:
        week = self.week_prices
        for minute_of_week, price in enumerate(week):
            if price is None:
                return minute_of_week
        return None

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def week_prices(self) -> tuple[float | None, ...]:
        """Price of every minute of the local week (Monday 00:00 first); None = no band."""
        if self.price_per_kwh is not None:
            return (self.price_per_kwh,) * MINUTES_PER_WEEK
        assert self.tariff is not None
        prices: list[float | None] = [None] * MINUTES_PER_WEEK
        for band in reversed(self.tariff):  # the first band that matches wins: paint it last
            days = range(7) if band.days is None else [DAYS.index(d) for d in band.days]
            start, end = band.minutes()
            spans = [(start, end)] if start < end else [(start, MINUTES_PER_DAY), (0, end)]
            for day in days:
                for lo, hi in spans:
                    base = day * MINUTES_PER_DAY
                    prices[base + lo:base + hi] = [band.price_per_kwh] * (hi - lo)
        return tuple(prices)

    def local_minute_of_week(self, unix_minute: int) -> int:
        """Minute of the local week (0 = Monday 00:00) of the UTC minute ``unix_minute``."""
        local = datetime.fromtimestamp(unix_minute * 60, UTC).astimezone(self.zone)
        return local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute

    def price_at(self, unix_minute: int) -> float:
        """Price per kWh in force during the UTC minute ``unix_minute`` (= unix seconds // 60)."""
        price = self.week_prices[self.local_minute_of_week(unix_minute)]
        assert price is not None  # validated: every minute of the week has a price
        return price


#: ``sites:`` of the configuration: name -> SiteConfig, each told its own name
Sites = Annotated[dict[SiteName, SiteConfig], BeforeValidator(_inject_site_names)]


class PlanEntry(BaseModel):
    """A monthly budget of a site (or of one cluster of a site).

    ``cost`` is the whole month: energy (IT + cooling) and the demand charge. ``demand_charge``,
    a site entry's only, is the part of ``cost`` set aside for the demand charge: the rest is
    the energy budget, which accrues over the month while the demand charge is owed whole as
    soon as the peak is set (docs/accounting.md, "Plan, plan to date, forecast").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: SiteName
    month: Month
    cost: NonNegative
    it_energy_kwh: NonNegative | None = None
    cluster: str | None = None
    #: a team's budget (docs/chargeback.md): its energy cost and its share of the demand charge
    team: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    demand_charge: NonNegative | None = None

    @model_validator(mode="after")
    def _demand_within_cost(self) -> PlanEntry:
        if self.team is not None and self.cluster is not None:
            raise ValueError("a plan entry budgets a site, one of its clusters or one of its teams: "
                             "give cluster or team, not both")
        if self.demand_charge is None:
            return self
        if self.team is not None:
            raise ValueError("demand_charge belongs to a site's entry, not a team's: a team's budget "
                             "covers its share of the demand charge")
        if self.cluster is not None:
            raise ValueError("demand_charge belongs to a site's entry, not a cluster's: the demand "
                             "charge is the site's (its peak is the whole site's)")
        if self.demand_charge > self.cost:
            raise ValueError(f"demand_charge {self.demand_charge:g} is more than the month's cost "
                             f"{self.cost:g}, of which it is a part")
        return self

    @field_validator("month", mode="before")
    @classmethod
    def _month_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 2026-12 as text, but a date such as 2026-12-01 as a date
        if hasattr(value, "strftime"):
            return value.strftime("%Y-%m")
        return value



def check_plan(sites: Mapping[str, SiteConfig], plan: Sequence[PlanEntry]) -> None:
    """Cross-check the plan against the sites: known sites, one entry per (site, month, cluster)."""
    seen: dict[tuple[str, str, str | None, str | None], int] = {}
    for number, entry in enumerate(plan, start=1):
        if entry.site not in sites:
            raise ValueError(f"plan entry {number} names site {entry.site!r}, which is not in sites")
        key = (entry.site, entry.month, entry.cluster, entry.team)
        if key in seen:
            what = (f"site {entry.site!r}" + (f" cluster {entry.cluster!r}" if entry.cluster else "")
                    + (f" team {entry.team!r}" if entry.team else ""))
            raise ValueError(f"plan entries {seen[key]} and {number} both budget {what} "
                             f"for {entry.month}")
        seen[key] = number
