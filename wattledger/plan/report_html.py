"""The plan as ONE self-contained HTML page for the people who sign the purchase order.

Inline CSS and three inline SVG charts (:mod:`.charts`); no script, no font, no image and no
link is fetched when the page is viewed. Every figure of the JSON report is on the page: the
summary, the monthly table, the fleet, the measured profiles with the data they came from, the
sensitivity, the advice (marked as estimates, with their assumptions), the proposed plan ready
to paste into the collector's configuration, and the assumptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from wattledger.collector.accounting.money import minor_units
from wattledger.plan.charts import cost_chart, power_chart, tco_chart

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2733;
  background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #dde2e8;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6673;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}
.card{border:1px solid #dde2e8;border-radius:6px;padding:10px 12px}
.card b{display:block;font-size:19px}
.card span{color:#5b6673;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:12px;margin:6px 0}
th,td{border-bottom:1px solid #eceff3;padding:3px 5px;text-align:right;white-space:nowrap}
th:first-child,td:first-child,td.l,th.l{text-align:left}
thead th{background:#f0f3f6;position:sticky;top:0}
tr.total td{font-weight:600;border-top:2px solid #9aa5b1}
figure{margin:14px 0}
figcaption{color:#5b6673;font-size:12px}
figure svg{width:100%;height:auto}
pre{background:#f4f6f8;padding:10px;overflow:auto;font-size:12px}
.estimate{display:inline-block;background:#fff3cd;color:#7a5b00;border-radius:4px;padding:1px 6px;
  font-size:12px}
.bad{color:#a12b2b}
span.l{white-space:normal;display:inline-block;min-width:280px;text-align:left}
ul{margin:4px 0 4px 18px;padding:0}
.wide{overflow-x:auto}
"""


def _money(value: float | None, currency: str) -> str:
    if value is None:
        return "–"
    places = minor_units(currency)
    return f"{value:,.{2 if places is None else places}f}"


def _num(value: float | None, places: int = 0) -> str:
    return "–" if value is None else f"{value:,.{places}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], total: Sequence[str] | None = None) -> str:
    out = [
        "<div class='wide'><table><thead><tr>",
        *(f"<th>{escape(h)}</th>" for h in head),
        "</tr></thead><tbody>",
    ]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    if total is not None:
        out.append("<tr class='total'>" + "".join(f"<td>{cell}</td>" for cell in total) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _month_cells(r: dict[str, Any], cur: str) -> list[str]:
    return [
        escape(str(r.get("month", "total"))),
        _num(r["gpus"]),
        _num(r["it_kwh"]),
        _num(r["cooling_kwh"]),
        _num(r["facility_kwh"]),
        _money(r["energy_cost"], cur),
        _money(r["demand_charge"], cur),
        _money(r["capex"], cur),
        _money(r["total_cost"], cur),
        _num(r["carbon_kg"]),
        _num(r["gpu_hours"]),
        _num(r["cost_per_gpu_hour"], 4),
        _money(r["cloud_cost"], cur),
    ]


def _summary(doc: dict[str, Any]) -> str:
    cur, t = doc["currency"], doc["totals"]
    comparison = doc.get("cloud_comparison")
    cards = [
        (f"{_money(t['total_cost'], cur)} {escape(cur)}", "total cost over the plan"),
        (f"{_num(t['cost_per_gpu_hour'], 3)} {escape(cur)}", "per GPU-hour"),
        (
            f"{_money(t['cloud_cost'], cur)} {escape(cur)}" if t["cloud_cost"] is not None else "–",
            "the same GPU-hours in the cloud",
        ),
        (
            escape(comparison["break_even_month"] or "not within the plan") if comparison else "–",
            "break-even against the cloud",
        ),
        (
            f"{_money(t['energy_cost'] + t['demand_charge'], cur)} {escape(cur)}",
            "energy cost + demand charge",
        ),
        (f"{_num(t['facility_kwh'] / 1000, 1)} MWh", "facility energy"),
        (f"{_num(t['gpus'])}", "GPUs at the largest month"),
        (f"{_num(t['carbon_kg'] / 1000, 1)} t", "CO2e"),
    ]
    return (
        "<div class='cards'>"
        + "".join(f"<div class='card'><b>{v}</b><span>{escape(k)}</span></div>" for v, k in cards)
        + "</div>"
    )


def _fleet(doc: dict[str, Any]) -> str:
    cur = doc["currency"]
    rows = []
    for e in doc["fleet"]:
        total = e["totals"] or {}
        rows.append(
            [
                escape(e["name"]) + (" (measured)" if e["measured"] else ""),
                escape(e["model"] or "–"),
                escape(e["from"] or "–"),
                _num(e["servers"]),
                _num(e["gpus"]),
                _pct(e["utilization"]),
                _num(e["gpu_power_w"], 1),
                _num(e["node_power_w"]),
                _num(e["it_kw"], 1),
                f"<span class='l'>{escape(e['power'])}</span>",
                _money(total.get("total_cost"), cur),
            ]
        )
    return _table(
        [
            "entry",
            "model",
            "from",
            "servers",
            "GPUs",
            "utilization",
            "GPU W",
            "node W",
            "IT kW",
            "power from",
            f"total ({cur})",
        ],
        rows,
    )


def _profiles(doc: dict[str, Any]) -> str:
    if not doc["profiles"]:
        return "<p>No measured profile: every entry's power is given in the scenario.</p>"
    rows = []
    for p in doc["profiles"]:
        line, c, o = p["line"], p["coverage"], p["node_overhead"]
        status = (
            "usable"
            if p["usable"]
            else "<span class='bad'>not usable: " + escape("; ".join(p["problems"])) + "</span>"
        )
        rows.append(
            [
                escape(p["model"]),
                status,
                f"{line['idle_w']:.1f} + {line['slope_w']:.1f}·u" if line else "–",
                _num(line["r2"], 3) if line else "–",
                _num(p["idle_w"], 1),
                _num(p["idle_readings"]),
                _num(p["p95_w"], 0),
                _pct(p["mean_utilization"]),
                f"{_pct(p['utilization_p5'])} – {_pct(p['utilization_p95'])}",
                _num(c["days"]),
                _num(c["gpus"]),
                _num(c["readings"]),
                _num(c["hours"], 1),
                f"{escape(c['first_day'] or '–')} – {escape(c['last_day'] or '–')}",
                f"{o['overhead_w']:.0f} W ({o['nodes']} nodes, {o['metered_node_hours']:.0f} node-h)"
                if o
                else "–",
            ]
        )
    return _table(
        [
            "model",
            "status",
            "line W (u 0..1)",
            "R²",
            "idle W (u<5 %)",
            "idle readings",
            "p95 W",
            "mean u",
            "u p5 – p95",
            "days",
            "GPUs",
            "readings",
            "hours",
            "span",
            "node overhead",
        ],
        rows,
    )


def _sensitivity(doc: dict[str, Any]) -> str:
    cur = doc["currency"]
    rows = [
        [
            escape(s["case"]),
            _money(s["total_cost"], cur),
            _money(s["change_total_cost"], cur),
            _pct(s["change_ratio"]),
            _money(s["energy_cost"], cur),
            _num(s["facility_kwh"]),
            _num(s["cost_per_gpu_hour"], 4),
        ]
        for s in doc["sensitivity"]
    ]
    return _table(
        ["case", "total cost", "change", "change", "energy cost", "facility kWh", "per GPU-hour"], rows
    )


def _advice(doc: dict[str, Any]) -> str:
    cur, a = doc["currency"], doc["advice"]
    parts = [
        "<p><span class='estimate'>estimate</span> Both figures below are estimated from the measured "
        "data, not measured savings; their assumptions follow each table.</p>"
        "<h3>Idle GPUs that drew power</h3>"
    ]
    idle = a["idle"]["months"]
    if idle:
        parts.append(
            _table(
                ["month", "idle GPU-hours", "their GPU kWh", "facility kWh", f"cost ({cur})"],
                [
                    [
                        escape(m["month"]),
                        _num(m["idle_gpu_hours"]),
                        _num(m["idle_gpu_energy_kwh"]),
                        _num(m["facility_kwh"]),
                        _money(m["cost"], cur),
                    ]
                    for m in idle
                ],
            )
        )
    else:
        parts.append("<p>No idle GPU-hours in the ledger's history (or no history read).</p>")
    parts.append(_list(a["idle"]["assumptions"]))
    parts.append("<h3>What a power cap would save</h3>")
    caps = a["power_cap"]["options"]
    if caps:
        parts.append(
            _table(
                [
                    "model",
                    "cap W",
                    "readings above",
                    "GPU energy saved",
                    "line reaches cap at",
                    "facility kWh saved (plan)",
                    f"energy cost saved ({cur}, plan)",
                ],
                [
                    [
                        escape(o["model"]),
                        _num(o["cap_w"]),
                        _pct(o["readings_above_cap"]),
                        _pct(o["gpu_energy_share_saved"]),
                        _pct(o["line_utilization_at_cap"]),
                        _num(o["plan_facility_kwh_saved"]),
                        _money(o["plan_energy_cost_saved"], cur),
                    ]
                    for o in caps
                ],
            )
        )
    else:
        parts.append("<p>No measured power histogram for the plan's models: no cap to estimate.</p>")
    parts.append(_list(a["power_cap"]["assumptions"]))
    return "".join(parts)


def _list(items: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"


def _proposed_plan(doc: dict[str, Any]) -> str:
    lines = ["plan:"]
    for p in doc["proposed_plan"]:
        lines.append(
            f"  - {{site: {p['site']}, month: {p['month']}, cost: {p['cost']:.2f}, "
            f"it_energy_kwh: {p['it_energy_kwh']:.0f}, demand_charge: {p['demand_charge']:.2f}}}"
        )
    return f"<pre>{escape(chr(10).join(lines))}</pre>"


def _assumptions(doc: dict[str, Any]) -> str:
    a = doc["assumptions"]
    items = []
    for key, value in a.items():
        if key in ("months", "warnings"):
            continue
        text = (
            value
            if isinstance(value, str)
            else ", ".join(f"{k}: {v}" for k, v in value.items())
            if isinstance(value, dict)
            else str(value)
        )
        items.append(f"<li><b>{escape(key)}</b>: {escape(text)}</li>")
    warnings = "".join(f"<p class='bad'>{escape(w)}</p>" for w in a["warnings"])
    months = _table(
        [
            "month",
            "hours",
            "price / kWh",
            "escalation",
            "outdoor °C",
            "outdoor from",
            "chiller PLR",
            "cooling ratio",
            "cooling ratio from",
        ],
        [
            [
                escape(m["month"]),
                _num(m["hours"]),
                _num(m["price_per_kwh"], 5),
                _num(m["escalation_factor"], 4),
                _num(m["outdoor_c"], 1),
                escape(m["outdoor_source"] or "–"),
                _num(m["chiller_plr"], 3),
                _num(m["cooling_ratio"], 3),
                escape(m["cooling_ratio_source"] or "–"),
            ]
            for m in a["months"]
        ],
    )
    return f"{warnings}<ul>{''.join(items)}</ul><h3>Each month</h3>{months}"


def render_html(doc: dict[str, Any]) -> str:
    cur = doc["currency"]
    a = doc["assumptions"]["scenario"]
    heads = [
        "month",
        "GPUs",
        "IT kWh",
        "cooling kWh",
        "facility kWh",
        f"energy ({cur})",
        f"demand ({cur})",
        f"capex ({cur})",
        f"total ({cur})",
        "CO2e kg",
        "GPU-hours",
        f"per GPU-h ({cur})",
        f"cloud ({cur})",
    ]
    body = [
        f"<h1>Plan for site {escape(doc['site'])}: {escape(a['start'])} to {escape(a['end'])}</h1>",
        f"<p class='sub'>{a['months']} months, prices in {escape(cur)}, made by wattledger plan from "
        f"{escape(doc['assumptions']['configuration'])}.</p>",
        _summary(doc),
        "<h2>Cost per month</h2>",
        f"<figure>{cost_chart(doc)}<figcaption>Energy cost split into its IT and "
        "cooling (and other) parts by energy; demand charge; capex as monthly depreciation."
        "</figcaption></figure>",
        f"<figure>{tco_chart(doc)}<figcaption>Cumulative spend: on-prem with the servers paid when they "
        "arrive, against renting the same GPU-hours; the dashed line books capex as depreciation."
        "</figcaption></figure>",
        "<h2>Months</h2>",
        _table(
            heads,
            [_month_cells(r, cur) for r in doc["months"]],
            _month_cells({"month": "total", **doc["totals"]}, cur),
        ),
        "<h2>Fleet</h2>",
        _fleet(doc),
        "<h2>Power against utilization</h2>",
        f"<figure>{power_chart(doc)}<figcaption>Measured: the mean power of "
        "each 5 % utilization bin (dot size: readings) and the least-squares line over every reading; given: "
        "the "
        "scenario's line, the diamond at the entry's utilization.</figcaption></figure>",
        "<h2>Measured profiles and the data they came from</h2>",
        _profiles(doc),
        "<h2>Sensitivity</h2>",
        _sensitivity(doc),
        "<h2>Advice</h2>",
        _advice(doc),
        "<h2>Proposed plan</h2><p>Each month's energy cost + demand charge and IT energy, for the "
        "collector's "
        "configuration:</p>",
        _proposed_plan(doc),
        "<h2>Assumptions</h2>",
        _assumptions(doc),
    ]
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>wattledger plan: "
        f"{escape(doc['site'])}</title><meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )
