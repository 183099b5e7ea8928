"""Run one of the demo's child processes so that it cannot outlive the demo.

``python -m wattledger.demo.guard PARENT_PID PROGRAM ARGS...`` asks Linux to send SIGTERM to
this process when the demo dies (``PR_SET_PDEATHSIG``, kept across ``exec``), then runs
``wattledger ARGS...`` in this process, or ``exec``s any other program (Prometheus). The demo
stops its children itself on Ctrl-C and SIGTERM; this covers the demo being killed outright
(SIGKILL, a crash), which would otherwise leave a collector and agents running in the
background. Elsewhere than Linux it only runs the program.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
    # the demo may have died before prctl took effect: then nobody will stop us
    if os.getppid() != parent_pid:
        sys.exit(1)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.stderr.write("usage: python -m wattledger.demo.guard PARENT_PID PROGRAM [ARGS...]\n")
        return 2
    die_with_parent(int(argv[0]))
    program, args = argv[1], argv[2:]
    if program == "wattledger":
        from wattledger.cli import main as wattledger_main

        return wattledger_main(args)
    os.execvp(program, [program, *args])  # Prometheus becomes this process, PDEATHSIG kept


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
