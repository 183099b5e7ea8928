"""The README picture: taken once the view is complete, written as an SVG of the view."""

from __future__ import annotations

import html
from pathlib import Path

from demokit import NOW

from wattledger.demo.picture import Moment, save_svg
from wattledger.demo.snapshot import AlertRow, BackfillState, GpuHeat, ServerRow, Snapshot, Urls

URLS = Urls("http://127.0.0.1:9861", "http://127.0.0.1:9090", "dashboards/provisioning")


def snap(power: float | None, backfill_done: bool, firing: bool) -> Snapshot:
    server = ServerRow("demo-gpu-02", "train-a", "hot", 8, power, 0.97,
                       GpuHeat("demo-gpu-02", "3", 85.1, 87.0), NOW - 2)
    alerts = [AlertRow("GpuThermalThrottling", "firing" if firing else "pending", "page",
                       "dc-east demo-gpu-02 GPU 3")]
    return Snapshot(at=NOW, urls=URLS, servers=[server], alerts=alerts,
                    backfill=BackfillState(1.0 if backfill_done else 0.5, 10, backfill_done))


def test_the_moment_waits_for_backfill_live_readings_and_a_firing_alert() -> None:
    moment = Moment(settle_s=3600, min_live_s=0)
    assert not moment(snap(4600.0, backfill_done=False, firing=True))
    assert not moment(snap(None, backfill_done=True, firing=True))
    assert not moment(snap(4600.0, backfill_done=True, firing=False))
    chosen = snap(4600.0, backfill_done=True, firing=True)
    assert moment(chosen) and moment.chosen is chosen


def test_the_moment_settles_without_an_alert() -> None:
    moment = Moment(settle_s=0, min_live_s=0)
    assert moment(snap(4600.0, backfill_done=True, firing=False))


def test_save_svg_draws_the_view(tmp_path: Path) -> None:
    out = tmp_path / "images" / "demo.svg"
    save_svg(snap(4600.0, backfill_done=True, firing=True), out, width=132)
    svg = html.unescape(out.read_text()).replace("\xa0", " ")  # rich writes spaces as &#160;
    assert svg.startswith("<svg") and "wattledger demo" in svg
    assert "demo-gpu-02" in svg and "°C" in svg and "GpuThermalThrottling" in svg
