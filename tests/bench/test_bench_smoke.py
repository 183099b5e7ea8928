"""Each benchmark in bench/ runs end to end in a tiny configuration and prints its figures.

Nothing here judges a figure (times on shared machines say nothing in a test): the point is
that `bench/*.py` keep working as the code under them changes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.binaries import find

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=170, check=False)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_ingest_compares_collector_sender_and_parsing() -> None:
    # the names bench/ingest.py looks for; without either the comparison is left out
    vm = [] if find("victoria-metrics", "victoria-metrics-prod") else ["--no-vm"]
    out = run("ingest.py", "--repeats", "2", "--nodes", "4", "--rounds", "3", "--conns", "2", *vm)
    for line in ("collector ", "sender alone", "parsing alone", "collector / parsing alone ="):
        assert line in out
    if not vm:
        assert "collector / VictoriaMetrics =" in out


def test_site_reports_cost_of_a_small_fleet_and_finds_its_max() -> None:
    out = run("site.py", "--minutes", "0.15", "--warmup", "1", "--agents", "6")
    for line in ("collector CPU", "collector RSS", "answer time", "/metrics", "load generator CPU"):
        assert line in out
    answers = next(line for line in out.splitlines() if line.strip().startswith("answers"))
    assert "{200: " in answers and ", 5" not in answers  # every batch answered, none 5xx
    out = run("site.py", "--find-max", "--minutes", "0.1", "--warmup", "1", "--agents", "3",
              "--max-agents", "3")  # one step, then the cap
    assert "find-max:" in out


def test_replicas_on_postgresql_in_the_ingest_and_site_benchmarks() -> None:
    out = run("ingest.py", "--db", "postgresql", "--replicas", "2", "--scaling", "--no-vm", "--repeats", "1",
              "--nodes", "4", "--rounds", "2", "--conns", "2")
    for line in ("1 replica on PostgreSQL", "2 replicas on PostgreSQL", "postgresql", "scaling: 1 -> 1.00x"):
        assert line in out
    out = run("site.py", "--db", "postgresql", "--replicas", "2", "--minutes", "0.1", "--warmup", "1",
              "--agents", "4")
    assert "; replicas " in out and "PostgreSQL" in out
    answers = next(line for line in out.splitlines() if line.strip().startswith("answers"))
    assert "{200: " in answers and ", 5" not in answers


def test_ledger_growth_with_and_without_roll_up() -> None:
    out = run("ledger_growth.py", "--months", "2", "--nodes", "1", "--gpus", "2", "--step", "600",
              "--rollup-after-days", "10")
    assert "bytes per GPU per month" in out
    assert "identical with and without roll-up: yes" in out


def test_remote_write_books_dcgm_samples_and_times_decoding() -> None:
    out = run("remote_write.py", "--repeats", "1", "--nodes", "3", "--gpus", "2", "--rounds", "2")
    for line in ("collector ", "samples/s", "decode+map alone"):
        assert line in out


def test_plan_read_reads_a_sites_history() -> None:
    out = run("plan_read.py", "--gpus", "40", "--days", "3", "--models", "2")
    assert "plan_days rows" in out and "2 profiles, fleet 40 GPUs" in out


def test_ingest_on_a_chiller_and_a_metered_site_books_the_whole_bill() -> None:
    """The whole bill's flags at a tiny size: every collector's ledger is what the readings give
    (the chiller's cooling the formula on the run's IT, one minute of it), and the replicas'
    lock waits are broken down by relation."""
    sys.path.insert(0, str(BENCH))
    from wholebill import OUTDOOR_C, WholeBill

    from wattledger.collector.accounting.cooling import ChillerCooling, chiller_cooling

    start = 1_764_547_200  # 2025-12-01 00:00 UTC: the 30 s of readings lie in one minute
    nodes, gpus, seconds = 4, 8, 30
    out = run("ingest.py", "--db", "postgresql", "--replicas", "2", "--sqlite-too", "--no-vm",
              "--repeats", "1", "--nodes", str(nodes), "--gpus", str(gpus), "--rounds", "3",
              "--batch-seconds", "10", "--conns", "2", "--cooling", "chiller", "--node-meters",
              "--start", str(start), "--compare-with", str(BENCH.parent))  # this checkout as "another"
    # the BMC's wall power (1.25 x its GPUs' 400 W each) is the node's IT, from the first reading
    it_j = nodes * gpus * 400.0 * 1.25 * (seconds - 1)
    chiller = ChillerCooling.model_validate(WholeBill("chiller", True, nodes, gpus).chiller())
    assert chiller.capft[0] != 1.0  # the ASHRAE preset's curves, not a made-up one
    cooling_j = chiller_cooling(chiller, it_j / 60 / 1000, OUTDOOR_C).cooling_kw * 60e3
    ledger = next(line for line in out.splitlines() if line.strip().startswith("ledger ("))
    figures = re.findall(r"(IT|cooling|other) ([\d.]+) kWh", ledger)
    assert dict(figures) == {"IT": f"{it_j / 3.6e6:.6f}", "cooling": f"{cooling_j / 3.6e6:.6f}",
                             "other": "0.000000"}
    other = BENCH.parent.name
    assert (f"(sqlite collector, 2 replicas on PostgreSQL, 2 replicas ({other}) on PostgreSQL, "
            f"sqlite collector ({other}))") in ledger
    for pair in (f"sqlite collector / sqlite collector ({other}) = ",
                 f"2 replicas on PostgreSQL / 2 replicas ({other}) on PostgreSQL = "):
        assert pair in out
    breakdown = next(line for line in out.splitlines() if "lock waits by relation:" in line)
    entry, way = r"Lock:\w+ on [\w.?]+ (\d+|<1)%", r"[a-z ]+ \d+%"
    assert re.fullmatch(rf"  2 replicas on PostgreSQL: lock waits by relation: "
                        rf"(none|{entry}(, {entry})*( \(relation found by: {way}(, {way})*\))?)",
                        breakdown), breakdown
    # two metered sites: cooling and other from each one's meters (0.35 and 1.6 x its IT), on one collector
    out = run("ingest.py", "--no-vm", "--repeats", "2", "--nodes", "12", "--rounds", "2", "--conns", "2",
              "--cooling", "metered", "--sites", "2")
    ledger = next(line for line in out.splitlines() if line.strip().startswith("ledger ("))
    it, cooling, other = (float(v) for _, v in re.findall(r"(IT|cooling|other) ([\d.]+) kWh", ledger))
    assert it == pytest.approx(2 * 12 * 8 * 400.0 * 19 / 3.6e6, abs=1e-6)
    assert (cooling, other) == pytest.approx((0.35 * it, 0.25 * it), abs=2e-6)
