"""Small helpers shared by the dashboards: variables, selectors, panels with units and thresholds.

Everything here wraps grafana-foundation-sdk builders, so a panel is one call with the figures
that matter (title, queries, unit, thresholds) and the layout stays the same on every board.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

#: the label filter that follows the board's site / cluster / node variables
SEL = 'site=~"$site", cluster=~"$cluster", node=~"$node"'
#: site-level ledger series (cost, plan, forecast) carry only site and currency
SITE_SEL = 'site=~"$site"'
#: the nodes the collector files under the board's site, cluster and node: an agent started
#: without --label site= has no `site` label, and the collector books it to site "default"
FILED = f"wattledger_node_last_seen_timestamp_seconds{{{SEL}}}"
NODE_ONLY = 'node=~"$node"'


def agent(metric: str, extra: str = "", fn: str = "", window: str = "$__rate_interval") -> str:
    """An agent series under the board's variables: those whose own labels match, or else
    (agents without a `site` label) those whose node the collector files under the chosen site
    and cluster. ``fn`` (rate, increase) is applied to each side, since a range selector
    cannot follow an expression. With every variable at All this is just the series."""
    def side(sel: str) -> str:
        selector = f"{metric}{{{sel}{', ' + extra if extra else ''}}}"
        return f"{fn}({selector}[{window}])" if fn else selector
    return f"({side(SEL)} or ({side(NODE_ONLY)} and on (node) {FILED}))"

# Units (Grafana's unit ids)
WATT, KWH, CELSIUS, PERCENT_UNIT, SECONDS, BYTES, GRAMS, SHORT, OPS = (
    "watt", "kwatth", "celsius", "percentunit", "s", "bytes", "massg", "short", "ops")


#: ISO codes that Grafana has a currency unit for (currencyUSD, ...)
GRAFANA_CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK", "DKK", "INR", "CNY",
                      "PLN")


def currency_unit(currency: str) -> str:
    """Grafana's currency unit id for an ISO code, or a plain suffix for others."""
    return f"currency{currency}" if currency in GRAFANA_CURRENCIES else f"suffix: {currency}"


P = TypeVar("P", stat.Panel, timeseries.Panel, bargauge.Panel)


def per_currency(panel: P) -> P:
    """Money panels keep currencies apart: each series is one currency's (its query keeps the
    `currency` label, its legend ends with {{currency}}), and its unit follows that currency:
    Grafana's own currency unit where it has one, else the plain amount beside the code in the
    legend. A sum across currencies, labelled in one of them, is never shown."""
    panel = panel.override_by_regexp("(.* )?[A-Z]{3}", [dm.DynamicConfigValue(id_val="unit", value="none")])
    for code in GRAFANA_CURRENCIES:
        panel = panel.override_by_regexp(f"(.* )?{code}", [
            dm.DynamicConfigValue(id_val="unit", value=f"currency{code}")])
    return panel


def ledger(expr: str) -> str:
    """One value per series although several collector replicas expose the same ledger."""
    return f"max without (instance, pod) ({expr})"


#: IT power per node as the ledger last saw it, following the board's variables
IT_POWER = ledger(f"wattledger_it_power_watts{{{SEL}}}")


def rate(metric: str, sel: str, window: str = "$__rate_interval") -> str:
    """Per-second rate of a ledger counter, replicas collapsed."""
    return ledger(f"rate({metric}{{{sel}}}[{window}])")


def increase(metric: str, sel: str) -> str:
    """Increase of a ledger counter over the dashboard's time range, replicas collapsed."""
    return ledger(f"increase({metric}{{{sel}}}[$__range])")


@dataclass(frozen=True)
class Q:
    """One PromQL target: the expression and its legend."""

    expr: str
    legend: str = ""
    instant: bool = False


def _target(q: Q, ref: str, as_table: bool = False) -> prom.Dataquery:
    t = prom.Dataquery().expr(q.expr).ref_id(ref).datasource(DATASOURCE)
    if q.legend:
        t = t.legend_format(q.legend)
    t = t.instant() if q.instant or as_table else t.range()
    if as_table:
        t = t.format(PromQueryFormat.TABLE)
    return t


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Absolute thresholds; the first pair's value is None (the base colour)."""
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in pairs])


GREEN_ONLY = steps((None, "green"))


def _refs(queries: Sequence[Q]) -> list[str]:
    return [chr(ord("A") + i) for i in range(len(queries))]


def graph(title: str, queries: Sequence[Q], unit: str, description: str = "",
          thresholds: db.ThresholdsConfig | None = None, width: int = 12, height: int = 8,
          stacked: bool = False, dashed_refs: Sequence[str] = (),
          minimum: float | None = None) -> timeseries.Panel:
    """A time series panel; thresholds are drawn as lines, queries in dashed_refs dashed."""
    p = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
         .unit(unit).span(width).height(height).line_width(1).fill_opacity(10)
         .legend(cb.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                 .placement(common.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"]))
         .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                  .sort(common.SortOrder.DESCENDING)))
    if thresholds is not None:
        p = p.thresholds(thresholds).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE))
    else:
        p = p.thresholds(GREEN_ONLY)
    if stacked:
        p = p.stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL)).fill_opacity(40)
    if minimum is not None:
        p = p.min(minimum)
    for ref, q in zip(_refs(queries), queries, strict=True):
        p = p.with_target(_target(q, ref))
    for ref in dashed_refs:
        p = p.override_by_query(ref, [
            dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
            dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        ])
    return p


def single(title: str, query: Q, unit: str, description: str = "",
           thresholds: db.ThresholdsConfig | None = None, width: int = 4, height: int = 4,
           decimals: float | None = None) -> stat.Panel:
    """A stat panel of one figure, coloured by its thresholds."""
    p = (stat.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
         .span(width).height(height).thresholds(thresholds or GREEN_ONLY)
         .color_mode(common.BigValueColorMode.BACKGROUND).graph_mode(common.BigValueGraphMode.AREA)
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .with_target(_target(query, "A")))
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def bars(title: str, query: Q, unit: str, description: str = "",
         thresholds: db.ThresholdsConfig | None = None, width: int = 12, height: int = 8) -> bargauge.Panel:
    """Horizontal bars, one per series (instant query), e.g. cost by cluster."""
    return (bargauge.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
            .span(width).height(height).thresholds(thresholds or GREEN_ONLY)
            .orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.GRADIENT)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .with_target(_target(Q(query.expr, query.legend, instant=True), "A")))


def grid(title: str, query: Q, unit: str, description: str = "",
         thresholds: db.ThresholdsConfig | None = None, width: int = 12, height: int = 8,
         hide: Sequence[str] = ("Time",)) -> table.Panel:
    """A table of one instant query, one row per series, the value coloured by thresholds."""
    return (table.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
            .span(width).height(height).thresholds(thresholds or GREEN_ONLY)
            .with_target(_target(query, "A", as_table=True))
            .with_transformation(dm.DataTransformerConfig(
                id_val="organize", options={"excludeByName": dict.fromkeys(hide, True)}))
            .override_by_name("Value", [
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})]))


def variables(node_source: str) -> list[cogbuilder.Builder[dm.VariableModel]]:
    """datasource, site, cluster and node variables; each narrows the next."""
    def label(name: str, match: str) -> db.QueryVariable:
        return (db.QueryVariable(name).label(name).datasource(DATASOURCE)
                .query({"query": f"label_values({match}, {name})", "refId": f"{name}-values"})
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
                .multi(True).include_all(True).all_value(".*")
                .current(dm.VariableOption(selected=True, text="All", value="$__all")))
    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label("site", node_source),
        label("cluster", f'{node_source}{{site=~"$site"}}'),
        label("node", f'{node_source}{{site=~"$site", cluster=~"$cluster"}}'),
    ]


def alert_annotation(name: str, category: str, color: str) -> db.AnnotationQuery:
    """Firing wattledger alerts of one category drawn on every time series panel."""
    return (db.AnnotationQuery().name(name).datasource(DATASOURCE).enable(True).icon_color(color)
            .expr(f'ALERTS{{alertstate="firing", category="{category}", site=~"$site|"}}'))


def board(uid: str, title: str, description: str, tags: list[str], node_source: str,
          annotations: list[db.AnnotationQuery]) -> db.Dashboard:
    d = (db.Dashboard(title).uid(uid).description(description).tags(["wattledger", *tags])
         .editable().timezone("browser").time("now-6h", "now").refresh("30s")
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .link(db.DashboardLink("wattledger").type(dm.DashboardLinkType.DASHBOARDS)
               .tags(["wattledger"]).as_dropdown(True).include_vars(True).keep_time(True)))
    for v in variables(node_source):
        d = d.with_variable(v)
    for a in annotations:
        d = d.annotation(a)
    return d
