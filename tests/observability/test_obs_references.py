"""What the files a user reads point at exists: the commands they name run something real, they
stand alone (no contract document that is not in the repository), and the tests that need the
real Prometheus tools fail, not skip, under CI where the set-up installs those tools."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests import binaries, pgserver

from .support import ROOT

READ_BY_USERS = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md")),
                 *sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file()),
                 *sorted((ROOT / "dashboards").rglob("*.py")),
                 *sorted((ROOT / "dashboards" / "provisioning").rglob("*.yml"))]
MODULE = re.compile(r"python3? -m ([A-Za-z_][A-Za-z0-9_.]*)")
SCRIPT = re.compile(r"python3? ((?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_-]+\.py)\b")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", READ_BY_USERS, ids=_ids(READ_BY_USERS))
def test_the_commands_a_file_names_exist(path: Path) -> None:
    text = path.read_text(errors="replace")
    for module in MODULE.findall(text):
        if module in ("pytest", "venv", "pip"):
            continue
        assert importlib.util.find_spec(module) is not None, f"`python -m {module}`: no such module"
    for script in SCRIPT.findall(text):
        assert (ROOT / script).is_file(), f"`python {script}`: no such file in the repository"


@pytest.mark.parametrize("path", READ_BY_USERS, ids=_ids(READ_BY_USERS))
def test_no_file_sends_the_reader_to_a_document_the_repository_lacks(path: Path) -> None:
    # the design contract lives outside the repository: docs/ has to say what a user needs
    assert "DESIGN.md" not in path.read_text(errors="replace")


def test_a_missing_prometheus_binary_fails_under_ci_and_skips_elsewhere(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    monkeypatch.setenv("CI", "true")
    for name in ("prometheus", "promtool", "alertmanager", "amtool", "victoria-metrics"):
        with pytest.raises(pytest.fail.Exception, match=name):
            binaries.binary(name)
        with pytest.raises(pytest.fail.Exception, match="ensure-system-packages"):
            binaries.find(name)
    # a tool the set-up does not install (docker, systemd-analyze) still skips under CI
    with pytest.raises(pytest.skip.Exception):
        binaries.binary("systemd-analyze")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install prometheus"):
        binaries.binary("promtool")
    assert binaries.find("victoria-metrics") is None


def test_missing_postgresql_server_binaries_fail_under_ci_and_skip_elsewhere(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pgserver, "PG_ROOT", tmp_path)  # no version installed there
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="ensure-system-packages"):
        pgserver.require_server_binaries()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        pgserver.require_server_binaries()
