"""Fleet power & thermal: where the watts go and how close every GPU runs to its own limit."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.kit import (
    BYTES,
    CELSIUS,
    IT_POWER,
    PERCENT_UNIT,
    SHORT,
    WATT,
    Q,
    agent,
    alert_annotation,
    bars,
    board,
    graph,
    grid,
    single,
    steps,
)

GPU_TEMP = agent("wattledger_gpu_temperature_celsius", 'sensor="gpu"')
HBM_TEMP = agent("wattledger_gpu_temperature_celsius", 'sensor="memory"')
SLOWDOWN = agent("wattledger_gpu_slowdown_temperature_celsius")
#: °C left before each GPU reaches ITS OWN slowdown temperature (NVML's threshold, per board)
MARGIN = f"{SLOWDOWN} - ignoring (sensor) {GPU_TEMP}"
#: the alert rules' margin (GpuThermalSlowdownNear) and HBM limit (GpuMemoryTemperatureHigh)
MARGIN_STEPS = steps((None, "red"), (0.0, "orange"), (5.0, "yellow"), (10.0, "green"))
HBM_STEPS = steps((None, "green"), (85.0, "yellow"), (90.0, "red"))
THROTTLE_REASONS = "sw_thermal|hw_thermal|hw_slowdown|hw_power_brake|sw_power_cap"
GPU_POWER = agent("wattledger_gpu_power_watts")
CLOCK_EVENTS = agent("wattledger_gpu_clock_event_active", f'reason=~"{THROTTLE_REASONS}"')


def build() -> db.Dashboard:
    d = board("wattledger-fleet", "wattledger / Fleet power & thermal",
              "GPU and host power by site, cluster, node and GPU; temperatures against each GPU's own "
              "slowdown threshold; throttling and utilization.",
              ["power", "thermal"], "wattledger_node_last_seen_timestamp_seconds",
              [alert_annotation("Thermal alerts", "thermal", "red")])

    d = d.with_row(db.Row("Power"))
    d = d.with_panel(single("IT power (ledger)", Q(f"sum({IT_POWER})"),
                            WATT, "IT power of the selected nodes as the collector's ledger last saw it."))
    d = d.with_panel(single("GPU board power (agents)", Q(f"sum({GPU_POWER})"), WATT,
                            "Sum of NVML board power of the selected GPUs, scraped from the agents."))
    d = d.with_panel(single("GPU power vs limit", Q(
        f"sum({GPU_POWER}) / sum({agent('wattledger_gpu_power_limit_watts')})"),
        PERCENT_UNIT, "Share of the summed power limits drawn now.",
        steps((None, "green"), (0.85, "yellow"), (0.95, "orange"))))
    d = d.with_panel(single("GPUs reporting", Q(f"count({agent('wattledger_gpu_up')} == 1)"), SHORT,
                            "GPUs that answered NVML on their last sample."))
    d = d.with_panel(single("Least slowdown margin", Q(f"min({MARGIN})"), CELSIUS,
                            "°C between the hottest GPU (relative to its own threshold) and thermal "
                            "slowdown; GpuThermalSlowdownNear fires below 5 °C.", MARGIN_STEPS))
    d = d.with_panel(single("Mean GPU utilization", Q(f"avg({agent('wattledger_gpu_utilization_ratio')})"),
                            PERCENT_UNIT))
    d = d.with_panel(graph("IT power by site", [Q(f"sum by (site) ({IT_POWER})",
                                                  "{{site}}")], WATT, stacked=True, width=8))
    d = d.with_panel(graph("IT power by cluster",
                           [Q(f"sum by (site, cluster) ({IT_POWER})",
                              "{{site}} / {{cluster}}")], WATT, stacked=True, width=8))
    d = d.with_panel(graph("GPU power by node", [Q(f"sum by (node) ({GPU_POWER})",
                                                   "{{node}}")], WATT, stacked=True, width=8))
    d = d.with_panel(graph("Power by GPU (solid) and its limit (dashed)", [
        Q(GPU_POWER, "{{node}} gpu {{gpu}}"),
        Q(f"{agent('wattledger_gpu_power_limit_watts')}", "limit {{node}} gpu {{gpu}}"),
    ], WATT, dashed_refs=["B"], width=12))
    d = d.with_panel(graph("Host power (RAPL) by node and domain", [
        Q(f"sum by (node, domain) ({agent('wattledger_host_energy_joules_total', fn='rate')})",
          "{{node}} {{domain}}")], WATT,
        "CPU package and DRAM power from RAPL counters; empty on hosts without /sys/class/powercap.",
        width=12))

    d = d.with_row(db.Row("Thermal"))
    d = d.with_panel(graph("GPU temperature (solid) and its own slowdown threshold (dashed)", [
        Q(GPU_TEMP, "{{node}} gpu {{gpu}}"),
        Q(SLOWDOWN, "slowdown {{node}} gpu {{gpu}}"),
    ], CELSIUS, dashed_refs=["B"], width=12))
    d = d.with_panel(graph("Margin to slowdown per GPU", [Q(MARGIN, "{{node}} gpu {{gpu}}")], CELSIUS,
                           "Each GPU against its own NVML slowdown temperature. Below 5 °C for 2 min: "
                           "GpuThermalSlowdownNear; at 0 the GPU throttles.", MARGIN_STEPS, width=12))
    d = d.with_panel(graph("Memory (HBM) temperature", [Q(HBM_TEMP,
                                                          "{{node}} gpu {{gpu}}")], CELSIUS,
                           "GpuMemoryTemperatureHigh fires at 90 °C for 5 min.", HBM_STEPS, width=12))
    d = d.with_panel(graph("GPUs with a clock event active, by reason", [
        Q(f"sum by (reason) ({CLOCK_EVENTS})",
          "{{reason}}")], SHORT,
        "sw_thermal / hw_thermal: throttling for heat (GpuThermalThrottling); hw_power_brake: the "
        "power brake (GpuPowerBrake); sw_power_cap: at the power limit, normal under full load.",
        width=12, minimum=0))
    d = d.with_panel(grid("GPUs closest to their slowdown threshold", Q(f"bottomk(10, {MARGIN})"),
                          CELSIUS, "The ten GPUs with the least °C left to their own slowdown temperature.",
                          MARGIN_STEPS, hide=("Time", "job", "instance", "uuid")))
    d = d.with_panel(bars("Hottest GPUs", Q(f"topk(10, {GPU_TEMP})",
                                            "{{node}} gpu {{gpu}}"), CELSIUS,
                          thresholds=steps((None, "green"), (75.0, "yellow"), (83.0, "red"))))

    d = d.with_row(db.Row("Load"))
    d = d.with_panel(graph("GPU utilization", [Q(f"{agent('wattledger_gpu_utilization_ratio')}",
                                                 "{{node}} gpu {{gpu}}")], PERCENT_UNIT, width=8))
    d = d.with_panel(graph("GPU memory used", [Q(f"{agent('wattledger_gpu_memory_used_bytes')}",
                                                 "{{node}} gpu {{gpu}}")], BYTES, width=8))
    d = d.with_panel(graph("Host CPU utilization", [Q(f"{agent('wattledger_host_cpu_utilization_ratio')}",
                                                      "{{node}}")], PERCENT_UNIT, width=8))
    return d
