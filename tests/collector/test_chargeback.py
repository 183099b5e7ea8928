"""Chargeback through the ledger: teams, jobs and owner rows against hand computations, on both
backends; the same figures however the readings are batched; MIG boards; team budgets."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledgerkit import at, check_conservation, make_batch, make_sites, open_ledger

from wattledger.collector.service import Ledger
from wattledger.collector.sites import PlanEntry

pytestmark = pytest.mark.usefixtures("backend")

T0 = at("2026-12-10 12:00")  # a quarter-hour's start
DEVICES = [{"id": "GPU-0", "kind": "gpu", "index": 0, "power_limit_w": 700.0},
           {"id": "GPU-1", "kind": "gpu", "index": 1, "power_limit_w": 700.0},
           {"id": "CPU-0", "kind": "cpu", "index": 0}]
TEAMS = {"nlp": [{"namespace": "nlp-*"}], "vision": [{"account": "vision"}, {"namespace": "cv"}]}
POD = {"devices": [0], "from": T0, "to": None,
       "owner": {"namespace": "nlp-ft", "pod": "p1", "container": "c"}}
JOB = {"devices": [1], "from": T0 + 60, "to": None, "owner": {"job": "7", "account": "vision", "user": "kim"}}
KWH = 3.6e6


def trace(batches: list[tuple[int, int]]) -> list[Any]:
    """Readings every 30 s over (T0, T0 + 120]: GPU-0 300 W, GPU-1 100 W, CPU 100 W; the
    readings [i, j) of each batch (0..4), each batch with both allocations that overlap it."""
    out = []
    for seq, (i, j) in enumerate(batches, start=1):
        ts = [T0 + 30 * k for k in range(i, j) for _ in range(3)]
        allocations = [POD] + ([JOB] if j > 2 else [])
        out.append(make_batch(seq=seq, devices=DEVICES, device=[0, 1, 2] * (j - i), ts=ts,
                              power_w=[300.0, 100.0, 100.0] * (j - i), util=[0.9, 0.01, 0.5] * (j - i),
                              allocations=allocations))
    return out


def ledger(plan: list[PlanEntry] | None = None) -> Ledger:
    sites = make_sites(price_per_kwh=0.10, pue=1.5, carbon_g_per_kwh=400, demand_charge_per_kw=10.0)
    return open_ledger(sites, plan or [], now=T0 + 600, teams=TEAMS)


def by_team(led: Ledger) -> dict[str, dict[str, Any]]:
    return {row["team"]: row for row in led.spend(site=None, month="2026-12", group_by="team")}


def test_teams_by_hand() -> None:
    led = ledger()
    led.ingest(trace([(0, 5)]))
    teams = by_team(led)
    # minute 0: pod 18000 J of GPU, idle 6000 J (GPU-1 unheld), CPU 6000 J -> pod +4500, idle +1500
    # minute 1: pod 18000, job 6000 (GPU-1 from T0 + 60), CPU 6000 -> pod +4500, job +1500
    assert set(teams) == {"nlp", "vision", "idle"}
    assert teams["nlp"]["it_energy_kwh"] * KWH == pytest.approx(45000.0)
    assert teams["vision"]["it_energy_kwh"] * KWH == pytest.approx(7500.0)
    assert teams["idle"]["it_energy_kwh"] * KWH == pytest.approx(7500.0)
    assert teams["nlp"]["gpu_energy_kwh"] * KWH == pytest.approx(36000.0)
    assert teams["nlp"]["facility_energy_kwh"] * KWH == pytest.approx(67500.0)
    assert teams["nlp"]["energy_cost"] == pytest.approx(67500.0 / KWH * 0.10)
    assert teams["nlp"]["carbon_kg"] == pytest.approx(67500.0 / KWH * 0.4)
    # the demand charge: one quarter-hour, 90000 J facility over 900 s = 0.1 kW -> 1.0; nlp's share 3/4
    assert teams["nlp"]["demand_charge"] == pytest.approx(0.75)
    assert teams["nlp"]["total_cost"] == pytest.approx(67500.0 / KWH * 0.10 + 0.75)
    # GPU time: the pod held GPU-0 120 s; the job held GPU-1 60 s at 1 % utilization (waste)
    assert teams["nlp"]["gpu_hours"] * 3600 == pytest.approx(120.0)
    assert teams["vision"]["gpu_hours"] * 3600 == pytest.approx(60.0)
    assert teams["vision"]["idle_gpu_hours"] * 3600 == pytest.approx(60.0)
    assert teams["vision"]["waste_cost"] == pytest.approx(6000.0 / KWH * 0.10)
    assert teams["idle"]["gpu_hours"] * 3600 == pytest.approx(60.0)
    assert teams["idle"]["idle_gpu_hours"] == 0.0
    assert check_conservation(led) == 1


def test_any_batching_gives_the_same_teams() -> None:
    one = ledger()
    one.ingest(trace([(0, 5)]))
    many = ledger()
    for batch in trace([(0, 1), (1, 2), (2, 4), (4, 5)]):
        many.ingest([batch])
    grouped = ledger()
    grouped.ingest(trace([(0, 2), (2, 3), (3, 5)]))  # one group of three batches
    want = by_team(one)
    for led in (many, grouped):
        got = by_team(led)
        assert set(got) == set(want)
        for team, row in want.items():
            for key in ("it_energy_kwh", "energy_cost", "demand_charge", "carbon_kg", "gpu_hours"):
                assert got[team][key] == pytest.approx(row[key], rel=1e-9), (team, key)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sets(st.integers(1, 4)))
def test_any_split_gives_the_same_teams_property(cuts: set[int]) -> None:
    points = [0, *sorted(cuts), 5]
    led = ledger()
    for batch in trace(list(itertools.pairwise(points))):
        led.ingest([batch])
    teams = by_team(led)
    assert teams["nlp"]["it_energy_kwh"] * KWH == pytest.approx(45000.0)
    assert teams["vision"]["it_energy_kwh"] * KWH == pytest.approx(7500.0)
    check_conservation(led)


def test_jobs_and_owner_rows() -> None:
    led = ledger()
    led.ingest(trace([(0, 5)]))
    jobs = led.jobs(site="default", since=T0, until=T0 + 600)
    assert [(j["team"], j["owner"]) for j in jobs] == [("nlp", POD["owner"]), ("vision", JOB["owner"])]
    pod, job = jobs
    assert pod["devices"] == ["GPU-0"] and pod["node"] == "n1" and pod["end"] is None
    assert pod["gpu_seconds"] == pytest.approx(120.0)
    assert pod["it_energy_kwh"] * KWH == pytest.approx(45000.0)
    assert job["idle_gpu_seconds"] == pytest.approx(60.0)
    assert job["energy_cost"] == pytest.approx(11250.0 / KWH * 0.10)
    assert led.jobs(site="default", since=T0, until=T0 + 600, team="vision") == [job]
    assert led.jobs(site="default", since=T0 - 100, until=T0 - 1) == []
    rows = led.spend(site="default", month="2026-12", group_by="namespace")
    assert [(r["namespace"], r["idle"], r["allocations"]) for r in rows] == [
        ("nlp-ft", False, 1), (None, False, 1), (None, True, 0)]
    accounts = {r["account"]: r for r in led.spend(site="default", month="2026-12", group_by="account")
                if not r["idle"]}
    assert accounts["vision"]["it_energy_kwh"] * KWH == pytest.approx(7500.0)


def test_an_ended_allocation_keeps_its_end_and_its_time_only() -> None:
    led = ledger()
    ended = {**JOB, "from": T0, "to": T0 + 45}
    ts = [T0 + 30 * k for k in range(3) for _ in range(3)]
    led.ingest([make_batch(devices=DEVICES, device=[0, 1, 2] * 3, ts=ts, power_w=[300.0, 100.0, 100.0] * 3,
                           allocations=[ended])])
    (job,) = led.jobs(site="default", since=T0, until=T0 + 600)
    assert job["end"] == T0 + 45 and job["gpu_seconds"] == pytest.approx(45.0)


def test_mig_partitions_through_the_ledger() -> None:
    # an H100 in MIG mode: a 3/7 partition held by a pod, a 4/7 one by nobody; 700 W for 60 s
    devices = [{"id": "GPU-b", "kind": "gpu", "index": 0, "power_limit_w": 700.0},
               {"id": "MIG-3", "kind": "partition", "index": 1, "parent": "GPU-b", "share": 3 / 7},
               {"id": "MIG-4", "kind": "partition", "index": 2, "parent": "GPU-b", "share": 4 / 7}]
    pod = {"devices": [1], "from": T0 - 10, "owner": {"namespace": "cv", "pod": "p"}}
    led = ledger()
    led.ingest([make_batch(devices=devices, device=[0, 0, 0], ts=[T0, T0 + 30, T0 + 60],
                           power_w=[700.0, 700.0, 700.0], allocations=[pod])])
    teams = by_team(led)
    assert teams["vision"]["it_energy_kwh"] * KWH == pytest.approx(42000.0 * 3 / 7)
    assert teams["idle"]["it_energy_kwh"] * KWH == pytest.approx(42000.0 * 4 / 7)
    assert teams["vision"]["gpu_hours"] * 3600 == pytest.approx(60.0 * 3 / 7)
    (job,) = led.jobs(site="default", since=T0, until=T0 + 60)
    assert job["devices"] == ["MIG-3"]


def test_owner_team_wins_and_no_rule_is_unassigned() -> None:
    mine = {"devices": [0], "from": T0, "owner": {"namespace": "nlp-x", "team": "search"}}
    other = {"devices": [1], "from": T0, "owner": {"user": "bob"}}
    led = ledger()
    led.ingest([make_batch(devices=DEVICES, device=[0, 1, 2] * 2, ts=[T0] * 3 + [T0 + 30] * 3,
                           power_w=[300.0, 100.0, 100.0] * 2, allocations=[mine, other])])
    teams = by_team(led)
    assert set(teams) == {"search", "unassigned", "idle"}
    assert teams["idle"]["it_energy_kwh"] == 0.0  # every GPU was held all along
    assert teams["search"]["it_energy_kwh"] * KWH == pytest.approx(9000 + 1500 * 3 / 4 * 2)


def test_team_budgets_plan_to_date_and_forecast() -> None:
    plan = [PlanEntry(site="default", month="2026-12", cost=1000.0),
            PlanEntry(site="default", month="2026-12", team="nlp", cost=310.0),
            PlanEntry(site="default", month="2026-12", team="ml-ops", cost=31.0)]
    led = ledger(plan)
    led.ingest(trace([(0, 5)]))
    teams = by_team(led)
    start, end = at("2026-12-01 00:00"), at("2027-01-01 00:00")
    ratio = (led.clock() - start) / (end - start)
    assert teams["nlp"]["plan_cost"] == 310.0
    assert teams["nlp"]["plan_to_date"] == pytest.approx(310.0 * ratio)
    # forecast: month to date + the trailing 24 h cost rate x time left (here: the whole cost so far)
    energy = teams["nlp"]["energy_cost"]
    left = end - led.clock()
    assert teams["nlp"]["forecast_cost"] == pytest.approx(teams["nlp"]["total_cost"] + energy / 86400 * left)
    assert teams["ml-ops"]["plan_cost"] == 31.0 and teams["ml-ops"]["total_cost"] == 0.0
    assert teams["idle"]["plan_cost"] is None
    # the site's budget is its own entry, never the teams' added to it
    site = led.spend(site="default", month="2026-12", group_by="site")[0]
    assert site["plan_cost"] == 1000.0


def test_team_metrics_from_the_store() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    plan = [PlanEntry(site="default", month="2026-12", team="nlp", cost=310.0)]
    led = ledger(plan)
    led.ingest(trace([(0, 5)]))
    text = led.collector().render().decode()  # type: ignore[attr-defined]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"site": "default", **labels}.items())))]

    assert value("wattledger_team_energy_joules_total", team="nlp") == pytest.approx(45000.0)
    assert value("wattledger_idle_energy_joules_total") == pytest.approx(7500.0)
    assert value("wattledger_team_energy_cost_total", team="vision", currency="USD") == pytest.approx(
        11250.0 / KWH * 0.10)
    assert value("wattledger_team_idle_gpu_seconds_total", team="vision") == pytest.approx(60.0)
    assert value("wattledger_team_gpu_seconds_total", team="nlp") == pytest.approx(120.0)
    teams = by_team(led)
    assert value("wattledger_team_month_cost", team="nlp", currency="USD") == pytest.approx(
        teams["nlp"]["total_cost"])
    assert value("wattledger_team_plan_cost", team="nlp", currency="USD") == 310.0
    assert value("wattledger_team_plan_cost_to_date", team="nlp", currency="USD") == pytest.approx(
        teams["nlp"]["plan_to_date"])
    assert value("wattledger_team_forecast_cost", team="nlp", currency="USD") == pytest.approx(
        teams["nlp"]["forecast_cost"])
    # no job, pod or namespace is ever a label
    assert not any(key in ("job", "pod", "namespace", "user", "account") for (_, labels) in samples
                   for key, _ in labels)


@pytest.mark.anyio
async def test_jobs_and_team_spend_over_http() -> None:
    import csv
    import io

    from httpkit import client, settings

    from wattledger.collector.api.app import create_app

    led = ledger([PlanEntry(site="default", month="2026-12", team="nlp", cost=310.0)])
    led.ingest(trace([(0, 5)]))
    app = create_app(settings(), ledger=led, clock=led.clock)
    async with client(app) as c:
        as_json = await c.get("/v1/jobs", params={"from": "2026-12-10T11:00:00Z", "to": str(T0 + 3600)})
        as_csv = await c.get("/v1/jobs", params={"format": "csv", "team": "vision"})
        teams = await c.get("/v1/spend", params={"group_by": "team", "format": "csv"})
        refusals = [await c.get("/v1/jobs", params=p) for p in (
            {"from": "yesterday"}, {"to": "2026-12-10T11:00:00"}, {"from": str(T0 + 10), "to": str(T0)},
            {"site": "mars"}, {"from": "nan"})]
    assert as_json.status_code == 200
    doc = as_json.json()
    assert doc["from"] == at("2026-12-10 11:00") and doc["to"] == T0 + 3600
    assert [j["owner"] for j in doc["jobs"]] == [POD["owner"], JOB["owner"]]
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert row["owner_job"] == "7" and row["owner_account"] == "vision" and row["team"] == "vision"
    assert row["devices"] == "GPU-1" and row["start"] == "2026-12-10T12:01:00Z" and row["end"] == ""
    assert row["energy_cost"] == "0.00"  # 11250 J at 0.10 per kWh: a third of a cent, rounded to cents
    assert float(row["gpu_seconds"]) == pytest.approx(60.0)
    by_team_csv = {r["team"]: r for r in csv.DictReader(io.StringIO(teams.text))}
    assert set(by_team_csv) == {"nlp", "vision", "idle"} and by_team_csv["nlp"]["plan_cost"] == "310.00"
    assert [r.status_code for r in refusals] == [422, 422, 422, 404, 422]
    assert all(set(r.json()) == {"error", "detail"} for r in refusals)


def test_a_re_shared_minute_moves_the_ledger_but_never_a_counter_down() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def counter(led: Ledger) -> float:
        text = led.collector().render().decode()  # type: ignore[attr-defined]
        return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "wattledger_team_energy_joules_total" and s.labels["team"] == "nlp")

    pod = {**POD, "to": T0 + 30}  # ends half-way through the minute
    led = ledger()
    led.ingest([make_batch(seq=1, devices=DEVICES, device=[0, 1, 2] * 2, ts=[T0] * 3 + [T0 + 30] * 3,
                           power_w=[300.0, 100.0, 100.0] * 2, allocations=[pod])])
    first = counter(led)
    assert first == pytest.approx(9000.0 + 3000.0 * 9000 / 12000)
    # the minute's second half: GPU-1 busy, the pod gone; the pod's share of the CPUs shrinks
    led.ingest([make_batch(seq=2, devices=DEVICES, device=[0, 1, 2], ts=[T0 + 60] * 3,
                           power_w=[300.0, 700.0, 100.0], allocations=[pod])])
    booked = 9000.0 + 6000.0 * 9000 / 33000
    assert by_team(led)["nlp"]["it_energy_kwh"] * KWH == pytest.approx(booked)
    assert counter(led) == first > booked  # the counter holds; the ledger (and /v1/spend) re-shares
    check_conservation(led)


def test_remote_write_allocations_are_one_holder_per_pod() -> None:
    from wattledger.wire import ValidBatch

    # as remote-write maps dcgm-exporter's pod labels: each request's allocation starts at its
    # previous reading (0 for the first), ends at its last; the pod is one holder all the same
    gpu = [DEVICES[0]]
    owner = {"namespace": "nlp-x", "pod": "p", "container": "c"}
    led = ledger()
    for seq, (t, start) in enumerate([(T0, 0.0), (T0 + 30, 0.0), (T0 + 60, T0 + 30)], start=1):
        vb = make_batch(seq=seq, devices=gpu, ts=[t], power_w=[300.0],
                        allocations=[{"devices": [0], "from": start, "to": t, "owner": owner}])
        led.ingest([ValidBatch(vb.batch, vb.columns, remote=True)])
    (job,) = led.jobs(site="default", since=T0, until=T0 + 60)
    assert job["owner"] == owner and job["end"] == T0 + 60
    assert job["gpu_seconds"] == pytest.approx(60.0) and job["gpu_energy_kwh"] * KWH == pytest.approx(18000.0)


def test_teams_share_the_whole_node_estimated_overhead_by_hand() -> None:
    # the trace of test_teams_by_hand on a site whose nodes have no meter: overhead = 0.5 x parts
    sites = make_sites(price_per_kwh=0.10, pue=1.5, carbon_g_per_kwh=400, node_overhead_ratio=0.5)
    led = open_ledger(sites, now=T0 + 600, teams=TEAMS)
    led.ingest(trace([(0, 5)]))
    teams = by_team(led)
    # minute 0: parts 30000 J, overhead 15000: non-GPU 21000 shared 18000:6000 (pod, idle)
    # minute 1: the same, shared 18000:6000 (pod, job)
    assert teams["nlp"]["it_energy_kwh"] * KWH == pytest.approx(2 * (18000 + 21000 * 0.75))
    assert teams["vision"]["it_energy_kwh"] * KWH == pytest.approx(6000 + 21000 * 0.25)
    assert teams["idle"]["it_energy_kwh"] * KWH == pytest.approx(6000 + 21000 * 0.25)
    check_conservation(led)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sets(st.integers(1, 4)))
def test_teams_add_up_on_a_chiller_site_with_a_node_meter_however_batched(cuts: set[int]) -> None:
    chiller = {"model": "chiller", "cop_ref": 4.0, "capacity_kw": 100.0, "chilled_water_c": 7.0,
               "capft": [1.0, 0.0, 0.0, -0.01, 0.0, 0.0], "eirft": [0.5, 0.0, 0.0, 0.02, 0.0, 0.0],
               "eirfplr": [0.2, 0.5, 0.3], "aux_ratio": 0.05, "outdoor": {"fixed_c": 30.0},
               "curve_limits": {"chilled_water_c": [5, 10], "condenser_c": [10, 40]}}
    sites = make_sites({"default": {"timezone": "UTC", "price_per_kwh": 0.10, "carbon_g_per_kwh": 400.0,
                                    "demand_charge_per_kw": 10.0, "cooling": chiller}})
    devices = [*DEVICES, {"id": "bmc", "kind": "node", "index": 0}]
    led = open_ledger(sites, now=T0 + 600, teams=TEAMS)
    points = [0, *sorted(cuts), 5]
    for seq, (i, j) in enumerate(itertools.pairwise(points), start=1):
        ts = [T0 + 30 * k for k in range(i, j) for _ in range(4)]
        led.ingest([make_batch(seq=seq, devices=devices, device=[0, 1, 2, 3] * (j - i), ts=ts,
                               power_w=[300.0, 100.0, 100.0, 650.0] * (j - i),
                               allocations=[POD] + ([JOB] if j > 2 else []))])
    teams = by_team(led)
    # the node meter is the node's IT (650 W for 120 s); the pod's share of the non-GPU part
    total = sum(row["it_energy_kwh"] for row in teams.values()) * KWH
    assert total == pytest.approx(650.0 * 120)
    assert teams["nlp"]["it_energy_kwh"] * KWH == pytest.approx(2 * (18000 + (39000 - 24000) * 0.75))
    check_conservation(led)
