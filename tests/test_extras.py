"""What ``pip install wattledger`` gives a GPU node: the agent and its sources, without the
collector's web stack; every other sub-command says in one line which extra it needs (exit 2,
no traceback). Fast: sub-commands run with the collector's libraries hidden. Slow: a wheel
built from the tree, installed without extras in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[1]
#: distributions of the [collector] extra a GPU node must not get
COLLECTOR_ONLY = ("fastapi", "uvicorn", "pydantic", "numpy", "httpx", "matplotlib", "rich")
NEEDS = "needs 'pip install wattledger[collector]'"
#: a Python that cannot import the collector's libraries, as one without the extra
HIDDEN = ("import sys\nfor name in ('pydantic', 'pydantic_core', 'fastapi', 'uvicorn', 'numpy', 'httpx', "
          "'rich', 'matplotlib', 'iso4217', 'ladybug', 'fastapi_offline'):\n    sys.modules[name] = None\n"
          "from wattledger.cli import main\nsys.exit(main(sys.argv[1:]))\n")


def without_collector_libraries(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", HIDDEN, *argv], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


@pytest.mark.parametrize("argv", [["collector", "--help"], ["collector", "--db", "sqlite:///x.db"],
                                  ["spend", "--collector", "http://127.0.0.1:9"],
                                  ["demo", "--no-prometheus", "--state-dir", "/nonexistent/demo"]],
                         ids=lambda argv: " ".join(argv[:2]))
def test_a_sub_command_without_its_extra_says_so_in_one_line(argv: list[str]) -> None:
    done = without_collector_libraries(*argv)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"wattledger {argv[0]}: {NEEDS} (")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_command_list_names_the_extra_and_the_agent_still_parses() -> None:
    done = without_collector_libraries("--help")
    assert done.returncode == 0
    assert re.search(r"collector\s+\(needs 'pip install wattledger\[collector\]'\)", done.stdout), done.stdout
    assert "sample GPUs and host power" in done.stdout  # the agent's own line
    done = without_collector_libraries("agent", "--help")
    assert done.returncode == 0 and "--simulate N" in done.stdout


def run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv[:3]}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_wheel_without_extras_runs_the_agent_and_nothing_else(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: building never writes into the shared tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "wattledger", src / "wattledger", ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("wattledger-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)])
    listed = run([str(venv / "bin/pip"), "list", "--format=json"]).stdout
    installed = {d["name"].lower().replace("_", "-") for d in json.loads(listed)}
    assert not installed & set(COLLECTOR_ONLY), sorted(installed & set(COLLECTOR_ONLY))
    assert {"prometheus-client", "orjson", "grpcio"} <= installed

    wattledger = str(venv / "bin/wattledger")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
    for command in ("collector", "plan", "spend", "demo"):
        done = subprocess.run([wattledger, command, "--help"], capture_output=True, text=True, timeout=120,
                              env=env)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.startswith(f"wattledger {command}: {NEEDS} (") and done.stderr.count("\n") == 1

    port = free_port()
    log = tmp_path / "agent.log"
    with log.open("wb") as out:  # exporter only: ships to nothing, writes no spool
        agent = subprocess.Popen([wattledger, "agent", "--simulate", "1", "--node", "n1", "--listen",
                                  f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                 cwd=tmp_path)
    try:
        end, text = time.monotonic() + 60, ""
        while "wattledger_gpu_power_watts{" not in text:
            assert agent.poll() is None and time.monotonic() < end, log.read_text()[-2000:]
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                time.sleep(0.2)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    assert "stopped: readings=" in log.read_text() and "Traceback" not in log.read_text()
    assert 'wattledger_agent_source_up{node="n1",source="simulated"} 1.0' in text
