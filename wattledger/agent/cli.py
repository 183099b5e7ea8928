"""``wattledger agent``: sample every GPU and the host, expose them to Prometheus, and (with
``--collector``) deliver every reading to the collector. Flags > WATTLEDGER_* env > YAML."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattledger.agent import allocation_cli, remote_cli
from wattledger.agent.exposition import RESERVED_LABELS
from wattledger.agent.runtime import Agent
from wattledger.agent.sources import REGISTRY, SourceSettings, build_sources, default_sources
from wattledger.agent.sources.simulated import MODELS, WORKLOADS
from wattledger.config import (
    ConfigError,
    HostPort,
    Option,
    add_options,
    bearer_token,
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

if TYPE_CHECKING:
    from wattledger.agent.delivery import Delivery

HELP = "sample GPUs and host power, expose them on /metrics, ship them to a collector"
log = logging.getLogger(__name__)



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


def collector_urls(given: list[list[str]]) -> list[str]:
    """Every ``--collector`` URL, in the order given (each occurrence may be a comma list)."""
    urls: list[str] = []
    for url in (u for part in given for u in part):
        if url in urls:
            raise ConfigError(f"--collector: {url!r} is given twice")
        urls.append(url)
    return urls


def one_of(known: list[str], what: str) -> Any:
    def convert(raw: object) -> str:
        name = str(raw).strip()
        if name not in known:
            raise ValueError(f"unknown {what} {name!r} (known: {', '.join(known)})")
        return name

    return convert


def byte_size(raw: object) -> int:
    """Bytes, optionally with a binary suffix: 1073741824, 512MiB, 1GiB."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]i?B?)?\s*", str(raw), re.IGNORECASE)
    if not match:
        raise ValueError(f"{raw!r} is not a size in bytes (e.g. 1073741824 or 1GiB)")
    unit = (match.group(2) or "").upper()[:1]
    value = int(match.group(1)) * (1 << (10 * " KMGT".index(unit or " ")))
    if value <= 0:
        raise ValueError(f"{raw!r} must be more than 0 bytes")
    return value


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
    Option("--label", key_value, [], "label on every series and batch (repeatable)", multiple=True,
           metavar="KEY=VALUE"),
    Option("--simulate", non_negative_int, 0, "simulate N GPUs instead of reading NVML", metavar="N"),
    Option("--simulate-model", one_of(list(MODELS), "GPU model"), "h100-sxm",
           f"model of the simulated GPUs: {', '.join(MODELS)}", metavar="MODEL"),
    Option("--workload", names_of(list(WORKLOADS), "workload"), "training",
           f"simulated workloads, given to the GPUs in turn: {', '.join(WORKLOADS)}", metavar="LIST"),
    Option("--seed", non_negative_int, 0, "seed of the simulation (same seed, same GPUs and values)",
           metavar="N"),
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


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML file of settings (keys as the flags) [env WATTLEDGER_CONFIG]"
    )
    add_options(parser, OPTIONS)
    remote_cli.configure(parser)


def settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Every setting, resolved and checked; a bad one is a ConfigError (one line)."""
    env = dict(os.environ) if env is None else env
    # log_level is read by the dispatcher (wattledger.cli.log_level)
    file_values = config_file_values(args, env, known={opt.dest for opt in OPTIONS} | {"log_level"}
                                     | remote_cli.KNOWN_KEYS)
    s = resolve(OPTIONS, args, file_values, env)

    s["node"] = s["node"] or socket.gethostname().split(".")[0]
    if not is_node_name(s["node"]):
        raise ConfigError(f"--node: {s['node']!r} is not a valid node name (letters, digits, . _ -)")
    labels = dict(s["label"])
    for name in labels:  # Prometheus' own names would break the scrape (__name__) or histograms
        problem = label_name_problem(name)
        if problem is not None:
            raise ConfigError(f"--label: {problem}; choose another label name")
    clash = sorted(set(labels) & RESERVED_LABELS)
    if clash:
        raise ConfigError(f"--label: {clash[0]!r} is set by the agent itself; choose another label name")
    s["labels"] = labels
    if isinstance(s["workload"], str):  # the default
        s["workload"] = [s["workload"]]
    names = s["sources"] or default_sources(s["simulate"])
    names = [n for n in names if n not in s["disable_source"]]
    if "simulated" in names and s["simulate"] == 0:
        raise ConfigError("--sources simulated needs --simulate N (how many GPUs)")
    if not names:
        raise ConfigError("every source is disabled; nothing to sample")
    s["source_names"] = names
    s["collector"] = collector_urls(s["collector"])
    remote_cli.resolve(s, args, file_values, env, names)
    if s["collector"]:
        if s["token_file"] is None:
            raise ConfigError(
                "--collector needs --token-file (the collector refuses unauthenticated batches)"
            )
        try:
            token = Path(s["token_file"]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--token-file: cannot read {str(s['token_file'])!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--token-file: {str(s['token_file'])!r} is not UTF-8 text") from None
        try:
            s["token"] = bearer_token(token)
        except ValueError as exc:
            raise ConfigError(f"--token-file: {str(s['token_file'])!r} must hold one token: {exc}") from None
        s["spool"] = s["spool"] or default_state_dir() / "spool"
    return s


def build_agent(s: dict[str, Any]) -> Agent:
    source_settings = SourceSettings(
        node=s["node"],
        simulate=s["simulate"],
        simulate_model=s["simulate_model"],
        workloads=tuple(s["workload"]),
        seed=s["seed"],
        sysfs_root=s["sysfs_root"],
        redfish=s["redfish"],
        ipmi=s["ipmi"],
        snmp_targets=s["snmp_targets"],
        modbus_targets=s["modbus_targets"],
        **allocation_cli.source_settings(s),
    )
    sources = build_sources(s["source_names"], source_settings)
    delivery_factory = None
    if s["collector"]:  # only then: exporter-only agents never touch the disk

        def delivery_factory() -> Delivery:
            from wattledger.agent.delivery import Delivery

            return Delivery(
                spool_dir=s["spool"],
                collector_url=s["collector"],
                token=s["token"],
                token_file=s["token_file"],
                node=s["node"],
                labels=s["labels"],
                batch_seconds=s["batch_seconds"],
                max_spool_bytes=s["spool_max_bytes"],
            )

    return Agent(
        node=s["node"],
        labels=s["labels"],
        sources=sources,
        interval=s["interval"],
        listen=s["listen"],
        delivery_factory=delivery_factory,
    )


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    agent = build_agent(s)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.start()
    except (OSError, ConfigError) as exc:
        agent.stop(delivery_timeout=0)
        raise ConfigError(str(exc)) from None
    if "simulated" in s["source_names"]:
        # a named feature, never a silent stand-in for real GPUs: say so where operators look
        log.warning("SIMULATED GPUs: %d x %s (workload %s, seed %d); these readings are not from real "
                    "hardware", s["simulate"], s["simulate_model"], ",".join(s["workload"]), s["seed"])
    log.info(
        "agent %s: sources %s, every %g s%s",
        s["node"],
        ",".join(s["source_names"]),
        s["interval"],
        f", delivering to {', '.join(s['collector'])}" if s["collector"] else " (exporter only)",
    )
    while not stop.wait(3600):  # wake up now and then; signals set the event
        pass
    log.info("%s", agent.stop())
    return 0
