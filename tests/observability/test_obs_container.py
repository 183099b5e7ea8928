"""The container image (deploy/container/Dockerfile), as far as a machine without a Docker engine
or a reachable base image can check it.

Read with Docker's own parser (the `dockerfile` package wraps BuildKit's): two stages, a pinned
Python base, a non-root numeric USER that the collector's manifests run as, the ENTRYPOINT the
package installs, OCI labels, every COPY source present in the build context as .dockerignore
leaves it (docker-py's reading of the patterns), the tag the manifests name.

Then the build stage's own RUN line, executed as written on the files its COPY lines bring (the
image's paths mapped into a temporary folder; a Python of the base image's minor version where
one is installed): wheel, fresh venv, install with the default extras (both roles) and with none
(the agent-only image). From those venvs the image's ENTRYPOINT runs the commands the manifests
give: the collector on the overlay's own configuration answering /healthz and /readyz, the
agent (simulated GPU) pushing to it. Not run here: `docker build` itself, the base image, the
runtime stage's useradd/USER, and the NVIDIA runtime's driver mounts.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .kustomize import OVERLAYS, find_kustomize, render
from .support import ROOT, Processes, eventually, free_port

DOCKERFILE = ROOT / "deploy" / "container" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
IMAGE = f"ghcr.io/wattledger/wattledger:{PROJECT['version']}"


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    commands: list[Any]  # dockerfile.Command

    def all(self, cmd: str) -> list[Any]:
        return [c for c in self.commands if c.cmd == cmd]


def parsed() -> tuple[dict[str, str], list[Stage]]:
    """The global ARGs' defaults and the stages, from BuildKit's parser."""
    dockerfile = pytest.importorskip("dockerfile")
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for c in dockerfile.parse_file(str(DOCKERFILE)):
        if c.cmd == "FROM":
            name = c.value[2] if len(c.value) == 3 and c.value[1].upper() == "AS" else None
            stages.append(Stage(c.value[0], name, []))
        elif stages:
            stages[-1].commands.append(c)
        elif c.cmd == "ARG":
            key, _, default = c.value[0].partition("=")
            args[key] = default
    return args, stages


def stage_args(stage: Stage) -> dict[str, str]:
    out = {}
    for c in stage.all("ARG"):
        key, _, default = c.value[0].partition("=")
        out[key] = default
    return out


def context_files() -> set[str]:
    """What `docker build .` sends, after .dockerignore (docker-py implements its matching)."""
    build = pytest.importorskip("docker.utils.build")
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    return set(build.exclude_paths(str(ROOT), patterns, dockerfile="deploy/container/Dockerfile"))


# ---------------------------------------------------------------------------- the file

def test_two_stages_on_one_pinned_python() -> None:
    args, stages = parsed()
    assert [s.name for s in stages] == ["build", None]
    assert {s.base for s in stages} == {"${PYTHON_IMAGE}"}
    pinned = r"python:(\d+)\.(\d+)\.(\d+)-slim-(\w+)(@sha256:[0-9a-f]{64})?"
    match = re.fullmatch(pinned, args["PYTHON_IMAGE"])
    assert match, f"{args['PYTHON_IMAGE']}: pin a full Python version and Debian release"
    minimum = tuple(int(x) for x in PROJECT["requires-python"].removeprefix(">=").split("."))
    assert (int(match[1]), int(match[2])) >= minimum


def test_the_runtime_stage_is_non_root_and_runs_the_package_entry_point() -> None:
    _, (_, runtime) = parsed()
    (user,) = runtime.all("USER")
    uid, _, gid = user.value[0].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can check it
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert entrypoint.json and list(entrypoint.value) == list(PROJECT["scripts"])  # ["wattledger"]
    assert not runtime.all("HEALTHCHECK") and "No HEALTHCHECK:" in DOCKERFILE.read_text()
    copies = runtime.all("COPY")
    assert copies and all(c.flags == ("--from=build",) for c in copies)  # no sources in the image
    (env_command,) = runtime.all("ENV")
    env = dict(zip(env_command.value[0::2], env_command.value[1::2], strict=True))
    assert env["PATH"].startswith("/opt/wattledger/bin:")
    # the collector's pods run as the image's user (the agent's as root: see the Dockerfile)
    if find_kustomize() is not None:
        for overlay in OVERLAYS:
            dep = next(o for o in render(overlay) if o["kind"] == "Deployment")
            context = dep["spec"]["template"]["spec"]["securityContext"]
            assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))


def test_oci_labels() -> None:
    _, (_, runtime) = parsed()
    (label,) = runtime.all("LABEL")
    # BuildKit's parser keeps the quotes of LABEL values
    labels = {k: v.strip('"') for k, v in zip(label.value[0::2], label.value[1::2], strict=True)}
    args = stage_args(runtime)
    assert labels["org.opencontainers.image.title"] == PROJECT["name"]
    assert labels["org.opencontainers.image.licenses"] == PROJECT["license"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert args["VERSION"] == PROJECT["version"]
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_every_copy_source_is_in_the_build_context() -> None:
    _, stages = parsed()
    sent = context_files()
    names = set()
    for stage in stages:
        for c in stage.all("COPY"):
            source_stage = next((f.split("=", 1)[1] for f in c.flags if f.startswith("--from=")), None)
            if source_stage is not None:
                assert source_stage in names, f"COPY --from={source_stage}: no such earlier stage"
                continue
            for src in c.value[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
                assert src in sent, f"COPY {src}: .dockerignore keeps it out of the context"
        if stage.name:
            names.add(stage.name)
    # and the context is small: no venv, no git, no tests, no bytecode
    assert not {p for p in sent if p.split("/")[0] in {".venv", ".git", "tests", "docs", "bench"}}
    assert not [p for p in sent if "__pycache__" in p or p.endswith(".pyc")]
    assert sum(1 for p in sent if p.endswith(".py")) > 50


def test_the_manifests_and_the_docs_name_the_image_this_builds() -> None:
    header = DOCKERFILE.read_text()
    assert f"-t {IMAGE}" in header and f"docker push {IMAGE}" in header
    found = set()
    if find_kustomize() is not None:
        for overlay in OVERLAYS:
            for obj in render(overlay):
                pod = obj.get("spec", {}).get("template", {}).get("spec", {})
                found |= {c["image"] for c in [*pod.get("initContainers", []), *pod.get("containers", [])]}
    for path in sorted((ROOT / "deploy" / "compose").glob("*.yml")):
        services = yaml.safe_load(path.read_text()).get("services", {})
        found |= {str(s["image"]) for s in services.values() if "wattledger" in str(s.get("image", ""))}
    assert found == {IMAGE}
    assert f"-t {IMAGE}" in (ROOT / "docs" / "observability.md").read_text()


# ---------------------------------------------------------------------------- its install steps

def image_python(minor: str) -> str:
    """An interpreter of the base image's Python minor version if one is installed, else this one."""
    candidates = [shutil.which(f"python{minor}"), *sorted(glob.glob(os.path.expanduser(
        f"~/.pyenv/versions/{minor}.*/bin/python{minor}")))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return candidate
    return sys.executable


def build_stage(tmp: Path, extras: str) -> Path:
    """The build stage's COPY and RUN as written, the image's paths under ``tmp``; the venv."""
    args, stages = parsed()
    build = stages[0]
    minor = re.match(r"python:(\d+\.\d+)", args["PYTHON_IMAGE"])
    assert minor
    python = image_python(minor[1])
    src = tmp / "src"
    sent = context_files()
    for c in build.all("COPY"):
        *sources, target = c.value
        for source in sources:
            dest = src / target / Path(source).name if target.endswith("/") else src / target
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, dest, ignore=lambda d, names: [
                    n for n in names if os.path.relpath(Path(d) / n, ROOT) not in sent])
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, dest)
    (run,) = build.all("RUN")
    script = run.value[0].replace("/opt/wattledger", str(tmp / "opt" / "wattledger"))
    script = script.replace("/wheels", str(tmp / "wheels"))
    script = re.sub(r"(^|&& )python -m", lambda m: f"{m[1]}{python} -m", script)
    env = {**os.environ, "EXTRAS": extras}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(["/bin/sh", "-c", script], cwd=src, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert f"wattledger {PROJECT['version']}" in done.stdout  # the RUN line's last step
    return tmp / "opt" / "wattledger"


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, stages = parsed()
    return build_stage(tmp_path_factory.mktemp("image"), stage_args(stages[0])["EXTRAS"])


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def manifest_collector_config() -> dict[str, Any]:
    """The collector.yaml the Kubernetes overlays ship (the same file as deploy/config's, no db)."""
    if find_kustomize() is not None:
        cm = next(o for o in render("sqlite") if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"] == "wattledger-collector")
        return dict(yaml.safe_load(cm["data"]["collector.yaml"]))
    raw = dict(yaml.safe_load((ROOT / "deploy" / "config" / "collector.yaml").read_text()))
    raw.pop("db", None)
    return raw


@pytest.mark.integration
@pytest.mark.timeout(900)  # a machine with no pip cache downloads every dependency
def test_the_image_venv_serves_both_roles(image_venv: Path, procs: Processes, tmp_path: Path) -> None:
    entrypoint = str(image_venv / "bin" / "wattledger")
    # the collector's libraries (the [collector] and [postgres] extras) are in the image
    done = subprocess.run([str(image_venv / "bin" / "python"), "-c", "import fastapi, uvicorn, psycopg"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    token = "image-test-token-0123456789abcdef"
    hashed = subprocess.run([entrypoint, "collector", "--hash-token", "gpu-node-01"], input=token + "\n",
                            capture_output=True, text=True, timeout=120)
    assert hashed.returncode == 0, hashed.stderr
    (tmp_path / "tokens").write_text(hashed.stdout)
    (tmp_path / "agent.token").write_text(token + "\n")
    cport = free_port()
    config = {**manifest_collector_config(), "listen": f"127.0.0.1:{cport}"}
    (tmp_path / "collector.yaml").write_text(yaml.safe_dump(config))
    collector = f"http://127.0.0.1:{cport}"
    # the manifest's arguments, with this machine's paths
    procs.start("collector", [entrypoint, "collector", f"--config={tmp_path / 'collector.yaml'}",
                              f"--tokens-file={tmp_path / 'tokens'}",
                              f"--db=sqlite:///{tmp_path / 'ledger.db'}"])
    procs.wait_http("collector", f"{collector}/healthz", timeout=120)
    assert httpx.get(f"{collector}/healthz", timeout=10).status_code == 200
    eventually(lambda: httpx.get(f"{collector}/readyz", timeout=10).status_code == 200, 60, "collector ready")
    aport = free_port()
    procs.start("agent", [entrypoint, "agent", "--simulate", "1", "--node=gpu-node-01",
                          f"--listen=127.0.0.1:{aport}", f"--collector={collector}",
                          f"--token-file={tmp_path / 'agent.token'}", f"--spool={tmp_path / 'spool'}",
                          "--label=site=dc1", "--batch-seconds", "1"])
    procs.wait_http("agent", f"http://127.0.0.1:{aport}/metrics", timeout=120)
    assert "wattledger_gpu_power_watts{" in httpx.get(f"http://127.0.0.1:{aport}/metrics", timeout=10).text

    def booked() -> bool:
        text = httpx.get(f"{collector}/metrics", timeout=10).text
        return any(line.startswith("wattledger_node_last_seen_timestamp_seconds{")
                   and 'node="gpu-node-01"' in line for line in text.splitlines())
    eventually(booked, 120, "the collector books the agent's batches")


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_agent_only_image_runs_the_agent(procs: Processes, tmp_path: Path) -> None:
    venv = build_stage(tmp_path / "image", "")
    if "collector" in PROJECT.get("optional-dependencies", {}):
        # once the collector's libraries are an extra, the agent-only image is without them
        probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import fastapi"], capture_output=True,
                               text=True, timeout=60)
        assert probe.returncode != 0, "EXTRAS= still installs the collector's web stack"
    port = free_port()
    procs.start("agent", [str(venv / "bin" / "wattledger"), "agent", "--simulate", "1", "--node=gpu-node-01",
                          f"--listen=127.0.0.1:{port}", f"--spool={tmp_path / 'spool'}"])
    procs.wait_http("agent", f"http://127.0.0.1:{port}/metrics", timeout=120)
    assert "wattledger_gpu_power_watts{" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
