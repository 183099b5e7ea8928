"""/metrics over the ledger: the contract's names and labels, counters across restarts, no disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from ledgerkit import at, make_batch, make_sites, open_ledger
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.service import Ledger
from wattledger.collector.sites import PlanEntry

T = at("2026-11-02 10:00")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(led: Ledger) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(led.collector())
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def fed_ledger(db: str = "sqlite:///:memory:", now: float = T + 60) -> Ledger:
    plan = [PlanEntry(site="default", month="2026-11", cost=600.0)]
    led = open_ledger(make_sites(carbon_g_per_kwh=400.0, demand_charge_per_kw=2.0), plan, db=db, now=now)
    led.ingest([make_batch(labels={"cluster": "train"}, ts=[T, T + 36], power_w=[500.0, 400.0],
                           energy_j=[0.0, 36000.0], temp_c=[60.0, 70.0], mem_temp_c=[80.0, 81.0],
                           util=[0.5, 0.75], clock_events=[0, 0x20 | 0x4])])
    return led


def test_names_labels_and_values() -> None:
    s = scrape(fed_ledger())
    dev = {"site": "default", "cluster": "train", "node": "n1", "device": "GPU-0"}
    # 36000 J = 0.01 kWh IT at 0.10 = 0.001; cooling 0.005 kWh = 0.0005; carbon 0.015 kWh x 400
    assert value(s, "wattledger_device_energy_joules_total", **dev) == 36000.0
    assert value(s, "wattledger_cooling_energy_joules_total", site="default") == 18000.0
    assert value(s, "wattledger_energy_cost_total", site="default", currency="USD",
                 part="it") == pytest.approx(0.001)
    assert value(s, "wattledger_energy_cost_total", site="default", currency="USD",
                 part="cooling") == pytest.approx(0.0005)
    assert value(s, "wattledger_carbon_grams_total", site="default") == pytest.approx(6.0)
    # the 36 s lie in one quarter-hour: 54000 J facility / 900 s = 60 W = 0.06 kW x 2.0
    assert value(s, "wattledger_demand_charge", site="default", currency="USD") == pytest.approx(0.12)
    assert value(s, "wattledger_month_cost", site="default", currency="USD") == pytest.approx(0.1215)
    assert value(s, "wattledger_plan_cost", site="default", currency="USD") == 600.0
    # 1 day 10 h 1 min of November's 30 days
    elapsed = (T + 60 - at("2026-11-01 00:00")) / (30 * 86400)
    assert value(s, "wattledger_plan_cost_to_date", site="default",
                 currency="USD") == pytest.approx(600.0 * elapsed)
    assert ("wattledger_forecast_cost", frozenset({("site", "default"), ("currency", "USD")})) in s
    node = {"site": "default", "cluster": "train", "node": "n1"}
    assert value(s, "wattledger_it_power_watts", **node) == 400.0
    assert value(s, "wattledger_node_last_seen_timestamp_seconds", **node) == T + 60
    assert value(s, "wattledger_ingest_readings_total", node="n1") == 2.0
    assert value(s, "wattledger_device_power_watts", **dev) == 400.0
    assert value(s, "wattledger_device_temperature_celsius", **dev, sensor="gpu") == 70.0
    assert value(s, "wattledger_device_temperature_celsius", **dev, sensor="memory") == 81.0
    assert value(s, "wattledger_device_slowdown_margin_celsius", **dev) == 17.0
    assert value(s, "wattledger_device_utilization_ratio", **dev) == 0.75
    assert value(s, "wattledger_device_clock_event_active", **dev, reason="sw_thermal") == 1.0
    assert value(s, "wattledger_device_clock_event_active", **dev, reason="sw_power_cap") == 1.0
    assert value(s, "wattledger_device_clock_event_active", **dev, reason="hw_thermal") == 0.0
    for counter in ("unmeasured_seconds", "counter_resets", "energy_anomalies", "late_readings"):
        assert value(s, f"wattledger_{counter}_total", **dev) == 0.0


def test_counters_resume_after_a_restart_and_no_disk_is_read(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/l.db"
    led = fed_ledger(db)
    before = scrape(led)
    led.close()
    again = open_ledger(make_sites(carbon_g_per_kwh=400.0, demand_charge_per_kw=2.0),
                        [PlanEntry(site="default", month="2026-11", cost=600.0)], db=db, now=T + 60)
    again.store.close()  # a scrape must not need the store
    after = scrape(again)
    counters = {k: v for k, v in before.items() if k[0].endswith("_total")}
    assert counters
    for key, count in counters.items():
        assert after[key] == count, key  # exactly: a counter a rounding error lower is a reset
    for name in ("wattledger_month_cost", "wattledger_demand_charge", "wattledger_device_power_watts"):
        assert {k: v for k, v in after.items() if k[0] == name} == \
            pytest.approx({k: v for k, v in before.items() if k[0] == name})


def test_a_stale_node_keeps_counters_but_not_its_last_power() -> None:
    led = fed_ledger()
    led.clock.now += 121  # type: ignore[attr-defined]  # no batch for longer than stale_after (120 s)
    s = scrape(led)
    dev = {"site": "default", "cluster": "train", "node": "n1", "device": "GPU-0"}
    assert value(s, "wattledger_node_stale", site="default", cluster="train", node="n1") == 1.0
    assert value(s, "wattledger_device_energy_joules_total", **dev) == 36000.0
    assert not [k for k in s if k[0] in ("wattledger_device_power_watts", "wattledger_it_power_watts",
                                         "wattledger_device_temperature_celsius")]


def test_an_empty_ledger_still_shows_its_sites() -> None:
    s = scrape(open_ledger())
    assert value(s, "wattledger_month_cost", site="default", currency="USD") == 0.0
    assert ("wattledger_plan_cost", frozenset({("site", "default"), ("currency", "USD")})) not in s
