"""Fleet power & thermal: where the watts go and how close every GPU runs to its own limit."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.kit import (
    BYTES,
    CELSIUS,
    IT_POWER,
    PERCENT_UNIT,
    SEL,
    SHORT,
    WATT,
    Q,
    alert_annotation,
    bars,
    board,
    graph,
    grid,
    single,
    steps,
)

GPU = f'{{{SEL}, sensor="gpu"}}'
HBM = f'{{{SEL}, sensor="memory"}}'
#: °C left before each GPU reaches ITS OWN slowdown temperature (NVML's threshold, per board)
MARGIN = (f"wattledger_gpu_slowdown_temperature_celsius{{{SEL}}}"
          f" - ignoring (sensor) wattledger_gpu_temperature_celsius{GPU}")
#: the alert rules' margin (GpuThermalSlowdownNear) and HBM limit (GpuMemoryTemperatureHigh)
MARGIN_STEPS = steps((None, "red"), (0.0, "orange"), (5.0, "yellow"), (10.0, "green"))
HBM_STEPS = steps((None, "green"), (85.0, "yellow"), (90.0, "red"))
THROTTLE_REASONS = "sw_thermal|hw_thermal|hw_slowdown|hw_power_brake|sw_power_cap"


def build() -> db.Dashboard:
    d = board("wattledger-fleet", "wattledger / Fleet power & thermal",
              "GPU and host power by site, cluster, node and GPU; temperatures against each GPU's own "
              "slowdown threshold; throttling and utilization.",
              ["power", "thermal"], "wattledger_node_last_seen_timestamp_seconds",
              [alert_annotation("Thermal alerts", "thermal", "red")])

    d = d.with_row(db.Row("Power"))
    d = d.with_panel(single("IT power (ledger)", Q(f"sum({IT_POWER})"),
                            WATT, "IT power of the selected nodes as the collector's ledger last saw it."))
    d = d.with_panel(single("GPU board power (agents)", Q(f"sum(wattledger_gpu_power_watts{{{SEL}}})"), WATT,
                            "Sum of NVML board power of the selected GPUs, scraped from the agents."))
    d = d.with_panel(single("GPU power vs limit", Q(
        f"sum(wattledger_gpu_power_watts{{{SEL}}}) / sum(wattledger_gpu_power_limit_watts{{{SEL}}})"),
        PERCENT_UNIT, "Share of the summed power limits drawn now.",
        steps((None, "green"), (0.85, "yellow"), (0.95, "orange"))))
    d = d.with_panel(single("GPUs reporting", Q(f"count(wattledger_gpu_up{{{SEL}}} == 1)"), SHORT,
                            "GPUs that answered NVML on their last sample."))
    d = d.with_panel(single("Least slowdown margin", Q(f"min({MARGIN})"), CELSIUS,
                            "°C between the hottest GPU (relative to its own threshold) and thermal "
                            "slowdown; GpuThermalSlowdownNear fires below 5 °C.", MARGIN_STEPS))
    d = d.with_panel(single("Mean GPU utilization", Q(f"avg(wattledger_gpu_utilization_ratio{{{SEL}}})"),
                            PERCENT_UNIT))
    d = d.with_panel(graph("IT power by site", [Q(f"sum by (site) ({IT_POWER})",
                                                  "{{site}}")], WATT, stacked=True, width=8))
    d = d.with_panel(graph("IT power by cluster",
                           [Q(f"sum by (site, cluster) ({IT_POWER})",
                              "{{site}} / {{cluster}}")], WATT, stacked=True, width=8))
    d = d.with_panel(graph("GPU power by node", [Q(f"sum by (node) (wattledger_gpu_power_watts{{{SEL}}})",
                                                   "{{node}}")], WATT, stacked=True, width=8))
    d = d.with_panel(graph("Power by GPU (solid) and its limit (dashed)", [
        Q(f"wattledger_gpu_power_watts{{{SEL}}}", "{{node}} gpu {{gpu}}"),
        Q(f"wattledger_gpu_power_limit_watts{{{SEL}}}", "limit {{node}} gpu {{gpu}}"),
    ], WATT, dashed_refs=["B"], width=12))
    d = d.with_panel(graph("Host power (RAPL) by node and domain", [
        Q(f"sum by (node, domain) (rate(wattledger_host_energy_joules_total{{{SEL}}}[$__rate_interval]))",
          "{{node}} {{domain}}")], WATT,
        "CPU package and DRAM power from RAPL counters; empty on hosts without /sys/class/powercap.",
        width=12))

    d = d.with_row(db.Row("Thermal"))
    d = d.with_panel(graph("GPU temperature (solid) and its own slowdown threshold (dashed)", [
        Q(f"wattledger_gpu_temperature_celsius{GPU}", "{{node}} gpu {{gpu}}"),
        Q(f"wattledger_gpu_slowdown_temperature_celsius{{{SEL}}}", "slowdown {{node}} gpu {{gpu}}"),
    ], CELSIUS, dashed_refs=["B"], width=12))
    d = d.with_panel(graph("Margin to slowdown per GPU", [Q(MARGIN, "{{node}} gpu {{gpu}}")], CELSIUS,
                           "Each GPU against its own NVML slowdown temperature. Below 5 °C for 2 min: "
                           "GpuThermalSlowdownNear; at 0 the GPU throttles.", MARGIN_STEPS, width=12))
    d = d.with_panel(graph("Memory (HBM) temperature", [Q(f"wattledger_gpu_temperature_celsius{HBM}",
                                                          "{{node}} gpu {{gpu}}")], CELSIUS,
                           "GpuMemoryTemperatureHigh fires at 90 °C for 5 min.", HBM_STEPS, width=12))
    d = d.with_panel(graph("GPUs with a clock event active, by reason", [
        Q(f'sum by (reason) (wattledger_gpu_clock_event_active{{{SEL}, reason=~"{THROTTLE_REASONS}"}})',
          "{{reason}}")], SHORT,
        "sw_thermal / hw_thermal: throttling for heat (GpuThermalThrottling); hw_power_brake: the "
        "power brake (GpuPowerBrake); sw_power_cap: at the power limit, normal under full load.",
        width=12, minimum=0))
    d = d.with_panel(grid("GPUs closest to their slowdown threshold", Q(f"bottomk(10, {MARGIN})"),
                          CELSIUS, "The ten GPUs with the least °C left to their own slowdown temperature.",
                          MARGIN_STEPS, hide=("Time", "job", "instance", "uuid")))
    d = d.with_panel(bars("Hottest GPUs", Q(f"topk(10, wattledger_gpu_temperature_celsius{GPU})",
                                            "{{node}} gpu {{gpu}}"), CELSIUS,
                          thresholds=steps((None, "green"), (75.0, "yellow"), (83.0, "red"))))

    d = d.with_row(db.Row("Load"))
    d = d.with_panel(graph("GPU utilization", [Q(f"wattledger_gpu_utilization_ratio{{{SEL}}}",
                                                 "{{node}} gpu {{gpu}}")], PERCENT_UNIT, width=8))
    d = d.with_panel(graph("GPU memory used", [Q(f"wattledger_gpu_memory_used_bytes{{{SEL}}}",
                                                 "{{node}} gpu {{gpu}}")], BYTES, width=8))
    d = d.with_panel(graph("Host CPU utilization", [Q(f"wattledger_host_cpu_utilization_ratio{{{SEL}}}",
                                                      "{{node}}")], PERCENT_UNIT, width=8))
    return d
