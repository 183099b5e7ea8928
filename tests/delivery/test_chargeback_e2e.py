"""Chargeback end to end: a real agent (``--simulate 2``, the ``kubernetes`` source against a fake
kubelet, a real gRPC server on a unix socket) delivering to a real collector with ``teams:``
rules and a team budget. The team figures the collector answers (``/v1/spend?group_by=team``,
``/v1/jobs``, ``/metrics``) equal a computation by hand from the batches the agent sent (kept by
a recording proxy): each GPU interval's energy (counter delta, or the trapezoid within
``max_gap_seconds``) to the pod whose allocation, in the batch that carries the interval's end,
covers it, by the share of the interval's time it covers; the rest idle."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.fake_kubelet import FakeKubelet, pod
from tests.delivery.e2e import Agent, Collector, Proxy, scrape, sent_batches, wait_until
from wattledger.agent.sources.simulated import fake_uuid

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NODE, TOKEN = "team-node", "team-token"
GPU0, GPU1 = fake_uuid(NODE, 0, 0), fake_uuid(NODE, 1, 0)
PRICE, PUE, MAX_GAP = 0.2, 1.25, 0.5
KWH = 3.6e6


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    k = FakeKubelet(tmp_path / "kubelet.sock").start()
    yield k
    k.stop()


def by_hand(batches: list[dict[str, Any]]) -> dict[str, float]:
    """Joules per team, from the batches as sent (each (stream, seq) once, in seq order)."""
    once = {(b["stream"], b["seq"]): b for b in batches}
    last: dict[str, tuple[float, float | None, float | None]] = {}
    joules = {"nlp": 0.0, "idle": 0.0}
    for key in sorted(once):
        b = once[key]
        ids = [d["id"] for d in b["devices"]]
        r = b["readings"]
        held = {}  # device id -> (from, to) of the pod holding it, as this batch says
        for a in b.get("allocations", []):
            for p in a["devices"]:
                held[ids[p]] = (a["from"], math.inf if a["to"] is None else a["to"])
        rows = sorted(zip(r["device"], r["ts"], r.get("energy_j") or [None] * len(r["ts"]), r["power_w"],
                          strict=True), key=lambda row: (row[0], row[1]))
        for p, ts, energy, power in rows:
            device = ids[p]
            before = last.get(device)
            last[device] = (ts, energy, power)
            if before is None or ts <= before[0]:
                continue
            a_ts, a_energy, a_power = before
            if a_energy is not None and energy is not None and energy >= a_energy:
                used = energy - a_energy
            elif ts - a_ts <= MAX_GAP and a_power is not None and power is not None:
                used = (a_power + power) / 2 * (ts - a_ts)
            else:
                used = 0.0
            start, end = held.get(device, (math.inf, math.inf))
            covered = max(0.0, min(ts, end) - max(a_ts, start)) / (ts - a_ts)
            joules["nlp"] += used * covered
            joules["idle"] += used * (1 - covered)
    return joules


def test_team_spend_equals_the_hand_computation(tmp_path: Path, kubelet: FakeKubelet) -> None:
    month = time.strftime("%Y-%m", time.gmtime())
    collector = Collector(tmp_path, {NODE: TOKEN}, max_gap_seconds=MAX_GAP,
                          sites={"default": {"timezone": "UTC", "currency": "USD", "pue": PUE,
                                             "price_per_kwh": PRICE}},
                          teams={"nlp": [{"namespace": "nlp-*"}], "vision": [{"account": "vision"}]},
                          plan=[{"site": "default", "month": month, "cost": 1000.0},
                                {"site": "default", "month": month, "team": "nlp", "cost": 100.0}])
    collector.start()
    proxy = Proxy(collector.port)
    agent = Agent(tmp_path, NODE, proxy.url, TOKEN, interval=0.25, batch_seconds=0.5,
                  extra=("--sources", "simulated,kubernetes", "--kubelet-socket", str(kubelet.socket),
                         "--kubernetes-interval", "0.2"))
    try:
        kubelet.pods = [pod("nlp-ft", "llama-7", {"trainer": [("nvidia.com/gpu", [GPU0])]})]
        agent.start()
        wait_until("the pod in a batch", lambda: any(
            b.get("allocations") for b in sent_batches(list(proxy.bodies))))
        time.sleep(2.0)
        kubelet.pods = []  # the pod is done: GPU0 reports on, unheld
        wait_until("batches without the pod", lambda: all(
            not b.get("allocations") for b in sent_batches(list(proxy.bodies))[-3:]))
        readings, shipped, spooled = agent.stop()
        assert spooled == 0 and shipped == readings > 0
        want = by_hand(sent_batches(list(proxy.bodies)))
        assert want["nlp"] > 0 and want["idle"] > 0
        spend = httpx.get(f"{collector.url}/v1/spend", params={"group_by": "team"}, timeout=10).json()
        teams = {row["team"]: row for row in spend["rows"]}
        assert set(teams) == {"nlp", "idle"}
        for team, joules in want.items():
            assert teams[team]["it_energy_kwh"] * KWH == pytest.approx(joules, rel=1e-9), team
            assert teams[team]["energy_cost"] == pytest.approx(joules * PUE / KWH * PRICE, rel=1e-9), team
        assert teams["nlp"]["plan_cost"] == 100.0 and teams["idle"]["plan_cost"] is None
        site = httpx.get(f"{collector.url}/v1/spend", timeout=10).json()["rows"][0]
        total = sum(row["energy_cost"] for row in teams.values())
        assert total == pytest.approx(site["energy_cost"], rel=1e-9)
        (job,) = httpx.get(f"{collector.url}/v1/jobs", timeout=10).json()["jobs"]
        assert job["owner"] == {"namespace": "nlp-ft", "pod": "llama-7", "container": "trainer"}
        assert job["team"] == "nlp" and job["devices"] == [GPU0] and job["end"] is not None
        assert job["it_energy_kwh"] * KWH == pytest.approx(want["nlp"], rel=1e-9)
        metrics = scrape(f"{collector.url}/metrics")
        energy = {k: v for k, v in metrics.items() if k.startswith("wattledger_team_energy_joules_total")}
        assert sum(energy.values()) == pytest.approx(sum(want.values()), rel=1e-9)
    finally:
        agent.cleanup()
        proxy.close()
        collector.cleanup()
