"""The allocation sources' flags: resolved like every agent flag, handed to the sources the
registry builds by name, a bad value one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.test_cli import parse, settings
from wattledger.agent import cli
from wattledger.agent.sources import SourceSettings, build_allocation_sources, build_sources
from wattledger.agent.sources.kubernetes import KubernetesSource
from wattledger.agent.sources.processes import ProcessesSource
from wattledger.agent.sources.slurm import SlurmSource
from wattledger.config import ConfigError


def test_flags_reach_the_sources(tmp_path: Path) -> None:
    s = settings("--node", "n1", "--sources", "nvml,kubernetes,slurm,processes",
                 "--kubelet-socket", str(tmp_path / "kubelet.sock"), "--kubernetes-interval", "2",
                 "--slurm-job-dir", str(tmp_path / "jobs"), "--proc-root", str(tmp_path / "proc"))
    ss = s.source_settings()
    kube, slurm, procs = build_allocation_sources(s.source_names, ss)
    assert isinstance(kube, KubernetesSource) and kube.settings.socket == tmp_path / "kubelet.sock"
    assert kube.settings.interval == 2.0 and kube.settings.team_label is None
    assert isinstance(slurm, SlurmSource) and slurm.settings.job_dir == tmp_path / "jobs"
    assert isinstance(procs, ProcessesSource) and procs.settings.proc_root == tmp_path / "proc"
    assert [x.name for x in build_sources(s.source_names, ss)] == ["nvml"]


def test_defaults_are_the_documented_paths() -> None:
    s = settings("--node", "n1")
    assert s.kubelet_socket == Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    assert s.slurm_job_dir == Path("/run/wattledger/slurm-jobs") and s.proc_root == Path("/proc")


def test_team_label_outside_a_pod_leaves_teams_out(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    ss = SourceSettings(node="n1", kubernetes_team_label="team")
    (kube,) = build_allocation_sources(["kubernetes"], ss)
    assert isinstance(kube, KubernetesSource) and kube.settings.team_label == "team"
    assert "holdings carry no team" in caplog.text


@pytest.mark.parametrize("label", ["Team Name", "team-", "a" * 64, "bad_prefix!/team"])
def test_a_bad_label_key_is_one_line(label: str) -> None:
    with pytest.raises(ConfigError, match=r"kubernetes-team-label.*not a Kubernetes label key"):
        cli.settings(parse("--node", "n1", "--kubernetes-team-label", label), {})


def test_slurmrestd_flags_reach_the_slurm_source(tmp_path: Path) -> None:
    jwt, ca = tmp_path / "slurm.jwt", tmp_path / "ca.pem"
    jwt.write_text("eyJ.token\n")
    ca.write_text("")
    s = settings("--node", "n1", "--sources", "nvml,slurm", "--slurmrestd-url", "https://slurmctl:6820/",
                 "--slurmrestd-token-file", str(jwt), "--slurmrestd-ca-file", str(ca),
                 "--slurmrestd-user", "wattledger", "--slurmrestd-version", "v0.0.42",
                 "--slurmrestd-interval", "15", "--slurmrestd-timeout", "4", "--slurmrestd-max-bytes", "8MiB")
    (slurm,) = build_allocation_sources(s.source_names, s.source_settings())
    assert isinstance(slurm, SlurmSource) and slurm.rest is not None
    rest = slurm.settings.rest
    assert rest is not None
    assert (rest.url, rest.token_file, rest.ca_file) == ("https://slurmctl:6820", jwt, ca)
    assert (rest.node, rest.user, rest.version, rest.interval, rest.timeout, rest.max_bytes) == (
        "n1", "wattledger", "v0.0.42", 15.0, 4.0, 8 << 20)
    assert slurm.rest.path == "/slurm/v0.0.42/jobs/"
    named = settings("--node", "n1", "--slurmrestd-url", "http://c:6820", "--slurmrestd-token-file", str(jwt),
                     "--slurmrestd-node", "gpu-node-01")
    assert named.slurmrestd is not None and named.slurmrestd.node == "gpu-node-01"
    assert named.slurmrestd.version == "v0.0.44" and named.slurmrestd.ca_file is None
    assert named.slurmrestd.max_bytes == 16 << 20
    assert settings("--node", "n1").slurmrestd is None  # the prolog's folder, as before


def test_slurmrestd_without_its_token_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--slurmrestd-url needs --slurmrestd-token-file"):
        settings("--node", "n1", "--sources", "nvml,slurm", "--slurmrestd-url", "https://slurmctl:6820")
    with pytest.raises(ConfigError, match=r"slurmrestd-version.*'v0\.0\.39' is not a slurmrestd API version"):
        settings("--node", "n1", "--slurmrestd-version", "v0.0.39")
    with pytest.raises(ConfigError, match=r"slurmrestd-token-file.*no such file"):
        settings("--node", "n1", "--slurmrestd-token-file", str(tmp_path / "missing"))
