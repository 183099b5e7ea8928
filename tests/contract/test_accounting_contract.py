"""DESIGN.md "Accounting" reconciled by hand against the real collector process: one batch
that crosses a tariff band, resets its counter, jumps past 2 x power limit x dt, leaves a gap
longer than max_gap_seconds and bridges a short one. Every figure below is worked out in the
comments, as a finance team would check a bill."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from contractkit import Process, free_port, scrape, start, value

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = datetime(2026, 10, 15, 7, 59, tzinfo=UTC).timestamp()  # a Thursday, 07:59 UTC


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def collector(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Process]:
    """The same bill from the embedded store and from PostgreSQL (the session's server)."""
    tmp = tmp_path_factory.mktemp("accounting")
    port = free_port()
    db = f"sqlite:///{tmp}/ledger.db"
    if request.param == "postgresql":
        db = request.getfixturevalue("pg_server").new_database()
    (tmp / "c.yaml").write_text(json.dumps({
        "db": db, "tokens": {"n1": "t1"},
        "sites": {"default": {"timezone": "UTC", "currency": "USD", "pue": 1.5,
                              "tariff": [{"price_per_kwh": 0.30, "from": "08:00", "to": "20:00"},
                                         {"price_per_kwh": 0.10}],
                              "demand_charge_per_kw": 10, "carbon_g_per_kwh": 400}},
    }))
    proc = start("collector", ["collector", "--config", str(tmp / "c.yaml"), "--listen", f"127.0.0.1:{port}"],
                 tmp / "c.log", f"http://127.0.0.1:{port}", "/readyz")
    try:
        yield proc
    finally:
        proc.stop()


def test_a_hand_computed_bill(collector: Process) -> None:
    body = {"node": "n1", "stream": "s-1", "seq": 1, "labels": {},
            "devices": [{"id": "GPU-1", "kind": "gpu", "index": 0, "model": "M", "power_limit_w": 700.0}],
            "readings": {"device": [0] * 6,
                         "ts": [T0, T0 + 120, T0 + 150, T0 + 180, T0 + 240, T0 + 260],
                         "power_w": [1000.0, 1000.0, 500.0, 500.0, 400.0, 600.0],
                         "energy_j": [0.0, 120000.0, 10000.0, 200000.0, None, None]}}
    # 07:59-08:01  counter delta 120 kJ, half in 07:59 (0.10/kWh), half in 08:00 (0.30/kWh)
    # 08:01-08:01:30  counter 120 kJ -> 10 kJ: a reset, add 10 kJ (0.30)
    # 08:01:30-08:02  delta 190 kJ > 2 x 700 W x 30 s: an anomaly, trapezoid 500 W x 30 s = 15 kJ
    # 08:02-08:03  no counter, 60 s > max_gap_seconds (30): unmeasured, nothing added
    # 08:03-08:03:20  trapezoid (400 + 600) / 2 x 20 s = 10 kJ
    answer = httpx.post(collector.url + "/v1/batches", json=body, headers={"Authorization": "Bearer t1"})
    assert answer.json() == {"accepted": 6, "duplicate": False}
    row = httpx.get(collector.url + "/v1/spend", params={"month": "2026-10"}).json()["rows"][0]
    kwh = 1 / 3.6e6
    it_cost = 60000 * kwh * 0.10 + 95000 * kwh * 0.30
    assert row["it_energy_j"] == pytest.approx(155000)
    assert row["cooling_energy_kwh"] == pytest.approx(155000 * kwh * 0.5)
    assert row["it_cost"] == pytest.approx(it_cost)
    assert row["cooling_cost"] == pytest.approx(it_cost * 0.5)
    assert row["carbon_kg"] == pytest.approx(155000 * 1.5 * kwh * 400 / 1000)
    assert row["unmeasured_seconds"] == pytest.approx(60)
    # quarter-hours 07:45 (60 kJ IT) and 08:00 (95 kJ IT): peak = 95 kJ x 1.5 / 900 s = 158.3 W
    assert row["peak_demand_kw"] == pytest.approx(95000 * 1.5 / 900 / 1000)
    assert row["demand_charge"] == pytest.approx(95000 * 1.5 / 900 / 1000 * 10)
    assert row["total_cost"] == pytest.approx(it_cost * 1.5 + row["demand_charge"])
    families = scrape(collector.url)
    assert value(families, "wattledger_device_energy_joules_total", device="GPU-1") == pytest.approx(155000)
    assert value(families, "wattledger_counter_resets_total", device="GPU-1") == 1
    assert value(families, "wattledger_energy_anomalies_total", device="GPU-1") == 1
    assert value(families, "wattledger_unmeasured_seconds_total", device="GPU-1") == pytest.approx(60)
    assert value(families, "wattledger_cooling_energy_joules_total", site="default") == pytest.approx(77500)
    assert value(families, "wattledger_carbon_grams_total", site="default") == pytest.approx(
        155000 * 1.5 * kwh * 400)
