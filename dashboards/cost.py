"""Energy & cost vs plan: month-to-date spend against the plan, the month-end forecast, burn,
where the money goes (cluster, node, cooling, demand) and the carbon that came with it."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.kit import (
    GRAMS,
    IT_POWER,
    KWH,
    PERCENT_UNIT,
    SEL,
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
    rate,
    single,
    steps,
)

J_PER_KWH = "3.6e6"


def site_figure(metric: str) -> str:
    """A site-level ledger gauge (month cost, plan, forecast), one value per site."""
    return f"max by (site, currency) ({metric}{{{SITE_SEL}}})"


MONTH = site_figure("wattledger_month_cost")
PLAN_TO_DATE = site_figure("wattledger_plan_cost_to_date")
FORECAST = site_figure("wattledger_forecast_cost")
PLAN = site_figure("wattledger_plan_cost")
#: the plan's allowance per hour: the month's budget spread over the month's hours (UTC month)
PLAN_PER_HOUR = f"{PLAN} / scalar(days_in_month() * 24)"


def cost_per_hour(window: str) -> str:
    return (f"3600 * sum by (site, currency) "
            f"({rate('wattledger_energy_cost_total', SITE_SEL, window)})")


def energy(metric: str, by: str, sel: str = SEL) -> str:
    """Joules over the dashboard's range, summed by the given labels."""
    return f"sum by ({by}) ({increase(metric, sel)})"


def cost_share(by: str) -> str:
    """The site's energy cost over the range shared out by IT energy: exact for a flat price,
    an average for time-of-use bands (the collector's /v1/spend report is exact)."""
    return (f"{energy('wattledger_device_energy_joules_total', by)}\n"
            f"* on (site) group_left (currency)\n"
            f"(\n  sum by (site, currency) ({increase('wattledger_energy_cost_total', SITE_SEL)})\n"
            f"  / on (site) group_left\n"
            f"  {energy('wattledger_device_energy_joules_total', 'site', SITE_SEL)}\n)")


def build(currency: str = "USD") -> db.Dashboard:
    money = currency_unit(currency)
    over_plan = steps((None, "green"), (1.0, "yellow"), (1.05, "red"))
    d = board("wattledger-cost", "wattledger / Energy & cost vs plan",
              "Month-to-date energy cost against the site's plan to date, the month-end forecast against "
              "the month's plan, burn rate, cost by cluster and node, cooling, demand and carbon "
              f"({currency}).",
              ["cost", "energy"], "wattledger_node_last_seen_timestamp_seconds",
              [alert_annotation("Cost alerts", "cost", "orange")])

    d = d.with_row(db.Row("This month against plan"))
    d = d.with_panel(single("Spent this month", Q(f"sum({MONTH})"), money,
                            "Energy cost (IT + cooling) plus the demand charge so far, this billing month."))
    d = d.with_panel(single("Plan to date", Q(f"sum({PLAN_TO_DATE})"), money,
                            "The month's budget times the elapsed fraction of the month."))
    d = d.with_panel(single("Spent / plan to date", Q(f"sum({MONTH}) / sum({PLAN_TO_DATE})"), PERCENT_UNIT,
                            "EnergyCostOverPlan fires above 105 % for an hour.", over_plan))
    d = d.with_panel(single("Forecast month end", Q(f"sum({FORECAST})"), money,
                            "Month-to-date cost plus the trailing 24 h cost rate for the rest of the month."))
    d = d.with_panel(single("Month's plan", Q(f"sum({PLAN})"), money))
    d = d.with_panel(single("Forecast / plan", Q(f"sum({FORECAST}) / sum({PLAN})"), PERCENT_UNIT,
                            "EnergyCostForecastOverPlan fires above 100 % for an hour.",
                            steps((None, "green"), (0.95, "yellow"), (1.0, "red"))))
    d = d.with_panel(graph("Spent this month (solid) vs plan to date (dashed)", [
        Q(MONTH, "spent {{site}}"), Q(PLAN_TO_DATE, "plan to date {{site}}")], money, dashed_refs=["B"]))
    d = d.with_panel(graph("Forecast month end (solid) vs the month's plan (dashed)", [
        Q(FORECAST, "forecast {{site}}"), Q(PLAN, "plan {{site}}")], money, dashed_refs=["B"]))

    d = d.with_row(db.Row("Burn rate"))
    d = d.with_panel(graph("Cost per hour (solid) vs the plan's hourly allowance (dashed)", [
        Q(cost_per_hour("$__rate_interval"), "{{site}}"), Q(PLAN_PER_HOUR, "plan {{site}}")], money,
        "Energy cost per hour (demand charge excluded) against the month's plan spread over its hours.",
        dashed_refs=["B"]))
    d = d.with_panel(graph("Budget burn ratio (1 = on plan)", [
        Q(f"{cost_per_hour('1h')} / on (site, currency) ({PLAN_PER_HOUR})", "1 h {{site}}"),
        Q(f"{cost_per_hour('6h')} / on (site, currency) ({PLAN_PER_HOUR})", "6 h {{site}}"),
    ], "x", "Cost rate over the plan's rate. EnergyBudgetBurnFast: above 3 over 1 h and 5 min; "
            "EnergyBudgetBurnSlow: above 1.5 over 6 h and 30 min.",
        steps((None, "green"), (1.5, "orange"), (3.0, "red"))))
    d = d.with_panel(graph("Cost per hour by part", [
        Q(f"3600 * sum by (part) ({rate('wattledger_energy_cost_total', SITE_SEL)})",
          "{{part}}")], money, "IT energy and the cooling energy it causes (IT x (PUE - 1)).", stacked=True))
    d = d.with_panel(graph("IT power by cluster", [Q(
        f"sum by (site, cluster) ({IT_POWER})", "{{site}} / {{cluster}}")],
        WATT, stacked=True))

    d = d.with_row(db.Row("Where the money goes (dashboard time range)"))
    d = d.with_panel(bars("Cost by cluster", Q(cost_share("site, cluster"), "{{site}} / {{cluster}}"), money,
                          "The site's cost over the range shared out by IT energy (exact for a flat price; "
                          "for time-of-use tariffs the collector's /v1/spend report is exact).", width=8))
    d = d.with_panel(grid("Cost by node", Q(f"sort_desc({cost_share('site, cluster, node')})"), money,
                          "As cost by cluster, per node.", width=8, hide=("Time",)))
    d = d.with_panel(single("Cooling share of energy", Q(
        f"sum({energy('wattledger_cooling_energy_joules_total', 'site', SITE_SEL)})"
        f" / (sum({energy('wattledger_device_energy_joules_total', 'site', SITE_SEL)})"
        f" + sum({energy('wattledger_cooling_energy_joules_total', 'site', SITE_SEL)}))"), PERCENT_UNIT,
        "Cooling energy over facility energy (1 - 1/PUE).", width=4, height=8))
    d = d.with_panel(single("Energy (IT + cooling)", Q(
        f"(sum({energy('wattledger_device_energy_joules_total', 'site', SITE_SEL)})"
        f" + sum({energy('wattledger_cooling_energy_joules_total', 'site', SITE_SEL)})) / {J_PER_KWH}"),
        KWH, width=4, height=8))
    d = d.with_panel(graph("IT energy per hour by node", [Q(
        f"sum by (node) ({rate('wattledger_device_energy_joules_total', SEL)})"
        f" * 3600 / {J_PER_KWH}", "{{node}}")], KWH, stacked=True))

    d = d.with_row(db.Row("Demand and carbon"))
    d = d.with_panel(graph("Facility power, 15 min average (solid) vs this month's peak (dashed)", [
        Q(f"sum by (site) ({rate('wattledger_device_energy_joules_total', SITE_SEL, '15m')})"
          f" + on (site) sum by (site) ({rate('wattledger_cooling_energy_joules_total', SITE_SEL, '15m')})",
          "15 min avg {{site}}"),
        Q(f"max by (site) (wattledger_peak_demand_watts{{{SITE_SEL}}})", "peak {{site}}"),
    ], WATT, "The demand charge is priced on the month's highest 15-minute average facility power.",
        dashed_refs=["B"], width=8))
    d = d.with_panel(graph("Demand charge this month",
                           [Q(site_figure("wattledger_demand_charge"), "{{site}}")],
                           money, width=8))
    d = d.with_panel(graph("Carbon per hour", [Q(
        f"3600 * sum by (site) ({rate('wattledger_carbon_grams_total', SITE_SEL)})",
        "{{site}}")], GRAMS, "Facility kWh times the site's grid carbon intensity.", width=8))
    d = d.with_panel(single("Carbon over the range", Q(
        f"sum({increase('wattledger_carbon_grams_total', SITE_SEL)})"), GRAMS, width=4))
    return d
