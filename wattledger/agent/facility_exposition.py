"""The /metrics families of the node's BMC (``node`` and its inlet ``sensor``), of facility
meters and PDUs (``meter``) and of temperature probes (``sensor``), built at scrape time from
the latest sample like the GPU families (called by :class:`~wattledger.agent.exposition.AgentCollector`).

- ``wattledger_node_power_watts``, ``wattledger_node_energy_joules_total``,
  ``wattledger_node_inlet_temperature_celsius``: the BMC's wall power, its energy counter
  when it has one, the chassis inlet; labels ``node`` and the agent's labels.
- ``wattledger_meter_power_watts``, ``wattledger_meter_energy_joules_total``,
  ``wattledger_meter_up`` ``{meter, role}``: a PDU or facility meter (``meter`` = its id).
- ``wattledger_sensor_temperature_celsius``, ``wattledger_sensor_up`` ``{sensor, role}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from wattledger.agent.sampler import Snapshot
from wattledger.agent.sources.remote import bmc_inlet_id


def facility_families(snap: Snapshot, node: str, names: Sequence[str],
                      values: Sequence[str]) -> Iterator[Metric]:
    names, values = list(names), list(values)
    inlet_id = bmc_inlet_id(node)
    node_power = GaugeMetricFamily("wattledger_node_power_watts",
                                   "The node's input power at the wall, from its BMC.", labels=names)
    node_energy = CounterMetricFamily("wattledger_node_energy_joules",
                                      "The BMC's energy counter of the node (Redfish EnergyJoules).",
                                      labels=names)
    node_inlet = GaugeMetricFamily("wattledger_node_inlet_temperature_celsius",
                                   "The chassis inlet (intake) air temperature, from the BMC.", labels=names)
    labels = [*names, "meter", "role"]
    meter_power = GaugeMetricFamily("wattledger_meter_power_watts",
                                    "Power through a facility meter or PDU inlet.", labels=labels)
    meter_energy = CounterMetricFamily("wattledger_meter_energy_joules",
                                       "A facility meter's or PDU's energy counter, as read.",
                                       labels=labels)
    meter_up = GaugeMetricFamily("wattledger_meter_up", "1 if the meter answered its last poll in time.",
                                 labels=labels)
    sensor_labels = [*names, "sensor", "role"]
    sensor_temp = GaugeMetricFamily("wattledger_sensor_temperature_celsius",
                                    "Temperature of an outdoor or inlet probe.", labels=sensor_labels)
    sensor_up = GaugeMetricFamily("wattledger_sensor_up", "1 if the probe answered its last poll in time.",
                                  labels=sensor_labels)
    for r in snap.readings:
        d = r.device
        if d.kind == "node":
            if r.power_w is not None:
                node_power.add_metric(values, r.power_w)
            if r.energy_j is not None:
                node_energy.add_metric(values, r.energy_j)
        elif d.kind == "sensor" and d.id == inlet_id:
            if r.temp_c is not None:
                node_inlet.add_metric(values, r.temp_c)
        elif d.kind in ("meter", "sensor"):
            key = [*values, d.id, d.role or ""]
            (meter_up if d.kind == "meter" else sensor_up).add_metric(key, 1.0)
            shown = ((meter_power, r.power_w), (meter_energy, r.energy_j)) if d.kind == "meter" else (
                (sensor_temp, r.temp_c),)
            for family, value in shown:
                if value is not None:
                    family.add_metric(key, value)
    for d in snap.down:
        if d.kind == "meter":
            meter_up.add_metric([*values, d.id, d.role or ""], 0.0)
        elif d.kind == "sensor" and d.id != inlet_id:
            sensor_up.add_metric([*values, d.id, d.role or ""], 0.0)
    # the node's BMC families only with a BMC (a management host has none); the meters' and
    # probes' always, empty without one (as RAPL's host family): a dashboard or rule that names
    # them is valid on any agent, and shows data where a PDU, meter or probe is configured
    yield from (fam for fam in (node_power, node_energy, node_inlet) if fam.samples)
    yield from (meter_power, meter_energy, meter_up, sensor_temp, sensor_up)
