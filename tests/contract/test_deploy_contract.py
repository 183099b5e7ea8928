"""Every `wattledger` command line and environment file shipped in deploy/ is one the real
command line accepts: a renamed flag or a mistyped WATTLEDGER_<FLAG> in a unit, a DaemonSet or
a compose file would only show on an operator's fleet otherwise."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.kustomize import OVERLAYS, find_kustomize, render
from wattledger import cli
from wattledger.agent import cli as agent_cli
from wattledger.collector import settings as collector_settings
from wattledger.config import Option, existing_file

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OPTIONS: dict[str, list[Option]] = {"agent": list(agent_cli.OPTIONS),
                                    "collector": list(collector_settings.OPTIONS)}
#: read by every sub-command besides its own flags
COMMON_ENV = {"WATTLEDGER_CONFIG", "WATTLEDGER_LOG_LEVEL", "WATTLEDGER_STATE_DIR"}


def substituted(arg: str) -> str:
    """Kubernetes $(VAR) and compose ${VAR:-default} / ${VAR:?message} with plausible values."""
    arg = re.sub(r"\$\((\w+)\)", "gpu-node-01", arg)
    arg = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg)
    return re.sub(r"\$\{(\w+)(:\?[^}]*)?\}", lambda m: "http://collector:9861"
                  if "COLLECTOR" in m.group(1) else "gpu-node-01", arg)


def kubernetes_commands() -> Iterator[tuple[str, list[str]]]:
    """Every overlay as kustomize renders it (none where no kustomize is installed: the
    observability tests say so)."""
    if find_kustomize() is None:
        return
    for overlay in OVERLAYS:
        for doc in render(overlay):
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
                command = container.get("command", ["wattledger"])
                # the image's other programs (an init container's `install`) are not ours
                if "wattledger" in container.get("image", "") and command[0] == "wattledger":
                    yield f"{overlay}:{container['name']}", [*command[1:], *container.get("args", [])]


def compose_commands() -> Iterator[tuple[str, list[str]]]:
    for path in sorted((DEPLOY / "compose").glob("*.yml")):
        for name, service in yaml.safe_load(path.read_text()).get("services", {}).items():
            if "wattledger" in str(service.get("image", "")) and service.get("command"):
                command = service["command"]
                yield f"{path.name}:{name}", shlex.split(command) if isinstance(command, str) else command


def systemd_commands() -> Iterator[tuple[str, list[str]]]:
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in path.read_text().splitlines():
            if line.startswith("ExecStart="):
                yield path.name, shlex.split(line.removeprefix("ExecStart="))[1:]


COMMANDS = [*kubernetes_commands(), *compose_commands(), *systemd_commands()]


def check_values(command: str, given: dict[str, Any]) -> None:
    """Each value converts as the real option does (files that exist only on a server aside)."""
    for opt in OPTIONS[command]:
        if opt.dest in given and opt.convert is not existing_file:
            values = given[opt.dest] if opt.multiple else [given[opt.dest]]
            for raw in values:
                opt.convert(raw)


def test_deploy_ships_commands_for_agent_and_collector() -> None:
    commands = {argv[0] for _, argv in COMMANDS}
    assert commands == {"agent", "collector"}
    assert len(COMMANDS) >= 5, [where for where, _ in COMMANDS]


def postgres_store_missing() -> bool:
    try:
        collector_settings.db_url("postgresql://wattledger@db:5432/wattledger")
    except ValueError:
        return True
    return False


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_shipped_command_line_parses(where: str, argv: list[str]) -> None:
    if any(a.startswith("--db=postgresql://") for a in argv) and postgres_store_missing():
        pytest.skip("this tree's collector has no PostgreSQL store yet (issue 11)")
    args = cli.build_parser().parse_args([substituted(arg) for arg in argv])  # SystemExit(2) if not
    check_values(args.command, vars(args))


ENV_FILES = sorted((DEPLOY / "systemd").glob("*.env"))


@pytest.mark.parametrize("path", ENV_FILES, ids=[p.name for p in ENV_FILES])
def test_every_variable_of_the_environment_files_is_read(path: Path) -> None:
    command = path.stem  # agent.env, collector.env
    known = {opt.env: opt for opt in OPTIONS[command]}
    found = 0
    for line in path.read_text().splitlines():
        match = re.match(r"^#?\s*(WATTLEDGER_\w+)=(\S*)", line)
        if not match:
            continue
        found += 1
        name, raw = match.groups()
        assert name in known or name in COMMON_ENV, f"{path.name}: {name} is read by no flag of {command}"
        if name in known and known[name].convert is not existing_file:
            opt = known[name]
            for item in raw.split(",") if opt.multiple else [raw]:
                opt.convert(item)
    assert found, f"{path.name} sets nothing"
