"""`wattledger demo` as a real process: live figures in plain lines, Ctrl-C stops every child and
exits 0 and the printed plan line plans from its ledger; a demo killed outright takes its children
with it."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.binaries import find

pytestmark = pytest.mark.integration

WATTLEDGER = str(Path(sys.executable).parent / "wattledger")


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (the demo's unique state folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def wait_for(predicate: object, timeout: float, what: str, log: Path | None = None) -> None:
    assert callable(predicate)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-1500:] if log else ""
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s; output tail: {tail}")


def start_demo(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    state = tmp_path / "state"
    out = tmp_path / "demo.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
    with out.open("wb") as f:
        proc = subprocess.Popen(
            [WATTLEDGER, "demo", "--state-dir", str(state), "--fresh", "--collector-port", "0",
             "--prometheus-port", "0", "--agent-port", "0", "--refresh", "1", *extra],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
    return proc, state, out


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def scrape(port: int, family: str) -> list[Sample]:
    """The samples of one metric family on the collector's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return [s for f in text_string_to_metric_families(text) if f.name == family for s in f.samples]


LIVE_LINE = re.compile(r"fleet power [\d,.]+ k?W, hottest GPU [\d.]+ °C")


def test_demo_shows_live_figures_and_ctrl_c_stops_everything(
        tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]) -> None:
    proc, state, out = start_demo(tmp_path)
    cleanup.append(proc)
    text = lambda: out.read_text(errors="replace")  # noqa: E731
    wait_for(lambda: "backfill done" in text(), 60, "the backfill", out)
    after = lambda: text().split("backfill done", 1)[1]  # noqa: E731
    wait_for(lambda: LIVE_LINE.search(after()) and "cost so far $" in after(), 30, "a live line", out)
    children = 6 if find("prometheus") else 5
    wait_for(lambda: len(pids_mentioning(str(state))) >= children, 20, "every child running", out)
    agent_logs = [state / "logs" / f"agent-demo-gpu-0{i}.log" for i in range(1, 5)]
    wait_for(lambda: all(p.exists() and "delivering to" in p.read_text() for p in agent_logs), 30,
             "the agents sampling", out)
    # the hand-over: each live agent's stream takes its node's devices over from the backfill's
    # stream (its readings start after the backfilled ones): booked at once, never a 409 loop
    port = re.search(r"starting the collector on http://127\.0\.0\.1:(\d+)", text())
    assert port, text()[-1500:]

    def outcomes() -> dict[str, float]:
        return {s.labels["outcome"]: s.value for s in scrape(int(port[1]), "wattledger_ingest_batches")}

    backfilled = outcomes()["accepted"]
    wait_for(lambda: outcomes()["accepted"] >= backfilled + 4, 30, "the live agents' batches booked", out)
    assert outcomes()["rejected_409"] == 0
    # two teams with budgets: their jobs held the month's GPUs (backfill and live agents: one
    # job each in the ledger), demo-gpu-04's are idle; teams add up to the site
    base = f"http://127.0.0.1:{port[1]}"
    with urllib.request.urlopen(f"{base}/v1/spend?group_by=team", timeout=10) as answer:
        teams = {r["team"]: r for r in json.loads(answer.read())["rows"]}
    with urllib.request.urlopen(f"{base}/v1/spend", timeout=10) as answer:
        (site,) = json.loads(answer.read())["rows"]
    # the chiller's cooling of the minutes not yet shared out by IT is team unshared's (no IT)
    unshared = teams.pop("unshared", None)
    assert unshared is None or unshared["it_energy_kwh"] == 0.0
    assert set(teams) == {"nlp", "vision", "idle"}, teams
    assert all(teams[t]["it_energy_kwh"] > 0 for t in teams)
    assert teams["nlp"]["plan_cost"] > 0 and teams["vision"]["plan_cost"] > 0
    assert sum(r["total_cost"] for r in [*teams.values(), *([unshared] if unshared else [])]) == \
        pytest.approx(site["total_cost"], rel=1e-6)
    with urllib.request.urlopen(f"{base}/v1/jobs", timeout=10) as answer:
        jobs = json.loads(answer.read())["jobs"]
    assert sorted((j["node"], j["owner"]["job"]) for j in jobs) == [
        ("demo-gpu-01", "1001"), ("demo-gpu-02", "1002"), ("demo-gpu-03", "1003")]
    time.sleep(2)  # a few samples each, still in their open batch: the stop must ship them

    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(45)
    output = text()
    assert rc == 0, output[-1500:]
    assert "Traceback" not in output
    # every figure the acceptance check looks for, with units
    assert re.search(r"\bW\b", output) and "°C" in output and "USD" in output and "plan" in output
    # the agents stopped first and shipped everything they had taken
    stops = re.findall(r"agent (demo-gpu-\d+): stopped: readings=(\d+) shipped=(\d+) spooled=(\d+)", output)
    assert len(stops) == 4, output[-1500:]
    for _, readings, shipped, spooled in stops:
        assert int(readings) > 0 and readings == shipped and spooled == "0"
    assert "collector: stopped" in output and "demo stopped" in output
    assert pids_mentioning(str(state)) == []
    # the one line that plans from the demo's ledger, printed last, works as printed
    line = re.search(r"plan the next servers from its ledger: (wattledger plan .*)", output)
    assert line, output[-800:]
    argv = shlex.split(line.group(1))
    planned = subprocess.run([WATTLEDGER, *argv[1:]], capture_output=True, text=True, cwd=tmp_path,
                             timeout=120)
    assert (planned.returncode, planned.stderr) == (0, ""), planned.stderr
    page = (tmp_path / "plan.html").read_text()
    assert page.count("<svg") >= 3 and "measured" in page


def test_a_killed_demo_takes_its_children_with_it(
        tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]) -> None:
    proc, state, out = start_demo(tmp_path, "--no-backfill", "--no-prometheus")
    cleanup.append(proc)
    wait_for(lambda: LIVE_LINE.search(out.read_text(errors="replace")), 40, "a live line", out)
    wait_for(lambda: len(pids_mentioning(str(state))) >= 5, 20, "every child running", out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    # each child gets SIGTERM when the demo dies; agents may try to ship for up to 10 s
    wait_for(lambda: pids_mentioning(str(state)) == [], 30, "the children's exit", out)
