"""A chiller site's outdoor sensor whose readings reach the ledger after the minutes they are for
(the sensor's batch came later than the nodes'): they re-book those minutes' cooling in the same
transaction, exactly, on both backends (docs/accounting.md §4b). Hand-computed with
test_wholenode's easy curves, at 50 kW of IT (3.0e6 J a minute): 30 °C 16.171428.. kW, 40 °C
18.5875 kW, 20 °C 13.834375 kW (CAPFT 0.8 -> 80 kW, PLR 0.625, EIRFT 0.9, EIRFPLR 0.6296875:
20 x 0.9 x 0.6296875 + 2.5). Also: IT that comes after newer sensor readings takes the reading at
its minute's end (kept in ``outdoor_readings``), and replicas never book a minute on readings
another replica is adding (``IngestUnit.hold_outdoor``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from ledgerkit import Backend, device_totals, make_batch, make_sites, open_ledger
from test_wholenode import CHILLER, GPU, OUTDOOR, T0, site, steady

from wattledger.collector.ingest.minutes import changed_minutes
from wattledger.collector.service import Ledger
from wattledger.wire import ValidBatch

pytestmark = pytest.mark.usefixtures("backend")

AT_30_C, AT_40_C, AT_20_C = 16.1714285714, 18.5875, 13.834375  # kW at 50 kW of IT
#: 35 °C: CAPFT 0.65 -> 65 kW, PLR 10/13, EIRFT 1.2, EIRFPLR 0.2 + 0.384615 + 0.177515 = 0.762130:
#: 16.25 x 1.2 x 0.762130 + 2.5
AT_35_C = 16.25 * 1.2 * (0.2 + 0.5 * 10 / 13 + 0.3 * 100 / 169) + 2.5
MONTH = "2026-11"
SENSOR_CHILLER = {**CHILLER, "outdoor": {"sensor": "wx-1:outdoor", "fixed_c": 30.0}}


def chiller_ledger(now: float = T0 + 7200) -> Ledger:
    return open_ledger(make_sites({"default": site(cooling=SENSOR_CHILLER)}), now=now)


def outdoor(start: float, end: float, temp_c: float | None, seq: int, device: dict[str, Any] = OUTDOOR
            ) -> ValidBatch:
    """The weather station's (node ``wx``) readings every 10 s from start to end."""
    return steady([device], [None], start, end, node="wx", seq=seq, temp_c=temp_c)


def minutes(led: Ledger) -> list[tuple[int, float, float | None, float]]:
    """(minute from T0, cooling kW, outdoor °C, fallback s) of the site's booked minutes."""
    rows = led.store.query("SELECT minute, cooling_j, outdoor_c, fallback_s FROM site_minutes "
                           "WHERE site = 'default' ORDER BY minute")
    return [(int(m) - int(T0 // 60), float(c) / 60e3, None if t is None else float(t), float(f))
            for m, c, t, f in rows]


def booked(led: Ledger) -> dict[str, float]:
    """What the site's month books, and its booked fallback time (not the counters /metrics
    shows, which never go down)."""
    row = led.spend(site="default", month=MONTH, group_by="site")[0]
    [(fallback_s,)] = led.store.query("SELECT fallback_s FROM site_totals WHERE site = 'default'")
    return {"cooling_kwh": row["cooling_energy_kwh"], "energy_cost": row["energy_cost"],
            "carbon_kg": row["carbon_kg"], "fallback_s": float(fallback_s)}


def site_own_cooling_kwh(led: Ledger) -> float:
    """The cooling of the site's own row (node ''): the re-booked minutes no node carried."""
    rows = led.spend(site="default", month=MONTH, group_by="node")
    return sum(float(r["cooling_energy_kwh"]) for r in rows if r["node"] == "")


def it_batches() -> list[ValidBatch]:
    """n1's 50 kW in minutes 0-2 and, 20 minutes later, in minute 20."""
    return [steady([GPU], [50_000.0], T0, T0 + 180), steady([GPU], [50_000.0], T0 + 1200, T0 + 1260, seq=2)]


def test_a_late_outdoor_reading_rebooks_the_minutes_it_is_for() -> None:
    late = chiller_ledger()
    late.ingest(it_batches())
    # booked before the sensor's readings: fixed_c 30 °C, each minute a fallback minute
    assert minutes(late) == [(m, pytest.approx(AT_30_C), 30.0, 60.0) for m in (0, 1, 2, 20)]
    before = booked(late)
    assert before["fallback_s"] == 240.0
    # the sensor read 40 °C from 09:59 to 10:00:30: fresh (<= 15 min) at the ends of minutes 0-2
    # (10:01-10:03), stale at minute 20's (10:21): only 0-2 are re-booked, 20 keeps fixed_c
    late.ingest([outdoor(T0 - 60, T0 + 30, 40.0, seq=1)])
    assert minutes(late) == [*((m, pytest.approx(AT_40_C), 40.0, 0.0) for m in (0, 1, 2)),
                             (20, pytest.approx(AT_30_C), 30.0, 60.0)]
    after = booked(late)
    assert after["fallback_s"] == 60.0
    moved_kwh = 3 * (AT_40_C - AT_30_C) / 60
    assert after["cooling_kwh"] - before["cooling_kwh"] == pytest.approx(moved_kwh, rel=1e-9)
    assert after["energy_cost"] - before["energy_cost"] == pytest.approx(moved_kwh * 0.10, rel=1e-9)
    assert after["carbon_kg"] - before["carbon_kg"] == pytest.approx(moved_kwh * 0.400, rel=1e-9)
    # no node carried the re-booked minutes in the sensor's transaction: the change is the site's own
    assert site_own_cooling_kwh(late) == pytest.approx(moved_kwh, rel=1e-9)
    # the same readings in one transaction, and the sensor's first: the same minutes and bill
    for readings_first in (False, True):
        other = chiller_ledger()
        if readings_first:
            other.ingest([outdoor(T0 - 60, T0 + 30, 40.0, seq=1)])
            other.ingest(it_batches())
        else:
            other.ingest([*it_batches(), outdoor(T0 - 60, T0 + 30, 40.0, seq=1)])
        assert minutes(other) == minutes(late)
        assert booked(other) == pytest.approx(after, rel=1e-9)
        assert site_own_cooling_kwh(other) == pytest.approx(0.0, abs=1e-12)  # n1 carried it all


@pytest.mark.parametrize("order", ["IiSs", "ISis", "ISsi", "SIis", "SIsi", "SsIi"])
def test_batching_of_it_and_sensor_never_changes_a_minute(order: str) -> None:
    """Minute 0's IT in two halves (I, i) and the sensor's readings in two (S: 20 °C to 10:00,
    s: 40 °C from 10:00:10 to 10:00:30), one transaction each, in any order a stream keeps:
    minute 0 ends 10:01, takes 40 °C and books 18.5875 kW, as all in one transaction does."""
    batches = {"I": steady([GPU], [50_000.0], T0, T0 + 30),
               "i": steady([GPU], [50_000.0], T0 + 40, T0 + 60, seq=2),
               "S": outdoor(T0 - 60, T0, 20.0, seq=1), "s": outdoor(T0 + 10, T0 + 30, 40.0, seq=2)}
    whole = chiller_ledger()
    whole.ingest(list(batches.values()))
    apart = chiller_ledger()
    for name in order:
        apart.ingest([batches[name]])
    for led in (whole, apart):
        assert minutes(led) == [(0, pytest.approx(AT_40_C), 40.0, 0.0)]
        assert booked(led)["cooling_kwh"] == pytest.approx(AT_40_C / 60, rel=1e-9)
        assert booked(led)["fallback_s"] == 0.0


def test_readings_after_a_minute_or_older_than_the_committed_one_change_nothing() -> None:
    led = chiller_ledger()
    led.ingest([outdoor(T0 - 100, T0 - 100, 20.0, seq=1)])
    led.ingest([steady([GPU], [50_000.0], T0, T0 + 60)])
    assert minutes(led) == [(0, pytest.approx(AT_20_C), 20.0, 0.0)]
    # 10:01:10 and 10:01:30 are after minute 0's end (10:01): it keeps the 20 °C of 09:58:20 (the
    # second re-books from 10:01:30 on, not from 10:01:10's minute, which minute 0 ends before)
    led.ingest([outdoor(T0 + 70, T0 + 70, 40.0, seq=2)])
    led.ingest([outdoor(T0 + 90, T0 + 90, 40.0, seq=3)])
    assert minutes(led) == [(0, pytest.approx(AT_20_C), 20.0, 0.0)]
    before = booked(led)
    # 10:00:45 comes after 10:01:30 was committed: late (dropped, counted), so it re-books nothing
    # (taken, minute 0 would read 35 °C; the ledger never holds that reading)
    led.ingest([outdoor(T0 + 45, T0 + 45, 35.0, seq=4)])
    assert minutes(led) == [(0, pytest.approx(AT_20_C), 20.0, 0.0)]
    assert booked(led) == before
    assert device_totals(led, 0)["late"] == 1  # the sensor, the ledger's first device


def test_the_minutes_a_reading_may_change() -> None:
    """Those ending at or after the first new reading and at most 15 min after the last."""
    m0 = int(T0 // 60)
    assert changed_minutes(T0 + 60, T0 + 60) == (m0, m0 + 15)  # minute 0 ends at 10:01 itself
    assert changed_minutes(T0 + 60.5, T0 + 61) == (m0 + 1, m0 + 15)
    assert changed_minutes(T0 + 30, T0 + 59.5) == (m0, m0 + 14)


def test_a_reading_whose_window_holds_no_booked_minute_changes_nothing() -> None:
    led = chiller_ledger()
    led.ingest([steady([GPU], [50_000.0], T0, T0 + 60)])
    before, rows = booked(led), minutes(led)
    assert rows == [(0, pytest.approx(AT_30_C), 30.0, 60.0)]
    # an hour later: fresh for the minutes ending 11:00-11:15, none of them booked (none made)
    led.ingest([outdoor(T0 + 3600, T0 + 3630, 40.0, seq=1)])
    assert minutes(led) == rows
    assert booked(led) == before


def test_bad_and_absent_sensors_change_nothing() -> None:
    led = chiller_ledger()
    led.ingest([steady([GPU], [50_000.0], T0, T0 + 60)])
    before, rows = booked(led), minutes(led)
    # the site's sensor without a temperature, and another sensor's 40 °C: not the site's reading
    led.ingest([outdoor(T0, T0 + 30, None, seq=1)])
    other = {**OUTDOOR, "id": "wx-2:outdoor", "index": 1}
    led.ingest([steady([other], [None], T0, T0 + 30, node="wx2", temp_c=40.0)])
    assert minutes(led) == rows
    assert booked(led) == before
    # a site whose chiller reads no sensor is not re-booked by the sensor's reading
    fixed = open_ledger(make_sites({"default": site(cooling=CHILLER)}), now=T0 + 7200)
    fixed.ingest([steady([GPU], [50_000.0], T0, T0 + 60)])
    fixed_before = booked(fixed)
    fixed.ingest([outdoor(T0, T0 + 30, 40.0, seq=1)])
    assert booked(fixed) == fixed_before
    assert minutes(fixed) == [(0, pytest.approx(AT_30_C), 30.0, 0.0)]  # fixed_c is its first source


# ------------------------------------------------------------ IT that comes after newer readings


def two_temperatures() -> ValidBatch:
    """20 °C every 10 s from 09:59 to 10:00:50, then 40 °C from 10:01:10 to 10:05: minute 0 (ending
    10:01) takes 20 °C, minutes 1 and 2 take 40 °C."""
    ts = [T0 - 60 + 10.0 * i for i in range(12)] + [T0 + 70 + 10.0 * i for i in range(24)]
    temps = [20.0] * 12 + [40.0] * 24
    return make_batch(node="wx", stream="s-wx", seq=1, devices=[OUTDOOR], device=[0] * len(ts), ts=ts,
                      power_w=[None] * len(ts), temp_c=temps)


def test_it_that_comes_after_newer_readings_takes_the_reading_at_its_minutes_end(
        backend: Backend, tmp_path: Path) -> None:
    """The sensor's readings are committed up to 10:05 before n1's IT for 10:00-10:03 arrives: each
    minute takes the reading at or before its end, kept in ``outdoor_readings`` (also across a
    restart), as when the IT came first or all came in one transaction."""
    db = backend.reopenable(tmp_path)
    led = open_ledger(make_sites({"default": site(cooling=SENSOR_CHILLER)}), db=db, now=T0 + 7200)
    led.ingest([two_temperatures()])
    led.close()
    led = open_ledger(make_sites({"default": site(cooling=SENSOR_CHILLER)}), db=db, now=T0 + 7200)
    led.ingest([steady([GPU], [50_000.0], T0, T0 + 180)])
    expected = [(0, pytest.approx(AT_20_C), 20.0, 0.0), (1, pytest.approx(AT_40_C), 40.0, 0.0),
                (2, pytest.approx(AT_40_C), 40.0, 0.0)]
    assert minutes(led) == expected
    assert booked(led)["cooling_kwh"] == pytest.approx((AT_20_C + 2 * AT_40_C) / 60, rel=1e-9)
    assert booked(led)["fallback_s"] == 0.0
    for it_first in (True, False):
        other = chiller_ledger()
        if it_first:
            other.ingest([steady([GPU], [50_000.0], T0, T0 + 180)])
            other.ingest([two_temperatures()])
        else:
            other.ingest([steady([GPU], [50_000.0], T0, T0 + 180), two_temperatures()])
        assert minutes(other) == minutes(led)
        assert booked(other) == pytest.approx(booked(led), rel=1e-9)


def test_a_site_with_only_a_sensor_takes_the_reading_at_or_before_a_stale_minute() -> None:
    """Only the sensor configured: a stale minute takes the sensor's last reading at or before its
    end however old (a fallback minute), never a later one; a new reading re-books every booked
    minute from its own on (the next reading has not come yet)."""
    only_sensor = {**CHILLER, "outdoor": {"sensor": "wx-1:outdoor"}}
    sites = make_sites({"default": site(cooling=only_sensor)})
    led = open_ledger(sites, now=T0 + 7200)
    led.ingest([outdoor(T0 - 3600, T0 - 3600, 20.0, seq=1)])  # 09:00, 20 °C
    two_minutes = [steady([GPU], [50_000.0], T0, T0 + 60),
                   steady([GPU], [50_000.0], T0 + 1800, T0 + 1860, seq=2)]
    led.ingest(two_minutes)
    assert minutes(led) == [(0, pytest.approx(AT_20_C), 20.0, 60.0), (30, pytest.approx(AT_20_C), 20.0, 60.0)]
    led.ingest([outdoor(T0 + 10, T0 + 10, 40.0, seq=2)])  # 10:00:10, 40 °C: fresh for minute 0 only
    rebooked = [(0, pytest.approx(AT_40_C), 40.0, 0.0), (30, pytest.approx(AT_40_C), 40.0, 60.0)]
    assert minutes(led) == rebooked
    whole = open_ledger(sites, now=T0 + 7200)
    whole.ingest([outdoor(T0 - 3600, T0 - 3600, 20.0, seq=1), *two_minutes,
                  outdoor(T0 + 10, T0 + 10, 40.0, seq=2)])
    assert minutes(whole) == rebooked
    assert booked(whole) == pytest.approx(booked(led), rel=1e-9)
    # before any reading at all: the curves' rating point (35 °C), not a reading from after it
    early = open_ledger(sites, now=T0 + 7200)
    early.ingest([steady([GPU], [50_000.0], T0, T0 + 60), outdoor(T0 + 600, T0 + 600, 40.0, seq=1)])
    assert minutes(early) == [(0, pytest.approx(AT_35_C), 35.0, 60.0)]


def test_the_roll_up_drops_the_readings_no_kept_minute_takes(backend: Backend) -> None:
    """Rolling up the minutes older than 10 days drops the readings older than 15 min before the
    first kept minute's end, but the newest of those (a sensor-only site's however-old one)."""
    now = T0 + 11 * 86400
    led = open_ledger(make_sites({"default": site(cooling=SENSOR_CHILLER)}), now=now, rollup_after_days=10)
    led.ingest([outdoor(T0, T0 + 50, 20.0, seq=1)])  # 11 days ago: 6 readings
    led.ingest([outdoor(now - 3600, now - 3570, 40.0, seq=2)])  # an hour ago: 4
    assert led.store.query("SELECT COUNT(*) FROM outdoor_readings")[0][0] == 10
    led.roll_up()
    kept = led.store.query("SELECT ts, temp_c FROM outdoor_readings ORDER BY ts")
    assert [(float(t) - now, float(c)) for t, c in kept] == [
        (T0 + 50 - now, 20.0), *((-3600.0 + 10 * i, 40.0) for i in range(4))]


# --------------------------------------------------------------------------------- replicas


@pytest.mark.backends("postgresql")
def test_replicas_never_book_a_minute_on_readings_another_is_adding(backend: Backend, tmp_path: Path) -> None:
    """Two replicas on one database: the weather station's group on one stops in the middle of its
    transaction (after it looked for the booked minutes to re-book); n1's IT for minute 0 reaches
    the other. That group waits for the sensor's (``hold_outdoor``'s advisory locks), so minute 0
    is booked on the committed 40 °C, not on fixed_c with nobody left to re-book it."""
    db = backend.reopenable(tmp_path)
    sensor_side = open_ledger(make_sites({"default": site(cooling=SENSOR_CHILLER)}), db=db, now=T0 + 7200)
    it_side = open_ledger(make_sites({"default": site(cooling=SENSOR_CHILLER)}), db=db, now=T0 + 7200)
    booker = sensor_side.bookkeeper._minutes
    inside, go = threading.Event(), threading.Event()
    rebooked = booker._rebooked

    def pausing(*args: Any) -> Any:
        found = rebooked(*args)
        inside.set()
        assert go.wait(30)
        return found

    booker._rebooked = pausing  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def run(led: Ledger, batches: list[ValidBatch], done: threading.Event) -> None:
        try:
            led.ingest(batches)
        except BaseException as exc:  # reported below
            errors.append(exc)
        done.set()

    sensor_done, it_done = threading.Event(), threading.Event()
    readings = [outdoor(T0 - 60, T0 + 30, 40.0, seq=1)]
    threading.Thread(target=run, args=(sensor_side, readings, sensor_done)).start()
    assert inside.wait(30)
    threading.Thread(target=run, args=(it_side, [steady([GPU], [50_000.0], T0, T0 + 60)], it_done)).start()
    # until n1's group has committed (no lock) or waits for an advisory lock (hold_outdoor)
    while not it_done.is_set() and not it_side.store.query(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())")[0][0]:
        it_done.wait(0.01)
    go.set()
    assert sensor_done.wait(30) and it_done.wait(30)
    assert not errors
    assert minutes(it_side) == [(0, pytest.approx(AT_40_C), 40.0, 0.0)]
    assert booked(it_side)["fallback_s"] == 0.0
