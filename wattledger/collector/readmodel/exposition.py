"""/metrics of the collector: a custom collector over a view of the fleet (``view.py``).

Counters are the store's all-time sums (on SQLite the one writer's memory, loaded from the
store at start, so they never go backwards across restarts; on PostgreSQL a view of the
database at most ``metrics_refresh_seconds`` old, the same on every replica). Gauges are the
latest readings and month summaries. Latest-reading gauges of a stale node are left out (a dead
node's last 700 W is not its power now); its counters and last-seen time stay. Names: DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from wattledger.collector.accounting.cooling import MeteredCooling
from wattledger.collector.readmodel.monthbill import MonthBills, month_bill_family
from wattledger.collector.readmodel.view import FleetView, NodeView, ReadModel
from wattledger.collector.readmodel.wholenode import it_power_by_node, whole_node_families
from wattledger.collector.sites import SiteConfig
from wattledger.collector.store.devicetable import DeviceTable, Floats, Ints
from wattledger.collector.teams import IDLE
from wattledger.wire import CLOCK_EVENT_REASONS

Bools = npt.NDArray[np.bool_]

DEVICE_LABELS = ["site", "cluster", "node", "device"]
Labels = tuple[str, str, str, str]  # values of DEVICE_LABELS
#: NVML clock-event (throttle) reasons, by bit: the same labels as the agent's
CLOCK_EVENTS = dict(CLOCK_EVENT_REASONS)


class LedgerCollector(Collector):
    """The ledger's families; ``render`` writes the same as Prometheus text, fast.

    A site of 10,000 GPUs has ~150,000 series: client_python formats each sample on its own
    (a dict of labels, sorted, escaped), which takes seconds. ``render`` writes the per-device
    families from whole columns with each device's label text made once and kept (until its
    node changes site or cluster).
    """

    def __init__(self, model: ReadModel) -> None:
        self._model = model
        self._bills = MonthBills(model.store, model.terms, refresh_seconds=model.refresh_seconds,
                                 commits=model.commits)
        self._label_cache: list[tuple[Labels, str]] = []  # by slot

    def describe(self) -> list[Metric]:
        return []  # families depend on the ledger's contents: collected at scrape time only

    def _state(self) -> tuple[list[Metric], Mapping[str, NodeView], DeviceTable]:
        view = self._model.view()  # a copy: read without any lock
        sites = self._model.terms.sites
        return ([*_site_families(view, sites), *month_bill_family(self._bills, view.now),
                 *whole_node_families(view, sites)], view.nodes,
                view.devices)

    def collect(self) -> Iterator[Metric]:
        site_families, nodes, devices = self._state()
        yield from site_families
        yield from _node_families(nodes, devices)
        labels = [values for values, _ in self._labels(nodes, devices)]
        for family in _device_families(nodes, devices):
            yield family.metric(labels)

    def render(self) -> bytes:
        """Prometheus text of every family (what generate_latest makes of ``collect``)."""
        site_families, nodes, devices = self._state()
        head = generate_latest(_Families([*site_families, *_node_families(nodes, devices)]))
        labels = [text for _, text in self._labels(nodes, devices)]
        return head + "".join(family.text(labels)
                              for family in _device_families(nodes, devices)).encode()

    def _labels(self, nodes: Mapping[str, NodeView], dev: DeviceTable) -> list[tuple[Labels, str]]:
        """Per slot: its label values and their text, made again only where the values changed."""
        cache = self._label_cache
        del cache[dev.size:]  # a reload of the ledger may have fewer devices
        for slot in range(dev.size):
            view = nodes.get(dev.node[slot])
            values = (view.site if view else "", view.cluster if view else "", dev.node[slot],
                      dev.device[slot])
            if slot < len(cache) and cache[slot][0] == values:
                continue
            text = ",".join(f'{key}="{_escape(value)}"'
                            for key, value in zip(DEVICE_LABELS, values, strict=True))
            if slot < len(cache):
                cache[slot] = (values, text)
            else:
                cache.append((values, text))
        return cache


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _site_families(view: FleetView, sites: Mapping[str, SiteConfig]) -> Iterator[Metric]:
    cooling = CounterMetricFamily("wattledger_cooling_energy_joules",
                                  "Cooling energy, by the site's cooling model.", labels=["site"])
    cost = CounterMetricFamily("wattledger_energy_cost",
                               "Energy cost, IT and cooling parts (and a metered site's other "
                               "facility load).",
                               labels=["site", "currency", "part"])
    carbon = CounterMetricFamily("wattledger_carbon_grams", "Carbon of facility energy.",
                                 labels=["site"])
    gauges = {name: GaugeMetricFamily(f"wattledger_{name}", text, labels=["site", "currency"])
              for name, text in (
                  ("demand_charge", "Demand charge of this month so far (peak 15-min facility kW)."),
                  ("month_cost", "Cost of this month so far: energy cost + demand charge."),
                  ("plan_cost", "This month's budget."),
                  ("plan_cost_to_date", "This month's budget x the elapsed fraction of the month."),
                  ("plan_energy_cost", "This month's budget for energy: the budget less its "
                                       "demand-charge part (or the demand charge so far)."),
                  ("plan_energy_cost_to_date", "This month's energy budget x the elapsed fraction."),
                  ("plan_demand_charge", "This month's budget for the demand charge (when the "
                                         "plan gives one)."),
                  ("forecast_cost", "Month-to-date cost + trailing 24 h cost rate x time left."))}
    peak = GaugeMetricFamily("wattledger_peak_demand_watts",
                             "This month's highest 15-minute average facility power.",
                             labels=["site"])
    for site in view.sites:
        totals = view.totals[site]
        currency = sites[site].currency
        cooling.add_metric([site], totals.cooling_j)
        cost.add_metric([site, currency, "it"], totals.it_cost)
        cost.add_metric([site, currency, "cooling"], totals.cooling_cost)
        if isinstance(sites[site].cooling_model, MeteredCooling):
            cost.add_metric([site, currency, "other"], totals.other_cost)
        carbon.add_metric([site], totals.carbon_g)
        summary = view.months[site]
        gauges["demand_charge"].add_metric([site, currency], summary.demand_charge)
        gauges["month_cost"].add_metric([site, currency], summary.total_cost)
        if summary.plan_cost is not None and summary.plan_to_date is not None:
            gauges["plan_cost"].add_metric([site, currency], summary.plan_cost)
            gauges["plan_cost_to_date"].add_metric([site, currency], summary.plan_to_date)
        if summary.plan_energy_cost is not None and summary.plan_energy_to_date is not None:
            gauges["plan_energy_cost"].add_metric([site, currency], summary.plan_energy_cost)
            gauges["plan_energy_cost_to_date"].add_metric([site, currency], summary.plan_energy_to_date)
        if summary.plan_demand_charge is not None:
            gauges["plan_demand_charge"].add_metric([site, currency], summary.plan_demand_charge)
        if summary.forecast_cost is not None:
            gauges["forecast_cost"].add_metric([site, currency], summary.forecast_cost)
        peak.add_metric([site], summary.peak_kw * 1000.0)
    yield from (cooling, cost, carbon, *gauges.values(), peak)
    yield from _team_families(view, sites)


def _team_families(view: FleetView, sites: Mapping[str, SiteConfig]) -> Iterator[Metric]:
    """Per team (a handful per site: jobs and pods never become labels; they live in /v1/jobs)."""
    energy = CounterMetricFamily("wattledger_team_energy_joules",
                                 "IT energy of the team: its GPUs' energy and its share of its nodes' other "
                                 "energy (teams idle and unassigned included add up to the site).",
                                 labels=["site", "team"])
    cost = CounterMetricFamily("wattledger_team_energy_cost", "Energy cost (IT and cooling) of the team.",
                               labels=["site", "team", "currency"])
    gpu = CounterMetricFamily("wattledger_team_gpu_seconds",
                              "GPU-seconds the team's allocations held (idle: nobody held them).",
                              labels=["site", "team"])
    waste = CounterMetricFamily("wattledger_team_idle_gpu_seconds",
                                "GPU-seconds held by the team's allocations while utilization was under 5 %.",
                                labels=["site", "team"])
    idle = CounterMetricFamily("wattledger_idle_energy_joules",
                               "IT energy of GPUs that no allocation held, with its share of the nodes' "
                               "other energy.", labels=["site"])
    gauges = {name: GaugeMetricFamily(f"wattledger_team_{name}", text, labels=["site", "team", "currency"])
              for name, text in (
                  ("month_cost", "Cost of the team this month so far: energy cost + demand-charge share."),
                  ("plan_cost", "The team's budget this month."),
                  ("plan_cost_to_date", "The team's budget x the elapsed fraction of the month."),
                  ("plan_energy_cost_to_date", "The team's budget less its demand-charge share, x the "
                                               "elapsed fraction of the month."),
                  ("demand_charge", "The team's share of the site's demand charge this month (its share "
                                    "of the peak quarter-hour's facility energy)."),
                  ("forecast_cost", "The team's month-to-date cost + its 24 h cost rate x time left."))}
    for site in view.sites:
        currency = sites[site].currency
        idle_j = 0.0
        for team, it_j, energy_cost, _, gpu_s, idle_s in view.team_totals.get(site, ()):
            energy.add_metric([site, team], float(it_j or 0.0))
            cost.add_metric([site, team, currency], float(energy_cost or 0.0))
            gpu.add_metric([site, team], float(gpu_s or 0.0))
            waste.add_metric([site, team], float(idle_s or 0.0))
            if team == IDLE:
                idle_j = float(it_j or 0.0)
        idle.add_metric([site], idle_j)
        for t in view.teams.get(site, ()):
            gauges["month_cost"].add_metric([site, t.team, currency], t.total_cost)
            gauges["demand_charge"].add_metric([site, t.team, currency], t.demand_charge)
            if t.plan_cost is not None and t.plan_to_date is not None:
                gauges["plan_cost"].add_metric([site, t.team, currency], t.plan_cost)
                gauges["plan_cost_to_date"].add_metric([site, t.team, currency], t.plan_to_date)
            if t.plan_energy_to_date is not None:
                gauges["plan_energy_cost_to_date"].add_metric([site, t.team, currency], t.plan_energy_to_date)
            if t.forecast_cost is not None:
                gauges["forecast_cost"].add_metric([site, t.team, currency], t.forecast_cost)
    yield from (energy, cost, gpu, waste, idle, *gauges.values())


def _node_families(nodes: Mapping[str, NodeView], dev: DeviceTable) -> Iterator[Metric]:
    seen = GaugeMetricFamily("wattledger_node_last_seen_timestamp_seconds",
                             "When the collector last committed a batch of the node.",
                             labels=["site", "cluster", "node"])
    stale = GaugeMetricFamily("wattledger_node_stale", "1 when no batch came for stale_after.",
                              labels=["site", "cluster", "node"])
    readings = CounterMetricFamily("wattledger_ingest_readings",
                                   "Readings committed (duplicates not counted).", labels=["node"])
    power = GaugeMetricFamily("wattledger_it_power_watts",
                              "IT power of the node: sum of its devices' latest power.",
                              labels=["site", "cluster", "node"])
    duplicate = GaugeMetricFamily("wattledger_node_duplicate_agent",
                                  "1 when a second agent's batches for the node were refused within "
                                  "stale_after (two live streams with the same devices).",
                                  labels=["site", "cluster", "node"])
    conflicts = CounterMetricFamily("wattledger_ingest_conflicts",
                                    "Batches refused 409: their devices came from another live stream "
                                    "of the node (a second agent).", labels=["node"])
    node_power = it_power_by_node(dev)
    for node, state in sorted(nodes.items()):
        labels = [state.site, state.cluster, node]
        seen.add_metric(labels, state.last_seen)
        stale.add_metric(labels, 1.0 if state.stale else 0.0)
        readings.add_metric([node], state.readings)
        duplicate.add_metric(labels, 1.0 if state.duplicate_agent else 0.0)
        conflicts.add_metric([node], state.conflicts)
        if not state.stale and node in node_power:
            power.add_metric(labels, node_power[node])
    yield from (seen, stale, readings, power, duplicate, conflicts)


@dataclass(frozen=True)
class Chunk:
    """Series of one device family: one per slot in ``slots``, with extra label values."""

    slots: Ints
    values: Floats
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceFamily:
    """One per-device family: its series as chunks of slots, written either way below."""

    name: str  # counters without their _total
    kind: str  # "counter" | "gauge"
    help: str
    chunks: list[Chunk]
    extra_labels: tuple[str, ...] = ()

    def metric(self, labels: list[Labels]) -> Metric:
        """As a client_python family (``labels``: the label values of each slot)."""
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.help, labels=[*DEVICE_LABELS, *self.extra_labels])
        for chunk in self.chunks:
            extra = list(chunk.extra)
            for slot, value in zip(chunk.slots.tolist(), chunk.values.tolist(), strict=True):
                family.add_metric([*labels[slot], *extra], value)
        return family

    def text(self, labels: list[str]) -> str:
        """As Prometheus text (``labels``: the label text of each slot, without braces)."""
        name = f"{self.name}_total" if self.kind == "counter" else self.name
        lines = [f"# HELP {name} {_escape_help(self.help)}\n# TYPE {name} {self.kind}\n"]
        for chunk in self.chunks:
            extra = "".join(f',{key}="{_escape(value)}"'
                            for key, value in zip(self.extra_labels, chunk.extra, strict=True))
            # Python's float repr (not client_python's Go-like format: 3x slower), which every
            # Prometheus text parser reads as the same number; values here are never NaN or inf
            lines.extend(f"{name}{{{labels[slot]}{extra}}} {value!r}\n"
                         for slot, value in zip(chunk.slots.tolist(), chunk.values.tolist(), strict=True))
        return "".join(lines)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _device_families(nodes: Mapping[str, NodeView], dev: DeviceTable) -> list[DeviceFamily]:
    """Every per-device family, computed column-wise over the device table.

    Devices of nodes not (yet) known are left out; the latest-reading gauges of stale nodes too.
    """
    f = dev.floats
    views = [nodes.get(node) for node in dev.node]
    known = np.array([v is not None for v in views], dtype=bool)
    fresh = np.array([v is not None and not v.stale for v in views], dtype=bool)
    slots = np.arange(dev.size, dtype=np.int64)

    def having(column: Floats, among: Bools) -> Chunk:
        take = among & ~np.isnan(column)
        return Chunk(slots[take], column[take])

    def threshold(values: list[float | None]) -> Floats:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    def of_known(values: Floats) -> Chunk:
        return Chunk(slots[known], values[known])

    slowdown, shutdown = threshold(dev.slowdown_c), threshold(dev.shutdown_c)
    with_events = fresh & dev.has_clock_events[:len(fresh)]
    masks = dev.clock_events[:len(fresh)][with_events]  # exact uint64 bits
    counter, gauge = "counter", "gauge"
    return [
        DeviceFamily("wattledger_device_energy_joules", counter, "IT energy of the device, as accounted.",
                     [of_known(f["energy_j"])]),
        DeviceFamily("wattledger_unmeasured_seconds", counter,
                     "Time between readings that no rule could measure.", [of_known(f["unmeasured_s"])]),
        DeviceFamily("wattledger_counter_resets", counter, "Energy counter resets (driver reload).",
                     [of_known(dev.counts["resets"].astype(np.float64))]),
        DeviceFamily("wattledger_energy_anomalies", counter,
                     "Counter deltas above 2 x power limit x dt (power used instead).",
                     [of_known(dev.counts["anomalies"].astype(np.float64))]),
        DeviceFamily("wattledger_late_readings", counter,
                     "Readings not newer than the device's last committed one (no energy).",
                     [of_known(dev.counts["late"].astype(np.float64))]),
        DeviceFamily("wattledger_device_power_watts", gauge, "Latest power of the device.",
                     [having(f["last_power_w"], fresh)]),
        DeviceFamily("wattledger_device_temperature_celsius", gauge, "Latest temperature.",
                     [Chunk(c.slots, c.values, (sensor,)) for sensor, c in
                      (("gpu", having(f["temp_c"], fresh)), ("memory", having(f["mem_temp_c"], fresh)))],
                     ("sensor",)),
        DeviceFamily("wattledger_device_slowdown_margin_celsius", gauge,
                     "Slowdown threshold minus latest GPU temperature.",
                     [having(slowdown - f["temp_c"], fresh)]),
        DeviceFamily("wattledger_device_slowdown_temperature_celsius", gauge, "Thermal slowdown threshold.",
                     [having(slowdown, known)]),
        DeviceFamily("wattledger_device_shutdown_temperature_celsius", gauge, "Thermal shutdown threshold.",
                     [having(shutdown, known)]),
        DeviceFamily("wattledger_device_utilization_ratio", gauge, "Latest utilization, 0..1.",
                     [having(f["util"], fresh)]),
        DeviceFamily("wattledger_device_power_limit_watts", gauge, "Power limit of the device.",
                     [having(f["power_limit_w"], known)]),
        DeviceFamily("wattledger_device_clock_event_active", gauge, "1 while a clock-event reason is active.",
                     [Chunk(slots[with_events], ((masks & bit) != 0).astype(np.float64), (reason,))
                      for bit, reason in CLOCK_EVENTS.items()], ("reason",)),
    ]
