"""`wattledger collector` (being built; see its issue)."""

from __future__ import annotations

import argparse

HELP = "collector (not built yet)"


def configure(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    raise SystemExit("wattledger collector: not built yet")
