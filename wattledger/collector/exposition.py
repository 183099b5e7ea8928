"""/metrics of the collector: a custom collector over the ledger's in-memory state.

Nothing here touches the disk: counters are the ledger's write-through sums (loaded from the
store at start, so they never go backwards across restarts), gauges are its latest readings
and month summaries. Latest-reading gauges of a stale node are left out (a dead node's last
700 W is not its power now); its counters and last-seen time stay. Names: DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wattledger.collector.devicetable import DeviceTable
from wattledger.collector.spend import current_month, month_summary

if TYPE_CHECKING:
    from wattledger.collector.ledger import Ledger

DEVICE_LABELS = ["site", "cluster", "node", "device"]
#: NVML clock-event (throttle) reasons, by bit (FIELD-NOTES.md)
CLOCK_EVENTS = {0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap",
                0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake"}


@dataclass(frozen=True)
class NodeView:
    site: str
    cluster: str
    last_seen: float
    readings: int
    stale: bool


class LedgerCollector(Collector):
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def describe(self) -> list[Metric]:
        return []  # families depend on the ledger's contents: collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        ledger = self._ledger
        # hold the lock only to copy (ingest waits for it); write the text without it
        with ledger.lock:
            now = ledger.clock()
            site_families = list(_site_families(ledger, now))
            nodes = {name: NodeView(s.site, s.cluster, s.last_seen, s.readings, ledger.is_stale(s, now))
                     for name, s in ledger.node_states.items()}
            devices = ledger.devices.snapshot()
        yield from site_families
        yield from _node_families(nodes, devices)
        yield from _device_families(nodes, devices)


def _site_families(ledger: Ledger, now: float) -> Iterator[Metric]:
    cooling = CounterMetricFamily("wattledger_cooling_energy_joules",
                                  "Cooling energy: IT energy x (pue - 1).", labels=["site"])
    cost = CounterMetricFamily("wattledger_energy_cost", "Energy cost, IT and cooling parts.",
                               labels=["site", "currency", "part"])
    carbon = CounterMetricFamily("wattledger_carbon_grams", "Carbon of facility energy.",
                                 labels=["site"])
    gauges = {name: GaugeMetricFamily(f"wattledger_{name}", text, labels=["site", "currency"])
              for name, text in (
                  ("demand_charge", "Demand charge of this month so far (peak 15-min facility kW)."),
                  ("month_cost", "Cost of this month so far: energy cost + demand charge."),
                  ("plan_cost", "This month's budget."),
                  ("plan_cost_to_date", "This month's budget x the elapsed fraction of the month."),
                  ("forecast_cost", "Month-to-date cost + trailing 24 h cost rate x time left."))}
    peak = GaugeMetricFamily("wattledger_peak_demand_watts",
                             "This month's highest 15-minute average facility power.",
                             labels=["site"])
    for site in ledger.site_names:
        totals = ledger.site_totals[site]
        currency = ledger.sites[site].currency
        cooling.add_metric([site], totals.cooling_j)
        cost.add_metric([site, currency, "it"], totals.it_cost)
        cost.add_metric([site, currency, "cooling"], totals.cooling_cost)
        carbon.add_metric([site], totals.carbon_g)
        summary = month_summary(ledger, site, current_month(ledger, site, now), now)
        gauges["demand_charge"].add_metric([site, currency], summary.demand_charge)
        gauges["month_cost"].add_metric([site, currency], summary.total_cost)
        if summary.plan_cost is not None and summary.plan_to_date is not None:
            gauges["plan_cost"].add_metric([site, currency], summary.plan_cost)
            gauges["plan_cost_to_date"].add_metric([site, currency], summary.plan_to_date)
        if summary.forecast_cost is not None:
            gauges["forecast_cost"].add_metric([site, currency], summary.forecast_cost)
        peak.add_metric([site], summary.peak_kw * 1000.0)
    yield from (cooling, cost, carbon, *gauges.values(), peak)


def _node_families(nodes: dict[str, NodeView], dev: DeviceTable) -> Iterator[Metric]:
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
    node_power: dict[str, float] = {}
    last_power = dev.view("last_power_w")
    for slot in range(dev.size):
        value = float(last_power[slot])
        if not np.isnan(value):
            node_power[dev.node[slot]] = node_power.get(dev.node[slot], 0.0) + value
    for node, state in sorted(nodes.items()):
        labels = [state.site, state.cluster, node]
        seen.add_metric(labels, state.last_seen)
        stale.add_metric(labels, 1.0 if state.stale else 0.0)
        readings.add_metric([node], state.readings)
        if not state.stale and node in node_power:
            power.add_metric(labels, node_power[node])
    yield from (seen, stale, readings, power)


def _device_families(nodes: dict[str, NodeView], dev: DeviceTable) -> Iterator[Metric]:
    def counter(name: str, text: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, text, labels=DEVICE_LABELS)

    counters = {  # float sums, by DeviceTable column
        "energy_j": counter("wattledger_device_energy_joules", "IT energy of the device, as accounted."),
        "unmeasured_s": counter("wattledger_unmeasured_seconds",
                                "Time between readings that no rule could measure."),
    }
    counts = {  # event counts, by DeviceTable column
        "resets": counter("wattledger_counter_resets", "Energy counter resets (driver reload)."),
        "anomalies": counter("wattledger_energy_anomalies",
                             "Counter deltas above 2 x power limit x dt (power used instead)."),
        "late": counter("wattledger_late_readings",
                        "Readings not newer than the device's last committed one (no energy)."),
    }

    def gauge(name: str, text: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, labels=[*DEVICE_LABELS, *extra])

    power = gauge("wattledger_device_power_watts", "Latest power of the device.")
    temp = gauge("wattledger_device_temperature_celsius", "Latest temperature.", ("sensor",))
    margin = gauge("wattledger_device_slowdown_margin_celsius",
                   "Slowdown threshold minus latest GPU temperature.")
    slowdown = gauge("wattledger_device_slowdown_temperature_celsius", "Thermal slowdown threshold.")
    shutdown = gauge("wattledger_device_shutdown_temperature_celsius", "Thermal shutdown threshold.")
    util = gauge("wattledger_device_utilization_ratio", "Latest utilization, 0..1.")
    limit = gauge("wattledger_device_power_limit_watts", "Power limit of the device.")
    events = gauge("wattledger_device_clock_event_active", "1 while a clock-event reason is active.",
                   ("reason",))
    f = dev.floats
    for slot in range(dev.size):
        node = nodes.get(dev.node[slot])
        if node is None:
            continue
        labels = [node.site, node.cluster, dev.node[slot], dev.device[slot]]
        for key, family in counters.items():
            family.add_metric(labels, float(f[key][slot]))
        for key, family in counts.items():
            family.add_metric(labels, int(dev.counts[key][slot]))
        if not np.isnan(f["power_limit_w"][slot]):
            limit.add_metric(labels, float(f["power_limit_w"][slot]))
        if dev.slowdown_c[slot] is not None:
            slowdown.add_metric(labels, float(dev.slowdown_c[slot] or 0.0))
        if dev.shutdown_c[slot] is not None:
            shutdown.add_metric(labels, float(dev.shutdown_c[slot] or 0.0))
        if node.stale:
            continue
        for latest, key in ((power, "last_power_w"), (util, "util")):
            if not np.isnan(f[key][slot]):
                latest.add_metric(labels, float(f[key][slot]))
        gpu_temp, mem_temp = float(f["temp_c"][slot]), float(f["mem_temp_c"][slot])
        if not np.isnan(gpu_temp):
            temp.add_metric([*labels, "gpu"], gpu_temp)
            if dev.slowdown_c[slot] is not None:
                margin.add_metric(labels, float(dev.slowdown_c[slot] or 0.0) - gpu_temp)
        if not np.isnan(mem_temp):
            temp.add_metric([*labels, "memory"], mem_temp)
        mask = float(f["clock_events"][slot])
        if not np.isnan(mask):
            for bit, reason in CLOCK_EVENTS.items():
                events.add_metric([*labels, reason], 1.0 if int(mask) & bit else 0.0)
    yield from (*counters.values(), *counts.values(), power, temp, margin, slowdown, shutdown,
                util, limit, events)
