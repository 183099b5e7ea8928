"""`wattledger demo` (being built; see its issue)."""

from __future__ import annotations

import argparse

HELP = "demo (not built yet)"


def configure(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    raise SystemExit("wattledger demo: not built yet")
