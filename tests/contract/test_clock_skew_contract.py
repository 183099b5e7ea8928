"""An agent whose clock was years behind (a GPU server whose RTC battery died boots at 2021,
then NTP steps it to today) must not take the collector down.

Found in the audit: the collector accepts a reading years in the past (only "more than 5 min
ahead" is refused), and the next reading of that device makes an interval that the ledger
splits minute by minute over the years in between. Measured on the real process: a 1-year gap
took 1.4 s and +225 MB RSS for one request; a 5-year gap kept the collector at 100 % CPU with
1.1 GB RSS for over 5 minutes, its periodic work skipped, until it was killed.

Fixed in the ledger: an unmeasured interval (no energy, only its length) is booked whole to
the minute it ends in instead of being split over every minute of the gap
(``intervals.split_for_pricing``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from contractkit import free_port, start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
YEARS = 5 * 365 * 86400


def reading(seq: int, ts: float, energy_j: float) -> dict[str, object]:
    return {"node": "n1", "stream": "skewed-clock", "seq": seq, "labels": {},
            "devices": [{"id": "GPU-skew", "kind": "gpu", "index": 0, "model": "M", "power_limit_w": 700.0}],
            "readings": {"device": [0], "ts": [ts], "power_w": [300.0], "energy_j": [energy_j]}}


def test_a_clock_years_behind_does_not_hold_the_collector(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "c.yaml").write_text(json.dumps({"db": f"sqlite:///{tmp_path}/l.db", "tokens": {"n1": "t1"}}))
    collector = start("collector", ["collector", "--config", str(tmp_path / "c.yaml"),
                                    "--listen", f"127.0.0.1:{port}"],
                      tmp_path / "c.log", f"http://127.0.0.1:{port}", "/readyz")
    auth = {"Authorization": "Bearer t1"}
    try:
        now = time.time()
        old = httpx.post(collector.url + "/v1/batches", json=reading(1, now - YEARS, 0.0), headers=auth)
        assert old.status_code in (200, 422), old.text
        new = httpx.post(collector.url + "/v1/batches", json=reading(2, now - 10, 1000.0), headers=auth,
                         timeout=60)
        assert new.status_code == 200, new.text
        assert httpx.get(collector.url + "/readyz", timeout=10).status_code == 200
    finally:
        collector.stop()
