"""AgentSettings: one frozen value per flag, built and checked in one place, and the agent
built from it runs every source it names (hardware and allocation sources)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.fake_kubelet import FakeKubelet, pod
from agent.test_cli import parse, wait_until
from wattledger.agent import cli
from wattledger.agent.settings import OPTIONS, AgentSettings, settings_from_argv
from wattledger.agent.sources.kubernetes import KubernetesSource
from wattledger.agent.sources.simulated import fake_uuid
from wattledger.agent.sources.slurm import SlurmSource


def test_every_flag_has_a_field() -> None:
    fields = {f.name for f in dataclasses.fields(AgentSettings)}
    flags = {opt.dest for opt in OPTIONS} - {"label"} | {"labels"}
    assert flags <= fields, sorted(flags - fields)


def test_settings_are_frozen_and_the_same_from_argv_or_a_namespace() -> None:
    argv = ["--node", "n1", "--simulate", "2", "--sources", "simulated,slurm", "--workload", "idle,hot"]
    s = settings_from_argv(argv, env={})
    assert s == cli.settings(parse(*argv), {})
    assert s.source_names == ("simulated", "slurm") and s.workload == ("idle", "hot")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.node = "other"  # type: ignore[misc]
    ss = s.source_settings()
    assert (ss.node, ss.simulate, ss.workloads) == ("n1", 2, ("idle", "hot"))


def test_the_agent_runs_its_allocation_sources(tmp_path: Path) -> None:
    """--sources kubernetes,slurm builds both and the sampler asks them: the kubelet's pod
    holding a simulated GPU is an open allocation of the tracker."""
    kubelet = FakeKubelet(tmp_path / "kubelet.sock").start()
    kubelet.pods = [pod("nlp", "train-1", {"main": [("nvidia.com/gpu", [fake_uuid("n1", 0, 0)])]})]
    argv = ["--node", "n1", "--simulate", "1", "--listen", "127.0.0.1:0", "--interval", "0.1",
            "--sources", "simulated,kubernetes,slurm", "--kubelet-socket", str(kubelet.socket),
            "--kubernetes-interval", "0.1", "--slurm-job-dir", str(tmp_path / "jobs")]
    s = settings_from_argv(argv, env={})
    agent = cli.build_agent(s)
    holders = agent.sampler._allocation_sources
    assert [type(h) for h in holders] == [KubernetesSource, SlurmSource]
    agent.start()
    try:
        # the tracker is updated inside a sample, the snapshot at its end: wait for both
        wait_until(lambda: agent.sampler.allocations.open_count == 1
                   and agent.sampler.snapshot.source_up.get("kubernetes") is True)
        up = agent.sampler.snapshot.source_up
    finally:
        agent.stop()
        kubelet.stop()
    assert agent.sampler.allocations.open_count == 1
    assert up == {"simulated": True, "kubernetes": True, "slurm": True}
