"""What the demo hands its child processes: the collector's YAML, each agent's command line,
Prometheus' configuration. Plain data made from the :class:`Scenario`; nothing starts here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from wattledger.collector.accounting.weather import write_epw
from wattledger.demo.layout import DemoState, Ports
from wattledger.demo.scenario import Job, Scenario, Server

HOST = "127.0.0.1"
#: Prometheus job names, as the project's scrape examples and rules use them
COLLECTOR_JOB = "wattledger-collector"
AGENT_JOB = "wattledger-agent"


def collector_url(ports: Ports) -> str:
    return f"http://{HOST}:{ports.collector}"


def prometheus_url(ports: Ports) -> str:
    return f"http://{HOST}:{ports.prometheus}"


def plan_months(scenario: Scenario, now: float) -> list[str]:
    """This month and the next, so a demo left running over midnight on the last day has a plan."""
    zone = scenario.site.zone
    this = datetime.fromtimestamp(now, zone).replace(day=1)
    following = (this + timedelta(days=32)).replace(day=1)
    return [this.strftime("%Y-%m"), following.strftime("%Y-%m")]


def cooling_config(scenario: Scenario, state: DemoState) -> dict[str, Any]:
    """The site's cooling: a chiller reading the demo's weather file, else its PUE."""
    site = scenario.site
    if site.chiller_cop is None:
        return {"pue": site.pue}
    return {"cooling": {"model": "chiller", "curves": "ashrae-90.1-2010-air-cooled",
                        "cop_ref": site.chiller_cop, "capacity_kw": site.chiller_capacity_kw,
                        "aux_ratio": 0.05,
                        "outdoor": {"epw": str(state.weather_file), "fixed_c": site.outdoor_mean_c}},
            "node_overhead_ratio": site.node_overhead_ratio}


def write_weather(scenario: Scenario, state: DemoState) -> None:
    """An EPW file whose every day swings between mean - swing (at 03:00) and mean + swing
    (at 15:00), site local time: the chiller's outdoor temperature (ladybug writes it)."""
    site = scenario.site
    write_epw(state.weather_file, lambda month, day, hour: site.outdoor_mean_c
              + site.outdoor_swing_c * math.sin((hour - 9) / 12 * math.pi))


def collector_config(scenario: Scenario, state: DemoState, ports: Ports,
                     tokens: Mapping[str, str], now: float) -> dict[str, Any]:
    site = scenario.site
    return {
        "listen": f"{HOST}:{ports.collector}",
        "db": state.db_url,
        "tokens": dict(tokens),
        "sites": {
            site.name: {
                "timezone": site.timezone,
                "currency": site.currency,
                **cooling_config(scenario, state),
                "tariff": [band.as_config() for band in site.tariff],
                "demand_charge_per_kw": site.demand_charge_per_kw,
                "carbon_g_per_kwh": site.carbon_g_per_kwh,
            },
        },
        "max_gap_seconds": scenario.max_gap_seconds,
        "plan": [
            {"site": site.name, "month": month, "cost": site.plan_cost,
             "it_energy_kwh": site.plan_it_energy_kwh,
             **({} if site.plan_demand_charge is None else {"demand_charge": site.plan_demand_charge})}
            for month in plan_months(scenario, now)
        ] + [{"site": site.name, "month": month, "team": team.name, "cost": team.plan_cost}
             for month in plan_months(scenario, now) for team in scenario.teams],
        # the jobs' teams by Slurm account (docs/chargeback.md)
        "teams": {team.name: [{"account": team.account}] for team in scenario.teams},
    }


def job_allocation(job: Job, gpus: int, since: float) -> dict[str, Any]:
    """A batch's allocation of a server's job: all its GPUs (positions 0..gpus-1: the simulated
    server's batches carry its GPUs only) since ``since``, as the slurm source sends it."""
    return {"devices": list(range(gpus)), "from": since, "to": None, "owner": job.owner()}


def write_slurm_jobs(folder: Path, server: Server, since: float) -> None:
    """The files the shipped prolog (deploy/slurm/prolog.sh) would write for the server's job,
    started at ``since``: one file per GPU index naming the job, and jobs/<id> with its
    metadata. The agent's slurm source reads them at every sample."""
    if server.job is None:
        return
    job = server.job
    (folder / "jobs").mkdir(parents=True, exist_ok=True)
    gpus = ",".join(str(i) for i in range(server.gpus))
    (folder / "jobs" / job.job).write_text(
        f"job={job.job}\naccount={job.account}\nuser={job.user}\npartition={job.partition}\n"
        f"gpus={gpus}\nstart={int(since)}\n", encoding="utf-8")
    for index in range(server.gpus):
        (folder / str(index)).write_text(f"{job.job}\n", encoding="utf-8")
def write_collector_files(scenario: Scenario, state: DemoState, ports: Ports, tokens: Mapping[str, str],
                          now: float) -> None:
    """The collector's YAML and the weather file its chiller reads."""
    if scenario.site.chiller_cop is not None:
        write_weather(scenario, state)
    write_yaml(state.collector_yaml, collector_config(scenario, state, ports, tokens, now))


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    path.chmod(0o600)  # it holds the tokens


def collector_args(state: DemoState) -> list[str]:
    return ["collector", "--config", str(state.collector_yaml)]


def simulation_args(server: Server) -> list[str]:
    """The agent flags of a server's simulated GPUs: the live agent's and the backfill's, so
    both have the same GPUs (ids, model, workload, seed)."""
    meter = [] if server.node_meter_w is None else ["--simulate-node-meter", str(server.node_meter_w)]
    return ["--node", server.node, "--simulate", str(server.gpus), "--workload", server.workload,
            "--seed", str(server.seed), *meter,
            # the simulated servers share this machine: its real CPU power is none of theirs
            "--disable-source", "host"]


def agent_args(scenario: Scenario, server: Server, state: DemoState, ports: Ports) -> list[str]:
    args = [
        "agent",
        *simulation_args(server),
        "--listen", f"{HOST}:{ports.agents[server.node]}",
        "--collector", collector_url(ports),
        "--token-file", str(state.token_file(server.node)),
        "--spool", str(state.spool(server.node)),
        # short batches, so the collector's figures in the view follow the agents closely
        "--batch-seconds", "2",
    ]
    if server.job is not None:  # its job's prolog files (write_slurm_jobs): who holds its GPUs
        args += ["--sources", "simulated,slurm", "--slurm-job-dir", str(state.slurm_jobs(server.node))]
    for key, value in server.labels(scenario.site.name).items():
        args += ["--label", f"{key}={value}"]
    return args


def rules_files(repo_root: Path | None = None) -> list[Path]:
    """The project's Prometheus rule files (``deploy/prometheus/**/*rules*.yml``), where present.

    They exist in a clone (the demo is run from one with ``make demo``); an installed wheel
    has none, and Prometheus then runs without rules.
    """
    root = repo_root if repo_root is not None else Path(__file__).resolve().parents[2]
    folder = root / "deploy" / "prometheus"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*rules*.y*ml")
                  if p.is_file() and "tests" not in p.relative_to(folder).parts)


def prometheus_config(scenario: Scenario, ports: Ports, rules: list[Path],
                      interval_s: float = 5.0) -> dict[str, Any]:
    every = f"{interval_s:g}s"
    # no target labels: the agents' series carry node, site and cluster themselves
    agent_targets = [{"targets": [f"{HOST}:{ports.agents[s.node]}" for s in scenario.servers]}]
    return {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "rule_files": [str(p) for p in rules],
        "scrape_configs": [
            {"job_name": COLLECTOR_JOB,
             "static_configs": [{"targets": [f"{HOST}:{ports.collector}"]}]},
            {"job_name": AGENT_JOB, "static_configs": agent_targets},
        ],
    }


def prometheus_args(binary: str, state: DemoState, ports: Ports) -> list[str]:
    folder = state.prometheus_dir
    return [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={HOST}:{ports.prometheus}",
        "--storage.tsdb.retention.time=45d",
    ]


def grafana_provisioning(repo_root: Path | None = None) -> Path | None:
    """The project's Grafana provisioning folder (``dashboards/provisioning``), where present."""
    root = repo_root if repo_root is not None else Path(__file__).resolve().parents[2]
    folder = root / "dashboards" / "provisioning"
    return folder if folder.is_dir() else None


#: the demo's expansion in its plan scenario: ten more servers like its own, power as the
#: simulated H100's datasheet-like figures
EXPANSION_POWER = {"idle_w": 70.0, "max_w": 700.0, "node_overhead_w": 1500.0}


def plan_scenario(scenario: Scenario, now: float) -> dict[str, Any]:
    """A scenario for `wattledger plan` against the demo's ledger: its fleet as measured, and ten
    more servers from the month after next, for twelve months from next month."""
    _, following = plan_months(scenario, now)
    after = (datetime.strptime(following, "%Y-%m") + timedelta(days=32)).strftime("%Y-%m")
    server = scenario.servers[0]
    return {
        "site": scenario.site.name, "start": following, "months": 12, "price_escalation_per_year": 0.03,
        "cloud_price_per_gpu_hour": 2.40,
        "fleet": [{"name": "existing", "measured": True},
                  {"name": "expansion", "from": after, "servers": 10, "gpus_per_server": server.gpus,
                   "model": "NVIDIA H100 80GB HBM3", "utilization": 0.6, "power": dict(EXPANSION_POWER),
                   "capex_per_server": 250000, "depreciation_months": 48}],
    }


def plan_command(state: DemoState, out: str = "plan.html") -> str:
    """The one line that plans from the demo's ledger (docs/demo.md)."""
    return (f"wattledger plan --scenario {state.plan_scenario} --config {state.collector_yaml} "
            f"--format html --out {out}")
