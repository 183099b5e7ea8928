"""The ``wattledger`` console script: one entry point, one module per sub-command.

Each sub-command module provides ``HELP`` (one line), ``configure(parser)`` to add its flags
and ``run(args) -> int``. Modules are imported only for the sub-command that runs, so that
``wattledger agent`` never loads the collector's web stack.

``pip install wattledger`` installs the agent only (what a GPU node needs); the other
sub-commands need the ``collector`` extra (``NEEDS_EXTRA``). Run without it, one says so in one
line (``wattledger collector: needs 'pip install wattledger[collector]' ...``) and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
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
#: the extra of the package each sub-command needs beyond the agent's own install
NEEDS_EXTRA: dict[str, str] = {"collector": "collector", "demo": "collector", "plan": "collector",
                               "spend": "collector"}

log = logging.getLogger(__name__)


class MissingExtra(Exception):
    """A sub-command's extra is not installed; the message is the one line to print."""


def _needs(command: str, extra: str, missing: str) -> MissingExtra:
    return MissingExtra(f"wattledger {command}: needs 'pip install wattledger[{extra}]' "
                        f"({missing} is not installed)")


def missing_extra(command: str, exc: ModuleNotFoundError) -> MissingExtra | None:
    """The error to report for ``exc`` raised by ``command``: a library of its extra that is not
    installed. None when ``exc`` is something else (a module of wattledger itself missing is a
    broken install, and an agent's libraries are no extra's)."""
    extra = NEEDS_EXTRA.get(command)
    missing = (exc.name or "").split(".")[0]
    if extra is None or not missing or missing == "wattledger":
        return None
    return _needs(command, extra, f"the Python package {missing!r}")


def check_extra(command: str) -> None:
    """MissingExtra when a distribution of ``command``'s extra is not installed, as the
    installed package's metadata lists them (nothing to check when wattledger runs from a
    source tree, not installed: a missing module then says so where it is imported)."""
    extra = NEEDS_EXTRA.get(command)
    if extra is None:
        return
    from packaging.requirements import Requirement

    try:
        requires = importlib.metadata.requires("wattledger") or []
    except importlib.metadata.PackageNotFoundError:
        return
    for line in requires:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or not marker.evaluate({"extra": extra}):
            continue  # the agent's own (always installed), or another extra's
        try:
            importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            raise _needs(command, extra, f"{requirement.name!r}") from None


def _module(name: str) -> ModuleType:
    check_extra(name)
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as exc:
        raise missing_extra(name, exc) or exc from None


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
        try:
            module = _module(name)
        except MissingExtra:
            if command is not None:
                raise
            sub.add_parser(name, help=f"(needs 'pip install wattledger[{NEEDS_EXTRA[name]}]')")
            continue
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
    try:
        parser = build_parser(command_named(argv))
    except MissingExtra as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
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
    except ModuleNotFoundError as exc:  # a library imported where it is used (plan's charts...)
        missing = missing_extra(args.command, exc)
        if missing is None:
            raise
        sys.stderr.write(f"{missing}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
