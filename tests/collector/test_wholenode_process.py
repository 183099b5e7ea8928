"""End to end over real HTTP into a real `wattledger collector` process: a site whose node has a
wall meter (its BMC's readings arriving in a later batch than its GPU's), a chiller site whose
node has none (overhead estimated), and a metered site (cooling and facility meters on a
management host). /v1/spend and /metrics against the hand-computed bill, and the metered site's
cooling and other load shared out to its team by the collector's periodic work."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpkit import start_collector
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKENS = {"n-bmc": "t-bmc", "n-est": "t-est", "n-gpu": "t-gpu", "mgmt": "t-mgmt"}
#: the chiller of tests/collector/test_wholenode.py: 50 kW of IT at 30 °C costs 16.1714285714 kW
CHILLER: dict[str, Any] = {
    "model": "chiller", "cop_ref": 4.0, "capacity_kw": 100.0, "chilled_water_c": 7.0,
    "capft": [1.0, 0.0, 0.0, -0.01, 0.0, 0.0], "eirft": [0.5, 0.0, 0.0, 0.02, 0.0, 0.0],
    "eirfplr": [0.2, 0.5, 0.3], "curve_limits": {"chilled_water_c": [5, 10], "condenser_c": [10, 40]},
    "aux_ratio": 0.05, "outdoor": {"fixed_c": 30.0}}
PRICE = {"timezone": "UTC", "price_per_kwh": 0.10, "carbon_g_per_kwh": 400.0}


def gpu(limit: float) -> dict[str, Any]:
    return {"id": "GPU-0", "kind": "gpu", "index": 0, "power_limit_w": limit}


def batch(node: str, seq: int, site: str, devices: list[dict[str, Any]], watts: dict[int, float],
          t0: float) -> dict[str, Any]:
    """Readings of the given devices (position -> W) every 10 s over the minute t0..t0+60."""
    device, ts, power = [], [], []
    for position, w in watts.items():
        for k in range(7):
            device.append(position)
            ts.append(t0 + 10.0 * k)
            power.append(w)
    return {"node": node, "stream": f"s-{node}", "seq": seq, "labels": {"site": site}, "devices": devices,
            "readings": {"device": device, "ts": ts, "power_w": power}}


def test_three_sites_bill_their_whole_nodes_and_cooling(tmp_path: Path) -> None:
    t0 = (time.time() // 60 - 20) * 60  # a whole minute 20 minutes ago (inside the PUE's hour)
    month = time.strftime("%Y-%m", time.gmtime(t0))
    cfg = {"db": f"sqlite:///{tmp_path}/ledger.db", "tokens": TOKENS, "refresh_interval_seconds": 1,
           "teams": {"nlp": [{"namespace": "nlp-*"}]},
           "sites": {"a": {**PRICE, "pue": 1.5},
                     "b": {**PRICE, "cooling": CHILLER, "node_overhead_ratio": 0.25},
                     "c": {**PRICE, "cooling": {"model": "metered"}}}}
    bmc = [gpu(700.0), {"id": "n-bmc:bmc", "kind": "node", "index": 0}]
    meters = [{"id": "chw", "kind": "meter", "index": 0, "role": "cooling"},
              {"id": "feed", "kind": "meter", "index": 1, "role": "facility"}]
    sends = [
        ("n-bmc", batch("n-bmc", 1, "a", bmc, {0: 300.0}, t0)),  # the GPU's minute first
        ("n-bmc", batch("n-bmc", 2, "a", bmc, {1: 500.0}, t0)),  # its BMC's in the next batch
        ("n-est", batch("n-est", 1, "b", [gpu(100_000.0)], {0: 40_000.0}, t0)),
        ("n-gpu", {**batch("n-gpu", 1, "c", [gpu(700.0)], {0: 500.0}, t0), "allocations": [
            {"devices": [0], "from": t0 - 60, "to": None, "owner": {"namespace": "nlp-ft", "pod": "p"}}]}),
        ("mgmt", batch("mgmt", 1, "c", meters, {0: 100.0, 1: 1000.0}, t0)),
    ]
    c = start_collector(tmp_path, cfg)
    try:
        with httpx.Client(base_url=c.url, timeout=10) as client:
            for node, body in sends:
                r = client.post("/v1/batches", content=json.dumps(body),
                                headers={"Authorization": f"Bearer {TOKENS[node]}",
                                         "Content-Type": "application/json"})
                assert r.status_code == 200, r.text
            spend = {s: client.get("/v1/spend", params={"site": s, "month": month}).json()["rows"][0]
                     for s in ("a", "b", "c")}
            nodes = {s: client.get("/v1/spend", params={"site": s, "month": month, "group_by": "node"}
                                   ).json()["rows"] for s in ("a", "b", "c")}
            text = client.get("/metrics").text
            # the metered minute's cooling and other load reach its teams when the periodic work
            # (every second here) shares the minute out by IT: all to nlp
            deadline = time.monotonic() + 30
            while True:
                teams = {r["team"]: r for r in client.get("/v1/spend", params={
                    "site": "c", "month": month, "group_by": "team"}).json()["rows"]}
                if "nlp" in teams and teams["nlp"]["facility_energy_kwh"] > teams["nlp"]["it_energy_kwh"]:
                    break
                assert time.monotonic() < deadline, teams
                time.sleep(0.2)
    finally:
        c.stop()
    kwh = 3.6e6
    # a: the BMC's 500 W is the node (30 kJ): GPU 18 kJ + 12 kJ measured overhead; pue 1.5
    a = spend["a"]
    assert a["it_energy_kwh"] == pytest.approx(30_000 / kwh)
    assert (a["gpu_energy_kwh"], a["overhead_energy_kwh"], a["overhead_estimated_kwh"]) == pytest.approx(
        (18_000 / kwh, 12_000 / kwh, 0.0))
    assert a["facility_energy_kwh"] == pytest.approx(45_000 / kwh)
    assert a["energy_cost"] == pytest.approx(45_000 / kwh * 0.10)
    # b: no node meter: 2.4 MJ of GPU + 25 % estimated = 3.0 MJ = 50 kW; the chiller 16.171 kW
    b = spend["b"]
    cooling_j = 16.1714285714 * 60e3
    assert b["it_energy_kwh"] == pytest.approx(3.0e6 / kwh)
    assert b["overhead_estimated_kwh"] == pytest.approx(0.6e6 / kwh)
    assert b["cooling_energy_kwh"] == pytest.approx(cooling_j / kwh, rel=1e-9)
    assert b["carbon_kg"] == pytest.approx((3.0e6 + cooling_j) / kwh * 0.4, rel=1e-9)
    # c: cooling metered 6 kJ; the feed's 60 kJ less IT 30 kJ and cooling: 24 kJ other
    cc = spend["c"]
    assert (cc["it_energy_kwh"], cc["cooling_energy_kwh"], cc["other_energy_kwh"]) == pytest.approx(
        (30_000 / kwh, 6_000 / kwh, 24_000 / kwh))
    assert cc["facility_energy_kwh"] == pytest.approx(60_000 / kwh)
    assert cc["total_cost"] == pytest.approx(60_000 / kwh * 0.10 + cc["demand_charge"])
    for s in ("a", "b", "c"):  # the node rows (and the site's own) add up to the site
        assert sum(r["energy_cost"] for r in nodes[s]) == pytest.approx(spend[s]["energy_cost"], rel=1e-9)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}

    def metric(name: str, **labels: str) -> float:
        found = [v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    assert metric("wattledger_node_energy_joules_total", node="n-bmc") == pytest.approx(30_000)
    assert metric("wattledger_node_overhead_energy_joules_total", node="n-bmc", estimated="false") == \
        pytest.approx(12_000)
    assert metric("wattledger_node_overhead_energy_joules_total", node="n-est", estimated="true") == \
        pytest.approx(600_000)
    assert metric("wattledger_site_pue", site="a", source="model") == pytest.approx(1.5)
    assert metric("wattledger_site_pue", site="c", source="measured") == pytest.approx(2.0)
    assert metric("wattledger_outdoor_temperature_celsius", site="b") == 30.0
    assert metric("wattledger_other_facility_energy_joules_total", site="c") == pytest.approx(24_000)
    assert metric("wattledger_meter_disagreement_seconds_total", node="n-bmc") == 0.0
    nlp = teams["nlp"]
    assert (nlp["it_energy_kwh"], nlp["facility_energy_kwh"]) == pytest.approx((30_000 / kwh, 60_000 / kwh))
    assert nlp["energy_cost"] == pytest.approx(60_000 / kwh * 0.10)
