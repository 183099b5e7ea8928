"""The demo's child processes: a clean environment, deaths reported once, stubborn ones killed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from wattledger.demo.processes import Supervisor, child_env


def test_children_get_none_of_the_users_wattledger_settings() -> None:
    env = child_env({"PATH": "/usr/bin", "WATTLEDGER_DB": "sqlite:////prod/ledger.db",
                     "WATTLEDGER_LISTEN": "0.0.0.0:9861"})
    assert env["PATH"] == "/usr/bin" and not any(k.startswith("WATTLEDGER_") for k in env)


def test_a_child_that_dies_is_reported_once_with_its_last_line(tmp_path: Path) -> None:
    sup = Supervisor()
    code = "import sys; print('first'); print('cannot listen on 127.0.0.1:1'); sys.exit(3)"
    child = sup.start("short", sys.executable, ["-c", code], tmp_path / "short.log")
    end = time.monotonic() + 20
    dead: list[object] = []
    while not dead and time.monotonic() < end:
        dead = list(sup.newly_dead())
        time.sleep(0.05)
    assert dead == [child] and child.proc.returncode == 3
    assert child.last_line() == "cannot listen on 127.0.0.1:1"
    assert sup.newly_dead() == []


def test_stop_signals_together_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    sup = Supervisor()
    polite = sup.start("polite", sys.executable, ["-c", "import time; time.sleep(60)"],
                       tmp_path / "polite.log")
    stubborn = sup.start("stubborn", sys.executable,
                         ["-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                "print('ready', flush=True); time.sleep(60)"],
                         tmp_path / "stubborn.log")
    end = time.monotonic() + 20
    while stubborn.last_line() != "ready" and time.monotonic() < end:
        time.sleep(0.05)
    killed = sup.stop([polite, stubborn], timeout=1.0)
    assert killed == [stubborn]
    assert not polite.running() and not stubborn.running()
    assert sup.newly_dead() == []  # asked to stop: not a death to report
