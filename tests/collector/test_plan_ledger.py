"""The plan's statistics as the ledger keeps them: real batches booked by the Bookkeeper (on
SQLite and on PostgreSQL), read back through the read model, give exactly the statistics of the
raw readings (``model_days_from_readings``, the reference), however the readings were batched;
a profile fitted from a ledger whose power is known exactly (power = idle + slope x util)
recovers idle and slope; the fleet, the months' idle GPU-hours and the span come out of the same
rows."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import ledgerkit
import pytest
import yaml
from ledgerkit import book_readings, line_readings, make_batch, make_sites, open_ledger

from tests.plan.plankit import IDLE_W, MODEL, SLOPE_W, utilization_at
from wattledger import cli
from wattledger.collector.accounting.history import GpuReading, model_days_from_readings
from wattledger.collector.ingest.transaction import IngestResult
from wattledger.collector.readmodel.history import LedgerHistory
from wattledger.collector.service import Ledger
from wattledger.plan.profile import profiles_of

T0 = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
GPUS = 4
OTHER = "NVIDIA H100 80GB HBM3"


def simulated(steps: int, every_s: float = 10.0, t0: float = T0, gpus: int = GPUS) -> list[dict[str, Any]]:
    return line_readings(steps, idle_w=IDLE_W, slope_w=SLOPE_W, utilization=utilization_at, every_s=every_s,
                         t0=t0, gpus=gpus)


def book(ledger: Ledger, readings: Sequence[dict[str, Any]], per_batch: int, *, node: str = "n1",
         stream: str = "s1", gpus: int = GPUS, model: str = MODEL) -> None:
    book_readings(ledger, readings, per_batch, model=model, gpus=gpus, node=node, stream=stream)


def reference(readings: Sequence[dict[str, Any]], zone: str = "UTC", model: str = MODEL,
              gpus: int = GPUS) -> list[Any]:
    return model_days_from_readings(
        [GpuReading(r["ts"], f"GPU-{r['device']}", model, r["util"], r["power_w"])
         for r in readings if r["device"] < gpus], ZoneInfo(zone))


def history(ledger: Ledger) -> LedgerHistory:
    return LedgerHistory(ledger.store, {name: site.zone for name, site in ledger.sites.items()})


def assert_same_days(got: Sequence[Any], want: Sequence[Any]) -> None:
    assert [(d.model, d.day, d.gpus) for d in got] == [(d.model, d.day, d.gpus) for d in want]
    for g, w in zip(got, want, strict=True):
        a, b = g.power, w.power
        assert (a.n, a.idle_n, a.util_n, a.power_hist) == (b.n, b.idle_n, b.util_n, b.power_hist)
        assert (a.first_ts, a.last_ts) == (b.first_ts, b.last_ts)
        for name in ("sum_u", "sum_p", "sum_uu", "sum_up", "sum_pp", "idle_sum_p"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9), name
        assert a.util_sum_p == pytest.approx(b.util_sum_p, rel=1e-9)


def test_the_ledger_keeps_the_raw_readings_statistics(backend: ledgerkit.Backend) -> None:
    readings = simulated(steps=9000)  # 25 h at 10 s: two UTC days
    ledger = open_ledger(make_sites(), now=T0 + 2 * 86400)
    book(ledger, readings, per_batch=5 * 120)
    got = history(ledger).model_days("default")
    assert_same_days(got, reference(readings))
    assert len(got) == 2 and got[0].gpus == GPUS


def test_batching_never_changes_the_statistics(backend: ledgerkit.Backend) -> None:
    readings = simulated(steps=800)
    days = []
    for size in (5, 5 * 7, 5 * 800):
        ledger = open_ledger(make_sites(), now=T0 + 86400)
        book(ledger, readings, per_batch=size)
        days.append(history(ledger).model_days("default"))
    assert_same_days(days[0], days[2])
    assert_same_days(days[1], days[2])


def test_a_profile_fitted_from_the_ledger_recovers_idle_and_slope(backend: ledgerkit.Backend) -> None:
    readings = simulated(steps=9000)
    ledger = open_ledger(make_sites(), now=T0 + 2 * 86400)
    book(ledger, readings, per_batch=5 * 360)
    read = history(ledger)
    [profile] = profiles_of(read.model_days("default"), read.node_overhead_days("default")).values()
    assert profile.fit is not None and profile.usable, profile.problems
    assert profile.fit.intercept_w == pytest.approx(IDLE_W, rel=1e-9)
    assert profile.fit.slope_w == pytest.approx(SLOPE_W, rel=1e-9)
    assert profile.fit.r2 == pytest.approx(1.0)
    idle = [r["power_w"] for r in readings if r["device"] < GPUS and r["util"] < 0.05]
    assert profile.idle_w == pytest.approx(sum(idle) / len(idle))
    assert profile.coverage.gpus == GPUS and profile.coverage.readings == 9000 * GPUS


def test_the_fleet_months_and_span_from_the_same_rows(backend: ledgerkit.Backend) -> None:
    readings = simulated(steps=720)  # two hours
    ledger = open_ledger(make_sites(), now=T0 + 86400)
    book(ledger, readings, per_batch=5 * 60)
    book(ledger, simulated(steps=720, gpus=2), per_batch=3 * 60, node="n2", stream="s2",
         gpus=2, model=OTHER)
    read = history(ledger)
    span = read.span("default")
    assert span is not None and (span.first, span.last) == (T0, T0 + 719 * 10.0)
    fleet = read.fleet("default", span.first, span.last)
    by_model = {m.model: m for m in fleet.models}
    assert (by_model[MODEL].gpus, by_model[MODEL].servers) == (GPUS, 1)
    assert (by_model[OTHER].gpus, by_model[OTHER].servers) == (2, 1)
    # the GPUs' energy: each GPU's trapezoids (readings 10 s apart); the nodes' IT adds the CPU
    gpu_j = 0.0
    for g in range(GPUS):
        p = [r["power_w"] for r in readings if r["device"] == g]
        gpu_j += sum((a + b) / 2 * 10.0 for a, b in itertools.pairwise(p))
    assert by_model[MODEL].gpu_energy_kwh == pytest.approx(gpu_j / 3.6e6, rel=1e-9)
    assert by_model[MODEL].it_energy_kwh == pytest.approx((gpu_j + 150.0 * 7190) / 3.6e6, rel=1e-9)
    assert by_model[MODEL].mean_utilization == pytest.approx(
        sum(r["util"] for r in readings if r["device"] < GPUS) / (720 * GPUS))
    assert fleet.hours == pytest.approx(7190 / 3600)
    [month] = read.site_months("default")
    assert month.month == "2026-09" and month.days == 1
    spend = ledger.spend(site="default", month="2026-09", group_by="site")[0]
    assert month.it_kwh == pytest.approx(spend["it_energy_kwh"], rel=1e-9)
    idle_s = sum(10.0 for r in readings[GPUS + 1:] if r["device"] < GPUS and r["util"] < 0.05)
    assert month.idle_gpu_hours == pytest.approx(idle_s / 3600 + _idle_s(OTHER_READINGS) / 3600)
    assert read.span("elsewhere") is None and read.model_days("elsewhere") == []


OTHER_READINGS = simulated(steps=720, gpus=2)


def _idle_s(readings: Sequence[dict[str, Any]], gpus: int = 2) -> float:
    return sum(10.0 for r in readings[gpus + 1:] if r["device"] < gpus and r["util"] < 0.05)


def test_a_local_day_is_the_sites_day(backend: ledgerkit.Backend) -> None:
    zone = "America/New_York"
    sites = make_sites({"default": {"timezone": zone, "price_per_kwh": 0.1}})
    readings = simulated(steps=3 * 360, every_s=10.0, t0=T0 - 1800)  # 23:30 UTC to 02:30 UTC
    ledger = open_ledger(sites, now=T0 + 86400)
    book(ledger, readings, per_batch=5 * 100)
    assert_same_days(history(ledger).model_days("default"), reference(readings, zone=zone))


OVERHEAD_W = 900.0


def metered(steps: int, every_s: float = 10.0) -> list[dict[str, Any]]:
    """The simulated node with its wall meter: the GPUs and the CPU plus OVERHEAD_W."""
    return line_readings(steps, idle_w=IDLE_W, slope_w=SLOPE_W, utilization=utilization_at, every_s=every_s,
                         t0=T0, gpus=GPUS, overhead_w=OVERHEAD_W)


@pytest.mark.parametrize("per_batch", [6 * 7, 6 * 360], ids=["small batches", "an hour a batch"])
def test_node_meters_give_the_node_overhead_per_model(backend: ledgerkit.Backend, per_batch: int) -> None:
    readings = metered(steps=9000)  # 25 h at 10 s, every device at every tick
    ledger = open_ledger(make_sites(), now=T0 + 2 * 86400)
    book(ledger, readings, per_batch=per_batch)
    read = history(ledger)
    days = read.node_overhead_days("default")
    assert [(d.model, d.day.isoformat(), d.nodes) for d in days] == [(MODEL, "2026-09-01", 1),
                                                                      (MODEL, "2026-09-02", 1)]
    assert sum(d.metered_seconds for d in days) == pytest.approx(8999 * 10.0)
    [profile] = profiles_of(read.model_days("default"), days).values()
    overhead = profile.node_overhead
    assert overhead is not None
    # node - GPUs: the CPU and the overhead, exactly (the trapezoids of a sum are the sum's)
    assert overhead.overhead_w == pytest.approx(150.0 + OVERHEAD_W, rel=1e-9)
    assert overhead.gpus_per_node == pytest.approx(GPUS) and overhead.nodes == 1
    assert overhead.metered_node_hours == pytest.approx(8999 * 10.0 / 3600)
    # the fleet's IT is the node meter's where it measured (never its parts plus the meter)
    span = read.span("default")
    assert span is not None
    [fleet] = read.fleet("default", span.first, span.last).models
    node_j = 0.0
    for a, b in itertools.pairwise([r["power_w"] for r in readings if r["device"] == GPUS + 1]):
        node_j += (a + b) / 2 * 10.0
    assert fleet.it_energy_kwh == pytest.approx(node_j / 3.6e6, rel=1e-9)
    assert fleet.servers == 1 and fleet.gpus == GPUS


def test_a_meter_interval_its_parts_do_not_cover_is_left_out(backend: ledgerkit.Backend) -> None:
    """The meter reads every 10 s, the GPUs and CPU every 10 s but starting 5 s later: each meter
    interval's first half has no part readings before it in the first batch; later ones are
    covered. Nothing is guessed, nothing counted twice."""
    readings = metered(steps=60)
    shifted = [dict(r, ts=r["ts"] + 5.0) if r["device"] <= GPUS else r for r in readings]
    shifted.sort(key=lambda r: (r["ts"], r["device"]))
    ledger = open_ledger(make_sites(), now=T0 + 86400)
    book(ledger, [r for r in shifted if r["ts"] < T0 + 600], per_batch=10_000)
    [day] = history(ledger).node_overhead_days("default")
    # meter intervals (0,10] .. (580,590]; the parts cover [5, 595]: the first is left out
    assert day.metered_seconds == pytest.approx(58 * 10.0)
    overhead = (day.node_energy_j - day.gpu_energy_j) / day.metered_seconds
    assert overhead == pytest.approx(150.0 + OVERHEAD_W, rel=0.05)  # the parts' shifted trapezoids


def test_plan_from_the_ledger_with_measured_power(backend: ledgerkit.Backend, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`wattledger plan --config` on the ledger the collector configuration names (a SQLite file,
    or the PostgreSQL database): `power: measured` takes the fitted line and the node meters'
    overhead; the measured fleet its own IT power."""
    url = backend.reopenable(tmp_path)
    site = {"timezone": "UTC", "currency": "USD", "pue": 1.5, "price_per_kwh": 0.1}
    ledger = open_ledger(make_sites({"default": site}), db=url, now=T0 + 2 * 86400)
    readings = metered(steps=9000)
    book(ledger, readings, per_batch=6 * 600)
    ledger.close()
    expansion = {"name": "expansion", "servers": 10, "gpus_per_server": 8, "model": MODEL,
                 "utilization": 0.5, "power": "measured", "capex_per_server": 1000, "depreciation_months": 12}
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(
        {"site": "default", "start": "2026-10", "months": 2,
         "fleet": [{"name": "existing", "measured": True}, expansion]}))
    (tmp_path / "collector.yaml").write_text(yaml.safe_dump({"db": url, "sites": {"default": site}}))
    rc = cli.main(["plan", "--scenario", str(tmp_path / "scenario.yaml"), "--config",
                   str(tmp_path / "collector.yaml")])
    out, err = capsys.readouterr()
    assert (rc, err) == (0, ""), err
    doc = json.loads(out)
    existing, grown = doc["fleet"]
    gpu_w = IDLE_W + SLOPE_W * 0.5
    assert grown["gpu_power_w"] == pytest.approx(gpu_w, rel=1e-9)
    assert grown["node_overhead_w"] == pytest.approx(150.0 + OVERHEAD_W, rel=1e-9)
    assert grown["node_power_w"] == pytest.approx(8 * gpu_w + 150.0 + OVERHEAD_W, rel=1e-9)
    assert grown["power"].startswith("measured: 57.0 + 333.0 x utilization W")
    node_w = [r["power_w"] for r in readings if r["device"] == GPUS + 1]
    mean_node_kw = sum((a + b) / 2 for a, b in itertools.pairwise(node_w)) / (len(node_w) - 1) / 1000
    assert existing["it_kw"] == pytest.approx(mean_node_kw, rel=1e-9)
    assert existing["gpus"] == GPUS and existing["servers"] == 1


def test_resent_batches_and_late_readings_add_nothing(backend: ledgerkit.Backend) -> None:
    """Nothing counted twice: a batch sent again (its seq committed) is a duplicate, and a new
    batch that repeats readings already booked (late: at or before each device's last reading)
    adds only its new readings to the statistics, as it does to the energy."""
    readings = simulated(steps=400)
    first, rest = readings[:5 * 300], readings[5 * 300:]
    ledger = open_ledger(make_sites(), now=T0 + 86400)
    book(ledger, first, per_batch=5 * 100)  # seqs 1..3
    batch = make_batch(node="n1", stream="s1", seq=3, labels={"site": "default"},
                       devices=ledgerkit.gpu_devices(GPUS, MODEL), device=[r["device"] for r in first[-500:]],
                       ts=[r["ts"] for r in first[-500:]], power_w=[r["power_w"] for r in first[-500:]],
                       util=[r["util"] for r in first[-500:]])
    answer = ledger.ingest([batch])[0]
    assert isinstance(answer, IngestResult) and answer.duplicate
    overlap = first[-5 * 50:] + rest  # 50 steps again, then the new ones, as seq 4
    again = make_batch(node="n1", stream="s1", seq=4, labels={"site": "default"},
                       devices=ledgerkit.gpu_devices(GPUS, MODEL), device=[r["device"] for r in overlap],
                       ts=[r["ts"] for r in overlap], power_w=[r["power_w"] for r in overlap],
                       util=[r["util"] for r in overlap])
    ledger.ingest([again])
    assert_same_days(history(ledger).model_days("default"), reference(readings))


def test_the_collectors_plans_read_a_sqlite_ledger_beside_its_writer(tmp_path: Path) -> None:
    """POST /v1/plan on a SQLite file reads over a read-only connection of its own: a plan is
    made while the store's writer holds its lock (an ingest in progress), and waits for nothing."""
    ledger = open_ledger(make_sites(), db=f"sqlite:///{tmp_path}/ledger.db", now=T0 + 86400)
    book(ledger, simulated(steps=300), per_batch=5 * 100)
    held, release = threading.Event(), threading.Event()

    def writer_busy() -> None:
        with ledger.store.lock:  # SqliteStore: the lock every ingest takes
            held.set()
            release.wait(30)

    busy = threading.Thread(target=writer_busy)
    busy.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        history_ = ledger.plan_history()
        days = history_.model_days("default")
        history_.close()
        assert time.monotonic() - started < 10
        assert_same_days(days, reference(simulated(steps=300)))
    finally:
        release.set()
        busy.join()
        ledger.close()


METERS = [{"id": "GPU-0", "kind": "gpu", "index": 0, "model": MODEL, "power_limit_w": 700.0},
          {"id": "chw", "kind": "meter", "index": 0, "role": "cooling"},
          {"id": "feed", "kind": "meter", "index": 1, "role": "facility"}]
SENSED = [{"id": "GPU-0", "kind": "gpu", "index": 0, "model": MODEL, "power_limit_w": 700.0},
          {"id": "wx-1:outdoor", "kind": "sensor", "index": 0, "role": "outdoor"}]
CHILLER: dict[str, Any] = {
    "model": "chiller", "cop_ref": 4.0, "capacity_kw": 100.0, "chilled_water_c": 7.0,
    "capft": [1.0, 0.0, 0.0, -0.01, 0.0, 0.0], "eirft": [0.5, 0.0, 0.0, 0.02, 0.0, 0.0],
    "eirfplr": [0.2, 0.5, 0.3],
    "curve_limits": {"chilled_water_c": [5, 10], "condenser_c": [10, 40]}, "aux_ratio": 0.05,
    "outdoor": {"sensor": "wx-1:outdoor", "fixed_c": 30.0}}
TWO_SITES = {"metered": {"timezone": "UTC", "price_per_kwh": 0.1, "cooling": {"model": "metered"}},
             "chilled": {"timezone": "UTC", "price_per_kwh": 0.1, "cooling": CHILLER}}


def an_hour(devices: list[dict[str, Any]], watts: list[float | None], node: str, site: str,
            temp_c: float | None = None) -> Any:
    """Every device every 10 s for an hour from T0 at constant power (a sensor: its temperature)."""
    steps = 361
    device = [i for i in range(len(devices)) for _ in range(steps)]
    ts = [T0 + 10.0 * s for _ in devices for s in range(steps)]
    power = [watts[i] for i in range(len(devices)) for _ in range(steps)]
    util = [0.5 if devices[i]["kind"] == "gpu" else None for i in range(len(devices)) for _ in range(steps)]
    temps = [temp_c if devices[i]["kind"] == "sensor" else None
             for i in range(len(devices)) for _ in range(steps)]
    return make_batch(node=node, stream=f"s-{node}", labels={"site": site}, devices=devices, device=device,
                      ts=ts, power_w=power, util=util, temp_c=temps)


def test_site_months_take_the_meters_and_the_outdoor_sensor(backend: ledgerkit.Backend) -> None:
    """A metered site's cooling and facility meters and a chiller's outdoor sensor, as the site
    minutes booked them, are the plan's site months: the measured cooling and other ratios and
    the month's outdoor temperature of the projection."""
    from wattledger.plan.build import make_plan
    from wattledger.plan.siteconfig import plan_sites

    ledger = open_ledger(make_sites(TWO_SITES), now=T0 + 86400)
    ledger.ingest([an_hour(METERS, [1000.0, 300.0, 1500.0], "n1", "metered")])
    ledger.ingest([an_hour(SENSED, [1000.0, None], "n2", "chilled", temp_c=21.5)])
    read = history(ledger)
    [metered] = read.site_months("metered")
    hour_kwh = 3600.0 / 3.6e6
    assert metered.month == "2026-09" and metered.it_kwh == pytest.approx(1000 * hour_kwh, rel=1e-9)
    assert metered.cooling_kwh == pytest.approx(300 * hour_kwh, rel=1e-9)
    assert metered.facility_kwh == pytest.approx(1500 * hour_kwh, rel=1e-9)
    assert metered.outdoor_mean_c is None
    [chilled] = read.site_months("chilled")
    assert chilled.cooling_kwh is None and chilled.facility_kwh is None
    assert chilled.outdoor_mean_c == pytest.approx(21.5)
    assert chilled.outdoor_hours == pytest.approx(1.0, abs=0.05)
    sites = plan_sites({"sites": TWO_SITES}, "test")
    fleet = [{"name": "x", "servers": 1, "gpus_per_server": 8, "model": MODEL, "utilization": 0.5,
              "power": {"idle_w": 100, "max_w": 500, "node_overhead_w": 1000}}]
    doc = make_plan({"site": "metered", "start": "2026-09", "months": 2, "fleet": fleet}, sites,
                    ledger.plan_history)
    september, october = doc["assumptions"]["months"]
    assert september["cooling_ratio"] == pytest.approx(0.3, rel=1e-9)
    assert september["other_ratio"] == pytest.approx(0.2, rel=1e-9)
    assert september["cooling_ratio_source"] == "measured 2026-09"
    assert october["cooling_ratio"] == pytest.approx(0.3, rel=1e-9)  # no October: the measured months'
    doc = make_plan({"site": "chilled", "start": "2026-09", "months": 2, "fleet": fleet}, sites,
                    ledger.plan_history)
    september, october = doc["assumptions"]["months"]
    assert september["outdoor_c"] == pytest.approx(21.5)
    assert september["outdoor_source"] == "sensor wx-1:outdoor, measured 2026-09"
    assert (october["outdoor_c"], october["outdoor_source"]) == (30.0, "fixed_c")
