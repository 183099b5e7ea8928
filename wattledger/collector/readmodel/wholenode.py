"""/metrics families of the whole node and the site's cooling (DESIGN.md "Metric names").

Read from the fleet view like every other family (the store's sums, the same on every
replica): each node's IT energy (its parts' energy + its overhead) and overhead, measured or
estimated; its node meter's disagreement; per site the PUE over the last hour, the cooling
power and outdoor temperature of its newest whole minute, the chiller's fallback time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from wattledger.collector.accounting.cooling import MeteredCooling
from wattledger.collector.readmodel.view import FleetView
from wattledger.collector.sites import SiteConfig
from wattledger.collector.store.devicetable import DeviceTable
from wattledger.contract import NODE_METER_KIND


def node_part_energy(dev: DeviceTable) -> dict[str, float]:
    """Per node, its parts' (gpu, cpu, host) all-time energy."""
    energy = dev.view("energy_j")
    out: dict[str, float] = {}
    for slot in np.flatnonzero(dev.it_energy[: dev.size]).tolist():
        out[dev.node[slot]] = out.get(dev.node[slot], 0.0) + float(energy[slot])
    return out


def it_power_by_node(dev: DeviceTable) -> dict[str, float]:
    """Per node, its IT power now: its node meter's latest power when it has one, else the sum
    of its parts' (meters and sensors are never IT)."""
    power = dev.view("last_power_w")
    parts: dict[str, float] = {}
    meter: dict[str, float] = {}
    for slot in range(dev.size):
        value = float(power[slot])
        if np.isnan(value):
            continue
        node = dev.node[slot]
        if dev.kind[slot] == NODE_METER_KIND:
            meter[node] = meter.get(node, 0.0) + value
        elif dev.it_energy[slot]:
            parts[node] = parts.get(node, 0.0) + value
    return {**parts, **meter}


def facility_metered_sites(view: FleetView) -> set[str]:
    """Sites with a ``facility`` meter among their devices."""
    dev = view.devices
    return {
        view.nodes[dev.node[slot]].site
        for slot in range(dev.size)
        if dev.kind[slot] == "meter" and dev.role[slot] == "facility" and dev.node[slot] in view.nodes
    }


def whole_node_families(view: FleetView, sites: Mapping[str, SiteConfig]) -> Iterator[Metric]:
    node_energy = CounterMetricFamily(
        "wattledger_node_energy_joules",
        "IT energy of the node: its node meter's where it measured, "
        "else its parts' plus node_overhead_ratio x parts.",
        labels=["site", "cluster", "node"],
    )
    overhead = CounterMetricFamily(
        "wattledger_node_overhead_energy_joules",
        "Node energy beyond its GPUs and CPUs (fans, NICs, "
        "PSU losses): measured by the node meter (estimated=false) or node_overhead_ratio x parts.",
        labels=["site", "cluster", "node", "estimated"],
    )
    disagree = CounterMetricFamily(
        "wattledger_meter_disagreement_seconds",
        "Minutes (x 60 s) the node meter measured whole and read below the node's parts.",
        labels=["node"],
    )
    parts = node_part_energy(view.devices)
    for node, state in sorted(view.nodes.items()):
        totals = view.node_totals.get(node)
        est = totals.overhead_est_j if totals else 0.0
        meas = totals.overhead_meas_j if totals else 0.0
        labels = [state.site, state.cluster, node]
        node_energy.add_metric(labels, parts.get(node, 0.0) + est + meas)
        overhead.add_metric([*labels, "true"], est)
        overhead.add_metric([*labels, "false"], meas)
        disagree.add_metric([node], totals.disagree_s if totals else 0.0)
    yield from (node_energy, overhead, disagree)
    yield from _cooling_families(view, sites)


def _cooling_families(view: FleetView, sites: Mapping[str, SiteConfig]) -> Iterator[Metric]:
    pue = GaugeMetricFamily(
        "wattledger_site_pue",
        "Facility / IT energy over the last hour (measured: a facility meter's; model: the cooling model's).",
        labels=["site", "source"],
    )
    power = GaugeMetricFamily(
        "wattledger_cooling_power_watts", "Cooling power of the newest whole minute.", labels=["site"]
    )
    outdoor = GaugeMetricFamily(
        "wattledger_outdoor_temperature_celsius",
        "Outdoor temperature the chiller model took for the newest minute.",
        labels=["site"],
    )
    fallback = CounterMetricFamily(
        "wattledger_cooling_fallback_seconds",
        "Chiller minutes (x 60 s) whose outdoor temperature came from a fallback "
        "(sensor stale or absent: the EPW file, or fixed_c).",
        labels=["site"],
    )
    other = CounterMetricFamily(
        "wattledger_other_facility_energy_joules",
        "A metered site's facility meter less IT and cooling (lights, UPS losses).",
        labels=["site"],
    )
    measured = facility_metered_sites(view)
    now_minute = int(view.now // 60)
    for site in view.sites:
        rows = view.minutes.rows.get(site, [])
        it_j = sum(r[1] for r in rows)
        facility_j = sum(r[1] + r[2] + r[3] for r in rows)
        metered = isinstance(sites[site].cooling_model, MeteredCooling)
        if it_j > 0:
            pue.add_metric([site, "measured" if metered and site in measured else "model"], facility_j / it_j)
        whole = [r for r in rows if r[0] < now_minute]
        if whole:
            power.add_metric([site], whole[-1][2] / 60.0)
        temps = [r[4] for r in rows if r[4] is not None]
        if temps:
            outdoor.add_metric([site], temps[-1])
        fallback.add_metric([site], view.totals[site].fallback_s)
        other.add_metric([site], view.totals[site].other_j)
    yield from (pue, power, outdoor, fallback, other)
