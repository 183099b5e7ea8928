"""deploy/compose/replicas.compose.yml: PostgreSQL and two collector replicas that hang together
(checked by `docker compose config` too where the compose plugin exists)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from wattledger.collector.settings import settings_from
from wattledger.config import load_yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
FILE = COMPOSE / "replicas.compose.yml"


def test_two_replicas_on_one_database() -> None:
    compose = yaml.safe_load(FILE.read_text())
    services = compose["services"]
    replicas = {name: svc for name, svc in services.items() if svc.get("command", [None])[0] == "collector"}
    assert len(replicas) == 2 and "postgres" in services
    dbs = {svc["environment"]["WATTLEDGER_DB"] for svc in replicas.values()}
    (db,) = dbs  # one database for both
    assert db.startswith("postgresql://wattledger@postgres:5432/ledger")
    assert "passfile=/run/secrets/pgpass" in db and ":" not in db.split("@")[0].split("//")[1]
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "ledger"
    names = [next(a.split("=", 1)[1] for a in svc["command"] if a.startswith("--replica="))
             for svc in replicas.values()]
    assert len(set(names)) == 2  # each its own replica label
    ports = [svc["ports"][0].split(":")[0] for svc in replicas.values()]
    assert len(set(ports)) == 2
    for svc in replicas.values():
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        for volume in svc["volumes"]:
            source = volume.split(":", 1)[0]
            if source != "./tokens":  # made by the operator from tokens.example
                assert (COMPOSE / source).resolve().exists(), source
    for secret in compose["secrets"].values():  # made from their .example, never committed
        assert (COMPOSE / f"{secret['file']}.example").exists()
    # the configuration the replicas get is one the collector takes, with that database
    settings = settings_from({**load_yaml(ROOT / "deploy" / "config" / "collector.yaml"), "db": db})
    assert settings.db == db


def test_docker_compose_config(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker client has no compose plugin here")
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE, work)
    for example in ("tokens", "pgpass", "pg_password"):
        shutil.copy(work / f"{example}.example", work / example)
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "deploy" / "config" / "collector.yaml", tmp_path / "config" / "collector.yaml")
    done = subprocess.run([docker, "compose", "-f", FILE.name, "config", "--quiet"], capture_output=True,
                          text=True, cwd=work, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
