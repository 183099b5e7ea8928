"""Sites and plan: every configuration mistake is one clear line at load."""

from __future__ import annotations

from typing import Any

import pytest
from ledgerkit import at
from pydantic import TypeAdapter, ValidationError

from wattledger.collector.sites import PlanEntry, Sites, check_plan

SITES = TypeAdapter(Sites)


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        SITES.validate_python(raw)
    (first, *_) = caught.value.errors()
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


def test_a_flat_site_with_defaults() -> None:
    site = SITES.validate_python({"lab": {"price_per_kwh": 0.2, "currency": "eur"}})["lab"]
    assert (site.name, site.timezone, site.currency, site.pue) == ("lab", "UTC", "EUR", 1.5)
    assert site.demand_charge_per_kw == 0.0 and site.carbon_g_per_kwh == 0.0
    assert site.price_at(0) == 0.2


@pytest.mark.parametrize(("raw", "message"), [
    ({"timezone": "Mars/Olympus", "price_per_kwh": 0.1},
     "s.timezone: Value error, unknown timezone 'Mars/Olympus'"),
    ({"price_per_kwh": -0.1}, "s.price_per_kwh: Input should be greater than or equal to 0"),
    ({}, "s: Value error, site 's' needs exactly one of price_per_kwh or tariff"),
    ({"price_per_kwh": 0.1, "tariff": [{"price_per_kwh": 0.2}]},
     "s: Value error, site 's' needs exactly one of price_per_kwh or tariff"),
    ({"price_per_kwh": 0.1, "pue": 0.9}, "s.pue: Input should be greater than or equal to 1"),
    ({"price_per_kwh": 0.1, "demand_charge_per_kw": -1}, "s.demand_charge_per_kw: Input should be"),
    ({"price_per_kwh": 0.1, "carbon_g_per_kwh": -1}, "s.carbon_g_per_kwh: Input should be"),
    ({"price_per_kwh": 0.1, "prise": 1}, "s.prise: Extra inputs are not permitted"),
    ({"price_per_kwh": 0.1, "currency": "dollars"}, "s.currency: String should match pattern"),
    ({"tariff": [{"price_per_kwh": 0.3, "days": ["mon", "tue", "wed", "thu", "fri"]}]},
     "s: Value error, tariff bands of site 's' leave sat 00:00 without a price"),
    ({"tariff": [{"price_per_kwh": 0.3, "from": "00:00", "to": "23:59"}]},
     "s: Value error, tariff bands of site 's' leave mon 23:59 without a price"),
    ({"tariff": [{"price_per_kwh": 0.3, "from": "08:00", "to": "08:00"}]},
     "s.tariff.0: Value error, band from 08:00 to 08:00 is empty"),
    ({"tariff": [{"price_per_kwh": 0.3, "from": "24:00"}]},
     "s.tariff.0: Value error, a band cannot start at 24:00"),
    ({"tariff": [{"price_per_kwh": 0.3, "from": "8:00"}]}, "s.tariff.0.from: String should match"),
    ({"tariff": [{"price_per_kwh": 0.3, "days": ["monday"]}]}, "s.tariff.0.days.0: Input should be"),
    ({"tariff": []}, "s.tariff: List should have at least 1 item"),
])
def test_bad_sites_are_one_clear_line(raw: dict[str, Any], message: str) -> None:
    assert error_of({"s": raw}).startswith(message)


def test_bands_to_midnight_and_wrapping_cover_the_week() -> None:
    site = SITES.validate_python({"s": {"tariff": [
        {"price_per_kwh": 0.3, "from": "08:00", "to": "24:00"},
        {"price_per_kwh": 0.1, "from": "20:00", "to": "08:00"}]}})["s"]
    minute = lambda text: int(at(text) // 60)  # noqa: E731
    assert site.price_at(minute("2026-11-02 07:59")) == 0.1
    assert site.price_at(minute("2026-11-02 08:00")) == 0.3
    assert site.price_at(minute("2026-11-02 23:59")) == 0.3  # the first band that matches wins


def test_price_follows_local_time_across_dst() -> None:
    site = SITES.validate_python({"s": {"timezone": "America/New_York", "tariff": [
        {"price_per_kwh": 0.3, "from": "08:00", "to": "20:00"}, {"price_per_kwh": 0.1}]}})["s"]
    # 12:30 UTC is 08:30 EDT in July but 07:30 EST in December
    assert site.price_at(int(at("2026-07-01 12:30") // 60)) == 0.3
    assert site.price_at(int(at("2026-12-01 12:30") // 60)) == 0.1


def test_plan_entries_are_checked_against_sites() -> None:
    sites = SITES.validate_python({"default": {"price_per_kwh": 0.1}})
    plan = [PlanEntry(site="default", month="2026-12", cost=5.0),
            PlanEntry(site="default", month="2026-12", cost=3.0, cluster="a"),
            PlanEntry(site="x", month="2026-12", cost=1.0)]
    with pytest.raises(ValueError, match=r"^plan entry 3 names site 'x', which is not in sites$"):
        check_plan(sites, plan)
    twice = [plan[1], PlanEntry(site="default", month="2026-12", cost=1.0, cluster="a")]
    with pytest.raises(ValueError, match="plan entries 1 and 2 both budget site 'default' cluster 'a'"):
        check_plan(sites, twice)
    check_plan(sites, plan[:2])


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "26-12", "2026-00"])
def test_plan_months_look_like_2026_12(month: str) -> None:
    with pytest.raises(ValidationError, match="month"):
        PlanEntry(site="default", month=month, cost=1.0)


def test_plan_month_may_be_a_yaml_date() -> None:
    import datetime
    assert PlanEntry.model_validate({"site": "s", "month": datetime.date(2026, 12, 1),
                                     "cost": 1}).month == "2026-12"
