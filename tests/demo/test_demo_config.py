"""The demo's generated configuration is what the collector, the agent and Prometheus accept."""

from __future__ import annotations

import argparse
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from demokit import NOW, collector_settings

from tests.binaries import binary
from wattledger.agent import cli as agent_cli
from wattledger.config import ConfigError, load_yaml
from wattledger.demo import config as democonfig
from wattledger.demo.layout import MARKER, DemoState, Ports, choose_ports
from wattledger.demo.scenario import Scenario


def test_collector_yaml_loads_with_the_collectors_settings_loader(
        scenario: Scenario, state: DemoState, ports: Ports) -> None:
    settings = collector_settings(scenario, state, ports)
    assert str(settings.listen) == f"127.0.0.1:{ports.collector}"
    assert settings.db == state.db_url
    assert set(settings.tokens) == {s.node for s in scenario.servers}
    site = settings.sites["dc-east"]
    assert site.timezone == "America/New_York" and site.currency == "USD"
    assert site.demand_charge_per_kw > 0 and site.carbon_g_per_kwh > 0
    # the time-of-use tariff: weekday day band, off-peak otherwise (site local time)
    friday_noon = (4 * 1440 + 12 * 60)
    sunday_noon = (6 * 1440 + 12 * 60)
    friday_night = (4 * 1440 + 22 * 60)
    assert site.week_prices[friday_noon] == pytest.approx(0.21)
    assert site.week_prices[sunday_noon] == pytest.approx(0.09)
    assert site.week_prices[friday_night] == pytest.approx(0.09)
    # a plan for this month and the next, the site's and each team's
    site_plan = [p for p in settings.plan if p.team is None]
    assert [(p.site, p.month) for p in site_plan] == [("dc-east", "2026-11"), ("dc-east", "2026-12")]
    assert all(p.cost == scenario.site.plan_cost for p in site_plan)
    teams = {(p.team, p.month): p.cost for p in settings.plan if p.team is not None}
    assert teams == {(t.name, m): t.plan_cost for t in scenario.teams for m in ("2026-11", "2026-12")}
    assert len(scenario.teams) == 2 and sum(t.plan_cost for t in scenario.teams) < scenario.site.plan_cost
    # the teams' jobs by Slurm account, and every team with a job on some server
    assert settings.teams == {t.name: [{"account": t.account}] for t in scenario.teams}
    assert {s.job.account for s in scenario.servers if s.job} == {t.account for t in scenario.teams}


def test_the_yaml_holding_tokens_is_private(scenario: Scenario, state: DemoState, ports: Ports) -> None:
    collector_settings(scenario, state, ports)
    assert stat.S_IMODE(state.collector_yaml.stat().st_mode) == 0o600
    for server in scenario.servers:
        assert stat.S_IMODE(state.token_file(server.node).stat().st_mode) == 0o600


def test_agent_command_lines_are_accepted_by_the_agent(
        scenario: Scenario, state: DemoState, ports: Ports) -> None:
    tokens = state.tokens(s.node for s in scenario.servers)
    for server in scenario.servers:
        argv = democonfig.agent_args(scenario, server, state, ports)
        assert argv[0] == "agent"
        parser = argparse.ArgumentParser()
        agent_cli.configure(parser)
        s = agent_cli.settings(parser.parse_args(argv[1:]), env={})
        assert s.node == server.node
        assert s.simulate == server.gpus and s.workload == (server.workload,)
        assert s.seed == server.seed
        assert s.labels == {"site": "dc-east", "cluster": server.cluster}
        assert s.token == tokens[server.node]
        assert s.collector == (democonfig.collector_url(ports),)
        # this machine's own CPU power is no server's; a server with a job reads its prolog files
        assert s.source_names == (("simulated", "slurm") if server.job else ("simulated",))
        if server.job is not None:
            assert s.slurm_job_dir == state.slurm_jobs(server.node)
        assert str(s.listen) == f"127.0.0.1:{ports.agents[server.node]}"


def test_prometheus_config_scrapes_collector_and_agents_with_the_project_rules(
        scenario: Scenario, ports: Ports, tmp_path: Path) -> None:
    rules = democonfig.rules_files()
    assert rules, "deploy/prometheus has rule files"
    assert all("tests" not in p.parts[-2:] for p in rules)
    cfg = democonfig.prometheus_config(scenario, ports, rules)
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in cfg["scrape_configs"]}
    assert jobs[democonfig.COLLECTOR_JOB] == [f"127.0.0.1:{ports.collector}"]
    assert sorted(jobs[democonfig.AGENT_JOB]) == sorted(f"127.0.0.1:{p}" for p in ports.agents.values())
    promtool = binary("promtool")
    path = tmp_path / "prometheus.yml"
    democonfig.write_yaml(path, cfg)
    done = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_plan_months_roll_over_the_year(scenario: Scenario) -> None:
    december = NOW + 20 * 86400
    assert democonfig.plan_months(scenario, december) == ["2026-12", "2027-01"]


def test_state_folder_refuses_a_folder_that_is_not_the_demos(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not the demo's"):
        DemoState(tmp_path).prepare(fresh=True)
    assert (tmp_path / "precious.txt").exists()


def test_fresh_wipes_only_the_demos_own_folder(tmp_path: Path) -> None:
    state = DemoState(tmp_path / "demo")
    state.prepare(fresh=False)
    token = state.tokens(["n1"])["n1"]
    (state.root / "ledger.db").write_text("old")
    DemoState(state.root).prepare(fresh=False)
    assert (state.root / "ledger.db").exists() and state.tokens(["n1"])["n1"] == token
    DemoState(state.root).prepare(fresh=True)
    assert not (state.root / "ledger.db").exists() and (state.root / MARKER).exists()
    assert state.tokens(["n1"])["n1"] != token


def test_taken_ports_are_replaced_by_free_ones() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = choose_ports(["a", "b"], collector=taken, prometheus=0, agent_base=taken)
    chosen = [ports.collector, ports.prometheus, *ports.agents.values()]
    assert taken not in chosen
    assert len(set(chosen)) == len(chosen)


def test_loaded_yaml_round_trips(scenario: Scenario, state: DemoState, ports: Ports) -> None:
    collector_settings(scenario, state, ports)
    data = load_yaml(state.collector_yaml)
    assert data["sites"]["dc-east"]["tariff"][0] == {
        "price_per_kwh": 0.21, "days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "20:00"}


def test_one_demo_per_state_folder(tmp_path: Path) -> None:
    state = DemoState(tmp_path / "demo")
    held = state.lock()
    assert held is not None
    try:
        assert DemoState(tmp_path / "demo").lock() is None
        assert not state.root.exists()  # the lock lives beside the folder, which --fresh may wipe
    finally:
        held.close()
    again = state.lock()
    assert again is not None
    again.close()


def demo_settings(state_dir: Path, given: bool) -> dict[str, object]:
    return {"state_dir": state_dir, "state_dir_given": given, "plain": True, "refresh": None,
            "fresh": False}


def test_a_busy_default_folder_moves_the_second_demo_next_door(tmp_path: Path) -> None:
    from wattledger.demo.runner import Demo

    first = DemoState(tmp_path / "demo").lock()
    try:
        second = Demo(demo_settings(tmp_path / "demo", given=False))
        second._lock_state()
        assert second.state.root == tmp_path / "demo-2"
        third = Demo(demo_settings(tmp_path / "demo", given=True))
        with pytest.raises(ConfigError, match="another wattledger demo is running"):
            third._lock_state()
    finally:
        assert first is not None
        first.close()
