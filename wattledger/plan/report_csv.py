"""The plan as a spreadsheet: one row per month, then a ``total`` row; the contract's columns.

Money is rounded to the currency's minor unit (as the collector's spend CSV), the cost per GPU-hour
to four decimals, energy and carbon to three; the JSON report keeps full precision.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from wattledger.collector.accounting.money import MONEY_COLUMNS, round_money
from wattledger.plan.projection import MONTH_KEYS


def _cell(key: str, value: Any, currency: str) -> str:
    if value is None:
        return ""
    if key == "month" or isinstance(value, int):
        return str(value)
    if key in MONEY_COLUMNS:
        return round_money(float(value), currency)
    if key == "cost_per_gpu_hour":
        return f"{float(value):.4f}"
    return f"{float(value):.3f}"


def render_csv(doc: dict[str, Any]) -> str:
    currency = str(doc["currency"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*MONTH_KEYS, "currency"])
    for row in doc["months"]:
        writer.writerow([*(_cell(k, row[k], currency) for k in MONTH_KEYS), currency])
    totals = {"month": "total", **doc["totals"]}
    writer.writerow([*(_cell(k, totals[k], currency) for k in MONTH_KEYS), currency])
    return out.getvalue()
