"""The whole node and the site's cooling in the ledger (DESIGN.md "The whole node", "Cooling"):
node meters beside their parts, estimated overhead, the chiller minute by minute against
hand-computed figures, metered cooling and other facility load; batching never changes them.
Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ledgerkit import Backend, at, make_batch, make_sites, open_ledger
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.accounting.cooling import ChillerCooling
from wattledger.collector.accounting.wholenode import chiller_minute_j, node_minutes
from wattledger.collector.service import Ledger
from wattledger.wire import ValidBatch

pytestmark = pytest.mark.usefixtures("backend")

T0 = at("2026-11-02 10:00")  # a minute's start
GPU = {"id": "GPU-0", "kind": "gpu", "index": 0, "power_limit_w": 100_000.0}
NODE = {"id": "bmc", "kind": "node", "index": 0}
COOLING_METER = {"id": "chw", "kind": "meter", "index": 0, "role": "cooling"}
FACILITY_METER = {"id": "feed", "kind": "meter", "index": 1, "role": "facility"}
OUTDOOR = {"id": "wx-1:outdoor", "kind": "sensor", "index": 0, "role": "outdoor"}
#: easy curves for hand computation: CAPFT = 1 - 0.01 y, EIRFT = 0.5 + 0.02 y, EIRFPLR =
#: 0.2 + 0.5 p + 0.3 p^2; condenser clamped to [10, 40] °C
CHILLER: dict[str, Any] = {
    "model": "chiller",
    "cop_ref": 4.0,
    "capacity_kw": 100.0,
    "chilled_water_c": 7.0,
    "capft": [1.0, 0.0, 0.0, -0.01, 0.0, 0.0],
    "eirft": [0.5, 0.0, 0.0, 0.02, 0.0, 0.0],
    "eirfplr": [0.2, 0.5, 0.3],
    "curve_limits": {"chilled_water_c": [5, 10], "condenser_c": [10, 40]},
    "aux_ratio": 0.05,
    "outdoor": {"fixed_c": 30.0},
}


def site(**extra: Any) -> dict[str, Any]:
    return {"timezone": "UTC", "price_per_kwh": 0.10, "carbon_g_per_kwh": 400.0, **extra}


def steady(
    devices: Sequence[dict[str, Any]],
    watts: Sequence[float | None],
    start: float,
    end: float,
    *,
    node: str = "n1",
    seq: int = 1,
    labels: dict[str, str] | None = None,
    temp_c: float | None = None,
    step: float = 10.0,
) -> ValidBatch:
    """Readings of each device every ``step`` s from start to end (inclusive), constant power."""
    times = list(np.arange(start, end + step / 2, step))
    device, ts, power, temps = [], [], [], []
    for i, w in enumerate(watts):
        for t in times:
            device.append(i)
            ts.append(float(t))
            power.append(w)
            temps.append(temp_c if devices[i]["kind"] == "sensor" else None)
    cols: dict[str, Any] = {"temp_c": temps} if any(t is not None for t in temps) else {}
    return make_batch(
        node=node,
        stream=f"s-{node}",
        seq=seq,
        labels=labels or {},
        devices=list(devices),
        device=device,
        ts=ts,
        power_w=power,
        **cols,
    )


def totals(led: Ledger, name: str = "default") -> Any:
    return led.view().totals[name]


def node_overhead(led: Ledger, node: str) -> tuple[float, float, float]:
    t = led.view().node_totals[node]
    return t.overhead_est_j, t.overhead_meas_j, t.disagree_s


# ---------------------------------------------------------------------------- the chiller formula


def test_chiller_minutes_by_hand() -> None:
    chiller = ChillerCooling.model_validate(CHILLER)
    # 3.0e6 J in a minute = 50 kW of heat; 30 °C: CAPFT 0.7 -> 70 kW available, PLR 5/7,
    # EIRFT 1.1, EIRFPLR 0.2 + 0.5 x 5/7 + 0.3 x 25/49 = 0.710204..; chiller 70/4 x 1.1 x that =
    # 13.671428.. kW, aux 0.05 x 50 = 2.5 kW: 16.171428.. kW x 60 s
    assert chiller_minute_j(chiller, 3.0e6, 30.0) == pytest.approx(16.1714285714 * 60e3, rel=1e-9)
    # curve ends: 45 °C is clamped to 40 (CAPFT 0.6: 60 kW, PLR 5/6, EIRFT 1.3,
    # EIRFPLR 0.2 + 0.41667 + 0.20833 = 0.825): 15 x 1.3 x 0.825 + 2.5 = 18.5875 kW
    assert chiller_minute_j(chiller, 3.0e6, 45.0) == pytest.approx(18.5875 * 60e3, rel=1e-9)
    assert chiller_minute_j(chiller, 3.0e6, 40.0) == chiller_minute_j(chiller, 3.0e6, 45.0)
    # -5 °C is clamped to 10 (CAPFT 0.9: 90 kW, PLR 5/9, EIRFT 0.7, EIRFPLR 0.2 + 0.27778 + 0.09259
    # = 0.570370..): 22.5 x 0.7 x 0.570370.. + 2.5 = 11.483333.. kW
    assert chiller_minute_j(chiller, 3.0e6, -5.0) == pytest.approx(11.4833333333 * 60e3, rel=1e-9)
    # over capacity: 100 kW at 30 °C, PLR held at 1: 17.5 x 1.1 x 1.0 + 5 = 24.25 kW
    assert chiller_minute_j(chiller, 6.0e6, 30.0) == pytest.approx(24.25 * 60e3, rel=1e-12)
    # a tiny load (1 W): no cycling, the curve at PLR 1/70000: 17.5 x 1.1 x (0.2 + 0.5/70000 + ..)
    tiny = 17.5 * 1.1 * (0.2 + 0.5 / 70000 + 0.3 / 70000**2) + 0.05 * 0.001
    assert chiller_minute_j(chiller, 60.0, 30.0) == pytest.approx(tiny * 60e3, rel=1e-12)
    assert chiller_minute_j(chiller, 0.0, 30.0) == 0.0


def test_node_minutes_rule() -> None:
    parts = np.array([100.0, 100.0, 100.0, 100.0])
    got = node_minutes(
        parts,
        np.array([0.0, 150.0, 80.0, 80.0]),
        np.array([0.0, 60.0, 60.0, 30.0]),
        np.array([0.25, 0.25, 0.25, 0.25]),
    )
    assert got.overhead_j.tolist() == [25.0, 50.0, 0.0, 0.0]
    assert got.estimated.tolist() == [True, False, False, False]
    # a minute the meter measured only in part cannot disagree: its readings may still come
    assert got.disagree_s.tolist() == [0.0, 0.0, 60.0, 0.0]


# ---------------------------------------------------------------------------- in the ledger


def test_a_chiller_minute_in_one_batch_and_in_two() -> None:
    sites = make_sites({"default": site(cooling=CHILLER)})
    whole = open_ledger(sites, now=T0 + 120)
    whole.ingest([steady([GPU], [50_000.0], T0, T0 + 60)])
    split = open_ledger(sites, now=T0 + 120)
    split.ingest([steady([GPU], [50_000.0], T0, T0 + 30)])
    first = totals(split).cooling_j
    # half the minute's IT: 25 kW, PLR 25/70, EIRFPLR 0.2 + 0.178571 + 0.038265 = 0.416837;
    # 19.25 x 0.416837 + 1.25 = 9.274107 kW
    assert first == pytest.approx(9.2741071429 * 60e3, rel=1e-9)
    split.ingest([steady([GPU], [50_000.0], T0 + 40, T0 + 60, seq=2)])
    for led in (whole, split):
        t = totals(led)
        assert t.cooling_j == pytest.approx(16.1714285714 * 60e3, rel=1e-9)
        assert t.cooling_cost == pytest.approx(16.1714285714 / 60 * 0.10, rel=1e-9)
        assert t.carbon_g == pytest.approx((50 + 16.1714285714) / 60 * 400, rel=1e-9)
        assert t.fallback_s == 0.0  # fixed_c is the only source configured: no fallback
        row = led.spend(site="default", month="2026-11", group_by="site")[0]
        assert row["cooling_energy_kwh"] == pytest.approx(16.1714285714 / 60, rel=1e-9)
        assert row["energy_cost"] == pytest.approx((50 + 16.1714285714) / 60 * 0.10, rel=1e-9)
        # the node carries its minute's cooling: levels add up
        nodes = led.spend(site="default", month="2026-11", group_by="node")
        assert sum(r["energy_cost"] for r in nodes) == pytest.approx(row["energy_cost"], rel=1e-12)


def test_the_outdoor_sensor_and_its_fallback() -> None:
    chiller = {**CHILLER, "outdoor": {"sensor": "wx-1:outdoor", "fixed_c": 30.0}}
    sites = make_sites({"default": site(cooling=chiller)})
    led = open_ledger(sites, now=T0 + 3600)
    # the sensor read 40 °C up to 10:00:30 (its own node, a management host): fresh for minute 0
    led.ingest([steady([OUTDOOR], [None], T0 - 60, T0 + 30, node="wx", temp_c=40.0)])
    led.ingest([steady([GPU], [50_000.0], T0, T0 + 60)])
    # 40 °C: CAPFT 0.6 -> 60 kW, PLR 5/6, EIRFT 1.3, EIRFPLR 0.825: 18.5875 kW
    assert totals(led).cooling_j == pytest.approx(18.5875 * 60e3, rel=1e-9)
    assert totals(led).fallback_s == 0.0
    # 20 minutes later the sensor is stale (last read 10:00:30): fixed_c 30 °C, a fallback minute
    later = T0 + 1200
    led.ingest([steady([GPU], [50_000.0], later, later + 60, seq=2)])
    assert totals(led).cooling_j == pytest.approx((18.5875 + 16.1714285714) * 60e3, rel=1e-9)
    assert totals(led).fallback_s == 60.0
    text = led.collector().render().decode()  # type: ignore[attr-defined]
    assert 'wattledger_cooling_fallback_seconds_total{site="default"} 60.0' in text
    # the newest minute took fixed_c; its cooling power is the newest whole minute's
    assert 'wattledger_outdoor_temperature_celsius{site="default"} 30.0' in text


def test_a_node_meter_is_the_node_and_the_rest_its_overhead() -> None:
    sites = make_sites({"default": site(pue=1.5, node_overhead_ratio=0.25)})
    led = open_ledger(sites, now=T0 + 120)
    led.ingest(
        [
            # n1: GPU 300 W, its BMC 500 W: IT 30 kJ, overhead 12 kJ measured
            steady([GPU, NODE], [300.0, 500.0], T0, T0 + 60, node="n1"),
            # n2: no node meter: 300 W x 60 s x 1.25, overhead 4.5 kJ estimated
            steady([GPU], [300.0], T0, T0 + 60, node="n2"),
            # n3: its meter reads 200 W, below its GPU's 300 W: a disagreement, overhead 0, IT = parts
            steady([GPU, NODE], [300.0, 200.0], T0, T0 + 60, node="n3"),
        ]
    )
    assert node_overhead(led, "n1") == pytest.approx((0.0, 12_000.0, 0.0))
    assert node_overhead(led, "n2") == pytest.approx((4_500.0, 0.0, 0.0))
    assert node_overhead(led, "n3") == pytest.approx((0.0, 0.0, 60.0))
    it_j = 30_000.0 + 22_500.0 + 18_000.0
    t = totals(led)
    assert t.cooling_j == pytest.approx(it_j * 0.5)
    assert t.it_cost == pytest.approx(it_j / 3.6e6 * 0.10)
    assert t.carbon_g == pytest.approx(it_j * 1.5 / 3.6e6 * 400)
    row = led.spend(site="default", month="2026-11", group_by="site")[0]
    assert row["it_energy_kwh"] == pytest.approx(it_j / 3.6e6)
    assert row["facility_energy_kwh"] == pytest.approx(it_j * 1.5 / 3.6e6)
    assert row["peak_demand_kw"] == pytest.approx(it_j * 1.5 / 900 / 1000)
    nodes = {r["node"]: r for r in led.spend(site="default", month="2026-11", group_by="node")}
    assert nodes["n1"]["it_energy_kwh"] == pytest.approx(30_000 / 3.6e6)
    assert sum(r["energy_cost"] for r in nodes.values()) == pytest.approx(row["energy_cost"])
    # the devices' own energy stays per device: the GPUs' alone
    dev = led.view().devices
    gpus = [float(dev.floats["energy_j"][s]) for s in range(dev.size) if dev.kind[s] == "gpu"]
    assert gpus == pytest.approx([18_000.0] * 3)


def test_a_node_reading_in_a_later_batch_rebooks_the_minute() -> None:
    sites = make_sites({"default": site(pue=1.5, node_overhead_ratio=0.25)})
    whole = open_ledger(sites, now=T0 + 120)
    whole.ingest([steady([GPU, NODE], [300.0, 500.0], T0, T0 + 60)])
    split = open_ledger(sites, now=T0 + 120)
    # the GPU's readings first (the minute estimated), the BMC's in the next batch (measured)
    times = [T0 + 10.0 * i for i in range(7)]
    for seq, (device, watts) in enumerate(((0, 300.0), (1, 500.0)), start=1):
        split.ingest([make_batch(node="n1", stream="s-n1", seq=seq, devices=[GPU, NODE], device=[device] * 7,
                                 ts=times, power_w=[watts] * 7)])
        if seq == 1:
            assert node_overhead(split, "n1") == pytest.approx((4_500.0, 0.0, 0.0))
    # /metrics keeps the estimated 4.5 kJ it showed (a counter never goes down); the bill is exact
    assert node_overhead(whole, "n1") == pytest.approx((0.0, 12_000.0, 0.0))
    assert node_overhead(split, "n1") == pytest.approx((4_500.0, 12_000.0, 0.0))
    for led in (whole, split):
        t = totals(led)
        assert (t.cooling_j, t.it_cost, t.carbon_g) == pytest.approx(
            (15_000.0, 30_000 / 3.6e6 * 0.10, 45_000 / 3.6e6 * 400)
        )
        row = led.spend(site="default", month="2026-11", group_by="site")[0]
        assert (row["overhead_energy_kwh"], row["overhead_estimated_kwh"]) == pytest.approx(
            (12_000 / 3.6e6, 0.0))


def test_a_metered_site_books_its_meters() -> None:
    sites = make_sites({"default": site(cooling={"model": "metered"})})
    led = open_ledger(sites, now=T0 + 120)
    led.ingest(
        [
            steady([GPU], [500.0], T0, T0 + 60, node="n1"),
            # the facility's meters, on a management host: cooling 100 W, the feed 1000 W
            steady([COOLING_METER, FACILITY_METER], [100.0, 1000.0], T0, T0 + 60, node="mgmt"),
        ]
    )
    t = totals(led)
    assert t.cooling_j == pytest.approx(6_000.0)
    assert t.other_j == pytest.approx(60_000.0 - 30_000.0 - 6_000.0)
    assert t.other_cost == pytest.approx(24_000 / 3.6e6 * 0.10)
    assert t.carbon_g == pytest.approx(60_000 / 3.6e6 * 400)
    row = led.spend(site="default", month="2026-11", group_by="site")[0]
    assert row["facility_energy_kwh"] == pytest.approx(60_000 / 3.6e6)
    assert row["energy_cost"] == pytest.approx(60_000 / 3.6e6 * 0.10)
    assert row["peak_demand_kw"] == pytest.approx(60_000 / 900 / 1000)
    nodes = led.spend(site="default", month="2026-11", group_by="node")
    assert sum(r["energy_cost"] for r in nodes) == pytest.approx(row["energy_cost"])


# ---------------------------------------------------------------------------- counters never go down


def counters(led: Ledger) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every ``_total`` sample of /metrics."""
    text = led.collector().render().decode()  # type: ignore[attr-defined]
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.endswith("_total")}


def never_lower(before: dict[tuple[str, frozenset[tuple[str, str]]], float],
                after: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    lower = {key: (value, after.get(key)) for key, value in before.items()
             if after.get(key, -1.0) < value}
    assert not lower, lower


def test_counters_never_go_down_when_a_minute_is_rebooked_lower(backend: Backend, tmp_path: Path) -> None:
    """Two minutes re-booked lower: n1's overhead estimated (0.25 x 300 W x 60 s = 4.5 kJ), then
    measured by its BMC's later readings (310 W: 0.6 kJ); a metered site's other load booked
    from its facility meter before the IT arrives (60 - 6 = 54 kJ), then 60 - 30 - 6 = 24 kJ.
    /v1/spend books the exact, lower figures; /metrics shows the highest booked so far, also
    after a restart (PostgreSQL and SQLite keep it in the store)."""
    sites = make_sites({"default": site(pue=1.5, node_overhead_ratio=0.25),
                        "lab": site(cooling={"model": "metered"})})
    db = backend.reopenable(tmp_path)
    led = open_ledger(sites, db=db, now=T0 + 120)
    times = [T0 + 10.0 * i for i in range(7)]
    led.ingest([make_batch(node="n1", stream="s-n1", seq=1, devices=[GPU, NODE], device=[0] * 7, ts=times,
                           power_w=[300.0] * 7)])
    led.ingest([steady([COOLING_METER, FACILITY_METER], [100.0, 1000.0], T0, T0 + 60, node="mgmt",
                       labels={"site": "lab"})])
    high = counters(led)
    assert node_overhead(led, "n1") == pytest.approx((4_500.0, 0.0, 0.0))
    assert totals(led, "lab").other_j == pytest.approx(54_000.0)
    led.ingest([make_batch(node="n1", stream="s-n1", seq=2, devices=[GPU, NODE], device=[1] * 7, ts=times,
                           power_w=[310.0] * 7)])
    led.ingest([steady([GPU], [500.0], T0, T0 + 60, node="n2", labels={"site": "lab"})])
    after = counters(led)
    never_lower(high, after)
    # what is shown: the highs (estimated overhead 4.5 kJ kept, measured 0.6 kJ added; other 54 kJ)
    n1 = frozenset({("site", "default"), ("cluster", ""), ("node", "n1")})
    assert after[("wattledger_node_overhead_energy_joules_total", n1 | {("estimated", "true")})] == 4_500.0
    assert after[("wattledger_node_overhead_energy_joules_total", n1 | {("estimated", "false")})] == \
        pytest.approx(600.0)
    assert after[("wattledger_node_energy_joules_total", n1)] == pytest.approx(18_000.0 + 4_500.0 + 600.0)
    assert after[("wattledger_other_facility_energy_joules_total", frozenset({("site", "lab")}))] == \
        pytest.approx(54_000.0)
    # what is booked: exact
    row = led.spend(site="default", month="2026-11", group_by="site")[0]
    assert row["it_energy_kwh"] == pytest.approx(18_600 / 3.6e6)
    assert row["overhead_energy_kwh"] == pytest.approx(600 / 3.6e6)
    assert row["overhead_estimated_kwh"] == pytest.approx(0.0, abs=1e-12)
    assert row["energy_cost"] == pytest.approx(18_600 * 1.5 / 3.6e6 * 0.10)
    lab = led.spend(site="lab", month="2026-11", group_by="site")[0]
    assert lab["other_energy_kwh"] == pytest.approx(24_000 / 3.6e6)
    assert lab["energy_cost"] == pytest.approx(60_000 / 3.6e6 * 0.10)
    led.close()
    again = open_ledger(sites, db=db, now=T0 + 120)
    assert counters(again) == pytest.approx(after)
    # booking on from the booked (not the shown) values: n1's next minute adds its own figures
    again.ingest([make_batch(node="n1", stream="s-n1", seq=3, devices=[GPU, NODE], device=[0] * 7 + [1] * 7,
                             ts=[t + 60 for t in times] * 2, power_w=[300.0] * 7 + [310.0] * 7)])
    later = counters(again)
    never_lower(after, later)
    assert later[("wattledger_node_overhead_energy_joules_total", n1 | {("estimated", "false")})] == \
        pytest.approx(1_200.0)
    assert later[("wattledger_node_overhead_energy_joules_total", n1 | {("estimated", "true")})] == 4_500.0
