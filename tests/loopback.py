"""Loopback processes of the tests: a free TCP port on 127.0.0.1 for a process a test is about
to start, and waiting for a stopped process's whole group to be gone.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, and closing
the socket gives it straight back: until the child process binds it, the kernel may hand the
same port to any other socket on the machine, above all to the local end of an outgoing
connection (the suite and other test runs on this machine open thousands). Under load the
child binds seconds later, and it then failed with "address already in use" or, worse, a
test talked to someone else's server. So the port is drawn at random from *below* the
ephemeral range, where the kernel never allocates by itself, and checked to be bindable."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import time
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _band() -> tuple[int, int]:
    """[low, high) ports that the kernel does not hand out as ephemeral ones."""
    try:
        first_ephemeral = int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    high = max(first_ephemeral, 12000)
    return max(10000, high - 20000), high


def free_port() -> int:
    low, high = _band()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    # every draw taken (should not happen): fall back to the kernel's choice
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies, which hold nothing, aside)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def wait_group_gone(pgid: int, timeout: float = 15.0) -> None:
    """After the group leader was reaped, wait for the rest of its group (a collector's worker
    processes) to be gone too: until then they may hold its port, and a restart on the same
    port or ledger found them there. Best effort: a straggler past ``timeout`` is SIGKILLed."""
    end = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > end:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.05)
