"""Projections computed by hand: a flat tariff, a time-of-use tariff over a month, DST months
(743/745 hours), escalation across a year boundary, depreciation ending inside the horizon,
PUE and chiller cooling (fixed temperature and a weather file), totals, the proposed plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from plankit import ENTRY, IT_KW, TOU_BANDS, plan, scenario, site, sites_of, write_epw

from wattledger.collector.sites import PlanEntry, SiteConfig
from wattledger.plan.calendar import month_clock
from wattledger.plan.projection import MONTH_KEYS


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["month"]: r for r in doc["months"]}


def test_flat_tariff_two_months_by_hand() -> None:
    doc = plan(scenario(), sites_of(dc1=site()))
    jan, feb = doc["months"]
    assert list(jan) == list(MONTH_KEYS)
    # GPU 100 + (500 - 100) x 0.5 = 300 W; node 8 x 300 + 1000 = 3400 W; 10 servers: 34 kW
    assert jan == pytest.approx(
        {
            "month": "2027-01",
            "gpus": 80,
            "it_kwh": 34 * 744,
            "cooling_kwh": 34 * 744 * 0.5,
            "facility_kwh": 34 * 744 * 1.5,
            "energy_cost": 34 * 744 * 1.5 * 0.10,
            "demand_charge": 51 * 10.0,  # facility kW = 34 x 1.5
            "capex": 10 * 12000 / 24,
            "total_cost": 3794.4 + 510 + 5000,
            "carbon_kg": 37944 * 0.4,
            "gpu_hours": 80 * 744,
            "cost_per_gpu_hour": 9304.4 / (80 * 744),
            "cloud_cost": 80 * 744 * 2.0,
        }
    )
    assert feb["it_kwh"] == pytest.approx(34 * 672) and feb["gpu_hours"] == 80 * 672
    assert feb["total_cost"] == pytest.approx(34 * 672 * 1.5 * 0.1 + 510 + 5000)
    totals = doc["totals"]
    assert "month" not in totals and totals["gpus"] == 80
    for key in (
        "it_kwh",
        "facility_kwh",
        "energy_cost",
        "demand_charge",
        "capex",
        "total_cost",
        "gpu_hours",
        "carbon_kg",
        "cloud_cost",
    ):
        assert totals[key] == pytest.approx(jan[key] + feb[key])
    assert totals["cost_per_gpu_hour"] == pytest.approx(totals["total_cost"] / totals["gpu_hours"])
    fleet = doc["fleet"][0]
    assert (fleet["gpu_power_w"], fleet["node_power_w"], fleet["it_kw"]) == (300.0, 3400.0, IT_KW)


def test_time_of_use_over_a_month_by_hand() -> None:
    """January 2027 (UTC) has 21 weekdays: 21 x 12 h at 0.30, the other 492 h at 0.10."""
    doc = plan(scenario(months=1), sites_of(dc1=site(tariff=TOU_BANDS)))
    price = (21 * 12 * 0.30 + (744 - 21 * 12) * 0.10) / 744
    assert doc["assumptions"]["months"][0]["price_per_kwh"] == pytest.approx(price, rel=1e-12)
    assert doc["months"][0]["energy_cost"] == pytest.approx(34 * 744 * 1.5 * price, rel=1e-12)
    assert doc["months"][0]["energy_cost"] == pytest.approx(6364.8, rel=1e-12)


@pytest.mark.parametrize(
    ("zone", "month", "hours"),
    [
        ("America/New_York", "2027-03", 743),
        ("America/New_York", "2027-11", 721),
        ("America/New_York", "2027-01", 744),
        ("Europe/Berlin", "2027-03", 743),
        ("Europe/Berlin", "2027-10", 745),
        ("UTC", "2027-03", 744),
    ],
)
def test_real_local_hours_of_a_month(zone: str, month: str, hours: int) -> None:
    doc = plan(scenario(start=month, months=1), sites_of(dc1=site(timezone=zone)))
    row = doc["months"][0]
    assert row["gpu_hours"] == 80 * hours
    assert row["it_kwh"] == pytest.approx(IT_KW * hours)
    assert doc["assumptions"]["months"][0]["hours"] == hours
    assert row["demand_charge"] == pytest.approx(IT_KW * 1.5 * 10)  # kW: the hours cancel


def test_time_of_use_in_a_dst_month_by_hand() -> None:
    """New York, March 2027: 743 hours, 23 weekdays (the change is on a Sunday night, off-peak)."""
    doc = plan(
        scenario(start="2027-03", months=1), sites_of(dc1=site(timezone="America/New_York", tariff=TOU_BANDS))
    )
    price = (23 * 12 * 0.30 + (743 - 23 * 12) * 0.10) / 743
    assert doc["months"][0]["energy_cost"] == pytest.approx(IT_KW * 743 * 1.5 * price, rel=1e-12)


def test_the_band_matching_is_the_collectors() -> None:
    """The month's price is the mean of SiteConfig.price_at over every minute of the month."""
    cfg = SiteConfig(name="x", timezone="Europe/Berlin", tariff=TOU_BANDS)
    start = int(month_clock(cfg, 202703).hours)
    assert start == 743
    from wattledger.collector.accounting.siteclock import SiteClock

    lo, hi = SiteClock(cfg).month_bounds(202703)
    minutes = range(int(lo // 60), int(hi // 60))
    assert month_clock(cfg, 202703).price_per_kwh == pytest.approx(
        sum(cfg.price_at(m) for m in minutes) / len(minutes), rel=1e-12
    )


def test_escalation_steps_on_whole_years_since_start_not_on_calendar_years() -> None:
    doc = plan(scenario(start="2027-11", months=14, price_escalation_per_year=0.05), sites_of(dc1=site()))
    by = rows(doc)
    for month, factor in (
        ("2027-11", 1.0),
        ("2027-12", 1.0),
        ("2028-01", 1.0),
        ("2028-10", 1.0),
        ("2028-11", 1.05),
        ("2028-12", 1.05),
    ):
        r = by[month]
        assert r["energy_cost"] == pytest.approx(r["facility_kwh"] * 0.10 * factor, rel=1e-12), month
        assert r["demand_charge"] == pytest.approx(510.0)  # escalation is the energy cost's only
    assert doc["assumptions"]["months"][12]["escalation_factor"] == pytest.approx(1.05)


def test_depreciation_ends_inside_the_horizon() -> None:
    entry = {**ENTRY, "from": "2027-02", "depreciation_months": 3}
    doc = plan(scenario(entry, months=6), sites_of(dc1=site()))
    capex = [r["capex"] for r in doc["months"]]
    assert capex == [0.0, 40000.0, 40000.0, 40000.0, 0.0, 0.0]
    assert doc["totals"]["capex"] == 10 * 12000
    jan = doc["months"][0]
    assert (jan["gpus"], jan["it_kwh"], jan["total_cost"], jan["cost_per_gpu_hour"]) == (0, 0.0, 0.0, None)
    assert doc["months"][4]["total_cost"] == pytest.approx(doc["months"][4]["energy_cost"] + 510.0)


def test_pue_cooling() -> None:
    doc = plan(scenario(months=1), sites_of(dc1=site(pue=1.25)))
    r = doc["months"][0]
    assert r["cooling_kwh"] == pytest.approx(IT_KW * 744 * 0.25)
    assert r["facility_kwh"] == pytest.approx(IT_KW * 744 * 1.25)
    long_form = {k: v for k, v in site().items() if k != "pue"} | {"cooling": {"model": "pue", "pue": 1.1}}
    doc = plan(scenario(months=1), sites_of(dc1=long_form))
    assert doc["months"][0]["cooling_kwh"] == pytest.approx(IT_KW * 744 * 0.1)


CHILLER = {
    "model": "chiller",
    "curves": "ashrae-90.1-2010-air-cooled",
    "cop_ref": 2.8,
    "capacity_kw": 100.0,
    "aux_ratio": 0.05,
}
C = (1.0433825, 0.0407073, 0.0004506, -0.0041514, -8.86e-05, -0.0003467)
E = (0.5961915, -0.0099496, 0.0007888, 0.0004506, 0.0004875, -0.0007623)


def chiller_kw(load: float, outdoor: float, water: float = 6.67) -> float:
    x, y = water, min(max(outdoor, 12.7), 51.67)
    q_avail = 100 * (C[0] + C[1] * x + C[2] * x * x + C[3] * y + C[4] * y * y + C[5] * x * y)
    eirft = E[0] + E[1] * x + E[2] * x * x + E[3] * y + E[4] * y * y + E[5] * x * y
    plr = min(load / q_avail, 1.0)
    return q_avail / 2.8 * eirft * (0.141 + 0.655 * plr + 0.203 * plr * plr) + 0.05 * load


def chiller_site(outdoor: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in site().items() if k != "pue"} | {"cooling": {**CHILLER, "outdoor": outdoor}}


def test_chiller_cooling_at_a_fixed_temperature() -> None:
    doc = plan(scenario(months=1), sites_of(dc1=chiller_site({"fixed_c": 30.0})))
    r = doc["months"][0]
    assert r["cooling_kwh"] == pytest.approx(chiller_kw(IT_KW, 30.0) * 744, rel=1e-12)
    assert r["facility_kwh"] == pytest.approx(IT_KW * 744 + r["cooling_kwh"], rel=1e-12)
    assert r["demand_charge"] == pytest.approx(r["facility_kwh"] / 744 * 10, rel=1e-12)
    month = doc["assumptions"]["months"][0]
    assert (month["outdoor_c"], month["outdoor_source"]) == (30.0, "fixed_c")
    assert 0 < month["chiller_plr"] < 1
    assert doc["assumptions"]["cooling"]["curves_source"].startswith("ASHRAE 90.1-2010")


def test_chiller_with_a_weather_file_clamps_a_cold_month(tmp_path: Path) -> None:
    temps = {m: {1: 2.0, 7: 33.0}.get(m, 20.0) for m in range(1, 13)}
    epw = write_epw(tmp_path / "site.epw", temps)
    doc = plan(
        scenario(start="2027-01", months=7), sites_of(dc1=chiller_site({"epw": str(epw), "fixed_c": 45}))
    )
    by = rows(doc)
    assert by["2027-01"]["cooling_kwh"] == pytest.approx(
        chiller_kw(IT_KW, 12.7) * 744, rel=1e-9
    )  # 2 °C: clamped
    assert by["2027-07"]["cooling_kwh"] == pytest.approx(chiller_kw(IT_KW, 33.0) * 744, rel=1e-9)
    assert by["2027-07"]["cooling_kwh"] > by["2027-06"]["cooling_kwh"] * 31 / 30
    assert doc["assumptions"]["months"][0]["outdoor_source"].startswith("weather file")


def test_chiller_over_capacity_is_a_warning_in_the_report() -> None:
    big = {**ENTRY, "servers": 100}  # 340 kW on a 100 kW chiller
    doc = plan(scenario(big, months=1), sites_of(dc1=chiller_site({"fixed_c": 35.0})))
    assert doc["months"][0]["cooling_kwh"] == pytest.approx(chiller_kw(340.0, 35.0) * 744, rel=1e-12)
    assert doc["assumptions"]["months"][0]["chiller_plr"] == 1.0
    assert "more than the chiller can carry" in doc["assumptions"]["warnings"][0]


def test_the_proposed_plan_pastes_into_the_collector() -> None:
    doc = plan(scenario(months=3), sites_of(dc1=site()))
    for entry, row in zip(doc["proposed_plan"], doc["months"], strict=True):
        assert entry["cost"] == pytest.approx(row["energy_cost"] + row["demand_charge"])
        assert entry["it_energy_kwh"] == row["it_kwh"]
        PlanEntry.model_validate(entry)  # the collector's own plan entry accepts it as it is
    assert [e["month"] for e in doc["proposed_plan"]] == ["2027-01", "2027-02", "2027-03"]


def test_sensitivity_rows() -> None:
    doc = plan(scenario(months=1), sites_of(dc1=site()))
    cases = {s["case"]: s for s in doc["sensitivity"]}
    base = doc["totals"]
    # utilization 0.4 and 0.6: GPU 260 and 340 W, node 3080 and 3720 W
    assert cases["utilization -20%"]["facility_kwh"] == pytest.approx(30.8 * 744 * 1.5)
    assert cases["utilization +20%"]["facility_kwh"] == pytest.approx(37.2 * 744 * 1.5)
    assert cases["price +20%"]["energy_cost"] == pytest.approx(base["energy_cost"] * 1.2)
    assert cases["price -20%"]["demand_charge"] == pytest.approx(base["demand_charge"])
    assert cases["price +20%"]["change_total_cost"] == pytest.approx(base["energy_cost"] * 0.2)


def test_cloud_break_even() -> None:
    """Servers bought for 120,000 in January; on-prem runs 3794.4 + 510 a month against 119,040 of cloud."""
    doc = plan(scenario(months=3), sites_of(dc1=site()))
    comparison = doc["cloud_comparison"]
    assert comparison["onprem_cumulative_cash"][0] == pytest.approx(120000 + 3794.4 + 510)
    assert comparison["break_even_month"] == "2027-02"  # 119,040 + 107,520 >= 124,304 + 3,427 + 510
    no_cloud = plan(scenario(months=1, cloud_price_per_gpu_hour=None), sites_of(dc1=site()))
    assert no_cloud["cloud_comparison"] is None and no_cloud["months"][0]["cloud_cost"] is None


def test_break_even_is_where_owning_stays_cheaper_not_the_first_cheap_month() -> None:
    """Servers already owned cost less than the cloud from the start; a purchase of 1,000,000 in
    March puts owning above the cloud until the cloud's 160 GPUs catch up in June."""
    owned = {**ENTRY, "name": "owned", "capex_per_server": 0}
    bought = {
        **ENTRY,
        "name": "bought",
        "from": "2027-03",
        "capex_per_server": 100000,
        "depreciation_months": 36,
    }
    doc = plan(scenario(owned, bought, months=8), sites_of(dc1=site()))
    comparison = doc["cloud_comparison"]
    own, rent = comparison["onprem_cumulative_cash"], comparison["cloud_cumulative"]
    assert own[0] < rent[0] and own[2] > rent[2] and own[4] > rent[4] and own[5] <= rent[5]
    assert comparison["break_even_month"] == "2027-06"
    short = plan(scenario(owned, bought, months=4), sites_of(dc1=site()))
    assert short["cloud_comparison"]["break_even_month"] is None
