"""``wattledger agent`` settings (flags > env > YAML, one-line errors) and the runtime built
from them, in process: exporter only, and delivering to a stub collector."""

from __future__ import annotations

import argparse
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.stub_collector import StubCollector
from wattledger.agent import cli
from wattledger.config import ConfigError, HostPort, OneLineParser


def parse(*argv: str) -> argparse.Namespace:
    parser = OneLineParser(prog="wattledger agent")
    cli.configure(parser)
    return parser.parse_args(list(argv))


def settings(*argv: str, env: dict[str, str] | None = None) -> cli.AgentSettings:
    return cli.settings(parse(*argv), env or {})


def test_defaults() -> None:
    s = settings("--node", "n1")
    assert s.interval == 1.0 and s.listen == HostPort("0.0.0.0", 9860)
    assert s.source_names == ("nvml", "host") and s.collector == () and s.labels == {}
    assert s.batch_seconds == 10.0 and s.spool_max_bytes == 1 << 30
    assert settings("--simulate", "4", "--node", "n1").source_names == ("simulated", "host")


def test_flag_beats_env_beats_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("interval: 5\nnode: from-yaml\nlabel: {site: s1, rack: r12}\nsimulate: 2\n")
    s = settings("--config", str(cfg), "--interval", "2", env={"WATTLEDGER_NODE": "from-env"})
    assert (s.interval, s.node, s.simulate) == (2.0, "from-env", 2)
    assert s.labels == {"site": "s1", "rack": "r12"}
    s = settings(env={"WATTLEDGER_CONFIG": str(cfg), "WATTLEDGER_LABEL": "site=s2,cluster=c1"})
    assert s.node == "from-yaml" and s.labels == {"site": "s2", "cluster": "c1"}


def test_sources_can_be_chosen_and_switched_off() -> None:
    assert settings("--node", "n", "--sources", "nvml").source_names == ("nvml",)
    assert settings("--node", "n", "--disable-source", "host").source_names == ("nvml",)
    s = settings("--node", "n", "--simulate", "2", "--sources", "simulated,nvml,host",
                 "--disable-source", "nvml")
    assert s.source_names == ("simulated", "host")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--interval", "-1"], "--interval"),
        (["--interval", "soon"], "not a number"),
        (["--collector", "not a url"], "not an http"),
        (["--collector", "http://c:9861"], "needs --token-file"),
        (["--listen", "nowhere"], "HOST:PORT"),
        (["--label", "node=x"], "set by the agent"),
        (["--label", "9bad=x"], "not a valid Prometheus label"),
        (["--sources", "nvml,gpu"], "unknown source 'gpu'"),
        (["--sources", "simulated"], "needs --simulate"),
        (["--disable-source", "nvml,host"], "every source is disabled"),
        (["--workload", "mining", "--simulate", "1"], "unknown workload"),
        (["--simulate-model", "b200", "--simulate", "1"], "unknown GPU model"),
        (["--node", "bad name"], "not a valid node name"),
        (["--spool-max-bytes", "lots"], "size in bytes"),
        (["--token-file", "/nonexistent/token"], "no such file"),
        (["--config", "/nonexistent/agent.yaml"], "does not exist"),
    ],
)
def test_bad_values_are_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        settings("--node", "n1", *argv)
    assert "\n" not in str(err.value)


def test_unknown_yaml_key_and_empty_token(tmp_path: Path) -> None:
    cfg = tmp_path / "a.yaml"
    cfg.write_text("intervall: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'intervall'"):
        settings("--config", str(cfg))
    token = tmp_path / "token"
    token.write_text("\n")
    with pytest.raises(ConfigError, match="must hold one token"):
        settings("--node", "n", "--collector", "http://c:1", "--token-file", str(token))


def test_byte_sizes() -> None:
    assert cli.byte_size("1GiB") == 1 << 30 and cli.byte_size("512M") == 512 << 20
    assert cli.byte_size(4096) == 4096
    with pytest.raises(ValueError):
        cli.byte_size("0")


@pytest.fixture
def collector() -> Iterator[StubCollector]:
    stub = StubCollector("tok-1")
    yield stub
    stub.close()


def scrape(agent: cli.Agent) -> str:
    port = agent._server.server_port  # type: ignore[union-attr]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():  # type: ignore[operator]
        time.sleep(0.05)


def test_exporter_only_agent_serves_and_creates_no_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    s = cli.settings(parse("--simulate", "2", "--node", "n1", "--listen", "127.0.0.1:0", "--interval", "0.1",
                           "--spool", str(spool), "--sources", "simulated"), {})
    agent = cli.build_agent(s)
    agent.start()
    try:
        wait_until(lambda: agent.sampler.snapshot.samples_total >= 3)
        text = scrape(agent)
    finally:
        summary = agent.stop()
    assert text.count("wattledger_gpu_power_watts{") == 2
    assert 'wattledger_agent_spool_batches{node="n1"} 0.0' in text
    assert summary.readings >= 6 and (summary.shipped, summary.spooled) == (0, 0)
    assert str(summary).startswith("stopped: readings=")
    assert not spool.exists()


def test_agent_delivers_and_says_so_at_stop(tmp_path: Path, collector: StubCollector) -> None:
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    s = cli.settings(parse("--simulate", "2", "--node", "n1", "--listen", "127.0.0.1:0", "--interval", "0.1",
                           "--sources", "simulated", "--collector", collector.url, "--token-file", str(token),
                           "--spool", str(tmp_path / "spool"), "--batch-seconds", "0.3",
                           "--label", "site=s1"), {})
    agent = cli.build_agent(s)
    agent.start()
    try:
        wait_until(lambda: collector.readings >= 8)
        text = scrape(agent)
    finally:
        summary = agent.stop()
    assert collector.readings >= 8 and collector.seqs == sorted(collector.seqs)
    assert "wattledger_agent_shipped_batches_total" in text
    # every reading taken was either acknowledged or is still in the spool for the next start
    assert summary.readings == summary.shipped + summary.spooled
    assert summary.shipped == collector.readings
