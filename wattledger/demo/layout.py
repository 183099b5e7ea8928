"""The demo's state folder and the ports its processes listen on.

Everything the demo writes lives in one folder (``<state dir>/demo`` unless ``--state-dir``
says otherwise), so that ``--fresh`` can wipe it and nothing else::

    .wattledger-demo          marker: this folder belongs to the demo (``--fresh`` checks it)
    (../.<folder>.lock)       held while a demo runs on the folder
    collector.yaml            the generated collector configuration (holds the tokens)
    ledger.db                 the collector's embedded SQLite ledger
    tokens/<node>.token       each simulated server's bearer token
    spool/<node>/             each agent's delivery spool
    prometheus/               prometheus.yml and its TSDB (when Prometheus runs)
    logs/<process>.log        what each child process printed
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from wattledger.config import ConfigError

MARKER = ".wattledger-demo"

#: fixed defaults, so that bookmarks and a Grafana datasource keep working between runs; a port
#: that is taken is replaced by a free one
COLLECTOR_PORT = 9861
PROMETHEUS_PORT = 9090
AGENT_BASE_PORT = 9871


@dataclass(frozen=True)
class DemoState:
    root: Path

    @property
    def collector_yaml(self) -> Path:
        return self.root / "collector.yaml"

    @property
    def plan_scenario(self) -> Path:
        """A scenario for `wattledger plan` against this demo's ledger (config.plan_scenario)."""
        return self.root / "plan-scenario.yaml"

    @property
    def weather_file(self) -> Path:
        """The site's weather (EPW): a day's swing of outdoor temperature, for its chiller."""
        return self.root / "weather.epw"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.root / 'ledger.db'}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def prometheus_dir(self) -> Path:
        return self.root / "prometheus"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def spool(self, node: str) -> Path:
        return self.root / "spool" / node

    def slurm_jobs(self, node: str) -> Path:
        """The server's Slurm job folder, as the shipped prolog writes it (config.write_slurm_jobs)."""
        return self.root / "slurm" / node

    def token_file(self, node: str) -> Path:
        return self.root / "tokens" / f"{node}.token"

    @property
    def lock_path(self) -> Path:
        # beside the folder, not in it: --fresh wipes the folder while the lock is held
        return self.root.parent / f".{self.root.name}.lock"

    def lock(self) -> IO[str] | None:
        """Hold this folder for one demo: the open lock file, or None when another demo holds it."""
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            f = self.lock_path.open("a+")
        except OSError as exc:
            raise ConfigError(f"cannot lock the state folder {str(self.root)!r}: {exc.strerror}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        return f

    def prepare(self, fresh: bool) -> None:
        """Create the folder (wiping it first with ``fresh``); refuse a folder that is not ours."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise ConfigError(f"--state-dir {str(root)!r} is not a folder")
        ours = (root / MARKER).exists()
        if root.exists() and any(root.iterdir()) and not ours:
            raise ConfigError(f"--state-dir {str(root)!r} holds files that are not the demo's; "
                              "give an empty or new folder")
        if fresh and ours:
            try:
                shutil.rmtree(root)
            except OSError as exc:
                raise ConfigError(f"cannot wipe {str(root)!r}: {exc.strerror}") from None
        try:
            for folder in (root, self.logs, root / "tokens", root / "spool", self.prometheus_dir):
                folder.mkdir(parents=True, exist_ok=True)
            (root / MARKER).touch()
        except OSError as exc:
            raise ConfigError(f"cannot create the state folder {str(root)!r}: {exc.strerror}") from None

    def tokens(self, nodes: Iterable[str]) -> dict[str, str]:
        """Each node's token: kept from an earlier run, else made now (and written 0600)."""
        out: dict[str, str] = {}
        for node in nodes:
            path = self.token_file(node)
            token = path.read_text().strip() if path.exists() else ""
            if not token:
                token = secrets.token_urlsafe(32)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(token + "\n")
            out[node] = token
        return out


@dataclass(frozen=True)
class Ports:
    collector: int
    prometheus: int
    agents: Mapping[str, int]  # node -> its /metrics port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    # SO_REUSEADDR as uvicorn and Prometheus set it, so a port in TIME_WAIT counts as free
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def choose_ports(nodes: Iterable[str], collector: int = COLLECTOR_PORT,
                 prometheus: int = PROMETHEUS_PORT, agent_base: int = AGENT_BASE_PORT) -> Ports:
    """The preferred ports where free, else free ephemeral ones; never the same port twice.

    A preferred port of 0 means "any free port".
    """
    taken: set[int] = set()

    def pick(preferred: int) -> int:
        if preferred and preferred not in taken and port_is_free(preferred):
            port = preferred
        else:
            port = ephemeral_port()
            while port in taken:
                port = ephemeral_port()
        taken.add(port)
        return port

    collector_port = pick(collector)
    prometheus_port = pick(prometheus)
    agents: dict[str, int] = {}
    for i, node in enumerate(nodes):
        agents[node] = pick(agent_base + i if agent_base else 0)
    return Ports(collector_port, prometheus_port, agents)
