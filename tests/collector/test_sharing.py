"""A chiller's and a metered site's minutes shared out among teams by their IT energy in the
minute (DESIGN.md "Teams, budgets and chargeback"; ingest/sharing.py), on both backends: hand
figures, the same split whatever the order and batching of the readings, a metered site's
meters before and after the IT, a minute with no IT, and the periodic work that does it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from ledgerkit import at, check_conservation, make_batch, make_sites, open_ledger

from wattledger.collector.accounting.cooling import ChillerCooling
from wattledger.collector.accounting.wholenode import chiller_minute_j
from wattledger.collector.service import Ledger
from wattledger.collector.store.base import StoreUnavailable
from wattledger.wire import ValidBatch

pytestmark = pytest.mark.usefixtures("backend")

T0 = at("2026-11-02 10:00")  # a minute's start (and a quarter-hour's)
KWH = 3.6e6
PRICE = 0.10
TEAMS = {"nlp": [{"namespace": "nlp-*"}], "vision": [{"account": "vision"}]}
GPU = {"id": "GPU-0", "kind": "gpu", "index": 0, "power_limit_w": 100_000.0}
COOLING_METER = {"id": "chw", "kind": "meter", "index": 0, "role": "cooling"}
FACILITY_METER = {"id": "feed", "kind": "meter", "index": 1, "role": "facility"}
#: the curves of test_wholenode.py: CAPFT = 1 - 0.01 y, EIRFT = 0.5 + 0.02 y, EIRFPLR =
#: 0.2 + 0.5 p + 0.3 p^2, condenser clamped to [10, 40] °C, 30 °C outside
CHILLER: dict[str, Any] = {
    "model": "chiller", "cop_ref": 4.0, "capacity_kw": 100.0, "chilled_water_c": 7.0,
    "capft": [1.0, 0.0, 0.0, -0.01, 0.0, 0.0], "eirft": [0.5, 0.0, 0.0, 0.02, 0.0, 0.0],
    "eirfplr": [0.2, 0.5, 0.3], "curve_limits": {"chilled_water_c": [5, 10], "condenser_c": [10, 40]},
    "aux_ratio": 0.05, "outdoor": {"fixed_c": 30.0}}
#: who holds each node's GPU: n1 a pod of nlp, n2 a job of vision
OWNERS = {"n1": {"namespace": "nlp-ft", "pod": "p1", "container": "c"},
          "n2": {"job": "7", "account": "vision", "user": "kim"}}


def ledger(cooling: dict[str, Any]) -> Ledger:
    sites = make_sites({"default": {"timezone": "UTC", "price_per_kwh": PRICE, "carbon_g_per_kwh": 400.0,
                                    "demand_charge_per_kw": 10.0, "cooling": cooling}})
    return open_ledger(sites, now=T0 + 600, teams=TEAMS)


def gpu_batch(node: str, watts: float, start: float, end: float, seq: int) -> ValidBatch:
    """The node's GPU at ``watts`` read every 10 s over [start, end], held by its owner."""
    ts = [float(t) for t in range(int(start), int(end) + 1, 10)]
    return make_batch(node=node, stream=f"s-{node}", seq=seq, devices=[GPU], device=[0] * len(ts), ts=ts,
                      power_w=[watts] * len(ts),
                      allocations=[{"devices": [0], "from": T0 - 60, "to": None, "owner": OWNERS[node]}])


def meter_batch(cooling_w: float, facility_w: float, seq: int = 1) -> ValidBatch:
    ts = [float(t) for t in range(int(T0), int(T0) + 61, 10)]
    return make_batch(node="mgmt", stream="s-mgmt", seq=seq, devices=[COOLING_METER, FACILITY_METER],
                      device=[0, 1] * len(ts), ts=[t for t in ts for _ in range(2)],
                      power_w=[cooling_w, facility_w] * len(ts))


def cooling_by_team(led: Ledger) -> dict[str, float]:
    """Each team's facility energy beyond its IT (cooling and other load), J."""
    rows = led.spend(site="default", month="2026-11", group_by="team")
    return {r["team"]: (r["facility_energy_kwh"] - r["it_energy_kwh"]) * KWH for r in rows}


def cost_by_team(led: Ledger) -> dict[str, float]:
    return {r["team"]: r["energy_cost"] for r in led.spend(site="default", month="2026-11", group_by="team")}


# one minute: n1 at 40 kW in two halves, n2 at 10 kW
PIECES = {"n1a": ("n1", 40_000.0, T0, T0 + 30), "n1b": ("n1", 40_000.0, T0 + 40, T0 + 60),
          "n2a": ("n2", 10_000.0, T0, T0 + 60)}


def send(led: Ledger, order: tuple[str, ...]) -> None:
    seqs = {"n1": 0, "n2": 0}
    for name in order:
        node, watts, start, end = PIECES[name]
        seqs[node] += 1
        led.ingest([gpu_batch(node, watts, start, end, seqs[node])])


def test_a_chiller_minute_is_shared_by_team_it_whatever_the_order() -> None:
    it_nlp, it_vision = 40_000.0 * 60, 10_000.0 * 60
    it = it_nlp + it_vision
    cooling = chiller_minute_j(ChillerCooling.model_validate(CHILLER), it, 30.0)
    # by hand: 50 kW of load, PLR 50/70, EIRFPLR 0.2 + 0.357143 + 0.153061 = 0.710204;
    # 70 / 4 x 1.1 x 0.710204 + 0.05 x 50 = 16.1714 kW; nlp 4/5 of it, vision 1/5
    assert cooling == pytest.approx(16.1714285714 * 60e3, rel=1e-9)
    want = {"nlp": cooling * it_nlp / it, "vision": cooling * it_vision / it}
    runs = []
    # n2's minute before, between or after n1's two halves (a stream's batches go in seq order)
    for order in (("n2a", "n1a", "n1b"), ("n1a", "n2a", "n1b"), ("n1a", "n1b", "n2a")):
        led = ledger(CHILLER)
        send(led, order)
        # the site's cooling is booked at once, to team unshared until the minute is shared out
        assert led.view().totals["default"].cooling_j == pytest.approx(cooling, rel=1e-9)
        before = cooling_by_team(led)
        assert before["unshared"] == pytest.approx(cooling, rel=1e-9)
        assert sum(before.values()) == pytest.approx(cooling, rel=1e-9)
        check_conservation(led)
        assert led.bookkeeper.share_cooling() == 1
        got = cooling_by_team(led)
        assert got["nlp"] == pytest.approx(want["nlp"], rel=1e-9), order
        assert got["vision"] == pytest.approx(want["vision"], rel=1e-9), order
        assert got.get("idle", 0.0) == pytest.approx(0.0, abs=1e-6)
        assert got["unshared"] == pytest.approx(0.0, abs=1e-6)
        costs = cost_by_team(led)
        assert costs["nlp"] == pytest.approx((it_nlp + want["nlp"]) / KWH * PRICE, rel=1e-9)
        runs.append(led)
        assert led.bookkeeper.share_cooling() == 0  # nothing changed since: nothing to share
    # one call with all three batches gives the same
    led = ledger(CHILLER)
    led.ingest([gpu_batch(*PIECES["n1a"][:4], seq=1), gpu_batch(*PIECES["n1b"][:4], seq=2),
                gpu_batch(*PIECES["n2a"][:4], seq=1)])
    led.refresh()  # the periodic work shares the minute out
    assert cooling_by_team(led)["vision"] == pytest.approx(want["vision"], rel=1e-9)


def test_a_minute_that_gets_more_it_after_it_was_shared_is_shared_again() -> None:
    led = ledger(CHILLER)
    send(led, ("n1a", "n2a"))
    led.bookkeeper.share_cooling()
    send_more = gpu_batch(*PIECES["n1b"][:4], seq=2)
    led.ingest([send_more])
    assert led.bookkeeper.share_cooling() == 1
    it_nlp, it_vision = 40_000.0 * 60, 10_000.0 * 60
    cooling = chiller_minute_j(ChillerCooling.model_validate(CHILLER), it_nlp + it_vision, 30.0)
    got = cooling_by_team(led)
    assert got["vision"] == pytest.approx(cooling * it_vision / (it_nlp + it_vision), rel=1e-9)
    # the owners' rows are the holders' shares too
    rows = {r["account"]: r for r in led.spend(site="default", month="2026-11", group_by="account")}
    assert (rows["vision"]["facility_energy_kwh"] - rows["vision"]["it_energy_kwh"]) * KWH == pytest.approx(
        got["vision"], rel=1e-9)


@pytest.mark.parametrize("meters_first", [True, False])
def test_a_metered_minute_is_shared_by_team_it(meters_first: bool) -> None:
    led = ledger({"model": "metered"})
    it_batches = [gpu_batch("n1", 3_000.0, T0, T0 + 60, 1), gpu_batch("n2", 1_000.0, T0, T0 + 60, 1)]
    meters = meter_batch(cooling_w=800.0, facility_w=6_000.0)
    for part in ([meters], it_batches) if meters_first else (it_batches, [meters]):
        led.ingest(part)
    # cooling 800 W x 60 s = 48 kJ; other = 360 kJ - 240 kJ IT - 48 kJ = 72 kJ: 120 kJ shared 3:1
    assert cooling_by_team(led)["unshared"] == pytest.approx(120_000.0)  # until shared
    check_conservation(led)
    assert led.bookkeeper.share_cooling() == 1
    got = cooling_by_team(led)
    assert got["nlp"] == pytest.approx(90_000.0)
    assert got["vision"] == pytest.approx(30_000.0)
    assert got.get("unassigned", 0.0) == pytest.approx(0.0, abs=1e-6)
    assert got["unshared"] == pytest.approx(0.0, abs=1e-6)
    assert cost_by_team(led)["nlp"] == pytest.approx((180_000.0 + 90_000.0) / KWH * PRICE)


def test_a_metered_minute_without_it_stays_with_the_site() -> None:
    led = ledger({"model": "metered"})
    led.ingest([meter_batch(cooling_w=800.0, facility_w=1_000.0)])
    led.bookkeeper.share_cooling()
    # no IT: cooling 48 kJ and other 12 kJ are the site's own (team unassigned)
    assert cooling_by_team(led)["unassigned"] == pytest.approx(60_000.0)
    led.ingest([gpu_batch("n1", 100.0, T0, T0 + 60, 1)])  # 6 kJ of IT arrive: other 6 kJ
    led.bookkeeper.share_cooling()
    got = cooling_by_team(led)
    assert got["nlp"] == pytest.approx(54_000.0)
    assert got.get("unassigned", 0.0) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.backends("postgresql")
def test_two_replicas_ingesting_and_sharing_at_once_give_the_exact_split() -> None:
    """Two ledgers on one PostgreSQL database (replicas), each ingesting two nodes' batches
    while both share minutes out: no deadlock, and the split is the one of one process."""
    nodes = {"n1": 30_000.0, "n2": 5_000.0, "n3": 20_000.0, "n4": 1_000.0}
    owners = {**OWNERS, "n3": OWNERS["n1"], "n4": OWNERS["n2"]}
    minutes = 6

    def batches(node: str) -> list[ValidBatch]:
        out = []
        for seq in range(1, minutes * 3 + 1):  # 20-s batches
            start = T0 + (seq - 1) * 20
            ts = [start + 10.0, start + 20.0] if seq > 1 else [start, start + 10.0, start + 20.0]
            out.append(make_batch(node=node, stream=f"s-{node}", seq=seq, devices=[GPU], device=[0] * len(ts),
                                  ts=ts, power_w=[nodes[node]] * len(ts), allocations=[
                                      {"devices": [0], "from": T0 - 60, "to": None, "owner": owners[node]}]))
        return out

    one = ledger(CHILLER)
    for node in nodes:
        for b in batches(node):
            one.ingest([b])
    one.bookkeeper.share_cooling()
    first = ledger(CHILLER)
    second = open_ledger(first.sites, db=first._db_url, now=T0 + 600, teams=TEAMS)
    failures: list[str] = []
    stop = threading.Event()

    def feed(led: Ledger, names: list[str]) -> None:
        for pair in zip(*(batches(n) for n in names), strict=True):
            for b in pair:
                for _ in range(20):  # a transaction the database broke off is sent again
                    try:
                        led.ingest([b])
                        break
                    except StoreUnavailable as exc:
                        failures.append(str(exc))

    def share() -> None:
        while not stop.is_set():
            for led in (first, second):
                try:
                    led.bookkeeper.share_cooling(limit=3)
                except StoreUnavailable as exc:
                    failures.append(str(exc))

    sharer = threading.Thread(target=share)
    sharer.start()
    feeders = [threading.Thread(target=feed, args=(first, ["n1", "n2"])),
               threading.Thread(target=feed, args=(second, ["n3", "n4"]))]
    for t in feeders:
        t.start()
    for t in feeders:
        t.join()
    stop.set()
    sharer.join()
    first.bookkeeper.share_cooling()
    assert not [f for f in failures if "deadlock" in f], failures
    want, got = cooling_by_team(one), cooling_by_team(first)
    assert set(got) >= {"nlp", "vision"}
    for team in ("nlp", "vision"):
        assert got[team] == pytest.approx(want[team], rel=1e-9), (team, failures)
    check_conservation(first)


def test_a_late_outdoor_reading_is_shared_by_team_it() -> None:
    """The sensor's reading for a minute arrives after the minute was shared at the fixed
    fallback (30 °C): the re-booked cooling (at 40 °C) is shared among the minute's teams."""
    led = ledger({**CHILLER, "outdoor": {"sensor": "wx-1:outdoor", "fixed_c": 30.0}})
    send(led, ("n1a", "n1b", "n2a"))
    led.bookkeeper.share_cooling()
    model = ChillerCooling.model_validate(CHILLER)
    it_nlp, it_vision = 40_000.0 * 60, 10_000.0 * 60
    at_30 = chiller_minute_j(model, it_nlp + it_vision, 30.0)
    assert cooling_by_team(led)["vision"] == pytest.approx(at_30 / 5, rel=1e-9)
    sensor = {"id": "wx-1:outdoor", "kind": "sensor", "index": 0, "role": "outdoor"}
    ts = [T0 - 60 + 10.0 * k for k in range(10)]
    led.ingest([make_batch(node="wx", stream="s-wx", seq=1, devices=[sensor], device=[0] * len(ts), ts=ts,
                           power_w=[None] * len(ts), temp_c=[40.0] * len(ts))])
    at_40 = chiller_minute_j(model, it_nlp + it_vision, 40.0)
    assert led.view().totals["default"].cooling_j == pytest.approx(at_40, rel=1e-9)
    assert at_40 > at_30
    assert led.bookkeeper.share_cooling() == 1
    got = cooling_by_team(led)
    assert got["nlp"] == pytest.approx(at_40 * 4 / 5, rel=1e-9)
    assert got["vision"] == pytest.approx(at_40 / 5, rel=1e-9)
