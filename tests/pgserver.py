"""A real PostgreSQL for the tests and benchmarks: Debian's server binaries, started in a
temporary folder on a free loopback port, stopped at the end.

PostgreSQL refuses to run as root, so when the tests run as root (CI containers) ``initdb`` and
``pg_ctl`` run as the ``postgres`` user (``runuser``) and the folders are handed to it. One
server serves a whole test session; each test gets its own database, copied from a template
that is migrated once (``CREATE DATABASE ... TEMPLATE`` copies files: ~10 ms).

Where the binaries are missing a test skips, saying what to install; under CI (``CI`` set) it
fails instead: scripts/ensure-system-packages installs ``postgresql`` there.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.loopback import free_port

#: where Debian puts each major version's server binaries
PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"


def server_binaries() -> Path | None:
    """The newest installed version's bin folder (initdb, pg_ctl, postgres), or None."""
    found = sorted(PG_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def require_server_binaries() -> Path:
    """The server binaries; without them the test skips, except under CI, where it fails (the
    CI set-up, scripts/ensure-system-packages, installs postgresql)."""
    import pytest

    from tests.binaries import on_ci

    found = server_binaries()
    if found is None:
        reason = "PostgreSQL server binaries not installed (apt-get install postgresql)"
        if on_ci():
            pytest.fail(f"{reason}, which CI must have: scripts/ensure-system-packages installs it")
        pytest.skip(reason)
    return found


class PgServer:
    """One PostgreSQL server in ``folder``: ``start``, ``stop``, ``restart``, databases by name.

    ``durable`` False turns ``fsync`` off (the tests' default: the OS keeps what a killed
    server wrote, and nothing here survives a power cut anyway); the benchmarks keep it on, as
    a production server does. The collector's own ``synchronous_commit`` stays on either way.
    """

    def __init__(self, folder: Path | None = None, *, durable: bool = False,
                 settings: dict[str, str] | None = None) -> None:
        bin_dir = server_binaries()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL server binaries not installed (apt-get install postgresql)")
        self.bin = bin_dir
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="wl-pg-"))
        self.data = self.folder / "data"
        self.sockets = self.folder / "sock"
        self.log = self.folder / "postgres.log"
        self.port = free_port()
        self.settings = {"listen_addresses": "127.0.0.1", "max_connections": "200",
                         "shared_buffers": "128MB", "fsync": "on" if durable else "off",
                         "full_page_writes": "on" if durable else "off",
                         "unix_socket_directories": str(self.sockets), **(settings or {})}
        self._names = itertools.count(1)
        self._as_user = ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []
        self._prepare()

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, SUPERUSER, SUPERUSER)

    def _run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.folder)

    def _prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o755)
        for path in (self.data, self.sockets):
            path.mkdir(exist_ok=True)
            self._own(path)
        self.log.touch()
        self._own(self.log)
        done = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
                         "-E", "UTF8", "--no-sync")
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr[-500:]}")

    @property
    def running(self) -> bool:
        return self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def start(self) -> PgServer:
        options = " ".join(f"-c {key}={value}" for key, value in self.settings.items())
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                         "-t", "60", "-o", f"-p {self.port} {options}", "start")
        if done.returncode:
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr[-300:]}\n"
                               f"{self.log.read_text(errors='replace')[-1500:]}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop it: ``fast`` (roll back sessions, checkpoint) or ``immediate`` (a crash: the next
        start recovers from the WAL)."""
        if self.data.is_dir():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float = 0.0, mode: str = "immediate") -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = SUPERUSER) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = SUPERUSER) -> None:
        """Run one statement as the superuser (autocommit: CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def new_database(self, template: str | None = None, prefix: str = "t") -> str:
        """A new empty database (or a copy of ``template``); its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
