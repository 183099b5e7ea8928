"""The whole bill as a site operator sees it on the cost board, through a real Prometheus: a
real agent reading a BMC (Redfish, DMTF's public-rackmount1 mockup: 374 W at the wall) and a
facility meter (Modbus TCP, an SDM630's registers: 48.25 kW), a real collector holding a known
ledger (a node with a BMC, a node without, a time-of-use tariff, PUE 1.5, a demand charge),
and the panels' own queries (dashboards/json) returning the figures computed here by hand:
wall power beside the parts, cooling per hour and today, the PUE, and this month's GPU-only
cost against the whole bill.

Counters are evaluated at the instant of the collector's last scrape, over a window that holds
every scrape (they start at 0 before the ledger is booked): Prometheus' rate() and increase()
then extrapolate nothing, and the figures are exact."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from agent.redfish_bmc import FakeBmc
from agent.test_modbus import INPUT, SDM630, Meter, float32

from .support import WATTLEDGER, Processes, binary, concrete, dashboard_queries, eventually, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BOARD = "energy-cost-plan.json"
ENV = "/redfish/v1/Chassis/1U/EnvironmentMetrics"
WALL_W = 374.0  # public-rackmount1's EnvironmentMetrics.PowerWatts
FEED_W = 48_250.0
#: the known ledger: n-bmc's GPU and CPU under its BMC's 374 W; n-est's GPU alone, its overhead
#: estimated at 0.25 x parts; 20 minutes, the middle ten at the peak price
GPU_BMC_W, CPU_W, GPU_EST_W, RATIO = 250.0, 50.0, 400.0, 0.25
PUE, PEAK, OFF_PEAK, DEMAND_PER_KW = 1.5, 0.30, 0.10, 0.05
MINUTES = 20


def hand_figures() -> dict[str, float]:
    """The month's bill of the known ledger, computed from the watts and the prices."""
    per_watt = 60 / 3.6e6 * (10 * PEAK + 10 * OFF_PEAK)  # money per W held the 20 minutes
    gpu_w = GPU_BMC_W + GPU_EST_W
    overhead_w = (WALL_W - GPU_BMC_W - CPU_W) + RATIO * GPU_EST_W
    it_w = gpu_w + CPU_W + overhead_w
    cooling_w = it_w * (PUE - 1)
    demand = (it_w + cooling_w) / 1000 * DEMAND_PER_KW  # the first quarter-hour, all of it booked
    energy = (it_w + cooling_w) * per_watt
    return {"gpu": gpu_w * per_watt, "cpu": CPU_W * per_watt, "overhead": overhead_w * per_watt,
            "cooling": cooling_w * per_watt, "other": 0.0, "demand": demand, "whole": energy + demand,
            "it_w": it_w, "cooling_share": cooling_w / (it_w + cooling_w)}


def hhmm(t: float) -> str:
    return time.strftime("%H:%M", time.gmtime(t))


class Site:
    """The processes of the test, the ledger's window and Prometheus' answers."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Processes(tmp)
        # a window of whole quarter-hours' start, ended at least 5 minutes ago, in this UTC day
        now = time.time()
        self.t0 = math.floor((now - 25 * 60) / 900) * 900
        self.t1 = self.t0 + MINUTES * 60
        if time.gmtime(self.t0)[:3] != time.gmtime(self.t1 + 60)[:3]:
            pytest.skip("the ledger's 20 minutes would cross midnight UTC (a tariff band is of one day)")
        self.prom = ""
        self.collector = ""

    def start(self, bmc: FakeBmc, meter: Meter) -> None:
        cport, aport, pport = free_port(), free_port(), free_port()
        self.collector = f"http://127.0.0.1:{cport}"
        config = {
            "listen": f"127.0.0.1:{cport}", "db": f"sqlite:///{self.tmp / 'ledger.db'}",
            "tokens": {"n-bmc": "tok-bmc", "n-est": "tok-est"}, "metrics_refresh_seconds": 1,
            "sites": {"dc1": {"timezone": "UTC", "currency": "USD", "pue": PUE,
                              "node_overhead_ratio": RATIO, "demand_charge_per_kw": DEMAND_PER_KW,
                              "tariff": [{"price_per_kwh": PEAK, "from": hhmm(self.t0 + 300),
                                          "to": hhmm(self.t0 + 900)},
                                         {"price_per_kwh": OFF_PEAK}]}},
        }
        (self.tmp / "collector.yaml").write_text(yaml.safe_dump(config))
        self.procs.start("collector", [WATTLEDGER, "collector", "--config", str(self.tmp / "collector.yaml")])
        self.procs.wait_http("collector", f"{self.collector}/metrics")
        (self.tmp / "pw").write_text(f"{bmc.password}\n")
        (self.tmp / "agent.yaml").write_text(yaml.safe_dump({"modbus_targets": [
            {**SDM630, "port": meter.port, "interval": 1}]}))
        self.procs.start("agent", [
            WATTLEDGER, "agent", "--config", str(self.tmp / "agent.yaml"), "--node", "n-bmc",
            "--listen", f"127.0.0.1:{aport}", "--sources", "redfish,modbus", "--redfish-url", bmc.url,
            "--redfish-user", bmc.user, "--redfish-password-file", str(self.tmp / "pw"),
            "--redfish-interval", "0.5", "--label", "site=dc1", "--label", "cluster=train"])
        self.procs.wait_http("agent", f"http://127.0.0.1:{aport}/metrics")
        prom_config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "wattledger-collector", "static_configs": [{"targets": [f"127.0.0.1:{cport}"]}]},
                {"job_name": "wattledger-agent", "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{aport}"]}]}]}
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        self.procs.start("prometheus", [
            binary("prometheus"), f"--config.file={self.tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{pport}"])
        self.prom = f"http://127.0.0.1:{pport}"
        self.procs.wait_http("prometheus", f"{self.prom}/-/ready")

    def book(self, seq: int) -> None:
        """The 20 minutes of both nodes, a reading every 20 s, as their agents would ship them:
        seq 1 the first reading alone (the nodes' counters appear, at 0), seq 2 the rest."""
        times = [self.t0 + 20.0 * i for i in range(MINUTES * 3 + 1)]
        times = times[:1] if seq == 1 else times[1:]
        nodes = {"n-bmc": ("tok-bmc", [("GPU-b0", "gpu", GPU_BMC_W), ("n-bmc:rapl:package-0", "cpu", CPU_W),
                                        ("n-bmc:bmc", "node", WALL_W)]),
                 "n-est": ("tok-est", [("GPU-e0", "gpu", GPU_EST_W)])}
        for node, (token, devices) in nodes.items():
            body = {"node": node, "stream": f"s-{node}", "seq": seq,
                    "labels": {"site": "dc1", "cluster": "train"},
                    "devices": [{"id": d, "kind": k, "index": 0,
                                 **({"power_limit_w": 700.0} if k == "gpu" else {})} for d, k, _ in devices],
                    "readings": {"device": [i for i in range(len(devices)) for _ in times],
                                 "ts": [t for _ in devices for t in times],
                                 "power_w": [w for _, _, w in devices for _ in times]}}
            r = httpx.post(f"{self.collector}/v1/batches", json=body, timeout=30,
                           headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        body = httpx.get(f"{self.prom}/api/v1/query", params=params, timeout=10).json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str, at: float) -> dict[str, float]:
        """Each series' value, keyed by its labels' values (joined by '/')."""
        return {"/".join(v for _, v in sorted(r["metric"].items())): float(r["value"][1])
                for r in self.query(expr, at)}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, float]]:
    binary("prometheus")
    s = Site(tmp_path_factory.mktemp("whole-bill"))
    bmc, meter = FakeBmc("public-rackmount1"), Meter()
    try:
        bmc.set(ENV, "/EnergyJoules", {"Reading": 1.0e6})  # the BMC's own counter, as many have
        meter.write(INPUT, 52, float32(FEED_W))
        meter.write(INPUT, 72, float32(1000.0))
        s.start(bmc, meter)
        cooling = 'wattledger_energy_cost_total{site="dc1", part="cooling"}'
        eventually(lambda: s.query(f"count_over_time({cooling}[1h]) >= 3"), 60, "the ledger's counters at 0")
        eventually(lambda: s.query("wattledger_node_power_watts") and s.query("wattledger_meter_power_watts"),
                   60, "the agent's BMC and meter scraped")
        s.book(1)
        born = 'wattledger_node_energy_joules_total{job="wattledger-collector", node="n-est"}'
        eventually(lambda: s.query(f"count_over_time({born}[1h]) >= 3"), 60, "the nodes' counters at 0")
        s.book(2)
        # the BMC's counter moves as the node draws: the agent's series that shares its name with
        # the ledger's node IT energy (docs/metrics.md) must not be added to it
        bmc.set(ENV, "/EnergyJoules", {"Reading": 1.0e6 + WALL_W * MINUTES * 60})
        gpu = hand_figures()["gpu"]
        eventually(lambda: [r for r in s.query('wattledger_month_energy_cost{part="gpu"}')
                            if abs(float(r["value"][1]) - gpu) < 1e-9], 60, "the month's bill scraped")
        bmc_counter = 'wattledger_node_energy_joules_total{job="wattledger-agent"}'
        eventually(lambda: s.query(f"increase({bmc_counter}[1h]) > 0"), 60, "the BMC's counter moved")
        time.sleep(2)  # a few more scrapes of the final values
        (last,) = s.query(f"timestamp({cooling})")
        yield s, float(last["value"][1])
    finally:
        with contextlib.suppress(Exception):
            s.procs.stop_all()
        meter.close()
        bmc.close()


def panel(title: str) -> list[str]:
    exprs = [e for board, t, e in dashboard_queries() if board == BOARD and t == title]
    assert exprs, f"no panel {title!r} on {BOARD}"
    return exprs


def ask(s: Site, at: float, title: str, ref: int = 0) -> dict[str, float]:
    """A panel's query with every variable at All, its windows holding every scrape of the test."""
    return s.value(concrete(panel(title)[ref], rate_interval="1h", range_="1h"), at)


def test_each_node_at_the_wall_beside_its_parts(site: tuple[Site, float]) -> None:
    s, at = site
    title = "Each node at the wall (solid, its BMC) vs its parts (dashed, GPUs + CPUs)"
    assert ask(s, at, title, 0) == {"n-bmc": WALL_W}
    assert ask(s, at, title, 1) == pytest.approx({"n-bmc": GPU_BMC_W + CPU_W})  # n-est has no BMC
    share = ask(s, at, "Node overhead now: 1 - parts / wall")
    assert share == pytest.approx({"n-bmc": 1 - (GPU_BMC_W + CPU_W) / WALL_W}, rel=1e-9)
    assert ask(s, at, "PDU inlets and facility meters by role") == {"main-feed/facility": FEED_W}


def test_what_cooling_costs_per_hour_and_today_with_the_pue(site: tuple[Site, float]) -> None:
    s, at = site
    hand = hand_figures()
    # over a window of one hour that holds the whole ledger: the hour's cooling cost
    assert ask(s, at, "Cooling cost per hour") == pytest.approx({"USD/dc1": hand["cooling"]}, rel=1e-9)
    today = [p for p in panels_of(BOARD) if p["title"] == "Cooling cost today"]
    assert today[0]["timeFrom"] == "now/d"  # the day so far, whatever range the board shows
    assert ask(s, at, "Cooling cost today") == pytest.approx({"USD": hand["cooling"]}, rel=1e-9)
    assert ask(s, at, "Cooling share of the energy cost today") == pytest.approx(
        {"USD": hand["cooling_share"]}, rel=1e-9)
    assert ask(s, at, "PUE now (last hour)") == pytest.approx({"dc1/model": PUE}, rel=1e-9)


def test_the_gpus_alone_against_the_whole_bill(site: tuple[Site, float]) -> None:
    s, at = site
    hand = hand_figures()
    assert ask(s, at, "GPUs alone, this month") == pytest.approx({"USD": hand["gpu"]}, rel=1e-9)
    assert ask(s, at, "The whole bill, this month") == pytest.approx({"USD": hand["whole"]}, rel=1e-9)
    assert ask(s, at, "The gap: the whole bill less the GPUs") == pytest.approx(
        {"USD": hand["whole"] - hand["gpu"]}, rel=1e-9)
    it = hand["gpu"] + hand["cpu"] + hand["overhead"]
    assert ask(s, at, "IT / GPUs alone") == pytest.approx({"USD": it / hand["gpu"]}, rel=1e-9)
    assert ask(s, at, "Whole bill / GPUs alone") == pytest.approx(
        {"USD": hand["whole"] / hand["gpu"]}, rel=1e-9)
    assert ask(s, at, "GPUs' share of the whole bill") == pytest.approx(
        {"USD": hand["gpu"] / hand["whole"]}, rel=1e-9)
    parts = {k.split("/")[1]: v for k, v in ask(s, at, "This month's bill by part").items()}
    assert parts == pytest.approx({"gpu": hand["gpu"], "cpu": hand["cpu"], "overhead": hand["overhead"],
                                   "cooling": hand["cooling"], "other": 0.0, "demand charge": hand["demand"]},
                                  rel=1e-9)
    # the same figures as the collector's own /v1/spend
    (row,) = httpx.get(f"{s.collector}/v1/spend", params={"site": "dc1"}, timeout=10).json()["rows"]
    assert (row["gpu_cost"], row["total_cost"]) == pytest.approx((hand["gpu"], hand["whole"]), rel=1e-9)


def test_the_ledgers_node_energy_is_never_added_to_the_bmcs_own_counter(site: tuple[Site, float]) -> None:
    s, at = site
    # the agent serves the BMC's counter as wattledger_node_energy_joules_total, as the
    # collector serves each node's IT energy: the panels take the collector's alone
    per_hour = ask(s, at, "IT energy per hour by node")
    assert per_hour == pytest.approx({"n-bmc": WALL_W * MINUTES * 60 / 3.6e6,
                                      "n-est": GPU_EST_W * (1 + RATIO) * MINUTES * 60 / 3.6e6}, rel=1e-9)
    # without the filter the BMC's own counter (which moved as much, from 1 MJ: Prometheus
    # extrapolates it a little) would be added on top
    both = s.value("sum by (node) (max without (instance, pod) (rate(wattledger_node_energy_joules_total"
                   "[1h]))) * 3600 / 3.6e6", at)
    assert both["n-bmc"] > 1.9 * per_hour["n-bmc"]
    hand = hand_figures()
    assert ask(s, at, "Cooling share of energy") == pytest.approx({"": hand["cooling_share"]}, rel=1e-9)


def panels_of(board: str) -> list[dict[str, Any]]:
    from .support import dashboards, panels
    return list(panels(dashboards()[board]))
