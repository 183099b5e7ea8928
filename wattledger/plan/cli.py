"""``wattledger plan --scenario F [--config COLLECTOR_YAML] [--format json|csv|html] [--out F]``.

Reads the site's tariff, demand charge, carbon and cooling from the collector configuration,
the measured history from its ledger when an entry needs it, and the scenario; writes the plan
as JSON (default), CSV or one self-contained HTML page to standard output or ``--out``. Every
error is one line on standard error and exit status 2; a progress bar shows the ledger being
read only when standard error is a terminal. docs/planning.md explains every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from wattledger.config import CONFIG_ENV, ConfigError, Option, add_options, existing_file, resolve

HELP = "project what a fleet (the measured one, and the next servers) will cost to run and cool, per month"
FORMATS = ("json", "csv", "html")
log = logging.getLogger(__name__)


def output_format(raw: object) -> str:
    value = str(raw).strip().lower()
    if value not in FORMATS:
        raise ValueError(f"{value!r} is not one of {', '.join(FORMATS)}")
    return value


def out_path(raw: object) -> Path:
    path = Path(str(raw)).expanduser()
    if not str(raw).strip():
        raise ValueError("must not be empty")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder, not a file")
    return path


OPTIONS = [
    Option(
        "--scenario", existing_file, None, "the scenario YAML (site, start, months, fleet, …)", metavar="FILE"
    ),
    Option(
        "--format",
        output_format,
        "json",
        "json, csv (a spreadsheet) or html (one self-contained page)",
        metavar="FORMAT",
    ),
    Option("--out", out_path, None, "write the report here (default: standard output)", metavar="FILE"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    # --config is the collector's configuration (its sites and ledger), not a file of this
    # command's flags: those read from the flag, then WATTLEDGER_<FLAG>
    parser.add_argument(
        "--config",
        metavar="COLLECTOR_YAML",
        default=None,
        help=f"the collector's configuration: sites (tariff, cooling) and ledger (db) "
        f"[env {CONFIG_ENV}]; without it, the collector's default site",
    )
    add_options(parser, OPTIONS)


def settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ) if env is None else env
    s = resolve(OPTIONS, args, {}, env)
    if s["scenario"] is None:
        raise ConfigError("--scenario: the scenario file is needed (e.g. --scenario expansion.yaml)")
    config = getattr(args, "config", None) or env.get(CONFIG_ENV)
    s["config"] = Path(config) if config else None
    return s


def render(doc: dict[str, Any], fmt: str) -> str:
    if fmt == "csv":
        from wattledger.plan.report_csv import render_csv

        return render_csv(doc)
    if fmt == "html":
        from wattledger.plan.report_html import render_html

        return render_html(doc)
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"--out {str(out)!r}: cannot write it: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    from wattledger.plan.build import make_plan
    from wattledger.plan.ledger import LedgerOpener
    from wattledger.plan.scenario import load_scenario_file
    from wattledger.plan.siteconfig import load_plan_sites

    s = settings(args)
    if not log.isEnabledFor(logging.DEBUG):  # a report: matplotlib's font-cache notes are not news
        logging.getLogger("matplotlib").setLevel(logging.WARNING)
    raw = load_scenario_file(s["scenario"])
    sites = load_plan_sites(s["config"])
    ledger = LedgerOpener(sites.db, configured=s["config"] is not None, sites=sites.sites)
    try:
        doc = make_plan(raw, sites, ledger)
    finally:
        ledger.close()
    write(render(doc, s["format"]), s["out"])
    return 0
