"""``wattledger demo``: a collector, a simulated GPU fleet and (when installed) Prometheus on
this machine, the month so far backfilled, and a live view until Ctrl-C (docs/demo.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from wattledger.config import (
    ConfigError,
    Option,
    add_options,
    boolean,
    config_file_values,
    default_state_dir,
    positive_float,
    resolve,
    text,
)

HELP = ("run a collector, simulated GPU servers and Prometheus on this machine, backfill the month "
        "and show live power, temperature, cost and plan (Ctrl-C stops it)")


def port(raw: object) -> int:
    try:
        value = int(str(raw), 10)
    except ValueError:
        raise ValueError(f"{raw!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"port {value} is outside 0..65535 (0 = any free port)")
    return value


def backfill_step(raw: object) -> float:
    value = positive_float(raw)
    if not 1.0 <= value <= 3600.0:
        raise ValueError(f"{raw!r} must be between 1 and 3600 seconds")
    return value


OPTIONS = [
    Option("--collector-port", port, 9861, "collector port on 127.0.0.1 (taken: any free port)",
           metavar="PORT"),
    Option("--prometheus-port", port, 9090, "Prometheus port on 127.0.0.1 (taken: any free port)",
           metavar="PORT"),
    Option("--agent-port", port, 9871, "first of the agents' /metrics ports on 127.0.0.1, one per "
           "server (taken: any free port)", metavar="PORT"),
    Option("--backfill-step", backfill_step, 300.0,
           "seconds between the simulated readings of the backfilled history", metavar="SECONDS"),
    Option("--refresh", positive_float, None,
           "seconds between view updates (default: 1 on a terminal, 5 for plain lines)",
           metavar="SECONDS"),
]


#: not WATTLEDGER_STATE_DIR: that one names the state folder of a real agent or collector
STATE_DIR_ENV = "WATTLEDGER_DEMO_STATE_DIR"


#: the on/off flags; each also reads WATTLEDGER_<FLAG> and the YAML key of its name
SWITCHES = ("fresh", "no_backfill", "no_prometheus", "plain")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML file of settings (keys as the flags, e.g. collector_port: 19861) "
                             "[env WATTLEDGER_CONFIG]")
    parser.add_argument("--state-dir", metavar="DIR", default=None,
                        help="folder for the demo's ledger, spools, tokens, logs and Prometheus data "
                             f"(default: <state dir>/demo, e.g. {default_state_dir() / 'demo'}) "
                             f"[env {STATE_DIR_ENV}]")
    add_options(parser, OPTIONS)
    parser.add_argument("--fresh", action="store_true",
                        help="wipe the demo's state folder first (ledger, spools, Prometheus data)")
    parser.add_argument("--no-backfill", action="store_true",
                        help="do not backfill the month so far; start live at once")
    parser.add_argument("--no-prometheus", action="store_true",
                        help="do not start Prometheus even when its binary is installed")
    parser.add_argument("--plain", action="store_true",
                        help="print plain periodic lines even on a terminal")


def settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ) if env is None else env
    known = {opt.dest for opt in OPTIONS} | set(SWITCHES) | {"state_dir", "log_level"}
    file_values = config_file_values(args, env, known)
    s = resolve(OPTIONS, args, file_values, env)
    raw_dir = getattr(args, "state_dir", None) or env.get(STATE_DIR_ENV) or file_values.get("state_dir")
    s["state_dir_given"] = raw_dir is not None
    try:
        s["state_dir"] = Path(text(raw_dir)).expanduser() if raw_dir is not None else (
            default_state_dir() / "demo")
    except ValueError as exc:
        raise ConfigError(f"--state-dir: {exc}") from None
    for flag in SWITCHES:
        given = bool(getattr(args, flag, False))
        source, raw = f"WATTLEDGER_{flag.upper()}", env.get(f"WATTLEDGER_{flag.upper()}")
        if raw is None:
            source, raw = f"config key {flag!r}", file_values.get(flag)
        try:
            s[flag] = given or (raw is not None and boolean(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    ports = [s[k] for k in ("collector_port", "prometheus_port", "agent_port") if s[k]]
    if len(set(ports)) != len(ports):
        raise ConfigError("--collector-port, --prometheus-port and --agent-port must differ")
    return s


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    from wattledger.demo.runner import Demo

    return Demo(s).run()
