"""Helpers of the contract tests: the real `wattledger` processes on 127.0.0.1, scraped as
Prometheus would scrape them, and docs/metrics.md read back as data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.loopback import free_port as free_port  # re-exported: the tests import it from here

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Process:
    """A `wattledger ...` child with its log in a file; stopped by signal, never left behind."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return int(self.popen.returncode)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start(name: str, argv: list[str], log: Path, url: str, ready_path: str) -> Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
    env["WATTLEDGER_STATE_DIR"] = str(log.parent / f"{name}-state")
    with log.open("wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "wattledger.cli", *argv], stdout=out,
                                 stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    proc = Process(name, popen, log, url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise AssertionError(f"{name} exited with {popen.returncode}: {proc.log_text()[-2000:]}")
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.stop(signal.SIGKILL)
    raise AssertionError(f"{name} did not answer {ready_path} in 60 s: {proc.log_text()[-2000:]}")


@dataclass(frozen=True)
class Family:
    name: str  # as exposed: counters with their _total
    type: str
    labels: frozenset[str]  # every label name any sample carries (histogram `le` left out)
    samples: tuple[tuple[str, dict[str, str], float], ...]


def scrape(url: str) -> dict[str, Family]:
    """The ``wattledger_*`` families of a /metrics page that carry at least one sample."""
    answer = httpx.get(url + "/metrics", timeout=10)
    answer.raise_for_status()
    out: dict[str, Family] = {}
    for fam in text_string_to_metric_families(answer.text):
        if not fam.name.startswith("wattledger_") or not fam.samples:
            continue
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels = frozenset(k for s in fam.samples for k in s.labels if k != "le")
        samples = tuple((s.name, dict(s.labels), float(s.value)) for s in fam.samples)
        out[name] = Family(name, fam.type, labels, samples)
    return out


def value(families: dict[str, Family], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there are none)."""
    fam = families.get(name)
    if fam is None:
        return 0.0
    return sum(v for sample, lab, v in fam.samples
               if sample == name and all(lab.get(k) == want for k, want in labels.items()))


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass(frozen=True)
class DocRow:
    name: str
    type: str
    labels: frozenset[str]
    agent_labels: bool  # "+labels": the agent's --label keys ride along
    always: bool


def documented_metrics(path: Path) -> dict[str, dict[str, DocRow]]:
    """docs/metrics.md's tables by section ("agent", "collector") and metric name."""
    sections: dict[str, dict[str, DocRow]] = {}
    current: dict[str, DocRow] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^## (Agent|Collector)\b", line)
        if heading:
            current = sections.setdefault(heading.group(1).lower(), {})
            continue
        if current is None or not line.startswith("| `wattledger_"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name, kind, labels, present = cells[0].strip("`"), cells[1], cells[2].strip("`"), cells[5]
        names = {part.strip() for part in labels.split(",")} - {"(none)", ""}
        assert name not in current, f"docs/metrics.md lists {name} twice"
        current[name] = DocRow(name, kind, frozenset(names - {"+labels"}), "+labels" in names,
                               present == "always")
    return sections
