"""The plan's three charts as inline SVG (matplotlib, text as paths: no font or network at view
time): monthly cost stacked by part, cumulative on-prem spend against the cloud with the
break-even month, and power against utilization (measured bins and lines, explicit lines)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

PART_COLOURS = {
    "energy, IT": "#3b6ea5",
    "energy, cooling and other": "#7fb3d5",
    "demand charge": "#e59866",
    "capex (depreciation)": "#8e8e8e",
}
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def _figure(width: float = 9.0, height: float = 3.8) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def _svg(fig: Any, prefix: str) -> str:
    """The figure as an ``<svg>`` element for inlining: no XML prolog, DOCTYPE or metadata, and
    its ids prefixed so that several charts in one page never share one."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "wattledger-plan"}):
        fig.savefig(
            buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None}
        )
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = text.replace('id="', f'id="{prefix}-').replace('href="#', f'href="#{prefix}-')
    return text.replace("url(#", f"url(#{prefix}-")


def _month_ticks(ax: Any, months: Sequence[str]) -> None:
    step = max(1, len(months) // 12)
    ticks = list(range(0, len(months), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([months[i] for i in ticks], rotation=45, ha="right", fontsize=8)


def _money() -> Any:
    from matplotlib.ticker import FuncFormatter

    def label(value: float, _pos: int) -> str:
        for scale, unit in ((1e9, "bn"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:,.1f}{unit}"
        return f"{value:,.0f}"

    return FuncFormatter(label)


def cost_chart(doc: dict[str, Any]) -> str:
    rows = doc["months"]
    months = [r["month"] for r in rows]
    parts: dict[str, list[float]] = {name: [] for name in PART_COLOURS}
    for r in rows:
        it_share = r["it_kwh"] / r["facility_kwh"] if r["facility_kwh"] > 0 else 0.0
        parts["energy, IT"].append(r["energy_cost"] * it_share)
        parts["energy, cooling and other"].append(r["energy_cost"] * (1 - it_share))
        parts["demand charge"].append(r["demand_charge"])
        parts["capex (depreciation)"].append(r["capex"])
    fig = _figure()
    ax = fig.add_subplot()
    bottom = [0.0] * len(rows)
    for name, values in parts.items():
        ax.bar(range(len(rows)), values, bottom=bottom, color=PART_COLOURS[name], label=name, width=0.85)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title(f"Monthly cost by part ({doc['currency']})", fontsize=11, loc="left")
    ax.yaxis.set_major_formatter(_money())
    _month_ticks(ax, months)
    ax.legend(fontsize=8, ncols=4, loc="upper left", frameon=False)
    ax.margins(y=0.18)
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig, "cost")


def tco_chart(doc: dict[str, Any]) -> str:
    rows = doc["months"]
    months = [r["month"] for r in rows]
    fig = _figure()
    ax = fig.add_subplot()
    depreciated, running = [], 0.0
    for r in rows:
        running += r["total_cost"]
        depreciated.append(running)
    comparison = doc.get("cloud_comparison")
    x = list(range(len(rows)))
    if comparison is not None:
        ax.plot(
            x,
            comparison["onprem_cumulative_cash"],
            color="#1f4e79",
            lw=2,
            label="on-prem, servers paid on arrival + energy + demand",
        )
        ax.plot(x, comparison["cloud_cumulative"], color="#d62728", lw=2, label="cloud (GPU-hours x price)")
        found = comparison["break_even_month"]
        if found is not None:
            i = months.index(found)
            ax.axvline(i, color="#2ca02c", ls=":", lw=1.5)
            ax.annotate(
                f"break-even {found}",
                (i, comparison["cloud_cumulative"][i]),
                xytext=(-12, 28),
                textcoords="offset points",
                fontsize=9,
                color="#1e7b1e",
                ha="right",
                bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "#2ca02c", "lw": 0.8},
            )
            ax.plot([i], [comparison["cloud_cumulative"][i]], "o", color="#2ca02c")
        title = "Cumulative on-prem spend against the cloud"
    else:
        title = "Cumulative on-prem cost (no cloud_price_per_gpu_hour in the scenario: no cloud line)"
    ax.plot(x, depreciated, color="#1f4e79", lw=1, ls="--", label="on-prem, capex depreciated (total_cost)")
    ax.set_title(f"{title} ({doc['currency']})", fontsize=11, loc="left")
    ax.yaxis.set_major_formatter(_money())
    _month_ticks(ax, months)
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    return _svg(fig, "tco")


def power_chart(doc: dict[str, Any]) -> str:
    fig = _figure(height=4.2)
    ax = fig.add_subplot()
    colour = 0
    for profile in doc["profiles"]:
        c = SERIES[colour % len(SERIES)]
        colour += 1
        bins = profile["binned"]
        if bins:
            most = max(b["readings"] for b in bins)
            ax.scatter(
                [100 * b["utilization"] for b in bins],
                [b["mean_power_w"] for b in bins],
                s=[12 + 80 * b["readings"] / most for b in bins],
                color=c,
                alpha=0.55,
                label=f"{profile['model']}: measured ({profile['coverage']['readings']:,} readings, "
                "mean per 5 % bin)",
            )
        line = profile["line"]
        if line is not None:
            ax.plot(
                [0, 100],
                [line["idle_w"], line["max_w"]],
                color=c,
                lw=1.8,
                label=f"{profile['model']}: fitted {line['idle_w']:.0f} + {line['slope_w']:.0f}·u W "
                f"(R² {line['r2']:.2f})",
            )
    for entry in doc["fleet"]:
        if entry["measured"] or entry["power"] != "explicit" or entry["gpu_power_w"] is None:
            continue
        c = SERIES[colour % len(SERIES)]
        colour += 1
        ax.plot(
            [0, 100],
            [entry["idle_w"], entry["max_w"]],
            color=c,
            ls="--",
            lw=1.4,
            label=f"{entry['name']}: power given in the scenario",
        )
        ax.plot([100 * entry["utilization"]], [entry["gpu_power_w"]], "D", color=c, ms=5)
    if not ax.lines and not ax.collections:
        ax.text(
            0.5,
            0.5,
            "no power line: no measured profile and no explicit entry",
            ha="center",
            transform=ax.transAxes,
        )
    ax.set_xlim(0, 100)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("GPU utilization (%)")
    ax.set_ylabel("GPU power (W)")
    ax.set_title("Power against utilization", fontsize=11, loc="left")
    ax.legend(fontsize=7.5, loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    return _svg(fig, "power")
