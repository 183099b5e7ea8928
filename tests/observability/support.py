"""Helpers for the observability tests: repository paths, binaries, loopback processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.binaries import binary as binary  # re-exported: skips, or fails under CI
from tests.loopback import free_port as free_port  # re-exported: the tests import it from here

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "wattledger.rules.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.test.yml"))
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
DASHBOARD_JSON = ROOT / "dashboards" / "json"
WATTLEDGER = str(Path(sys.executable).parent / "wattledger")




def load_rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return data


def alerts() -> list[dict[str, Any]]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def records() -> list[dict[str, Any]]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "record" in r]


def dashboards() -> dict[str, dict[str, Any]]:
    import json
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_JSON.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(file, panel title, expr) of every panel query of every dashboard."""
    out = []
    for name, board in dashboards().items():
        for p in panels(board):
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((name, p.get("title", "?"), t["expr"]))
    return out


def concrete(expr: str, rate_interval: str = "1m", range_: str = "5m") -> str:
    """A dashboard query as Prometheus would get it with every variable at All."""
    expr = re.sub(r"\$__rate_interval|\$\{__rate_interval\}|\$__interval", rate_interval, expr)
    expr = re.sub(r"\$__range|\$\{__range\}", range_, expr)
    return re.sub(r"\$\{(\w+)(:\w+)?\}|\$(\w+)", ".*", expr)


class Processes:
    """Processes started for one test, each in its own session, all stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                             env=env, start_new_session=True)
        log.close()
        self.procs.append((name, p))
        return p

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def wait_http(self, name: str, url: str, timeout: float = 60) -> None:
        proc = dict(self.procs)[name]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{name} exited ({proc.returncode}) before {url} answered:\n{self.log(name)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            time.sleep(0.3)
        raise AssertionError(f"{name}: {url} did not answer in {timeout:.0f} s:\n{self.log(name)}")

    def stop_all(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def eventually(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call check() until it returns something truthy; fail with `what` after `timeout` s."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} (after {timeout:.0f} s; last: {last!r})")
