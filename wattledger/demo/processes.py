"""The demo's child processes: start them, notice one that dies, stop them all in order.

Each child runs in a process group of its own, so a Ctrl-C in the terminal (or a signal to the
demo's group) reaches only the demo, which then stops the children in the order that loses
nothing: agents first (they ship what they spooled), then Prometheus, the collector last.
Each child also dies with the demo if the demo is killed outright (see :mod:`guard`).
Their output goes to a log file each, not to the terminal the view draws on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

#: variables of the user's own wattledger set-up that must not reach the demo's children
#: (a WATTLEDGER_DB pointing at a production ledger, say)
ENV_PREFIX = "WATTLEDGER_"


def child_env(base: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    stopping: bool = False
    reported: bool = False
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def last_line(self, containing: str = "") -> str | None:
        """The child's last log line (that contains ``containing``), for one-line reports."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            if line.strip() and containing in line:
                return line.strip()
        return None


class Supervisor:
    def __init__(self, python: str = sys.executable, env: Mapping[str, str] | None = None) -> None:
        self._python = python
        self._env = child_env(os.environ if env is None else env)
        self.children: list[Child] = []

    def start(self, name: str, program: str, args: Sequence[str], log_path: Path) -> Child:
        """Start ``program args`` (``program`` "wattledger" runs a sub-command of this install)."""
        argv = [self._python, "-m", "wattledger.demo.guard", str(os.getpid()), program, *args]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {program} {' '.join(args)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=self._env, process_group=0, close_fds=True)
        child = Child(name, argv, log_path, proc, _log=log)
        self.children.append(child)
        return child

    def newly_dead(self) -> list[Child]:
        """Children that exited without being asked to, each returned once."""
        out = []
        for child in self.children:
            if not child.stopping and not child.reported and not child.running():
                child.reported = True
                out.append(child)
        return out

    def stop(self, children: Sequence[Child], timeout: float,
             sig: signal.Signals = signal.SIGTERM) -> list[Child]:
        """Signal ``children`` together, wait up to ``timeout`` s, SIGKILL what is left.

        Returns the children that had to be killed.
        """
        for child in children:
            child.stopping = True
            if child.running():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        killed = []
        for child in children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.proc.wait()
                killed.append(child)
            if child._log is not None:
                child._log.close()
                child._log = None
        return killed

    def kill_all(self) -> None:
        """Last resort (a second Ctrl-C): SIGKILL every child's process group now."""
        for child in self.children:
            child.stopping = True
            if child.running():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5)
