"""``wattledger_month_energy_cost{part}`` (readmodel/monthbill.py): this month's bill by part on
/metrics, each minute at its own price, equal to /v1/spend's bill parts, adding up to
``wattledger_month_cost`` with the demand charge. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from ledgerkit import at, make_sites, open_ledger
from prometheus_client.parser import text_string_to_metric_families
from test_wholenode import GPU, NODE, site, steady

from wattledger.collector.service import Ledger

pytestmark = pytest.mark.usefixtures("backend")

T0 = at("2026-11-02 10:00")
CPU = {"id": "cpu-0", "kind": "cpu", "index": 0}
#: minute 10:00 at 0.10, minute 10:01 at 0.30 a kWh: one price times the GPUs' energy is wrong
TARIFF = [{"price_per_kwh": 0.30, "from": "10:01", "to": "10:02"}, {"price_per_kwh": 0.10}]
PRICES = (0.10, 0.30)


def samples(led: Ledger) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = led.collector().render().decode()  # type: ignore[attr-defined]
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def bill(got: dict[tuple[str, frozenset[tuple[str, str]]], float], site_name: str) -> dict[str, float]:
    return {dict(labels)["part"]: value for (name, labels), value in got.items()
            if name == "wattledger_month_energy_cost" and dict(labels)["site"] == site_name}


def kwh_cost(watts: float) -> float:
    """What ``watts`` held over the two minutes costs, each minute at its price."""
    return sum(watts * 60 / 3.6e6 * price for price in PRICES)


def test_the_month_bill_by_part_is_the_spend_rows_and_adds_up_to_the_month_cost() -> None:
    config = {**site(pue=1.5, node_overhead_ratio=0.25, demand_charge_per_kw=10.0, currency="EUR"),
              "tariff": TARIFF}
    del config["price_per_kwh"]
    sites = make_sites({"default": config})
    led = open_ledger(sites, now=T0 + 600)
    led.ingest([
        # n1: GPU 300 W, CPU 100 W, its BMC 600 W: 200 W of measured overhead
        steady([GPU, CPU, NODE], [300.0, 100.0, 600.0], T0, T0 + 120, node="n1"),
        # n2: a GPU of 300 W, no BMC: 0.25 x 300 W of estimated overhead
        steady([GPU], [300.0], T0, T0 + 120, node="n2"),
    ])
    got = samples(led)
    parts = bill(got, "default")
    assert set(parts) == {"gpu", "cpu", "overhead", "cooling", "other"}
    # by hand: each part's watts over two minutes, priced minute by minute
    assert parts["gpu"] == pytest.approx(kwh_cost(600.0), rel=1e-9)
    assert parts["cpu"] == pytest.approx(kwh_cost(100.0), rel=1e-9)
    assert parts["overhead"] == pytest.approx(kwh_cost(200.0 + 75.0), rel=1e-9)
    assert parts["cooling"] == pytest.approx(kwh_cost(975.0 * 0.5), rel=1e-9)
    assert parts["other"] == 0.0
    # the GPU energy times one price (either minute's, or their mean) is not the GPUs' cost
    gpu_kwh = 600.0 * 120 / 3.6e6
    assert all(abs(parts["gpu"] - gpu_kwh * p) > 1e-6 for p in (0.10, 0.30))
    # the same figures as /v1/spend's site row for the month
    row: dict[str, Any] = led.spend(site="default", month="2026-11", group_by="site")[0]
    assert parts == pytest.approx({"gpu": row["gpu_cost"], "cpu": row["cpu_cost"],
                                   "overhead": row["overhead_cost"], "cooling": row["cooling_cost"],
                                   "other": row["other_cost"]}, rel=1e-12)
    # gpu + cpu + overhead is the IT part of the cost counter; all + demand charge the month's cost
    key = frozenset({"site": "default", "currency": "EUR"}.items())
    it_part = got[("wattledger_energy_cost_total", key | {("part", "it")})]
    assert parts["gpu"] + parts["cpu"] + parts["overhead"] == pytest.approx(it_part, rel=1e-9)
    demand = got[("wattledger_demand_charge", key)]
    assert demand > 0
    assert sum(parts.values()) + demand == pytest.approx(got[("wattledger_month_cost", key)], rel=1e-9)


def test_a_metered_site_shows_its_other_load_and_an_idle_site_zeros() -> None:
    sites = make_sites({"default": site(cooling={"model": "metered"}), "lab": site()})
    led = open_ledger(sites, now=T0 + 600)
    meters = [{"id": "chw", "kind": "meter", "index": 0, "role": "cooling"},
              {"id": "feed", "kind": "meter", "index": 1, "role": "facility"}]
    led.ingest([steady([GPU], [500.0], T0, T0 + 60, node="n1"),
                steady(meters, [100.0, 1000.0], T0, T0 + 60, node="mgmt")])
    parts = bill(samples(led), "default")
    assert parts["gpu"] == pytest.approx(500 * 60 / 3.6e6 * 0.10, rel=1e-9)
    assert parts["cooling"] == pytest.approx(100 * 60 / 3.6e6 * 0.10, rel=1e-9)
    assert parts["other"] == pytest.approx(400 * 60 / 3.6e6 * 0.10, rel=1e-9)
    assert bill(samples(led), "lab") == dict.fromkeys(("gpu", "cpu", "overhead", "cooling", "other"), 0.0)
    # a new month: the gauge starts again at 0
    led.clock.now = at("2026-12-01 00:05")  # type: ignore[attr-defined]
    assert set(bill(samples(led), "default").values()) == {0.0}


def test_an_idle_sqlite_ledger_is_read_once_and_a_commit_shows_after_refresh_seconds() -> None:
    led = open_ledger(make_sites({"default": site()}), now=T0 + 600, metrics_refresh_seconds=0.0)
    if led.store.shared:
        pytest.skip("PostgreSQL: other replicas commit too, so the sums are read every refresh")
    led.ingest([steady([GPU], [600.0], T0, T0 + 60, node="n1")])
    collector = led.collector()

    def gpu_part() -> float:
        text = collector.render().decode()  # type: ignore[attr-defined]
        (value,) = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "wattledger_month_energy_cost" and s.labels["part"] == "gpu"]
        return value

    assert gpu_part() == pytest.approx(600 * 60 / 3.6e6 * 0.10, rel=1e-9)
    led.ingest([steady([GPU], [600.0], T0 + 70, T0 + 120, node="n1", seq=2)])
    assert gpu_part() == pytest.approx(600 * 120 / 3.6e6 * 0.10, rel=1e-9)  # a commit: read again
    led.store.close()  # no commit since: the next scrapes read nothing
    assert gpu_part() == pytest.approx(600 * 120 / 3.6e6 * 0.10, rel=1e-9)
