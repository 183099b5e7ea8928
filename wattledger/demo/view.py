"""The demo's view of a :class:`Snapshot`: a rich layout for a terminal, plain lines otherwise.

Both show the same figures, with their units: power in W, temperatures in °C against each
GPU's slowdown threshold, money in the site's currency against the plan.
"""

from __future__ import annotations

import time
from datetime import datetime

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from wattledger.demo.snapshot import GpuHeat, ServerRow, SiteRow, Snapshot, group_alerts

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
#: margins to the slowdown threshold below which a temperature is shown as a warning / danger
WARN_MARGIN_C = 8.0
DANGER_MARGIN_C = 3.0


def money(amount: float | None, currency: str) -> str:
    if amount is None:
        return "-"
    symbol = SYMBOLS.get(currency.upper())
    return f"{symbol}{amount:,.2f}" if symbol else f"{amount:,.2f} {currency}"


def watts(power_w: float | None) -> str:
    if power_w is None:
        return "- W"
    return f"{power_w / 1000:,.1f} kW" if power_w >= 10_000 else f"{power_w:,.0f} W"


def kwh(energy_j: float) -> str:
    return f"{energy_j / 3.6e6:,.1f} kWh"


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.0f} %"


def heat(h: GpuHeat | None) -> str:
    if h is None:
        return "- °C"
    limit = f" / {h.slowdown_c:.0f} °C slowdown" if h.slowdown_c is not None else ""
    return f"{h.temp_c:.1f} °C{limit}"


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    age = max(0.0, now - ts)
    if age < 120:
        return f"{age:.0f} s ago"
    if age < 7200:
        return f"{age / 60:.0f} min ago"
    return datetime.fromtimestamp(ts).strftime("%b %d %H:%M")


def _heat_style(h: GpuHeat | None) -> str:
    margin = None if h is None else h.margin_c
    if margin is None:
        return ""
    if margin <= DANGER_MARGIN_C:
        return "bold red"
    return "yellow" if margin <= WARN_MARGIN_C else "green"


def _over_style(ratio: float | None, limit: float = 1.0) -> str:
    if ratio is None:
        return ""
    return "bold red" if ratio > limit else "green"


def demand(site: SiteRow) -> str:
    """The demand charge, and its budget when the plan gives one."""
    c = site.currency
    if site.plan_demand_charge is None:
        return money(site.demand_charge, c)
    return f"{money(site.demand_charge, c)} of {money(site.plan_demand_charge, c)}"


# ----------------------------------------------------------------------------- rich layout


def _table(title: str, names: list[str], figures: list[str]) -> Table:
    """A table of name columns (left) then figure columns (right-aligned)."""
    table = Table(title=title, box=box.SIMPLE_HEAVY, expand=True, title_justify="left")
    for name in names:
        table.add_column(name)
    for figure in figures:
        table.add_column(figure, justify="right")
    return table


def servers_table(snap: Snapshot) -> Table:
    table = _table("Servers (latest readings)", ["server", "cluster", "workload"],
                   ["GPUs", "power", "util", "hottest GPU", "temperature / slowdown", "last reading"])
    for s in snap.servers:
        gpu = f"GPU {s.hottest.gpu}" if s.hottest else "-"
        table.add_row(s.node, s.cluster or "-", s.workload or "-", str(s.gpus), watts(s.power_w),
                      percent(s.util), gpu, Text(heat(s.hottest), style=_heat_style(s.hottest)),
                      Text(ago(s.last_seen, snap.at), style="red" if s.stale else ""))
    if snap.servers:
        table.add_section()
        table.add_row("fleet", "", "", str(sum(s.gpus for s in snap.servers)),
                      Text(watts(snap.fleet_power_w), style="bold"), "", "", "", "")
    return table


def money_table(snap: Snapshot) -> Table:
    """Energy cost against the energy part of the plan to date (both accrue), the demand charge
    against its budget (both whole), then the whole month: cost so far, forecast, plan."""
    table = _table("Energy and cost this month (energy = IT + cooling; the demand charge apart)", ["site"],
                   ["IT energy", "energy cost", "energy plan to date", "of it", "demand charge",
                    "cost so far", "plan to date", "month-end forecast", "monthly plan", "carbon"])
    for site in snap.sites:
        c = site.currency
        forecast_style = ("bold red" if site.forecast is not None and site.plan_cost is not None
                          and site.forecast > site.plan_cost else "")
        carbon = "-" if site.carbon_g is None else f"{site.carbon_g / 1e6:,.2f} t CO2e"
        table.add_row(site.site, kwh(site.it_energy_j), money(site.energy_cost, c),
                      money(site.plan_energy_to_date, c),
                      Text(percent(site.energy_of_plan_to_date),
                           style=_over_style(site.energy_of_plan_to_date, 1.05)),
                      Text(demand(site), style=_over_style(site.demand_of_budget)),
                      Text(money(site.cost, c), style="bold"), money(site.plan_to_date, c),
                      Text(money(site.forecast, c), style=forecast_style), money(site.plan_cost, c), carbon)
    return table


def alerts_panel(snap: Snapshot) -> RenderableType:
    if snap.alerts is None:
        return Text("alerts: Prometheus is not running, so no alert rules are evaluated",
                    style="dim")
    if not snap.alerts:
        return Text("alerts: none pending or firing", style="green")
    table = Table(title="Alerts (Prometheus)", box=box.SIMPLE, expand=True, title_justify="left")
    table.add_column("state")
    table.add_column("alert")
    table.add_column("severity")
    table.add_column("on")
    table.add_column("summary")
    for g in group_alerts(snap.alerts):
        style = "bold red" if g.state == "firing" else "yellow"
        table.add_row(Text(g.state, style=style), g.name, g.severity or "-", g.where, g.summary or "")
    return table


def footer(snap: Snapshot) -> Text:
    u = snap.urls
    text = Text()
    text.append("collector   ", style="bold")
    text.append(f"{u.collector}   (/metrics  /v1/spend  /v1/nodes  /docs)\n")
    text.append("prometheus  ", style="bold")
    text.append(f"{u.prometheus}   {u.prometheus}/alerts\n" if u.prometheus
                else "not running (apt-get install prometheus)\n")
    text.append("grafana     ", style="bold")
    if u.prometheus and u.grafana_provisioning:
        text.append(f"{u.grafana_provisioning}/ with WATTLEDGER_PROMETHEUS_URL={u.prometheus} "
                    "(see docs/demo.md)\n")
    else:
        text.append("see docs/demo.md\n")
    text.append("Ctrl-C stops the demo and every process it started", style="dim")
    return text


def header(snap: Snapshot) -> Text:
    text = Text()
    text.append("wattledger demo", style="bold cyan")
    gpus = sum(s.gpus for s in snap.servers)
    text.append(f"   {len(snap.servers)} simulated servers, {gpus} GPUs   "
                f"{datetime.fromtimestamp(snap.at).strftime('%Y-%m-%d %H:%M:%S')}")
    b = snap.backfill
    if b is not None and not b.done:
        state = f"failed: {b.error}" if b.error else f"{b.fraction * 100:.0f} %"
        until = f", history up to {datetime.fromtimestamp(b.until):%b %d %H:%M}" if b.until else ""
        text.append(f"\nbackfilling the month so far: {state} ({b.readings:,} readings{until})",
                    style="yellow")
    for note in snap.notes:
        text.append(f"\n{note}", style="red")
    return text


def render(snap: Snapshot) -> RenderableType:
    return Panel(Group(header(snap), servers_table(snap), money_table(snap), alerts_panel(snap),
                       footer(snap)), box=box.ROUNDED, padding=(0, 1))


# ----------------------------------------------------------------------------- plain lines


def _server_line(s: ServerRow) -> str:
    where = f"GPU {s.hottest.gpu} " if s.hottest else ""
    return (f"  {s.node} ({s.workload or '-'}, {s.cluster or '-'}): power {watts(s.power_w)}, "
            f"util {percent(s.util)}, hottest {where}{heat(s.hottest)}"
            + (" STALE" if s.stale else ""))


def _site_line(site: SiteRow) -> str:
    c = site.currency
    return (f"  site {site.site}: IT energy {kwh(site.it_energy_j)}, "
            f"energy cost {money(site.energy_cost, c)} "
            f"vs energy plan to date {money(site.plan_energy_to_date, c)} "
            f"({percent(site.energy_of_plan_to_date)}), demand charge {demand(site)}; "
            f"cost so far {money(site.cost, c)} "
            f"{c} vs plan to date {money(site.plan_to_date, c)} ({percent(site.used_of_plan_to_date)}), "
            f"month-end forecast {money(site.forecast, c)} vs monthly plan {money(site.plan_cost, c)}")


def plain_lines(snap: Snapshot) -> list[str]:
    """The figures of one tick as lines of text (for logs and pipes)."""
    when = time.strftime("%H:%M:%S", time.localtime(snap.at))
    hottest = snap.hottest
    where = f" ({hottest.node} GPU {hottest.gpu})" if hottest else ""
    lines = [f"[{when}] fleet power {watts(snap.fleet_power_w)}, hottest GPU {heat(hottest)}{where}"]
    b = snap.backfill
    if b is not None and not b.done:
        state = f"failed: {b.error}" if b.error else f"{b.fraction * 100:.0f} %"
        lines.append(f"  backfill of the month so far: {state} ({b.readings:,} readings)")
    lines += [_server_line(s) for s in snap.servers]
    lines += [_site_line(site) for site in snap.sites]
    if snap.alerts is not None:
        names = [f"{g.name} {g.state} on {g.where}" for g in group_alerts(snap.alerts)]
        lines.append("  alerts: " + ("; ".join(names) if names else "none pending or firing"))
    lines += [f"  {note}" for note in snap.notes]
    return lines
