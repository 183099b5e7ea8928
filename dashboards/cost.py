"""Energy & cost vs plan: month-to-date spend against the plan, the month-end forecast, burn,
where the money goes (cluster, node, cooling, demand) and the carbon that came with it."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.kit import (
    CELSIUS,
    GRAMS,
    GREEN_ONLY,
    IT_POWER,
    KWH,
    NODE_ONLY,
    PERCENT_UNIT,
    SECONDS,
    SEL,
    SITE_SEL,
    WATT,
    Q,
    agent,
    alert_annotation,
    bars,
    board,
    currency_unit,
    graph,
    grid,
    increase,
    ledger,
    per_currency,
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
DEMAND = site_figure("wattledger_demand_charge")
#: the month's energy cost so far (IT + cooling): the month's cost less the demand charge, and
#: the energy part of the plan to date it is held against (EnergyCostOverPlan)
ENERGY = f"{MONTH} - on (site, currency) {DEMAND}"
ENERGY_PLAN_TO_DATE = site_figure("wattledger_plan_energy_cost_to_date")
DEMAND_BUDGET = site_figure("wattledger_plan_demand_charge")
#: this month's bill by part (gpu, cpu, overhead, cooling, other): the ledger's, each minute at its price
MONTH_PART = "wattledger_month_energy_cost"
#: what the GPUs alone cost this month, against the whole bill (MONTH: every part + demand charge)
GPU_ONLY = f'max by (site, currency) ({MONTH_PART}{{{SITE_SEL}, part="gpu"}})'
#: what the servers cost this month: GPUs + CPUs + node overhead (the IT part, by the month's parts)
IT_MONTH = (f'sum by (site, currency) (max by (site, currency, part) '
            f'({MONTH_PART}{{{SITE_SEL}, part=~"gpu|cpu|overhead"}}))')
#: the node's wall power as its BMC reads it (the agent's redfish or ipmi source)
WALL = "wattledger_node_power_watts"
#: the node's parts' power as the ledger last saw it: its devices but the BMC's own (id NODE:bmc)
PARTS_POWER = ledger(f'wattledger_device_power_watts{{{SEL}, device!~".+:bmc(:.+)?"}}')
#: the plan's allowance per hour for energy: the energy budget over the month's hours (UTC month)
PLAN_PER_HOUR = f"{site_figure('wattledger_plan_energy_cost')} / scalar(days_in_month() * 24)"


def month_curve(metric: str, by: str = "site, currency") -> str:
    """A month's gauge at each step of a long range (months of a plan): its highest value in the
    step, so the month's cost climbs to its month-end total and the plan steps at each month's
    start, whatever step Grafana picks for the range."""
    return f"max by ({by}) (max_over_time({metric}{{{SITE_SEL}}}[$__interval]))"


def by_currency(expr: str) -> str:
    """Sites of one currency added up; never two currencies."""
    return f"sum by (currency) ({expr})"


def cost_per_hour(window: str) -> str:
    return (f"3600 * sum by (site, currency) "
            f"({rate('wattledger_energy_cost_total', SITE_SEL, window)})")


def energy(metric: str, by: str, sel: str = SEL) -> str:
    """Joules over the dashboard's range, summed by the given labels."""
    return f"sum by ({by}) ({increase(metric, sel)})"


#: a node's IT energy: its node meter's where it measured, else its parts' + estimated overhead
NODE_IT = "wattledger_node_energy_joules_total"
#: a gauge only the collector serves: the agent's BMC energy counter has NODE_IT's name too
#: (docs/metrics.md), so the ledger's series are those of a target that also serves this one
COLLECTOR_ONLY = "wattledger_node_last_seen_timestamp_seconds"


def node_it(fn: str, sel: str, window: str = "$__rate_interval") -> str:
    """``fn`` (rate, increase) of the ledger's node IT energy, never the agents' BMC counters."""
    return ledger(f"{fn}({NODE_IT}{{{sel}}}[{window}]) and on (instance) {COLLECTOR_ONLY}")


def node_it_energy(by: str, sel: str = SEL) -> str:
    """The ledger's node IT energy over the dashboard's range (J), summed by the given labels."""
    return f"sum by ({by}) ({node_it('increase', sel, '$__range')})"


def cost_share(by: str) -> str:
    """The site's energy cost over the range shared out by IT energy: exact for a flat price,
    an average for time-of-use bands (the collector's /v1/spend report is exact)."""
    return (f"{node_it_energy(by)}\n"
            f"* on (site) group_left (currency)\n"
            f"(\n  sum by (site, currency) ({increase('wattledger_energy_cost_total', SITE_SEL)})\n"
            f"  / on (site) group_left\n"
            f"  {node_it_energy('site', SITE_SEL)}\n)")


def kwh_per_hour(metric: str, by: str, sel: str, extra: str = "") -> str:
    """kWh per hour of a ledger energy counter, by the given labels."""
    return f"sum by ({by}) ({rate(metric, sel + extra)}) * 3600 / {J_PER_KWH}"


def build(currency: str = "USD") -> db.Dashboard:
    money = currency_unit(currency)
    over_plan = steps((None, "green"), (1.0, "yellow"), (1.05, "red"))
    d = board("wattledger-cost", "wattledger / Energy & cost vs plan",
              "Month-to-date energy cost against the site's plan to date, the month-end forecast against "
              "the month's plan, burn rate, cost by cluster and node, cooling, demand and carbon "
              f"({currency}).",
              ["cost", "energy"], "wattledger_node_last_seen_timestamp_seconds",
              [alert_annotation("Cost alerts", "cost", "orange")])

    def figure(title: str, expr: str, description: str = "") -> stat.Panel:
        """One value per currency, each in its own currency (never a sum across currencies)."""
        return per_currency(single(title, Q(by_currency(expr), "{{currency}}"), money, description))

    def ratio(title: str, num: str, den: str, description: str, thresholds: db.ThresholdsConfig
              ) -> stat.Panel:
        return single(title, Q(f"{by_currency(num)} / {by_currency(den)}", "{{currency}}"), PERCENT_UNIT,
                      description, thresholds)

    d = d.with_row(db.Row("This month against plan"))
    d = d.with_panel(figure("Spent this month", MONTH,
                            "Energy cost (IT + cooling) plus the demand charge so far, this billing month; "
                            "one figure per currency."))
    d = d.with_panel(figure("Plan to date", PLAN_TO_DATE,
                            "The month's budget times the elapsed fraction of the month."))
    d = d.with_panel(ratio("Energy cost / energy plan to date", ENERGY, ENERGY_PLAN_TO_DATE,
                           "The energy cost (the demand charge aside) against the energy part of the plan "
                           "to date: EnergyCostOverPlan fires above 105 % for an hour.", over_plan))
    d = d.with_panel(figure("Demand charge so far", DEMAND,
                            "The month's highest 15-minute facility kW times the demand rate: owed whole "
                            "from the first peak on, never prorated."))
    d = d.with_panel(ratio("Demand charge / its budget", DEMAND, DEMAND_BUDGET,
                           "Against the plan's demand_charge budget (sites whose plan gives one): "
                           "DemandChargeOverPlan fires above 100 %.",
                           steps((None, "green"), (0.9, "yellow"), (1.0, "red"))))
    d = d.with_panel(figure("Forecast month end", FORECAST,
                            "Month-to-date cost plus the trailing 24 h cost rate for the rest of the month."))
    d = d.with_panel(figure("Month's plan", PLAN))
    d = d.with_panel(ratio("Forecast / plan", FORECAST, PLAN,
                           "EnergyCostForecastOverPlan fires above 100 % for an hour.",
                           steps((None, "green"), (0.95, "yellow"), (1.0, "red"))))
    d = d.with_panel(per_currency(graph("Spent this month (solid) vs plan to date (dashed)", [
        Q(MONTH, "spent {{site}} {{currency}}"), Q(PLAN_TO_DATE, "plan to date {{site}} {{currency}}")],
        money, dashed_refs=["B"])))
    d = d.with_panel(per_currency(graph("Energy cost (solid) vs energy plan to date (dashed)", [
        Q(ENERGY, "energy {{site}} {{currency}}"),
        Q(ENERGY_PLAN_TO_DATE, "energy plan to date {{site}} {{currency}}")], money, dashed_refs=["B"])))
    d = d.with_panel(per_currency(graph("Forecast month end (solid) vs the month's plan (dashed)", [
        Q(FORECAST, "forecast {{site}} {{currency}}"), Q(PLAN, "plan {{site}} {{currency}}")], money,
        dashed_refs=["B"])))

    d = d.with_row(db.Row("The plan, month by month (set the range to the plan's months)"))
    d = d.with_panel(per_currency(graph("Each month's spend (solid) vs its plan (dashed)", [
        Q(month_curve("wattledger_month_cost"), "spent {{site}} {{currency}}"),
        Q(month_curve("wattledger_plan_cost"), "plan {{site}} {{currency}}")], money,
        "The stored plan beside actual spend: each month's budget (the collector's plan entries, e.g. the "
        "proposed_plan that `wattledger plan` writes from a scenario, docs/planning.md) as a dashed step, "
        "and the month's cost so far (energy + demand charge) climbing to its month-end total. Over a "
        "year's range, each month's top of the solid line against its dashed step is that month's result.",
        dashed_refs=["B"])))
    d = d.with_panel(graph("Spend and forecast as a share of the month's plan", [
        Q(f"{MONTH} / on (site, currency) {PLAN}", "spent {{site}} {{currency}}"),
        Q(f"{FORECAST} / on (site, currency) {PLAN}", "forecast {{site}} {{currency}}")], PERCENT_UNIT,
        "Month-to-date spend and the month-end forecast over the month's plan: a plan made by "
        "`wattledger plan` holds when the forecast stays under 100 % month after month.",
        steps((None, "green"), (0.95, "yellow"), (1.0, "red")), dashed_refs=["B"]))
    team = "site, team, currency"
    d = d.with_panel(per_currency(graph("Each team's month spend (solid) vs its plan (dashed)", [
        Q(month_curve("wattledger_team_month_cost", team), "spent {{site}} / {{team}} {{currency}}"),
        Q(month_curve("wattledger_team_plan_cost", team), "plan {{site}} / {{team}} {{currency}}")], money,
        "The teams' budgets (plan entries with team:, docs/chargeback.md) beside each team's month cost "
        "(its energy cost and demand-charge share), month by month as above.", dashed_refs=["B"],
        width=24)))

    d = d.with_row(db.Row("Burn rate"))
    d = d.with_panel(per_currency(graph("Cost per hour (solid) vs the plan's hourly allowance (dashed)", [
        Q(cost_per_hour("$__rate_interval"), "{{site}} {{currency}}"),
        Q(PLAN_PER_HOUR, "plan {{site}} {{currency}}")], money,
        "Energy cost per hour (demand charge excluded) against the energy part of the month's plan "
        "spread over its hours.", dashed_refs=["B"])))
    d = d.with_panel(graph("Budget burn ratio (1 = on plan)", [
        Q(f"{cost_per_hour('1h')} / on (site, currency) ({PLAN_PER_HOUR})", "1 h {{site}}"),
        Q(f"{cost_per_hour('6h')} / on (site, currency) ({PLAN_PER_HOUR})", "6 h {{site}}"),
    ], "x", "Cost rate over the plan's rate. EnergyBudgetBurnFast: above 3 over 1 h and 5 min; "
            "EnergyBudgetBurnSlow: above 1.5 over 6 h and 30 min.",
        steps((None, "green"), (1.5, "orange"), (3.0, "red"))))
    d = d.with_panel(per_currency(graph("Cost per hour by part", [
        Q(f"3600 * sum by (part, currency) ({rate('wattledger_energy_cost_total', SITE_SEL)})",
          "{{part}} {{currency}}")], money, "IT energy (GPUs, CPUs and node overhead), the cooling it causes "
        "and, on a metered site, its other facility load.",
        stacked=True)))
    d = d.with_panel(graph("IT power by cluster", [Q(
        f"sum by (site, cluster) ({IT_POWER})", "{{site}} / {{cluster}}")],
        WATT, stacked=True))

    d = d.with_row(db.Row("Where the money goes (dashboard time range)"))
    d = d.with_panel(per_currency(bars(
        "Cost by cluster", Q(cost_share("site, cluster"), "{{site}} / {{cluster}} {{currency}}"), money,
        "The site's cost over the range shared out by IT energy (exact for a flat price; "
        "for time-of-use tariffs the collector's /v1/spend report is exact).", width=8)))
    d = d.with_panel(grid("Cost by node", Q(f"sort_desc({cost_share('site, cluster, node')})"), money,
                          "As cost by cluster, per node.", width=8, hide=("Time",)))
    d = d.with_panel(single("Cooling share of energy", Q(
        f"sum({energy('wattledger_cooling_energy_joules_total', 'site', SITE_SEL)})"
        f" / (sum({node_it_energy('site', SITE_SEL)})"
        f" + sum({energy('wattledger_cooling_energy_joules_total', 'site', SITE_SEL)}))"), PERCENT_UNIT,
        "Cooling energy over facility energy (1 - 1/PUE).", width=4, height=8))
    d = d.with_panel(single("Energy (IT + cooling)", Q(
        f"(sum({node_it_energy('site', SITE_SEL)})"
        f" + sum({energy('wattledger_cooling_energy_joules_total', 'site', SITE_SEL)})) / {J_PER_KWH}"),
        KWH, width=4, height=8))
    d = d.with_panel(graph("IT energy per hour by node", [Q(
        f"sum by (node) ({node_it('rate', SEL)})"
        f" * 3600 / {J_PER_KWH}", "{{node}}")], KWH, stacked=True))

    d = d.with_row(db.Row("The whole bill: parts, node overhead, cooling, PUE"))
    d = d.with_panel(graph("Facility energy per hour by part", [
        Q(kwh_per_hour("wattledger_device_energy_joules_total", "site", SEL), "GPUs and CPUs {{site}}"),
        Q(kwh_per_hour("wattledger_node_overhead_energy_joules_total", "site", SEL, ', estimated="false"'),
          "node overhead, measured {{site}}"),
        Q(kwh_per_hour("wattledger_node_overhead_energy_joules_total", "site", SEL, ', estimated="true"'),
          "node overhead, estimated {{site}}"),
        Q(kwh_per_hour("wattledger_cooling_energy_joules_total", "site", SITE_SEL), "cooling {{site}}"),
        Q(kwh_per_hour("wattledger_other_facility_energy_joules_total", "site", SITE_SEL),
          "other facility load {{site}}"),
    ], KWH, "What the site pays for, hour by hour: its GPUs' and CPUs' own energy, the rest of each "
            "server at the wall (fans, NICs, PSU losses: measured by its BMC, or node_overhead_ratio x "
            "parts), cooling by the site's model, and a metered site's other facility load.",
        stacked=True))
    d = d.with_panel(graph("PUE over the last hour", [
        Q(f"max by (site, source) (wattledger_site_pue{{{SITE_SEL}}})", "{{site}} ({{source}})")],
        "none", "Facility / IT energy of the site's last hour: measured with a facility meter, else the "
        "cooling model's. SitePueHigh fires above 1.6 for 30 minutes.",
        steps((None, "green"), (1.4, "yellow"), (1.6, "red")), minimum=1.0))
    d = d.with_panel(graph("Cooling power (solid) and outdoor temperature (dashed, right)", [
        Q(f"max by (site) (wattledger_cooling_power_watts{{{SITE_SEL}}})", "cooling {{site}}"),
        Q(f"max by (site) (wattledger_outdoor_temperature_celsius{{{SITE_SEL}}})", "outdoor °C {{site}}"),
    ], WATT, "A chiller's power follows the weather: it falls as the outside air cools. The outdoor "
             "temperature is the sensor's, else the EPW file's hour, else fixed_c.", dashed_refs=["B"],
        width=8).override_by_query("B", [
            dm.DynamicConfigValue(id_val="unit", value=CELSIUS),
            dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right")]))
    d = d.with_panel(single("Node overhead share of IT", Q(
        f"sum({energy('wattledger_node_overhead_energy_joules_total', 'site', SEL)})"
        f" / sum({node_it_energy('site', SEL)})"), PERCENT_UNIT,
        "The part of the servers' wall energy that is not their GPUs and CPUs (over the range).",
        width=4, height=8))
    d = d.with_panel(single("Cooling fallback time", Q(
        f"sum({increase('wattledger_cooling_fallback_seconds_total', SITE_SEL)})"), SECONDS,
        "Chiller minutes whose outdoor temperature was not from the first source configured "
        "(a stale or missing sensor).", steps((None, "green"), (900.0, "orange")), width=4, height=8))
    d = d.with_panel(single("Node meter disagreement", Q(
        f"sum({increase('wattledger_meter_disagreement_seconds_total', NODE_ONLY)})"), SECONDS,
        "Minutes a node meter read below the node's parts (NodeMeterDisagrees).",
        steps((None, "green"), (600.0, "orange")), width=4, height=8))

    d = whole_bill_seen(d, money, figure, ratio)

    d = d.with_row(db.Row("Demand and carbon"))
    d = d.with_panel(graph("Facility power, 15 min average (solid) vs this month's peak (dashed)", [
        Q(f"sum by (site) ({node_it('rate', SITE_SEL, '15m')})"
          f" + on (site) sum by (site) ({rate('wattledger_cooling_energy_joules_total', SITE_SEL, '15m')})",
          "15 min avg {{site}}"),
        Q(f"max by (site) (wattledger_peak_demand_watts{{{SITE_SEL}}})", "peak {{site}}"),
    ], WATT, "The demand charge is priced on the month's highest 15-minute average facility power.",
        dashed_refs=["B"], width=8))
    d = d.with_panel(per_currency(graph("Demand charge this month (solid) vs its budget (dashed)", [
        Q(DEMAND, "{{site}} {{currency}}"), Q(DEMAND_BUDGET, "budget {{site}} {{currency}}")], money,
        dashed_refs=["B"], width=8)))
    d = d.with_panel(graph("Carbon per hour", [Q(
        f"3600 * sum by (site) ({rate('wattledger_carbon_grams_total', SITE_SEL)})",
        "{{site}}")], GRAMS, "Facility kWh times the site's grid carbon intensity.", width=8))
    d = d.with_panel(single("Carbon over the range", Q(
        f"sum({increase('wattledger_carbon_grams_total', SITE_SEL)})"), GRAMS, width=4))
    return d


#: the cooling part of the energy cost counter, under the board's site variable
COOLING_COST_SEL = SITE_SEL + ', part="cooling"'
COOLING_TODAY = increase("wattledger_energy_cost_total", COOLING_COST_SEL)


def whole_bill_seen(d: db.Dashboard, money: str, figure: Any, ratio: Any) -> db.Dashboard:
    """What a site that points the agent at its BMCs and PDUs sees: each node's wall power beside
    its parts', the meters by role, cooling's cost per hour and today with the PUE, and this
    month's GPU-only cost against the whole bill (docs/accounting.md, "The bill's parts")."""
    d = d.with_row(db.Row("Wall power, cooling cost today, and the GPUs against the whole bill"))
    wall = f"sum by (node) ({agent(WALL)})"
    d = d.with_panel(graph("Each node at the wall (solid, its BMC) vs its parts (dashed, GPUs + CPUs)", [
        Q(wall, "{{node}} wall"),
        Q(f"sum by (node) ({PARTS_POWER}) and on (node) {wall}", "{{node}} parts"),
    ], WATT, "The BMC's input power (wattledger_node_power_watts: Redfish or IPMI DCMI) of each node that "
             "has one, beside what its GPUs and CPU packages draw as the ledger last saw them. The gap is "
             "the node's overhead (fans, NICs, storage, PSU losses): typically 30-45 % of the wall.",
        dashed_refs=["B"]))
    d = d.with_panel(bars("Node overhead now: 1 - parts / wall", Q(
        f"1 - sum by (node) ({PARTS_POWER}) / on (node) {wall}", "{{node}}"), PERCENT_UNIT,
        "Per node with a BMC: the share of its wall power that is not its GPUs and CPUs. Below 0: "
        "the BMC reads under the parts (NodeMeterDisagrees).",
        steps((None, "red"), (0.0, "green"), (0.5, "orange")), width=6))
    d = d.with_panel(graph("PDU inlets and facility meters by role", [
        Q(f"sum by (role, meter) ({agent('wattledger_meter_power_watts')})", "{{role}}: {{meter}}")],
        WATT, "Power through each rack PDU inlet (snmp) and facility meter (modbus), by its role: facility "
              "(the feed), it (PDUs: the servers), cooling (the chiller plant).", width=6))
    d = d.with_panel(per_currency(graph("Cooling cost per hour", [
        Q(f"3600 * sum by (site, currency) ({rate('wattledger_energy_cost_total', COOLING_COST_SEL)})",
          "cooling {{site}} {{currency}}")], money,
        "What carrying the heat away costs per hour, by the site's cooling model (pue, chiller with the "
        "outdoor temperature, or the cooling meters), each minute at its price.", width=8)))
    today = figure("Cooling cost today", f"sum by (site, currency) ({COOLING_TODAY})",
                   "Cooling's cost since midnight (the board's timezone), whatever range the board shows.")
    d = d.with_panel(today.time_from("now/d").span(4).height(8))
    d = d.with_panel(single("PUE now (last hour)", Q(
        f"max by (site, source) (wattledger_site_pue{{{SITE_SEL}}})", "{{site}} ({{source}})"), "none",
        "Facility / IT energy of the last hour: measured with a facility meter, else the cooling model's.",
        steps((None, "green"), (1.4, "yellow"), (1.6, "red")), width=4, height=8, decimals=2))
    d = d.with_panel(single("Cooling share of the energy cost today", Q(
        f"{by_currency(COOLING_TODAY)} / {by_currency(increase('wattledger_energy_cost_total', SITE_SEL))}",
        "{{currency}}"),
        PERCENT_UNIT, "Cooling's part of today's energy cost (1 - 1/PUE for the pue model).",
        width=8, height=8).time_from("now/d"))

    d = d.with_panel(figure("GPUs alone, this month", GPU_ONLY,
                            "What the GPUs' own energy cost this month, each minute at its price: the bill a "
                            "GPU-only tool (NVML energy x tariff) would show."))
    d = d.with_panel(figure("The whole bill, this month", MONTH,
                            "GPUs + CPUs + node overhead + cooling + other facility load + demand charge."))
    d = d.with_panel(figure("The gap: the whole bill less the GPUs",
                            f"{MONTH} - on (site, currency) {GPU_ONLY}",
                            "What a GPU-only bill leaves out this month."))
    d = d.with_panel(single("IT / GPUs alone", Q(
        f"{by_currency(IT_MONTH)} / {by_currency(GPU_ONLY)}", "{{currency}}"), "none",
        "The servers' whole cost (GPUs + CPUs + node overhead) over their GPUs': 1.4-1.9 when GPUs are "
        "55-70 % of a server's wall power. Outside that, see the runbook's \"The whole bill looks wrong\".",
        steps((None, "orange"), (1.4, "green"), (1.9, "orange")), decimals=2))
    d = d.with_panel(single("Whole bill / GPUs alone", Q(
        f"{by_currency(MONTH)} / {by_currency(GPU_ONLY)}", "{{currency}}"), "none",
        "IT / GPUs x PUE, plus the demand charge (and a metered site's other load): about 1.6-3 in a "
        "month; under 1.4 something is missing from the bill (runbook, \"The whole bill looks wrong\").",
        steps((None, "orange"), (1.4, "green")), decimals=2))
    d = d.with_panel(ratio("GPUs' share of the whole bill", GPU_ONLY, MONTH,
                           "The GPUs' own cost over the whole bill this month.", GREEN_ONLY))
    demand = f'label_replace({DEMAND}, "part", "demand charge", "", "")'
    d = d.with_panel(per_currency(bars("This month's bill by part", Q(
        f"max by (site, currency, part) ({MONTH_PART}{{{SITE_SEL}}}) or {demand}",
        "{{site}} {{part}} {{currency}}"), money,
        "The month so far by part: GPUs, CPUs (and host domains), node overhead (measured or estimated), "
        "cooling, other facility load (a metered site) and the demand charge; they add up to the whole bill.",
        width=8)))
    d = d.with_panel(per_currency(graph("GPUs alone (dashed) vs the whole bill (solid), this month", [
        Q(MONTH, "whole bill {{site}} {{currency}}"), Q(GPU_ONLY, "GPUs alone {{site}} {{currency}}")], money,
        "Both climb through the month; the space between them is what a GPU-only bill misses.",
        dashed_refs=["B"], width=16)))
    return d
