"""Roll-up of old quarter-hours into hours (rollup_after_days): every figure reads the same.

Spend by month and by site, cluster, node and device; the /metrics text; demand peaks and plan
figures — before the roll-up, after it, and after a restart from the store (where the demand
peak of a rolled-up month can only come from what was kept before its quarter-hours went).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ledgerkit import Backend, at, make_batch, make_sites, open_ledger
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.readmodel.exposition import LedgerCollector
from wattledger.collector.service import Ledger
from wattledger.collector.settings import settings_from
from wattledger.collector.sites import PlanEntry
from wattledger.config import ConfigError

#: every test here runs on SQLite and on PostgreSQL (tests/collector/conftest.py)
pytestmark = pytest.mark.usefixtures("backend")

START = at("2026-10-20 00:00", "Europe/Berlin")
DAYS = 24  # into November: two billing months
STEP = 300.0  # one reading every 5 min per GPU (counters: rule 1 over every interval)
NOW = START + DAYS * 86400 + 3600
SITES = {"fra1": {"timezone": "Europe/Berlin", "currency": "EUR", "pue": 1.4,
                  "tariff": [{"price_per_kwh": 0.28, "days": ["mon", "tue", "wed", "thu", "fri"],
                              "from": "08:00", "to": "20:00"}, {"price_per_kwh": 0.16}],
                  "demand_charge_per_kw": 9.5, "carbon_g_per_kwh": 380}}
PLAN = [PlanEntry(site="fra1", month="2026-10", cost=900.0),
        PlanEntry(site="fra1", month="2026-11", cost=1200.0, cluster="train")]


def fill(led: Ledger) -> None:
    """Two nodes in two clusters, 2 GPUs each; a burst on 22 October sets October's peak."""
    burst = at("2026-10-22 14:15", "Europe/Berlin")
    for n, cluster in enumerate(("train", "serve")):
        gpus = [{"id": f"GPU-{n}-{g}", "kind": "gpu", "index": g, "power_limit_w": 700.0} for g in range(2)]
        energy = [0.0, 0.0]
        ts_all = [START + i * STEP for i in range(int(DAYS * 86400 / STEP))]
        for seq, chunk in enumerate(range(0, len(ts_all), 288), start=1):  # a day per batch
            device, ts, power, counter = [], [], [], []
            for g in range(2):
                for t in ts_all[chunk:chunk + 288]:
                    watts = 650.0 if burst < t <= burst + 900 else 200.0 + 50 * g + 30 * n
                    energy[g] += watts * STEP
                    device.append(g)
                    ts.append(t)
                    power.append(watts)
                    counter.append(energy[g])
            led.ingest([make_batch(node=f"node-{n}", stream=f"s-{n}", seq=seq,
                                   labels={"site": "fra1", "cluster": cluster}, devices=gpus,
                                   device=device, ts=ts, power_w=power, energy_j=counter)])


def spend(led: Ledger) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {(month, level): led.spend(site="fra1", month=month, group_by=level)  # type: ignore[arg-type]
            for month in ("2026-10", "2026-11") for level in ("site", "cluster", "node", "device")}


def same_figures(got: Any, want: Any) -> bool:
    """Equal, floats to the last few bits (a restart re-sums month sums from the store: that
    alone moves them by a rounding error, roll-up or not)."""
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(same_figures(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(same_figures(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float):
        return got == pytest.approx(want, rel=1e-12, abs=1e-12)
    return bool(got == want)


def metrics(led: Ledger) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    collector = led.collector()
    assert isinstance(collector, LedgerCollector)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(collector.render().decode())
            for s in family.samples}


def quarter_sums(led: Ledger) -> list[float]:
    ((q_it, q_fac, q_cost),) = led.store.query(
        "SELECT COALESCE(SUM(it_j), 0), COALESCE(SUM(facility_j), 0), COALESCE(SUM(cost), 0) FROM quarters")
    ((h_it, h_fac, h_cost),) = led.store.query(
        "SELECT COALESCE(SUM(it_j), 0), COALESCE(SUM(facility_j), 0), COALESCE(SUM(cost), 0) FROM hours")
    return [q_it + h_it, q_fac + h_fac, q_cost + h_cost]


def test_roll_up_keeps_every_figure(backend: Backend, tmp_path: Path) -> None:
    db = backend.reopenable(tmp_path)
    led = open_ledger(make_sites(SITES), PLAN, db=db, now=NOW, rollup_after_days=10)
    fill(led)
    before_spend, before_metrics, before_sums = spend(led), metrics(led), quarter_sums(led)
    quarters_before = led.store.query("SELECT COUNT(*) FROM quarters")[0][0]
    october = before_spend[("2026-10", "site")][0]
    assert october["peak_demand_kw"] == pytest.approx(4 * 650.0 * 1.4 / 1000.0)  # the burst

    led.refresh()  # the periodic work rolls up what is older than 10 days
    quarters_after = led.store.query("SELECT COUNT(*) FROM quarters")[0][0]
    assert 0 < quarters_after < quarters_before
    assert led.store.query("SELECT MIN(start_minute) FROM quarters")[0][0] * 60.0 >= NOW - 10 * 86400 - 3600
    assert led.store.query("SELECT COUNT(*) FROM hours")[0][0] > 0
    # chargeback's node-minutes go with the quarter-hours (its team figures stay: holder_months)
    assert led.store.query("SELECT MIN(minute) FROM holder_minutes")[0][0] * 60.0 >= NOW - 10 * 86400 - 3600
    # and so do the whole node's and the site's minutes (their sums stay: node_usage, totals)
    for table in ("node_minutes", "site_minutes"):
        assert led.store.query(f"SELECT MIN(minute) FROM {table}")[0][0] * 60.0 >= NOW - 10 * 86400 - 3600
    assert spend(led) == before_spend
    assert metrics(led) == before_metrics
    assert quarter_sums(led) == pytest.approx(before_sums, rel=1e-12)
    led.close()

    again = open_ledger(make_sites(SITES), PLAN, db=db, now=NOW, rollup_after_days=10)
    # the October peak (its quarter-hours rolled up) can only come from month_peaks now
    assert spend(again)[("2026-10", "site")][0]["peak_demand_kw"] == october["peak_demand_kw"]
    assert same_figures(spend(again), before_spend)
    assert same_figures(metrics(again), before_metrics)
    assert again.roll_up() == 0  # nothing more to roll up at the same clock
    again.close()


def test_a_late_reading_into_a_rolled_up_day_is_added_to_its_hour(backend: Backend, tmp_path: Path) -> None:
    led = open_ledger(make_sites(SITES), [], db=backend.reopenable(tmp_path), now=NOW, rollup_after_days=10)
    fill(led)
    led.roll_up()
    hours_before = quarter_sums(led)
    # a new device of node-0, read late: its energy lands in an old quarter-hour, then an hour
    t = at("2026-10-25 09:00", "Europe/Berlin")
    led.ingest([make_batch(node="node-0", stream="late", labels={"site": "fra1", "cluster": "train"},
                           devices=[{"id": "GPU-late", "kind": "gpu", "index": 0}],
                           ts=[t, t + 10], power_w=[300.0, 300.0])])
    assert led.roll_up() == 1
    assert quarter_sums(led)[0] == pytest.approx(hours_before[0] + 3000.0)


def test_rollup_after_days_is_checked() -> None:
    assert settings_from({"rollup_after_days": 35}).rollup_after_days == 35
    assert settings_from({}).rollup_after_days is None
    with pytest.raises(ConfigError, match="rollup_after_days"):
        settings_from({"rollup_after_days": 1})
    with pytest.raises(ValueError, match="at least 2"):
        open_ledger(rollup_after_days=0.5)
