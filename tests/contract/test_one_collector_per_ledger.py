"""One collector per SQLite ledger (DESIGN.md "Scale-out": several replicas need PostgreSQL).
Two processes on one file would each accept a batch the other committed: a second collector is
refused in one line, and the lock goes with the process that held it, however it ended."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from contractkit import free_port, start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def second(tmp_path: Path, db: str) -> subprocess.CompletedProcess[str]:
    listen = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "wattledger.cli", "collector", "--db", db, "--listen", listen]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "WATTLEDGER_STATE_DIR": str(tmp_path)})


def test_a_second_collector_on_the_same_ledger_is_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    port = free_port()
    first = start("collector", ["collector", "--db", db, "--listen", f"127.0.0.1:{port}"],
                  tmp_path / "first.log", f"http://127.0.0.1:{port}", "/readyz")
    try:
        refused = second(tmp_path, db)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and "in use by another collector" in refused.stderr
        assert f"pid {first.popen.pid}" in refused.stderr
    finally:
        assert first.stop(signal.SIGKILL) != 0
    # killed, not stopped: the lock went with it; a new collector opens the same ledger
    port = free_port()
    again = start("collector", ["collector", "--db", db, "--listen", f"127.0.0.1:{port}"],
                  tmp_path / "again.log", f"http://127.0.0.1:{port}", "/readyz")
    assert again.stop() == 0
