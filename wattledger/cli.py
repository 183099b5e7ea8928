"""The ``wattledger`` console script: one entry point, one module per sub-command.

Each sub-command module provides ``HELP`` (one line), ``configure(parser)`` to add its flags
and ``run(args) -> int``. Modules are imported only for the sub-command that runs, so that
``wattledger agent`` never loads the collector's web stack.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

from wattledger import __version__
from wattledger.config import ConfigError, OneLineParser, load_yaml

LOG_LEVELS = ("debug", "info", "warning", "error")
COMMANDS: dict[str, str] = {
    "agent": "wattledger.agent.cli",
    "collector": "wattledger.collector.cli",
    "demo": "wattledger.demo.cli",
    "plan": "wattledger.plan.cli",
    "spend": "wattledger.spend_cli",
}

log = logging.getLogger(__name__)


def _module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def command_named(argv: Sequence[str]) -> str | None:
    """The sub-command an argument list runs, if it names one. The top-level parser's only
    options (-h, --version) take no value, so the first argument that is not an option is it."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(command: str | None = None) -> OneLineParser:
    """The whole parser; given ``command``, only that sub-command's module is imported and
    configured (the others are listed without help or flags), so that ``wattledger agent``
    does not load the collector's settings (pydantic) or the demo."""
    parser = OneLineParser(
        prog="wattledger",
        description="Power, thermal and energy-cost monitoring for GPU fleets.",
        epilog="Run 'wattledger COMMAND --help' for the flags of a command.",
    )
    parser.add_argument("--version", action="version", version=f"wattledger {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        if command is not None and name != command:
            sub.add_parser(name)
            continue
        module = _module(name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        cmd.add_argument("--version", action="version", version=f"wattledger {__version__}")
        # no argparse default: an absent flag falls back to WATTLEDGER_LOG_LEVEL, then the YAML
        cmd.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS,
                         help="log verbosity (default: info) [env WATTLEDGER_LOG_LEVEL]")
        module.configure(cmd)
    return parser


def log_level(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """``--log-level`` > ``WATTLEDGER_LOG_LEVEL`` > the ``--config`` YAML's ``log_level`` > info."""
    if getattr(args, "log_level", None):
        return str(args.log_level)
    source, raw = "WATTLEDGER_LOG_LEVEL", env.get("WATTLEDGER_LOG_LEVEL")
    if raw is None:
        path = getattr(args, "config", None) or env.get("WATTLEDGER_CONFIG")
        values = load_yaml(path) if path else {}
        source, raw = "config key 'log_level'", values.get("log_level", values.get("log-level"))
    if raw is None:
        return "info"
    level = str(raw).strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{source}: {raw!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_named(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        setup_logging(log_level(args, os.environ))
        return int(_module(args.command).run(args))
    except ConfigError as exc:
        sys.stderr.write(f"wattledger {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
