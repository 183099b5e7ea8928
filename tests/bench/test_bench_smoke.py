"""Each benchmark in bench/ runs end to end in a tiny configuration and prints its figures.

Nothing here judges a figure (times on shared machines say nothing in a test): the point is
that `bench/*.py` keep working as the code under them changes.
"""

from __future__ import annotations

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
