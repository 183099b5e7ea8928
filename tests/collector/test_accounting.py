"""Accounting rules with hand-computed expectations (DESIGN.md "Accounting", docs/accounting.md).

Every expected number is worked out in the comment above it, from the readings alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from ledgerkit import at, device_totals, make_batch, make_sites, open_ledger, site_row

from wattledger.collector.accounting import intervals
from wattledger.collector.sites import PlanEntry

#: every test here runs on SQLite and on PostgreSQL (tests/collector/conftest.py)
pytestmark = pytest.mark.usefixtures("backend")

T0 = at("2026-11-02 10:00")  # a Monday, UTC
KWH = 3.6e6


def test_counter_deltas_are_the_energy() -> None:
    led = open_ledger()
    led.ingest([make_batch(ts=[T0, T0 + 10, T0 + 20], power_w=[0, 0, 0],
                           energy_j=[1000.0, 6000.0, 11000.0])])
    # (6000 - 1000) + (11000 - 6000) = 10000 J; the power column (0 W) is not used
    assert device_totals(led) == {"energy_j": 10000.0, "unmeasured_s": 0.0, "resets": 0,
                                  "anomalies": 0, "late": 0}


def test_counter_reset_adds_the_new_value_and_is_counted() -> None:
    led = open_ledger()
    led.ingest([make_batch(ts=[T0, T0 + 10, T0 + 20], power_w=[500, 500, 500],
                           energy_j=[1000.0, 6000.0, 2000.0])])
    # 6000 - 1000 = 5000, then the counter went back (driver reload): + 2000 = 7000 J
    totals = device_totals(led)
    assert totals["energy_j"] == 7000.0
    assert totals["resets"] == 1


def test_anomalous_delta_falls_back_to_power() -> None:
    led = open_ledger()
    led.ingest([make_batch(ts=[T0, T0 + 10], power_w=[400.0, 600.0], energy_j=[0.0, 50000.0])])
    # cap = 2 x 700 W x 10 s = 14000 J < 50000 J: anomaly; trapezoid (400 + 600) / 2 x 10 = 5000 J
    totals = device_totals(led)
    assert totals["energy_j"] == 5000.0
    assert totals["anomalies"] == 1


def test_anomaly_over_a_long_gap_is_unmeasured() -> None:
    led = open_ledger()
    led.ingest([make_batch(ts=[T0, T0 + 60], power_w=[400.0, 600.0], energy_j=[0.0, 200000.0])])
    # cap = 2 x 700 x 60 = 84000 J < 200000 J: anomaly; 60 s > max_gap 30 s: unmeasured
    assert device_totals(led) == {"energy_j": 0.0, "unmeasured_s": 60.0, "resets": 0,
                                  "anomalies": 1, "late": 0}


def test_power_only_short_gaps_are_trapezoids_long_ones_unmeasured() -> None:
    led = open_ledger()
    led.ingest([make_batch(ts=[T0, T0 + 20, T0 + 50, T0 + 90], power_w=[100.0, 300.0, 500.0, 700.0])])
    # 20 s: (100 + 300) / 2 x 20 = 4000 J; 30 s (= max_gap, bridged): (300 + 500) / 2 x 30 = 12000 J
    # 40 s > 30 s: nothing, 40 unmeasured seconds
    totals = device_totals(led)
    assert totals["energy_j"] == 16000.0
    assert totals["unmeasured_s"] == 40.0


def test_counter_bridges_a_long_gap() -> None:
    led = open_ledger()
    led.ingest([make_batch(ts=[T0, T0 + 3600], power_w=[1000.0, 1000.0], energy_j=[0.0, 3.6e6])])
    # the counter measures the whole hour: 3.6 MJ = 1 kWh, nothing unmeasured, spread over 60 minutes
    assert device_totals(led)["energy_j"] == 3.6e6
    assert device_totals(led)["unmeasured_s"] == 0.0
    row = site_row(led, "2026-11")
    assert row["it_energy_kwh"] == pytest.approx(1.0)
    assert row["it_cost"] == pytest.approx(0.10)


def test_missing_counter_on_one_side_uses_power() -> None:
    led = open_ledger()
    led.ingest([make_batch(ts=[T0, T0 + 10, T0 + 20], power_w=[200.0, 400.0, 400.0],
                           energy_j=[1000.0, None, 9000.0])])
    # a -> b: no counter on b: (200 + 400) / 2 x 10 = 3000; b -> c: (400 + 400) / 2 x 10 = 4000
    assert device_totals(led)["energy_j"] == 7000.0


def test_tariff_band_boundary_inside_an_interval() -> None:
    sites = make_sites({"default": {"timezone": "UTC", "pue": 1.5, "carbon_g_per_kwh": 400, "tariff": [
        {"price_per_kwh": 0.30, "from": "08:00", "to": "20:00"}, {"price_per_kwh": 0.10}]}})
    led = open_ledger(sites)
    start = at("2026-11-02 07:30")
    led.ingest([make_batch(ts=[start, start + 3600], power_w=[1000.0, 1000.0], energy_j=[0.0, 3.6e6])])
    # 1 kWh over 07:30-08:30: 0.5 kWh at 0.10 + 0.5 kWh at 0.30 = 0.20 IT; cooling = 0.5 x IT = 0.10
    # carbon = 1.5 kWh facility x 400 g = 600 g
    row = site_row(led, "2026-11")
    assert row["it_cost"] == pytest.approx(0.20)
    assert row["cooling_cost"] == pytest.approx(0.10)
    assert row["energy_cost"] == pytest.approx(0.30)
    assert row["cooling_energy_kwh"] == pytest.approx(0.5)
    assert row["facility_energy_kwh"] == pytest.approx(1.5)
    assert row["carbon_kg"] == pytest.approx(0.6)


def test_weekday_bands_and_wrapping_night_band() -> None:
    sites = make_sites({"default": {"timezone": "UTC", "pue": 1.0, "tariff": [
        {"price_per_kwh": 0.05, "from": "22:00", "to": "06:00"},
        {"price_per_kwh": 0.30, "days": ["mon", "tue", "wed", "thu", "fri"]},
        {"price_per_kwh": 0.20}]}})
    site = sites["default"]
    minute = lambda text: int(at(text) // 60)  # noqa: E731
    assert site.price_at(minute("2026-11-02 05:59")) == 0.05   # Monday night band (wraps)
    assert site.price_at(minute("2026-11-02 06:00")) == 0.30   # Monday day
    assert site.price_at(minute("2026-11-02 23:00")) == 0.05
    assert site.price_at(minute("2026-11-07 12:00")) == 0.20   # Saturday


def test_month_boundary_inside_an_interval() -> None:
    led = open_ledger()
    start = at("2026-11-30 23:30")
    led.ingest([make_batch(ts=[start, start + 3600], power_w=[1000.0, 1000.0], energy_j=[0.0, 3.6e6])])
    # half the hour in November, half in December: 0.5 kWh (0.05) each
    nov, dec = site_row(led, "2026-11"), site_row(led, "2026-12")
    assert nov["it_energy_kwh"] == pytest.approx(0.5)
    assert dec["it_energy_kwh"] == pytest.approx(0.5)
    assert nov["it_cost"] == pytest.approx(0.05)


def test_month_follows_the_site_timezone() -> None:
    sites = make_sites({"default": {"timezone": "America/New_York", "pue": 1.0, "price_per_kwh": 0.1}})
    led = open_ledger(sites)
    start = at("2026-12-01 02:00")  # UTC: still 21:00 on 30 November in New York
    led.ingest([make_batch(ts=[start, start + 600], power_w=[600.0, 600.0], energy_j=[0.0, 360000.0])])
    assert site_row(led, "2026-11")["it_energy_kwh"] == pytest.approx(0.1)
    assert site_row(led, "2026-12")["it_energy_kwh"] == 0.0


def test_fall_back_hour_is_priced_and_demanded_in_local_time() -> None:
    # 1 November 2026, New York: 02:00 EDT -> 01:00 EST, so local 01:00-02:00 happens twice
    sites = make_sites({"default": {"timezone": "America/New_York", "pue": 1.5,
                                    "demand_charge_per_kw": 10.0, "tariff": [
                                        {"price_per_kwh": 0.30, "from": "01:00", "to": "02:00"},
                                        {"price_per_kwh": 0.10}]}})
    led = open_ledger(sites)
    start = at("2026-11-01 05:00")  # 01:00 EDT
    led.ingest([make_batch(ts=[start, start + 7200], power_w=[1000.0, 1000.0], energy_j=[0.0, 7.2e6])])
    # both real hours are local 01:xx: 2 kWh x 0.30 = 0.60 IT, 0.30 cooling
    row = site_row(led, "2026-11")
    assert row["it_cost"] == pytest.approx(0.60)
    assert row["cooling_cost"] == pytest.approx(0.30)
    # each real quarter-hour holds 1.5 kW facility (the two 01:00-01:15 are not merged): 15.0
    assert row["peak_demand_kw"] == pytest.approx(1.5)
    assert row["demand_charge"] == pytest.approx(15.0)
    assert row["total_cost"] == pytest.approx(15.90)


def test_plan_to_date_over_a_spring_forward_month() -> None:
    # March 2026 in New York has 31 x 24 - 1 = 743 hours; at 16 March 00:00 EDT, 15 x 24 - 1 = 359
    sites = make_sites({"default": {"timezone": "America/New_York", "price_per_kwh": 0.1}})
    plan = [PlanEntry(site="default", month="2026-03", cost=743.0)]
    led = open_ledger(sites, plan, now=at("2026-03-16 00:00", "America/New_York"))
    row = site_row(led, "2026-03")
    assert row["plan_cost"] == 743.0
    assert row["plan_to_date"] == pytest.approx(359.0)


def test_demand_is_the_highest_fixed_quarter_hour() -> None:
    led = open_ledger(make_sites(demand_charge_per_kw=10.0))
    big = [{"id": "GPU-0", "kind": "gpu", "index": 0, "power_limit_w": 5000.0}]
    first = at("2026-11-02 10:07:30")
    second = at("2026-11-02 11:00")
    led.ingest([make_batch(devices=big, ts=[first, first + 900], power_w=[2000.0, 2000.0],
                           energy_j=[0.0, 1.8e6])])
    # 2 kW IT for 10:07:30-10:22:30: 450 s in each of 10:00 and 10:15; each quarter holds
    # 2000 x 450 x 1.5 = 1.35 MJ facility / 900 s = 1.5 kW (a sliding window would say 3 kW)
    assert site_row(led, "2026-11")["peak_demand_kw"] == pytest.approx(1.5)
    assert site_row(led, "2026-11")["demand_charge"] == pytest.approx(15.0)
    led.ingest([make_batch(seq=2, devices=big, ts=[second, second + 900], power_w=[3000.0, 3000.0],
                           energy_j=[1.8e6, 4.5e6])])
    # 10:22:30 -> 11:00 the counter did not move (0 J); 11:00-11:15: 2.7 MJ / 900 s = 3 kW IT
    # = 4.5 kW facility, the month's peak: 45.0
    row = site_row(led, "2026-11")
    assert row["peak_demand_kw"] == pytest.approx(4.5)
    assert row["demand_charge"] == pytest.approx(45.0)
    assert row["total_cost"] == pytest.approx(row["energy_cost"] + 45.0)


def test_forecast_worked_example() -> None:
    sites = make_sites(pue=1.0)  # 0.10 per kWh, no demand charge
    plan = [PlanEntry(site="default", month="2026-11", cost=300.0)]
    now = at("2026-11-11 00:00")
    led = open_ledger(sites, plan, now=now)
    gpu0 = {"id": "GPU-0", "kind": "gpu", "index": 0, "power_limit_w": 700.0}
    gpu1 = {"id": "GPU-1", "kind": "gpu", "index": 0, "power_limit_w": 700.0}
    early = at("2026-11-02 00:00")
    led.ingest([
        # GPU-0: 1 kW for 10 h on the 2nd = 10 kWh = 1.00
        make_batch(stream="a", devices=[gpu0], ts=[early, early + 36000], power_w=[1000.0, 1000.0],
                   energy_j=[0.0, 3.6e7]),
        # GPU-1 (another node): 1 kW over the last 24 h = 24 kWh = 2.40
        make_batch(node="n2", stream="b", devices=[gpu1], ts=[now - 86400, now],
                   power_w=[1000.0, 1000.0], energy_j=[0.0, 8.64e7]),
    ])
    # month to date 3.40; trailing 24 h: 2.40 a day x 20 days left = 48.00; forecast 51.40
    row = site_row(led, "2026-11")
    assert row["total_cost"] == pytest.approx(3.40)
    assert row["forecast_cost"] == pytest.approx(51.40)
    assert row["plan_to_date"] == pytest.approx(100.0)


def test_split_by_minute_shares_time() -> None:
    start = np.array([60.0 * 100 + 30.0, 60.0 * 200])
    end = np.array([60.0 * 102 + 30.0, 60.0 * 200 + 10.0])
    shares = intervals.split_by_minute(start, end)
    # 120 s: 30 s in minute 100, 60 s in 101, 30 s in 102; the second lies in minute 200
    assert shares.interval.tolist() == [0, 0, 0, 1]
    assert shares.minute.tolist() == [100, 101, 102, 200]
    assert shares.share.tolist() == pytest.approx([0.25, 0.5, 0.25, 1.0])


def test_late_readings_add_nothing_and_are_counted() -> None:
    led = open_ledger()
    led.ingest([make_batch(ts=[T0, T0 + 10, T0 + 20], power_w=[100.0] * 3, energy_j=[0.0, 1000.0, 2000.0])])
    # another stream of the same node, once the first has been silent for stale_after (a re-imaged
    # host with a fresh spool takes the devices over), brings older readings (and a repeat of T0 + 20)
    led.clock.now += 121  # type: ignore[attr-defined]
    led.ingest([make_batch(stream="s2", ts=[T0 + 5, T0 + 15, T0 + 20, T0 + 30], power_w=[100.0] * 4,
                           energy_j=[500.0, 1500.0, 2000.0, 3000.0])])
    # T0 + 5, + 15 and + 20 are not newer than T0 + 20: late; T0 + 20 -> T0 + 30 adds 1000 J
    totals = device_totals(led)
    assert totals["energy_j"] == 3000.0
    assert totals["late"] == 3


def test_an_interval_over_a_month_long_is_unmeasured_even_with_counters() -> None:
    led = open_ledger()
    led.ingest([make_batch(ts=[T0, T0 + 32 * 86400], power_w=[100.0, 100.0], energy_j=[0.0, 1e8])])
    # 32 days > 31 days: one counter delta is not trusted over so long (docs/accounting.md)
    assert device_totals(led)["energy_j"] == 0.0
    assert device_totals(led)["unmeasured_s"] == 32 * 86400.0


def test_the_worked_example_of_docs_accounting() -> None:
    """docs/accounting.md section 9, number for number."""
    berlin = "Europe/Berlin"
    sites = make_sites({"fra1": {"timezone": berlin, "currency": "EUR", "pue": 1.4,
                                 "demand_charge_per_kw": 9.5, "carbon_g_per_kwh": 380, "tariff": [
                                     {"price_per_kwh": 0.28, "days": ["mon", "tue", "wed", "thu", "fri"],
                                      "from": "08:00", "to": "20:00"}, {"price_per_kwh": 0.16}]}})
    table = [("07:59:00", 10_000_000, 600), ("07:59:40", 10_024_000, 600), ("08:00:20", 10_048_000, 600),
             ("08:00:50", 1_200, 40), ("08:01:10", None, 500), ("08:02:00", 1_300_000, 650),
             ("08:02:10", 1_400_000, 640), ("08:02:20", 1_406_400, 640)]
    led = open_ledger(sites, now=at("2026-12-16 00:00", berlin))
    led.ingest([make_batch(labels={"site": "fra1", "cluster": "train-a"},
                           devices=[{"id": "GPU-8c2e", "kind": "gpu", "index": 0, "power_limit_w": 700}],
                           ts=[at(f"2026-12-01 {t}", berlin) for t, _, _ in table],
                           energy_j=[e for _, e, _ in table], power_w=[p for _, _, p in table])])
    assert device_totals(led) == {"energy_j": 67450.0, "unmeasured_s": 50.0, "resets": 1,
                                  "anomalies": 1, "late": 0}
    row = site_row(led, "2026-12", "fra1")
    assert row["it_cost"] == pytest.approx(0.01 * 0.16 + 31450 / KWH * 0.28)
    assert row["it_cost"] == pytest.approx(0.0040461, abs=1e-7)
    assert row["cooling_cost"] == pytest.approx(0.0016184, abs=1e-7)
    assert row["energy_cost"] == pytest.approx(0.0056646, abs=1e-7)
    assert row["carbon_kg"] * 1000 == pytest.approx(9.968, abs=1e-3)
    assert row["peak_demand_kw"] == pytest.approx(0.056)
    assert row["demand_charge"] == pytest.approx(0.532)
    assert row["total_cost"] == pytest.approx(0.5376646, abs=1e-7)
    assert row["currency"] == "EUR"


def test_a_backfill_into_a_quarter_older_than_memory_keeps_adds_to_what_is_stored() -> None:
    big = [{"id": "GPU-0", "kind": "gpu", "index": 0, "power_limit_w": 5000.0}]
    start = at("2026-08-03 10:00")
    led = open_ledger(make_sites(demand_charge_per_kw=1.0, pue=1.0), now=start + 600)
    led.ingest([make_batch(devices=big, ts=[start, start + 450], power_w=[0, 0], energy_j=[0.0, 900000.0])])
    # months later the quarter-hour has left memory; another node's agent backfills the rest of it
    led.clock.now = at("2026-11-20 00:00")  # type: ignore[attr-defined]
    led.refresh()
    assert getattr(led.store, "quarters", {}) == {}  # SQLite keeps them in memory; they leave it
    led.ingest([make_batch(node="n2", stream="s2", devices=big, ts=[start + 450, start + 900],
                           power_w=[0, 0], energy_j=[0.0, 900000.0])])
    # the quarter holds 1.8 MJ / 900 s = 2 kW (not the 1 kW of either part)
    assert site_row(led, "2026-08")["peak_demand_kw"] == pytest.approx(2.0)


def test_an_unmeasured_gap_is_booked_whole_to_its_end_minute() -> None:
    # a measured 120 s interval from minute 100:30 is split 30/60/30; an unmeasured gap of
    # five years ending inside minute 9,000,000 is one share in that minute, not millions
    years = 5 * 365 * 86400.0
    start = np.array([60.0 * 100 + 30.0, 60.0 * 9_000_000 + 10.0 - years])
    end = np.array([60.0 * 102 + 30.0, 60.0 * 9_000_000 + 10.0])
    shares = intervals.split_for_pricing(start, end, np.array([False, True]))
    assert shares.interval.tolist() == [0, 0, 0, 1]
    assert shares.minute.tolist() == [100, 101, 102, 9_000_000]
    assert shares.share.tolist() == pytest.approx([0.25, 0.5, 0.25, 1.0])


def test_a_reading_years_old_then_one_of_now_is_unmeasured_time_in_one_row() -> None:
    led = open_ledger()
    years = 5 * 365 * 86400.0
    led.ingest([make_batch(ts=[T0 - years], power_w=[100.0], energy_j=[0.0])])
    led.ingest([make_batch(seq=2, ts=[T0], power_w=[100.0], energy_j=[1e6])])
    totals = device_totals(led)
    assert totals["energy_j"] == 0.0  # over 31 days: one counter delta is not trusted
    assert totals["unmeasured_s"] == years
