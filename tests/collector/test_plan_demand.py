"""The demand charge against the plan: owed whole from the month's peak on, so it is never held
against a prorated plan. A plan entry may give it a budget of its own (`demand_charge`, a part of
`cost`); the energy cost is held against the rest, prorated. /v1/spend and /metrics show the
parts apart; `wattledger_month_cost` and `wattledger_plan_cost(_to_date)` keep their meaning."""

from __future__ import annotations

import pytest
from ledgerkit import at, make_batch, make_sites, open_ledger, site_row
from pydantic import ValidationError
from test_exposition import scrape, value

from wattledger.collector.service import Ledger
from wattledger.collector.settings import settings_from
from wattledger.collector.sites import PlanEntry

#: 03:00 on the first of the month: 1/240 of November gone
START = at("2026-11-01 00:00")
NOW = at("2026-11-01 03:00")
ELAPSED = 3 / (30 * 24)


def first_morning(plan: list[PlanEntry]) -> Ledger:
    """Three hours of 10 kW IT at $0.10/kWh, PUE 1.5: $4.50 of energy; the peak quarter-hour
    15 kW facility x $12/kW = $180 of demand charge, owed whole already."""
    led = open_ledger(make_sites(demand_charge_per_kw=12.0), plan, now=NOW)
    ts = [START + 60.0 * i for i in range(181)]
    led.ingest([make_batch(ts=ts, power_w=[10_000.0] * len(ts),
                           energy_j=[10_000.0 * 60 * i for i in range(len(ts))],
                           devices=[{"id": "GPU-0", "kind": "gpu", "index": 0}])])
    return led


def test_the_energy_part_of_the_plan_is_prorated_and_the_demand_charge_is_not() -> None:
    led = first_morning([PlanEntry(site="default", month="2026-11", cost=3000.0, demand_charge=400.0)])
    row = site_row(led, "2026-11")
    assert row["energy_cost"] == pytest.approx(4.5)
    assert row["demand_charge"] == pytest.approx(180.0)
    assert row["total_cost"] == pytest.approx(184.5)
    # the contract's figures as ever: the whole budget, prorated
    assert row["plan_cost"] == 3000.0 and row["plan_to_date"] == pytest.approx(3000.0 * ELAPSED)
    assert row["total_cost"] / row["plan_to_date"] > 14  # what EnergyCostOverPlan used to compare
    # the parts: energy against the energy budget so far, the demand charge against its own
    assert row["plan_demand_charge"] == 400.0
    assert row["plan_energy_cost"] == 2600.0
    assert row["plan_energy_to_date"] == pytest.approx(2600.0 * ELAPSED)
    assert row["energy_cost"] / row["plan_energy_to_date"] == pytest.approx(4.5 / (2600 * ELAPSED))
    assert row["energy_cost"] / row["plan_energy_to_date"] < 1.05  # on plan: quiet
    assert row["demand_charge"] < row["plan_demand_charge"]


def test_without_a_demand_budget_the_demand_charge_so_far_comes_out_of_the_budget() -> None:
    led = first_morning([PlanEntry(site="default", month="2026-11", cost=3000.0)])
    row = site_row(led, "2026-11")
    assert row["plan_demand_charge"] is None
    assert row["plan_energy_cost"] == pytest.approx(3000.0 - 180.0)
    assert row["plan_energy_to_date"] == pytest.approx(2820.0 * ELAPSED)
    # at the month's end the two comparisons agree: energy vs (plan - demand) = total vs plan
    led.clock.now = at("2026-12-01 00:00") - 1e-3  # type: ignore[attr-defined]
    end = site_row(led, "2026-11")
    assert end["energy_cost"] + end["demand_charge"] == pytest.approx(end["total_cost"])
    assert end["plan_energy_to_date"] + end["demand_charge"] == pytest.approx(end["plan_to_date"], rel=1e-6)


def test_a_demand_charge_over_the_whole_budget_leaves_no_energy_budget() -> None:
    led = first_morning([PlanEntry(site="default", month="2026-11", cost=100.0)])
    row = site_row(led, "2026-11")
    assert row["plan_energy_cost"] == 0.0 and row["plan_energy_to_date"] == 0.0


def test_metrics_carry_the_parts_of_the_plan() -> None:
    led = first_morning([PlanEntry(site="default", month="2026-11", cost=3000.0, demand_charge=400.0)])
    s = scrape(led)
    site = {"site": "default", "currency": "USD"}
    assert value(s, "wattledger_month_cost", **site) == pytest.approx(184.5)  # energy + demand, whole
    assert value(s, "wattledger_demand_charge", **site) == pytest.approx(180.0)
    assert value(s, "wattledger_plan_cost_to_date", **site) == pytest.approx(3000.0 * ELAPSED)
    assert value(s, "wattledger_plan_demand_charge", **site) == 400.0
    assert value(s, "wattledger_plan_energy_cost", **site) == 2600.0
    assert value(s, "wattledger_plan_energy_cost_to_date", **site) == pytest.approx(2600.0 * ELAPSED)
    without = scrape(first_morning([PlanEntry(site="default", month="2026-11", cost=3000.0)]))
    assert ("wattledger_plan_demand_charge", frozenset(site.items())) not in without
    assert value(without, "wattledger_plan_energy_cost", **site) == pytest.approx(2820.0)


def test_cluster_rows_budget_energy_only() -> None:
    led = first_morning([PlanEntry(site="default", month="2026-11", cost=3000.0, demand_charge=400.0),
                         PlanEntry(site="default", cluster="", month="2026-11", cost=1000.0)])
    (row,) = led.spend(site="default", month="2026-11", group_by="cluster")
    assert row["demand_charge"] is None and row["plan_demand_charge"] is None
    assert row["plan_energy_cost"] == row["plan_cost"] == 1000.0
    assert row["plan_energy_to_date"] == pytest.approx(1000.0 * ELAPSED)


@pytest.mark.parametrize(("entry", "message"), [
    ({"cost": 100, "demand_charge": 101}, "more than the month's cost"),
    ({"cost": 100, "demand_charge": 10, "cluster": "train"}, "belongs to a site's entry"),
    ({"cost": 100, "demand_charge": -1}, "greater than or equal to 0"),
])
def test_a_demand_budget_is_a_part_of_a_sites_budget(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PlanEntry.model_validate({"site": "default", "month": "2026-11", **entry})


def test_the_configuration_takes_a_demand_budget() -> None:
    settings = settings_from({"sites": {"dc1": {"price_per_kwh": 0.1, "demand_charge_per_kw": 9.5}},
                              "plan": [{"site": "dc1", "month": "2026-12", "cost": 45000,
                                        "demand_charge": 9000}]})
    assert settings.plan[0].demand_charge == 9000
