"""The ``wattledger`` console script: one entry point, one module per sub-command.

Each sub-command module provides ``HELP`` (one line), ``configure(parser)`` to add its flags
and ``run(args) -> int``. Modules are imported only for the sub-command that runs, so that
``wattledger agent`` never loads the collector's web stack.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from wattledger import __version__
from wattledger.config import ConfigError, OneLineParser

COMMANDS: dict[str, str] = {
    "agent": "wattledger.agent.cli",
    "collector": "wattledger.collector.cli",
    "demo": "wattledger.demo.cli",
}

log = logging.getLogger(__name__)


def _module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="wattledger",
        description="Power, thermal and energy-cost monitoring for GPU fleets.",
        epilog="Run 'wattledger COMMAND --help' for the flags of a command.",
    )
    parser.add_argument("--version", action="version", version=f"wattledger {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        module = _module(name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        cmd.add_argument("--version", action="version", version=f"wattledger {__version__}")
        cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                         help="log verbosity (default: info)")
        module.configure(cmd)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    setup_logging(args.log_level)
    try:
        return int(_module(args.command).run(args))
    except ConfigError as exc:
        sys.stderr.write(f"wattledger {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
