"""``wattledger agent`` as a process on 127.0.0.1: scraped over HTTP, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.stub_collector import StubCollector
from tests.loopback import free_port

pytestmark = pytest.mark.integration
WATTLEDGER = str(Path(sys.executable).parent / "wattledger")


class Agent:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.log = tmp_path / f"agent-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [WATTLEDGER, "agent", "--listen", f"127.0.0.1:{self.port}", *args],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )

    def scrape(self, timeout: float = 30.0) -> dict[str, list[tuple[dict[str, str], float]]]:
        end = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
                    text = answer.read().decode()
                break
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out.setdefault(s.name, []).append((s.labels, s.value))
        return out

    def readings_reach(self, count: float,
                       timeout: float = 60.0) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Scrape until the agent has taken ``count`` readings (however slow a loaded machine
        makes its sampling); the last scrape."""
        end = time.monotonic() + timeout
        while True:
            metrics = self.scrape()
            # absent before the first sample (a loaded machine can scrape before it)
            taken = sum(v for _, v in metrics.get("wattledger_agent_readings_total", []))
            if taken >= count:
                return metrics
            assert time.monotonic() < end, f"{taken:.0f} of {count:.0f} readings in {timeout:.0f} s"
            time.sleep(0.2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return int(self.proc.returncode)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in started:
        a.stop()


def test_simulated_agent_is_scraped_and_stops_cleanly(tmp_path: Path, agents: list[Agent]) -> None:
    agent = Agent(tmp_path, "--simulate", "4", "--interval", "0.2", "--node", "it-1", "--label", "site=s1")
    agents.append(agent)
    first = agent.readings_reach(4)  # the first sample of the four GPUs is in
    # two more samples of the four GPUs, not a fixed sleep: a loaded machine samples late
    later = agent.readings_reach(first["wattledger_agent_readings_total"][0][1] + 8)
    power = later["wattledger_gpu_power_watts"]
    assert len(power) == 4
    assert all(labels["node"] == "it-1" and labels["site"] == "s1" and labels["uuid"].startswith("GPU-")
               for labels, _ in power)
    assert all(0 < value <= 700 for _, value in power)
    e1 = {labels["uuid"]: v for labels, v in first["wattledger_gpu_energy_joules_total"]}
    e2 = {labels["uuid"]: v for labels, v in later["wattledger_gpu_energy_joules_total"]}
    assert e1.keys() == e2.keys() and all(e2[u] > e1[u] for u in e1)
    assert later["wattledger_agent_readings_total"][0][1] > first["wattledger_agent_readings_total"][0][1]
    assert agent.stop() == 0
    log = agent.log.read_text()
    assert "Traceback" not in log
    stopped = [line for line in log.splitlines() if "stopped: readings=" in line]
    assert len(stopped) == 1 and stopped[0].endswith("shipped=0 spooled=0")


def test_sigterm_ships_what_is_spooled_and_reports_it(tmp_path: Path, agents: list[Agent]) -> None:
    stub = StubCollector("tok-it")
    token = tmp_path / "token"
    token.write_text("tok-it\n")
    try:
        # a batch every 60 s: at SIGTERM the open batch is cut and shipped before exit
        agent = Agent(tmp_path, "--simulate", "2", "--interval", "0.2", "--node", "it-2",
                      "--sources", "simulated", "--collector", stub.url, "--token-file", str(token),
                      "--spool", str(tmp_path / "spool"), "--batch-seconds", "60")
        agents.append(agent)
        agent.readings_reach(8)  # four samples of the two GPUs, all in the open batch
        assert stub.readings == 0
        assert agent.stop() == 0
    finally:
        stub.close()
    stopped = [line for line in agent.log.read_text().splitlines() if "stopped: readings=" in line]
    assert len(stopped) == 1
    readings = int(stopped[0].split("readings=")[1].split()[0])
    assert readings >= 8 and stopped[0].endswith(f"readings={readings} shipped={readings} spooled=0")
    assert stub.readings == readings


def test_without_a_driver_it_says_so_once_and_keeps_host(tmp_path: Path, agents: list[Agent]) -> None:
    agent = Agent(tmp_path, "--interval", "0.2", "--node", "bare-1")
    agents.append(agent)
    metrics = agent.scrape()
    time.sleep(0.5)
    metrics = agent.scrape()
    up = {labels["source"]: v for labels, v in metrics["wattledger_agent_source_up"]}
    if up.get("nvml") == 1.0:
        pytest.skip("this machine has an NVIDIA driver")
    assert up == {"nvml": 0.0, "host": 1.0}
    assert "wattledger_host_cpu_utilization_ratio" in metrics
    assert agent.stop() == 0
    log = agent.log.read_text()
    assert "Traceback" not in log
    said = [line for line in log.splitlines() if "no NVIDIA driver (NVML)" in line]
    assert len(said) == 1


def test_a_bad_flag_is_refused_at_once_in_one_line() -> None:
    r = subprocess.run([WATTLEDGER, "agent", "--simulate", "1", "--interval", "-1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and "--interval" in r.stderr


def test_a_taken_port_is_one_line_and_exit_2_and_opens_no_spool(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    spool = tmp_path / "spool"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        argv = [WATTLEDGER, "agent", "--simulate", "1", "--listen", f"127.0.0.1:{port}",
                "--collector", "http://127.0.0.1:9", "--token-file", str(token), "--spool", str(spool)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("wattledger agent: error: cannot listen on") and r.stderr.count("\n") == 1
    assert not spool.exists()
