"""``wattledger spend``: the month's energy, cost and plan from a collector, for finance, without
curl: ``wattledger spend --collector URL [--site S] [--month 2026-12] [--by site|cluster|node|
device|team|job|namespace|account|user] [--format table|csv|json]`` (docs/collector.md, "Spend
report"; docs/chargeback.md for teams and jobs).

One GET of the collector's ``/v1/spend`` (no token: the read side is open to whoever reaches the
collector). CSV is the collector's own, money rounded to each currency's minor unit; JSON is the
collector's answer with full precision; the table rounds as the CSV does. ``--by`` is passed
through as ``group_by``: the collector says which groupings it has (its 422 is printed as
one line). Every error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
from typing import Any

from wattledger.config import (
    ConfigError,
    Option,
    add_options,
    config_file_values,
    existing_file,
    http_url,
    positive_float,
    resolve,
    text,
)

HELP = ("print a month's energy, cost and plan by site, cluster, node, device or team from a collector "
        "(for finance)")
FORMATS = ("table", "csv", "json")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_GROUP = re.compile(r"^[a-z][a-z0-9_]*$")
#: the table's figure columns after the row's group keys, as (row key, heading): the bill's
#: parts (IT = GPUs + CPUs + overhead; energy cost = IT + cooling + other) as JSON/CSV have them
TABLE_COLUMNS = (("it_energy_kwh", "IT kWh"), ("gpu_cost", "GPUs"), ("cpu_cost", "CPUs"),
                 ("overhead_cost", "overhead"), ("cooling_cost", "cooling"), ("other_cost", "other"),
                 ("energy_cost", "energy cost"),
                 ("demand_charge", "demand charge"), ("total_cost", "total"), ("plan_cost", "plan"),
                 ("plan_to_date", "plan to date"), ("forecast_cost", "forecast"), ("carbon_kg", "CO2e kg"))
log = logging.getLogger(__name__)
GROUP_KEYS = ("site", "cluster", "node", "device", "kind", "index", "model", "team", "job", "namespace",
              "account", "user")


def month(raw: object) -> str:
    value = str(raw).strip()
    if not _MONTH.match(value):
        raise ValueError(f"{value!r} is not a month like 2026-12")
    return value


def group(raw: object) -> str:
    value = str(raw).strip()
    if not _GROUP.match(value):
        raise ValueError(f"{value!r} is not a grouping name (site, cluster, node, device, …)")
    return value


def output_format(raw: object) -> str:
    value = str(raw).strip()
    if value not in FORMATS:
        raise ValueError(f"{value!r} is not one of {', '.join(FORMATS)}")
    return value


OPTIONS = [
    Option("--collector", http_url, None, "the collector's base URL, e.g. http://collector:9861",
           metavar="URL"),
    Option("--site", text, None, "one site (default: every site)", metavar="SITE"),
    Option("--month", month, None, "the month, YYYY-MM (default: each site's current month)",
           metavar="MONTH"),
    Option("--by", group, "site", "rows by site, cluster, node, device, team, job, namespace, account or "
           "user (what the collector offers)", metavar="GROUP"),
    Option("--format", output_format, "table", "table, csv (money rounded to the currency's minor unit) "
           "or json (full precision)", metavar="FORMAT"),
    Option("--timeout", positive_float, 30.0, "seconds to wait for the collector", metavar="SECONDS"),
    Option("--ca-file", existing_file, None, "CA bundle that signed the collector's TLS certificate "
           "(default: the system's)", metavar="FILE"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML file of settings (keys as the flags) [env WATTLEDGER_CONFIG]")
    add_options(parser, OPTIONS)


def settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ) if env is None else env
    known = {opt.dest for opt in OPTIONS} | {"log_level"}
    s = resolve(OPTIONS, args, config_file_values(args, env, known), env)
    if s["collector"] is None:
        raise ConfigError("--collector: the collector's URL is needed (e.g. --collector http://collector:9861)")
    return s


def fetch(s: dict[str, Any]) -> str:
    """The body of the collector's answer; ConfigError (one line) for any failure."""
    import httpx

    params = {"group_by": s["by"], "format": "csv" if s["format"] == "csv" else "json"}
    for key in ("site", "month"):
        if s[key] is not None:
            params[key] = s[key]
    url = f"{s['collector']}/v1/spend"
    verify: Any = str(s["ca_file"]) if s["ca_file"] is not None else True
    try:
        answer = httpx.get(url, params=params, timeout=s["timeout"], verify=verify)
    except httpx.TimeoutException:
        raise ConfigError(f"the collector at {s['collector']} did not answer in {s['timeout']:g} s") from None
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach the collector at {s['collector']}: {exc}") from None
    if answer.status_code != 200:
        raise ConfigError(f"the collector answered {answer.status_code}: {refusal(answer.text)}")
    return answer.text


def refusal(body: str) -> str:
    """The collector's JSON error as one line: "unknown site (site: 'x' is not configured)"."""
    try:
        doc = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:200] or "no explanation"
    if not isinstance(doc, dict):
        return str(doc)[:200]
    detail = doc.get("detail")
    if isinstance(detail, dict) and set(detail) >= {"field", "reason"}:  # the collector's why()
        detail = f"{detail['field']}: {detail['reason']}"
    elif isinstance(detail, dict) and detail:
        detail = "; ".join(f"{k}: {v}" for k, v in detail.items())
    error = str(doc.get("error", "error"))
    return f"{error} ({detail})" if detail not in (None, "", {}) else error


def table(doc: dict[str, Any]) -> str:
    """The rows as an aligned text table, money rounded as in the CSV."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from wattledger.collector.accounting.money import MONEY_COLUMNS, round_money

    rows: list[dict[str, Any]] = list(doc.get("rows", []))
    keys = [k for k in GROUP_KEYS if any(k in row for row in rows)]
    title = f"wattledger spend, {doc.get('month') or 'current months'}, by {doc.get('group_by')}"
    out = Table(title=title, box=box.SIMPLE, title_justify="left")
    for key in [*keys, "currency"]:
        out.add_column(key)
    for _, heading in TABLE_COLUMNS:
        out.add_column(heading, justify="right")

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if value is None:
            return "-"
        if key in MONEY_COLUMNS and isinstance(value, int | float):
            try:
                return round_money(value, str(row.get("currency", "")))
            except ValueError:  # not an ISO 4217 code: as the collector gave it
                return str(value)
        # energy and carbon to the watt-hour and gram: a first hour of a lab, or one idle
        # node, reads 0.016 kWh, not a 0.0 that looks like nothing was recorded
        return f"{value:,.3f}" if isinstance(value, float) else str(value)

    for row in rows:
        out.add_row(*(str(row.get(k, "")) for k in keys), str(row.get("currency", "")),
                    *(cell(row, key) for key, _ in TABLE_COLUMNS))
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(out)
    return console.export_text()


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    if not log.isEnabledFor(logging.DEBUG):  # a report: no line per HTTP request on stderr
        logging.getLogger("httpx").setLevel(logging.WARNING)
    body = fetch(s)
    if s["format"] == "csv":
        sys.stdout.write(body)
    elif s["format"] == "json":
        sys.stdout.write(json.dumps(json.loads(body), indent=2) + "\n")
    else:
        sys.stdout.write(table(json.loads(body)))
    return 0
