"""DESIGN.md: "Every flag also reads from an environment variable WATTLEDGER_<FLAG> and from
--config FILE (YAML); flags win." Checked for every option of every sub-command: a value from
the YAML alone, the environment over the YAML, and the flag over both."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from wattledger import cli
from wattledger.agent import cli as agent_cli
from wattledger.collector import settings as collector_settings
from wattledger.config import Option
from wattledger.demo import cli as demo_cli

#: for each option: three distinct valid raw values (YAML, environment, flag); "{tmp}" = a folder
#: holding files a, b and c
SAMPLES: dict[str, tuple[Any, str, str]] = {
    "node": ("n-yaml", "n-env", "n-flag"),
    "interval": (2, "3", "4"),
    "listen": ("127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"),
    "collector": ("http://c1:9861", "http://c2:9861", "http://c3:9861"),
    "token_file": ("{tmp}/a", "{tmp}/b", "{tmp}/c"),
    "spool": ("{tmp}/s1", "{tmp}/s2", "{tmp}/s3"),
    "label": ({"k": "yaml"}, "k=env", "k=flag"),
    "simulate": (2, "3", "4"),
    "simulate_model": ("a100-sxm", "l40s", "h100-sxm"),
    "workload": ("idle", "inference", "hot"),
    "seed": (1, "2", "3"),
    "simulate_node_meter": (500.0, "600", "700"),
    "sources": ("host", "simulated,host", "simulated"),
    "disable_source": ("nvml", "host", "nvml"),
    "sysfs_root": ("/s1", "/s2", "/s3"),
    "batch_seconds": (5, "6", "7"),
    "spool_max_bytes": ("1MiB", "2MiB", "3MiB"),
    "redfish_url": ("https://bmc1", "https://bmc2", "https://bmc3"),
    "redfish_user": ("u1", "u2", "u3"),
    "redfish_password_file": ("{tmp}/a", "{tmp}/b", "{tmp}/c"),
    "redfish_ca_file": ("{tmp}/a", "{tmp}/b", "{tmp}/c"),
    "redfish_chassis": ("1U", "2U", "Tower"),
    "redfish_auth": ("basic", "session", "basic"),
    "redfish_interval": (5, "6", "7"),
    "redfish_timeout": (1, "2", "3"),
    "ipmi_host": ("bmc1", "bmc2", "bmc3"),
    "ipmi_port": (1623, "2623", "3623"),
    "ipmi_user": ("u1", "u2", "u3"),
    "ipmi_password_file": ("{tmp}/a", "{tmp}/b", "{tmp}/c"),
    "ipmi_interval": (5, "6", "7"),
    "ipmi_timeout": (1, "2", "3"),
    "kubelet_socket": ("/k1.sock", "/k2.sock", "/k3.sock"),
    "kubernetes_interval": (5, "6", "7"),
    "kubernetes_team_label": ("team", "example.com/team", "cost-center"),
    "slurm_job_dir": ("/j1", "/j2", "/j3"),
    "slurmrestd_url": ("https://s1:6820", "https://s2:6820", "http://s3:6820"),
    "slurmrestd_token_file": ("{tmp}/a", "{tmp}/b", "{tmp}/c"),
    "slurmrestd_user": ("u1", "u2", "u3"),
    "slurmrestd_ca_file": ("{tmp}/a", "{tmp}/b", "{tmp}/c"),
    "slurmrestd_version": ("v0.0.42", "v0.0.43", "v0.0.45"),
    "slurmrestd_node": ("n1", "n2", "n3"),
    "slurmrestd_interval": (5, "6", "7"),
    "slurmrestd_timeout": (1, "2", "3"),
    "slurmrestd_max_bytes": ("1MiB", "2MiB", "3MiB"),
    "proc_root": ("/p1", "/p2", "/p3"),
    "db": ("sqlite:///{tmp}/1.db", "sqlite:///{tmp}/2.db", "sqlite:///{tmp}/3.db"),
    "tokens_file": ("{tmp}/a", "{tmp}/b", "{tmp}/c"),
    "allow_unauthenticated": (True, "false", "true"),
    "max_body_bytes": (2048, "4096", "8192"),
    "max_gap_seconds": (10, "20", "40"),
    "stale_after_seconds": (60, "90", "30"),
    "metrics_refresh_seconds": (2, "3", "4"),
    "replica": ("r-yaml", "r-env", "r-flag"),
    "tls_cert": ("{tmp}/a", "{tmp}/b", "{tmp}/c"),
    "tls_key": ("{tmp}/a", "{tmp}/b", "{tmp}/c"),
    "collector_port": (19001, "19002", "19003"),
    "prometheus_port": (19011, "19012", "19013"),
    "agent_port": (19021, "19022", "19023"),
    "backfill_step": (60, "120", "180"),
    "refresh": (2, "3", "4"),
}
#: what each sub-command needs besides the option under test to be valid
BASE: dict[str, dict[str, Any]] = {
    "agent": {"simulate": 1, "collector": "http://c0:9861", "token_file": "{tmp}/a"},
    "collector": {"tls_cert": "{tmp}/a", "tls_key": "{tmp}/a"},
    "demo": {},
}


def agent_value(settings: Any, dest: str) -> Any:
    """A field of AgentSettings (``--label``'s is ``labels``), its tuples as the lists the
    converters give."""
    value = getattr(settings, "labels" if dest == "label" else dest)
    return list(value) if isinstance(value, tuple) else value


READERS: dict[str, tuple[list[Option], Callable[[argparse.Namespace, dict[str, str]], Any],
                         Callable[[Any, str], Any]]] = {
    "agent": (agent_cli.OPTIONS, agent_cli.settings, agent_value),
    "collector": (list(collector_settings.OPTIONS), collector_settings.load_settings,
                  lambda s, dest: getattr(s, dest)),
    "demo": (demo_cli.OPTIONS, demo_cli.settings, lambda s, dest: s[dest]),
}
CASES = [(command, opt) for command, (options, _, _) in READERS.items() for opt in options]


def fill(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, dict):
        return {k: fill(v, tmp) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("command", "opt"), CASES, ids=[f"{c}{o.flag}" for c, o in CASES])
def test_yaml_then_env_then_flag(tmp_path: Path, command: str, opt: Option) -> None:
    for name in "abc":  # a token for the agent, an (empty) tokens_file, a TLS file: exists is enough
        (tmp_path / name).write_text("tok\n" if command == "agent" else "")
    _, read, pick = READERS[command]
    from_yaml, from_env, from_flag = (fill(v, tmp_path) for v in SAMPLES[opt.dest])
    base = {k: fill(v, tmp_path) for k, v in BASE[command].items() if k != opt.dest}
    if opt.dest == "sources":
        base["disable_source"] = "nvml"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({**base, opt.dest: from_yaml}))

    def value(env: dict[str, str], *flag: str) -> Any:
        args = cli.build_parser().parse_args([command, "--config", str(cfg), *flag])
        return pick(read(args, env), opt.dest)

    def converted(raw: Any) -> Any:
        if not opt.multiple:
            return opt.convert(raw)
        out = [opt.convert(item) for item in (raw if isinstance(raw, list) else raw.split(","))]
        return dict(out) if opt.dest == "label" else out

    def raw_list(raw: Any) -> Any:
        if isinstance(raw, dict):
            return [f"{k}={v}" for k, v in raw.items()]
        return raw

    in_yaml = value({})
    in_env = value({opt.env: from_env})
    by_flag = value({opt.env: from_env}, f"{opt.flag}={from_flag}")
    expected = [converted(raw_list(from_yaml)), converted(from_env), converted(from_flag)]
    if command == "collector" and opt.dest == "db":
        expected = [str(v) for v in expected]
    if command == "agent" and opt.dest == "collector":  # each occurrence may be a comma list
        expected = [[url for urls in v for url in urls] for v in expected]
    assert [in_yaml, in_env, by_flag] == expected
    assert expected[0] != expected[1] != expected[2], "each source must change the value"
