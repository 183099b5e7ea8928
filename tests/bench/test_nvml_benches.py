"""The GPU benchmarks (bench/nvml_sample.py, bench/nvml_ledger.py) run end to end without a GPU.

They are meant for a machine with an NVIDIA driver; here they run against the project's fake
NVML (tests/agent/fake_pynvml.py) through ``fakenvml/``: a ``pynvml.py`` first on PYTHONPATH
(so the benchmark, and the agent it starts, import it instead of nvidia-ml-py) and a fake
``nvidia-smi`` first on PATH that reads the same fake boards. Two boards: an H100 (power
512.3 W, HBM temperature) and an A100 without a memory temperature sensor; each board's
energy counter advances at its power over time.

What is checked is the benchmarks' own plumbing (units, the agent -> collector -> ledger
path, the report's shape), never a time or a speed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
FAKE = Path(__file__).resolve().parent / "fakenvml"
H100, A100 = "GPU-11111111-2222-3333-4444-555555555555", "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def run(tmp_path: Path, script: str, *args: str) -> str:
    """``script`` with the fake pynvml and nvidia-smi first in line; its temporary files in tmp_path."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(FAKE), *filter(None, [os.environ.get("PYTHONPATH")])]),
        # the fake nvidia-smi runs on ``python3``: this interpreter's where it has one
        "PATH": os.pathsep.join([str(FAKE), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "TMPDIR": str(tmp_path),  # bench/nvml_ledger.py's work folder (ledger, logs, spool)
    }
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=100, check=False)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_nvml_sample_agreement_energy_and_cost(tmp_path: Path) -> None:
    report_file = tmp_path / "nvml_sample.json"
    out = run(tmp_path, "nvml_sample.py", "--rounds", "2", "--load-seconds", "1", "--samples", "20",
              "--json", str(report_file))
    assert "0, NVIDIA H100 80GB HBM3, " in out and "1, NVIDIA A100-PCIE-40GB, " in out  # the GPU list
    for section in ("== 1. agreement with nvidia-smi", "== 2. energy counter against integrated power",
                    "== 3. cost of one sample"):
        assert section in out
    assert "FAILED" not in out
    lines = out.splitlines()

    def table_row(what: str) -> str:
        return next(line for line in lines if line.strip().startswith(what))

    # both rounds, ours then nvidia-smi's; the A100 has no memory temperature on either side
    assert table_row("GPU 0 power W (smi power.draw) ").split()[-4:] == ["512.3"] * 4
    assert table_row("GPU 0 GPU temperature C").split()[-4:] == ["61"] * 4
    assert table_row("GPU 1 memory temperature C").split()[-4:] == ["absent", "absent", "n/a", "n/a"]
    assert "load: none (no PyTorch)" in out
    assert not any("did not move" in line or "no energy counter" in line for line in lines)
    assert re.search(r"GPU 0: counter [\d,.]+ J over [\d.]+ s = [\d.]+ W; our power integrated", out)
    assert "one sample of 2 GPU(s):" in out

    report = json.loads(report_file.read_text())
    assert set(report) == {"agreement", "energy", "cost"}
    agreement = report["agreement"]
    assert len(agreement) == 2 * 12  # per GPU: the energy counter and 11 readings nvidia-smi shows
    for what, pairs in agreement.items():
        assert len(pairs) == 2, what
        if "energy counter" in what:  # read a moment apart, on a counter that keeps growing
            assert all(0 < ours <= direct for ours, direct in pairs), what
        else:  # same fake board: our units (W, ratio, bytes, Hz) converted must give nvidia-smi's
            assert all(ours == pytest.approx(theirs) for ours, theirs in pairs), what
    assert agreement["GPU 1 memory temperature C"] == [[None, None], [None, None]]
    assert agreement["GPU 0 memory used MiB"][0] == [61440, 61440]  # v2 "used", not v1's with reserved
    assert agreement["GPU 0 clock-event bits"][0] == [0x20, 0x20]

    energy = {row["gpu"]: row for row in report["energy"]}
    assert set(energy) == {0, 1}
    for gpu, watts in ((0, 512.3), (1, 61.25)):
        row = energy[gpu]
        assert row["samples"] >= 2 and row["smi_polls"] >= 1
        assert row["smi_mean_power_w"] == pytest.approx(watts)
        # the counter grows at the board's constant power: its increase and the integrated power
        # over the same window agree up to the moment between a sample's time and its reading
        assert 0.5 < row["our_power_integral_j"] / row["counter_j"] < 2

    cost = report["cost"]
    assert cost["gpus"] == 2
    assert cost["sample_wall_s"] > 0 and cost["baseline_wall_s"] > 0
    assert len(cost["per_call_wall_s"]) == 12  # the fake has every call the benchmark times


def test_nvml_ledger_agent_ships_and_ledger_stays_within_the_counter(tmp_path: Path) -> None:
    out = run(tmp_path, "nvml_ledger.py", "--seconds", "4", "--no-load")
    stopped = re.search(r"against (\d+) GPU\(s\), load none; stopped rc=0: .*"
                        r"stopped: readings=(\d+) shipped=(\d+) spooled=0", out)
    assert stopped, out
    gpus, readings, shipped = (int(g) for g in stopped.groups())
    assert gpus == 2 and readings > 0 and shipped == readings, out
    for uuid, watts in ((H100, "512.3"), (A100, "61.25")):
        assert f"{uuid[:12]} wattledger_gpu_power_watts             ours {watts}" in out
        assert f"nvidia-smi power.draw {watts}" in out
    booked = dict(re.findall(r"(GPU-\w+) ledger ([\d,.]+) J, counter [\d,.]+ J", out))
    grew = dict(re.findall(r"(GPU-\w+) ledger [\d,.]+ J, counter ([\d,.]+) J", out))
    assert set(booked) == set(grew) == {H100[:12], A100[:12]}, out
    for uuid in booked:
        ledger, counter = float(booked[uuid].replace(",", "")), float(grew[uuid].replace(",", ""))
        # the ledger's window (first to last sample) lies inside the counter's (before the agent
        # started to after it stopped): some energy booked, never more than the counter's increase
        assert 0 < ledger <= counter, out
