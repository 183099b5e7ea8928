"""A chiller site's outdoor sensor whose readings reach the ledger after the minutes they are for
(the sensor's batch came later than the nodes'): they re-book those minutes' cooling in the same
transaction, exactly, on both backends (docs/accounting.md §4b). Hand-computed with
test_wholenode's easy curves, at 50 kW of IT (3.0e6 J a minute): 30 °C 16.171428.. kW, 40 °C
18.5875 kW, 20 °C 13.834375 kW (CAPFT 0.8 -> 80 kW, PLR 0.625, EIRFT 0.9, EIRFPLR 0.6296875:
20 x 0.9 x 0.6296875 + 2.5)."""

from __future__ import annotations

from typing import Any

import pytest
from ledgerkit import device_totals, make_sites, open_ledger
from test_wholenode import CHILLER, GPU, OUTDOOR, T0, site, steady

from wattledger.collector.ingest.minutes import changed_minutes
from wattledger.collector.service import Ledger
from wattledger.wire import ValidBatch

pytestmark = pytest.mark.usefixtures("backend")

AT_30_C, AT_40_C, AT_20_C = 16.1714285714, 18.5875, 13.834375  # kW at 50 kW of IT
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
