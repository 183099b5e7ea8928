"""The agent's settings: every flag (each also ``WATTLEDGER_<FLAG>`` and the ``--config`` YAML
key of its name; flags > environment > YAML > default), resolved and checked in ONE place,
:func:`load_settings`, into a frozen :class:`AgentSettings`. Everything that builds an agent
(``wattledger agent``, the demo's backfill of its simulated servers, the tests) starts from it,
so a value checked here is the value the sources and the delivery get.

A bad value is a :class:`~wattledger.config.ConfigError` whose message is one line naming the
flag (or the YAML key and its line); the entry point prints it and exits 2.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattledger.agent import allocation_cli, remote_cli
from wattledger.agent.exposition import RESERVED_LABELS
from wattledger.agent.sources import REGISTRY, SourceSettings, default_sources
from wattledger.agent.sources.remote import IpmiSettings, ModbusTarget, RedfishSettings, SnmpTarget
from wattledger.agent.sources.simulated import MODELS, WORKLOADS
from wattledger.agent.sources.slurmrestd import SlurmrestdSettings
from wattledger.config import (
    ConfigError,
    HostPort,
    OneLineParser,
    Option,
    add_options,
    bearer_token,
    byte_size,
    config_file_values,
    default_state_dir,
    existing_file,
    host_port,
    http_urls,
    key_value,
    non_negative_int,
    positive_float,
    resolve,
    text,
)
from wattledger.contract import is_node_name, label_name_problem


def names_of(known: list[str], what: str) -> Any:
    """A converter for a comma-separated list of names out of ``known``."""

    def convert(raw: object) -> list[str]:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        names = [str(item).strip() for item in items if str(item).strip()]
        if not names:
            raise ValueError(f"no {what} given")
        for name in names:
            if name not in known:
                raise ValueError(f"unknown {what} {name!r} (known: {', '.join(known)})")
        return names

    return convert


def one_of(known: list[str], what: str) -> Any:
    def convert(raw: object) -> str:
        name = str(raw).strip()
        if name not in known:
            raise ValueError(f"unknown {what} {name!r} (known: {', '.join(known)})")
        return name

    return convert


def collector_urls(given: list[list[str]]) -> tuple[str, ...]:
    """Every ``--collector`` URL, in the order given (each occurrence may be a comma list)."""
    urls: list[str] = []
    for url in (u for part in given for u in part):
        if url in urls:
            raise ConfigError(f"--collector: {url!r} is given twice")
        urls.append(url)
    return tuple(urls)


def agent_label(raw: object) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--label``, whose name is neither Prometheus' own (``__name__`` would
    break the scrape, ``le``/``quantile`` histograms and summaries) nor one the agent sets; the
    check runs as the value is read, so that a YAML ``label:`` entry's error names its line."""
    name, value = key_value(raw)
    problem = label_name_problem(name)
    if problem is not None:
        raise ValueError(f"{problem}; choose another label name")
    if name in RESERVED_LABELS:
        raise ValueError(f"{name!r} is set by the agent itself; choose another label name")
    if not value:  # `site=$SITE` with SITE unset: every batch would be refused as site ''
        raise ValueError(f"{name!r} has an empty value (Prometheus reads an empty label as no label): "
                         "give a value or leave the label out")
    return name, value


OPTIONS = [
    Option("--node", text, None, "node name (default: this host's name)", metavar="NAME"),
    Option("--interval", positive_float, 1.0, "seconds between samples", metavar="SECONDS"),
    Option("--listen", host_port, HostPort("0.0.0.0", 9860), "where /metrics is served", metavar="HOST:PORT"),
    Option("--collector", http_urls, [], "collector base URL; several (repeated, or a comma list) are "
           "tried in turn, the agent failing over between them; without it the agent only exports",
           multiple=True, metavar="URL"),
    Option("--token-file", existing_file, None, "file holding this node's bearer token (needed with "
           "--collector)", metavar="FILE"),
    Option("--spool", lambda raw: Path(text(raw)).expanduser(), None,
           "spool directory (default: <state dir>/spool); used only with --collector", metavar="DIR"),
    Option("--label", agent_label, [], "label on every series and batch (repeatable)", multiple=True,
           metavar="KEY=VALUE"),
    Option("--simulate", non_negative_int, 0, "simulate N GPUs instead of reading NVML", metavar="N"),
    Option("--simulate-model", one_of(list(MODELS), "GPU model"), "h100-sxm",
           f"model of the simulated GPUs: {', '.join(MODELS)}", metavar="MODEL"),
    Option("--workload", names_of(list(WORKLOADS), "workload"), "training",
           f"simulated workloads, given to the GPUs in turn: {', '.join(WORKLOADS)}", metavar="LIST"),
    Option("--seed", non_negative_int, 0, "seed of the simulation (same seed, same GPUs and values)",
           metavar="N"),
    Option("--simulate-node-meter", positive_float, None, "simulate the server's BMC too (a node device): "
           "wall power = (the GPUs' power + WATTS of fans, NICs, CPUs) / 0.94", metavar="WATTS"),
    Option("--sources", names_of(list(REGISTRY), "source"), None,
           f"sources to run: {', '.join(REGISTRY)} (default: nvml,host, or simulated,host with --simulate)",
           metavar="LIST"),
    Option("--disable-source", names_of(list(REGISTRY), "source"), [], "sources not to run",
           metavar="LIST"),
    Option("--sysfs-root", lambda raw: Path(text(raw)), Path("/sys"), "where sysfs is mounted (RAPL)",
           metavar="DIR"),
    Option("--batch-seconds", positive_float, 10.0, "seconds of readings per batch sent to the collector",
           metavar="SECONDS"),
    Option("--spool-max-bytes", byte_size, 1 << 30, "the most disk the spool may use (e.g. 1GiB)",
           metavar="BYTES"),
    *remote_cli.OPTIONS,  # redfish, ipmi (the node's BMC); snmp_targets, modbus_targets are YAML only
    *allocation_cli.OPTIONS,  # kubernetes, slurm, processes
]
#: every key the --config YAML may have (log_level is read by the dispatcher, wattledger.cli)
KNOWN_KEYS = frozenset({opt.dest for opt in OPTIONS} | {"log_level"} | remote_cli.KNOWN_KEYS)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML file of settings (keys as the flags) [env WATTLEDGER_CONFIG]"
    )
    add_options(parser, OPTIONS)
    remote_cli.configure(parser)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """Everything ``wattledger agent`` runs with, checked. One field per flag (``--label``'s
    is ``labels``), then what is made of them: the sources that run, the token read from
    ``--token-file``, the BMC and PDU settings of the network sources."""

    node: str
    interval: float
    listen: HostPort
    collector: tuple[str, ...]  # empty: exporter only, nothing on disk
    token_file: Path | None
    spool: Path | None  # the default state folder's spool when a collector is given
    labels: Mapping[str, str]
    simulate: int
    simulate_model: str
    simulate_node_meter: float | None
    workload: tuple[str, ...]
    seed: int
    sources: tuple[str, ...] | None  # as asked; None: the default (source_names is what runs)
    disable_source: tuple[str, ...]
    sysfs_root: Path
    batch_seconds: float
    spool_max_bytes: int
    # the node's BMC (remote_cli.OPTIONS)
    redfish_url: str | None
    redfish_user: str | None
    redfish_password_file: Path | None
    redfish_ca_file: Path | None
    redfish_chassis: str | None
    redfish_auth: str
    redfish_interval: float
    redfish_timeout: float
    redfish_insecure: bool
    ipmi_host: str | None
    ipmi_port: int
    ipmi_user: str | None
    ipmi_password_file: Path | None
    ipmi_interval: float
    ipmi_timeout: float
    # the allocation sources (allocation_cli.OPTIONS)
    kubelet_socket: Path
    kubernetes_interval: float
    kubernetes_team_label: str | None
    slurm_job_dir: Path
    slurmrestd_url: str | None
    slurmrestd_token_file: Path | None
    slurmrestd_user: str | None
    slurmrestd_ca_file: Path | None
    slurmrestd_version: str
    slurmrestd_node: str | None
    slurmrestd_interval: float
    slurmrestd_timeout: float
    slurmrestd_max_bytes: int
    proc_root: Path
    # made of the above
    source_names: tuple[str, ...]  # the sources that run, hardware and allocation ones
    token: str | None  # the bearer token (with a collector)
    redfish: RedfishSettings | None
    ipmi: IpmiSettings
    snmp_targets: tuple[SnmpTarget, ...]  # YAML only
    modbus_targets: tuple[ModbusTarget, ...]  # YAML only
    slurmrestd: SlurmrestdSettings | None  # the slurm source asks slurmrestd (--slurmrestd-url)

    def source_settings(self) -> SourceSettings:
        """What the source registry builds the sources from."""
        return SourceSettings(
            node=self.node, simulate=self.simulate, simulate_model=self.simulate_model,
            simulate_node_meter=self.simulate_node_meter,
            workloads=self.workload, seed=self.seed, sysfs_root=self.sysfs_root, redfish=self.redfish,
            ipmi=self.ipmi, snmp_targets=self.snmp_targets, modbus_targets=self.modbus_targets,
            kubelet_socket=self.kubelet_socket, kubernetes_interval=self.kubernetes_interval,
            kubernetes_team_label=self.kubernetes_team_label, slurm_job_dir=self.slurm_job_dir,
            slurmrestd=self.slurmrestd, proc_root=self.proc_root,
        )


def load_settings(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> AgentSettings:
    """Every setting, resolved and checked; a bad one is a ConfigError (one line)."""
    env = dict(os.environ) if env is None else env
    file_values = config_file_values(args, env, known=KNOWN_KEYS)
    s = resolve(OPTIONS, args, file_values, env)

    s["node"] = s["node"] or socket.gethostname().split(".")[0]
    if not is_node_name(s["node"]):
        raise ConfigError(f"--node: {s['node']!r} is not a valid node name (letters, digits, . _ -)")
    s["labels"] = dict(s.pop("label"))
    workload = s["workload"]  # the default is one name, a given value a list of them
    s["workload"] = (workload,) if isinstance(workload, str) else tuple(workload)
    s["sources"] = None if s["sources"] is None else tuple(s["sources"])
    s["disable_source"] = tuple(s["disable_source"])
    names = [n for n in s["sources"] or default_sources(s["simulate"]) if n not in s["disable_source"]]
    if "simulated" in names and s["simulate"] == 0:
        raise ConfigError("--sources simulated needs --simulate N (how many GPUs)")
    if not names:
        raise ConfigError("every source is disabled; nothing to sample")
    s["source_names"] = tuple(names)
    s["collector"] = collector_urls(s["collector"])
    remote_cli.resolve(s, args, file_values, env, names)
    allocation_cli.resolve(s, names)
    s["token"] = None
    if s["collector"]:
        s["token"] = _token(s["token_file"])
        s["spool"] = s["spool"] or default_state_dir() / "spool"
    return AgentSettings(**s)


def _token(token_file: Path | None) -> str:
    if token_file is None:
        raise ConfigError("--collector needs --token-file (the collector refuses unauthenticated batches)")
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"--token-file: cannot read {str(token_file)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--token-file: {str(token_file)!r} is not UTF-8 text") from None
    try:
        return bearer_token(token)
    except ValueError as exc:
        raise ConfigError(f"--token-file: {str(token_file)!r} must hold one token: {exc}") from None


def settings_from_argv(argv: Sequence[str], env: Mapping[str, str] | None = None) -> AgentSettings:
    """The settings of ``wattledger agent ARGV`` (a bad flag: argparse's one line, exit 2)."""
    parser = OneLineParser(prog="wattledger agent")
    configure(parser)
    return load_settings(parser.parse_args(list(argv)), env)
