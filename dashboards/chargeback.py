"""Chargeback: each team's spend this month against its budget, its forecast, what it holds
(GPUs, idle GPUs) and the jobs that cost the most (docs/chargeback.md).

Teams are labels of the collector's team families (a handful per site); jobs and pods never are
(their number is unbounded): "top jobs" is the ledger's own list, ``GET /v1/jobs`` (JSON, or CSV
for a chargeback sheet), linked from the teams table with the board's site and the collector's
address (the ``collector`` variable). A Grafana plugin to read JSON (Infinity) is not needed,
and the figures are the ledger's exact ones, not a rate computed from scraped counters.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.kit import (
    PERCENT_UNIT,
    SHORT,
    SITE_SEL,
    WATT,
    Q,
    alert_annotation,
    bars,
    board,
    currency_unit,
    graph,
    grid,
    increase,
    per_currency,
    rate,
    single,
    steps,
)

HOURS = "h"


def team_figure(metric: str) -> str:
    """A team gauge of the ledger (month cost, plan, forecast), one value per (site, team)."""
    return f"max by (site, team, currency) ({metric}{{{SITE_SEL}}})"


MONTH = team_figure("wattledger_team_month_cost")
PLAN_TO_DATE = team_figure("wattledger_team_plan_cost_to_date")
PLAN = team_figure("wattledger_team_plan_cost")
FORECAST = team_figure("wattledger_team_forecast_cost")
DEMAND = team_figure("wattledger_team_demand_charge")
ENERGY_PLAN_TO_DATE = team_figure("wattledger_team_plan_energy_cost_to_date")
#: a team's energy cost so far, its demand-charge share aside (TeamCostOverPlan)
ENERGY = f"{MONTH} - on (site, team, currency) {DEMAND}"


def per_team(metric: str, window: str = "$__rate_interval") -> str:
    """A team counter's rate, replicas collapsed, by (site, team)."""
    return f"sum by (site, team) ({rate(metric, SITE_SEL, window)})"


def jobs_link(title: str, query: str) -> db.DashboardLink:
    return (db.DashboardLink(title).type(dm.DashboardLinkType.LINK).target_blank(True)
            .url(f"${{collector}}/v1/jobs?site=${{site:raw}}{query}"))


def build(currency: str = "USD") -> db.Dashboard:
    money = currency_unit(currency)
    d = board("wattledger-chargeback", "wattledger / Chargeback",
              "Spend by team against each team's budget, the month-end forecast, GPUs held and held idle, "
              f"and the ledger's jobs by cost ({currency}).",
              ["cost", "chargeback"], "wattledger_node_last_seen_timestamp_seconds",
              [alert_annotation("Cost alerts", "cost", "orange")])
    d = d.with_variable(db.TextBoxVariable("collector").label("Collector URL (for /v1/jobs)")
                        .default_value("http://collector:9861"))

    d = d.with_row(db.Row("Spend by team vs budget (this month)"))
    d = d.with_panel(per_currency(bars(
        "Spent this month by team", Q(f"sort_desc({MONTH})", "{{site}} / {{team}} {{currency}}"), money,
        "Energy cost (the team's GPUs, its share of the nodes' other energy and of cooling) plus its share "
        "of the demand charge; teams idle (GPUs nobody held) and unassigned (no teams: rule matched) "
        "included, so the bars add up to the site's month.", width=8)))
    d = d.with_panel(per_currency(graph("Spent (solid) vs plan to date (dashed), by team", [
        Q(MONTH, "spent {{site}} / {{team}} {{currency}}"),
        Q(PLAN_TO_DATE, "plan to date {{site}} / {{team}} {{currency}}")], money,
        "Each team's month so far against its budget x the elapsed fraction of the month.",
        dashed_refs=["B"], width=8)))
    d = d.with_panel(per_currency(graph("Forecast month end (solid) vs budget (dashed), by team", [
        Q(FORECAST, "forecast {{site}} / {{team}} {{currency}}"),
        Q(PLAN, "budget {{site}} / {{team}} {{currency}}")], money,
        "Month to date + the team's trailing 24 h cost rate x the time left: TeamCostForecastOverPlan "
        "fires above the budget for an hour.", dashed_refs=["B"], width=8)))
    d = d.with_panel(graph("Energy cost / energy plan to date, by team", [
        Q(f"({ENERGY}) / on (site, team, currency) {ENERGY_PLAN_TO_DATE}", "{{site}} / {{team}}")],
        PERCENT_UNIT, "The team's energy cost (its demand-charge share aside) against its budget less that "
        "share, prorated: TeamCostOverPlan fires above 105 % for an hour.",
        steps((None, "green"), (1.0, "yellow"), (1.05, "red")), width=12))
    teams = grid("Teams by cost this month (top jobs: the links)", Q(f"sort_desc({MONTH})"), money,
                 "One row per team. Jobs and pods are never metric labels: the ledger lists them, each with "
                 "its GPU-seconds, idle GPU-seconds, energy and cost (the links open GET /v1/jobs of the "
                 "board's site on the collector set above, as JSON or as CSV for a chargeback sheet).",
                 width=12, hide=("Time",))
    d = d.with_panel(teams.links([jobs_link("Jobs by cost (JSON, last 30 days)", ""),
                                  jobs_link("Jobs (CSV, money in minor units)", "&format=csv")]))

    d = d.with_row(db.Row("What the teams hold"))
    d = d.with_panel(graph("IT power by team", [
        Q(per_team("wattledger_team_energy_joules_total"), "{{site}} / {{team}}")], WATT,
        "The team's GPUs' power and its share of its nodes' other power; idle: GPUs nobody held.",
        stacked=True, width=8))
    d = d.with_panel(graph("GPUs held by team", [
        Q(per_team("wattledger_team_gpu_seconds_total"), "{{site}} / {{team}}")], SHORT,
        "GPU-seconds per second: GPUs (MIG slices as their share) the team's allocations held.",
        stacked=True, width=8))
    d = d.with_panel(graph("GPUs held idle (under 5 % utilization), by team", [
        Q(per_team("wattledger_team_idle_gpu_seconds_total"), "{{site}} / {{team}}"),
        Q(per_team("wattledger_team_idle_gpu_seconds_total", "1h"), "1 h average {{site}} / {{team}}")],
        SHORT, "Held by an allocation while the GPU was idle: GpuAllocatedIdle fires when the hour's "
        "average reaches one GPU for 15 min. /v1/jobs names the jobs (idle_gpu_seconds).",
        steps((None, "green"), (1.0, "orange")), dashed_refs=["B"], width=8))
    d = d.with_panel(single("GPU-hours held idle over the range", Q(
        f"sum by (site) ({increase('wattledger_team_idle_gpu_seconds_total', SITE_SEL)}) / 3600"), HOURS,
        "Every team's held-idle GPU-seconds over the dashboard's range, in hours.",
        steps((None, "green"), (1.0, "orange")), width=6))
    d = d.with_panel(grid("GPU-hours held idle over the range, by team", Q(
        f"sort_desc(sum by (site, team) ({increase('wattledger_team_idle_gpu_seconds_total', SITE_SEL)})"
        " / 3600)"), HOURS, "Waste per team; its cost is in each job's waste_cost (/v1/jobs).",
        width=6, hide=("Time",)))
    d = d.with_panel(per_currency(graph("Energy cost per hour by team", [
        Q(f"3600 * sum by (site, team, currency) ({rate('wattledger_team_energy_cost_total', SITE_SEL)})",
          "{{site}} / {{team}} {{currency}}")], money, "IT and cooling, at the minute's tariff.",
        stacked=True, width=12)))
    d = d.with_panel(single("Idle share of IT energy over the range", Q(
        f"sum by (site) ({increase('wattledger_idle_energy_joules_total', SITE_SEL)})"
        f" / sum by (site) ({increase('wattledger_team_energy_joules_total', SITE_SEL)})"),
        PERCENT_UNIT, "Energy of GPUs no allocation held (with their share of the nodes' other energy) over "
        "all the teams' energy.", steps((None, "green"), (0.3, "yellow"), (0.5, "orange")), width=6))
    return d
