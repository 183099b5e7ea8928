"""Plans from a measured history (the ledger's interface, held in memory): the measured fleet's
month, a measured power profile, metered cooling ratios, a chiller's outdoor sensor, the idle
and power-cap advice, and the progress bar (a terminal only)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from plankit import ENTRY, IDLE_W, MODEL, SLOPE_W, measured_history, plan, scenario, site, sites_of

from wattledger.collector.accounting.history import SiteMonth
from wattledger.plan.advice import energy_share_above
from wattledger.plan.reading import read_history

EXISTING = {"name": "existing", "measured": True}
MEASURED_ENTRY = {**ENTRY, "power": "measured", "utilization": 0.6}
# the history's fleet: 3600 kWh of IT (2000 of it the GPUs') over 30 days = 720 h
FLEET_IT_KW, FLEET_GPU_KW = 3600 / 720, 2000 / 720
# the expansion at 60 % on the measured line, with the measured 900 W node overhead
GPU_W = IDLE_W + SLOPE_W * 0.6
EXPANSION_KW = 10 * (8 * GPU_W + 900) / 1000


def month(name: str, **values: Any) -> SiteMonth:
    base: dict[str, Any] = {
        "month": name,
        "days": 30,
        "it_kwh": 3600.0,
        "cooling_kwh": None,
        "facility_kwh": None,
        "outdoor_mean_c": None,
        "outdoor_hours": 0.0,
        "idle_gpu_hours": 0.0,
        "idle_energy_kwh": 0.0,
    }
    return SiteMonth(**{**base, **values})


def test_the_measured_fleet_and_a_measured_profile() -> None:
    doc = plan(scenario(EXISTING, MEASURED_ENTRY, months=1), sites_of(dc1=site()), measured_history())
    existing, expansion = doc["fleet"]
    assert existing["measured"] and existing["gpus"] == 16 and existing["servers"] == 2
    assert existing["it_kw"] == pytest.approx(FLEET_IT_KW)
    assert expansion["gpu_power_w"] == pytest.approx(GPU_W)
    assert expansion["node_power_w"] == pytest.approx(8 * GPU_W + 900)
    jan = doc["months"][0]
    assert jan["it_kwh"] == pytest.approx((FLEET_IT_KW + EXPANSION_KW) * 744)
    assert jan["gpus"] == 16 + 80
    assert jan["capex"] == pytest.approx(5000)  # the measured fleet is already bought
    assert existing["totals"]["capex"] == 0
    assert expansion["totals"]["it_kwh"] + existing["totals"]["it_kwh"] == pytest.approx(jan["it_kwh"])
    [profile] = doc["profiles"]
    assert profile["usable"] and profile["line"]["idle_w"] == pytest.approx(IDLE_W)
    assert profile["coverage"]["days"] == 3 and profile["coverage"]["gpus"] == 4
    assert profile["node_overhead"]["overhead_w"] == pytest.approx(900.0)
    assert sum(b["readings"] for b in profile["binned"]) == profile["coverage"]["readings"]


def test_idle_advice_prices_the_idle_energy_of_each_month() -> None:
    months = (
        month("2026-09", idle_gpu_hours=120.0, idle_energy_kwh=6.0),
        month("2026-10", idle_gpu_hours=0.0),
    )
    doc = plan(scenario(EXISTING, months=1), sites_of(dc1=site()), measured_history(months=months))
    assert doc["advice"]["estimate"] is True
    [idle] = doc["advice"]["idle"]["months"]
    assert idle["month"] == "2026-09" and idle["idle_gpu_hours"] == 120.0
    assert idle["cost"] == pytest.approx(6.0 * 1.5 * 0.10)
    assert any("5 % utilization" in a for a in doc["advice"]["idle"]["assumptions"])


def test_power_cap_advice_from_the_measured_histogram() -> None:
    history = measured_history()
    doc = plan(scenario(EXISTING, MEASURED_ENTRY, months=2), sites_of(dc1=site()), history)
    options = doc["advice"]["power_cap"]["options"]
    assert options and all(o["model"] == MODEL for o in options)
    caps = [o["cap_w"] for o in options]
    assert caps == sorted(caps, reverse=True) and len(set(caps)) == len(caps)
    stats = read_history(history, "dc1").profiles[MODEL].stats
    gpu_kwh = (FLEET_GPU_KW + 80 * GPU_W / 1000) * (744 + 672)
    for option in options:
        share = energy_share_above(stats, option["cap_w"])
        assert option["gpu_energy_share_saved"] == pytest.approx(share)
        assert option["plan_facility_kwh_saved"] == pytest.approx(gpu_kwh * share * 1.5, rel=1e-9)
        assert option["plan_energy_cost_saved"] == pytest.approx(gpu_kwh * share * 1.5 * 0.10, rel=1e-9)
        assert option["line_utilization_at_cap"] == pytest.approx(
            (option["cap_w"] - IDLE_W) / SLOPE_W, rel=1e-6
        )
    # the histogram's share against the readings themselves: good to its 10 W bins
    cap = options[0]["cap_w"]
    powers = [IDLE_W + SLOPE_W * ((i * 37) % 101) / 100.0 for i in range(101)]
    exact = sum(max(p - cap, 0) for p in powers) / sum(powers)
    assert options[0]["gpu_energy_share_saved"] == pytest.approx(exact, abs=0.01)
    assert any("upper bound" in a for a in doc["advice"]["power_cap"]["assumptions"])


def metered_site() -> dict[str, Any]:
    return {k: v for k, v in site().items() if k != "pue"} | {"cooling": {"model": "metered"}}


def test_metered_cooling_takes_the_months_measured_ratio() -> None:
    months = (
        month("2026-01", cooling_kwh=900.0, facility_kwh=3600.0 + 900.0 + 180.0),  # 0.25 and 0.05
        month("2026-07", cooling_kwh=1800.0),
    )  # 0.5, no facility meter
    doc = plan(scenario(months=2), sites_of(dc1=metered_site()), measured_history(months=months))
    jan, feb = doc["months"]
    assert jan["cooling_kwh"] == pytest.approx(jan["it_kwh"] * 0.25)
    assert jan["facility_kwh"] == pytest.approx(jan["it_kwh"] * 1.30)
    # no February measured: the ratio over every measured month, (900 + 1800) / 7200
    assert feb["cooling_kwh"] == pytest.approx(feb["it_kwh"] * 2700 / 7200)
    assert feb["facility_kwh"] == pytest.approx(feb["it_kwh"] * (1 + 2700 / 7200 + 0.05))
    sources = [m["cooling_ratio_source"] for m in doc["assumptions"]["months"]]
    assert sources[0] == "measured 2026-01" and "mean of 2 measured months" in sources[1]


def test_a_metered_site_without_cooling_meters_is_one_line() -> None:
    with pytest.raises(ValueError, match="no cooling meter energy"):
        plan(scenario(months=1), sites_of(dc1=metered_site()), measured_history(months=(month("2026-01"),)))


def test_a_chillers_sensor_gives_the_same_month_last_year_else_the_fallback() -> None:
    cooling = {
        "model": "chiller",
        "curves": "ashrae-90.1-2010-air-cooled",
        "cop_ref": 2.8,
        "capacity_kw": 100.0,
        "outdoor": {"sensor": "wx-1", "fixed_c": 20.0},
    }
    chiller_site = {k: v for k, v in site().items() if k != "pue"} | {"cooling": cooling}
    months = (month("2025-07", outdoor_mean_c=29.0), month("2026-07", outdoor_mean_c=31.0))
    doc = plan(
        scenario(start="2027-06", months=2), sites_of(dc1=chiller_site), measured_history(months=months)
    )
    june, july = doc["assumptions"]["months"]
    assert (june["outdoor_c"], june["outdoor_source"]) == (20.0, "fixed_c")
    assert (july["outdoor_c"], july["outdoor_source"]) == (31.0, "sensor wx-1, measured 2026-07")
    only_sensor = {**chiller_site, "cooling": {**cooling, "outdoor": {"sensor": "wx-1"}}}
    with pytest.raises(ValueError, match="no outdoor temperature of June"):
        plan(scenario(start="2027-06", months=2), sites_of(dc1=only_sensor), measured_history(months=months))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_bar_on_a_terminal_only() -> None:
    history = measured_history()
    quiet = io.StringIO()
    read_history(history, "dc1", quiet)
    assert quiet.getvalue() == ""
    terminal = Terminal()
    read = read_history(history, "dc1", terminal)
    assert "reading the ledger" in terminal.getvalue()
    assert read.profiles[MODEL].usable


def test_a_sensor_with_fallbacks_plans_without_the_ledger_and_says_so() -> None:
    cooling = {
        "model": "chiller",
        "curves": "ashrae-90.1-2010-air-cooled",
        "cop_ref": 2.8,
        "capacity_kw": 100.0,
        "outdoor": {"sensor": "wx-1", "fixed_c": 22.0},
    }
    chiller_site = {k: v for k, v in site().items() if k != "pue"} | {"cooling": cooling}
    doc = plan(scenario(months=1), sites_of(dc1=chiller_site))  # no ledger
    assert doc["assumptions"]["months"][0]["outdoor_source"] == "fixed_c"
    assert doc["assumptions"]["warnings"][0].startswith("the outdoor sensor's measured months were not used")
