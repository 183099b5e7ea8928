"""The agent's /metrics: a custom collector that builds metric families from the latest
sample at scrape time (DESIGN.md, "Metric names"). No module-level gauges: a registry and
this collector are made by the runtime (or a test) and hold no state of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wattledger.agent.facility_exposition import facility_families
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sampler import Snapshot
from wattledger.agent.shipper import Outcome
from wattledger.contract import CLOCK_EVENT_REASONS, Device

#: label names the agent sets itself; a --label may not take one of them
RESERVED_LABELS = frozenset(
    {"node", "gpu", "uuid", "model", "sensor", "reason", "domain", "source", "outcome", "instance", "job",
     "meter", "role", "collector"}
)


class DeliveryMetrics(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class AgentCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        node: str,
        labels: Mapping[str, str],
        delivery: DeliveryMetrics | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._node_names = ["node", *labels]
        self._node_values = [node, *labels.values()]
        self._gpu_names = ["node", "gpu", "uuid", "model", *labels]
        self._delivery = delivery

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on what the sources found; describe nothing, collect lazily

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        gpus = [r for r in snap.readings if r.device.kind == "gpu"]
        yield from self._gpu_families(gpus, snap)
        yield from self._host_families(snap)
        yield from facility_families(snap, self._node_values[0], self._node_names, self._node_values)
        yield from self._self_health(snap)
        if self._delivery is not None:
            yield from self._delivery.collect()
        else:  # exporter only: still expose the series, so dashboards and alerts find them
            yield self._node_gauge(
                "wattledger_agent_spool_batches",
                "Batches waiting in the spool (no collector configured).",
                0.0,
            )
            yield self._node_counter(
                "wattledger_agent_dropped_readings_total", "Readings dropped because the spool was full.", 0.0
            )
            shipped = CounterMetricFamily(
                "wattledger_agent_shipped_batches",
                "Batch delivery attempts by outcome (no collector configured).",
                labels=[*self._node_names, "outcome"],
            )
            for outcome in Outcome:
                shipped.add_metric([*self._node_values, outcome.value], 0.0)
            yield shipped

    # ---------------------------------------------------------------- GPUs

    def _gpu_labels(self, info: Device) -> list[str]:
        node, *extra = self._node_values
        return [node, str(info.index), info.id, info.model or "", *extra]

    def _gpu_families(self, gpus: list[DeviceReading], snap: Snapshot) -> Iterator[Metric]:
        names = self._gpu_names

        def gauge(name: str, doc: str, value: Callable[[DeviceReading], float | None]) -> Metric:
            fam = GaugeMetricFamily(name, doc, labels=names)
            for r in gpus:
                v = value(r)
                if v is not None:
                    fam.add_metric(self._gpu_labels(r.device), v)
            return fam

        up = GaugeMetricFamily(
            "wattledger_gpu_up", "1 if the GPU answered the last sample, 0 if lost.", labels=names
        )
        for r in gpus:
            up.add_metric(self._gpu_labels(r.device), 1.0)
        for info in snap.down:
            if info.kind == "gpu":
                up.add_metric(self._gpu_labels(info), 0.0)
        yield up
        yield gauge("wattledger_gpu_power_watts", "Power draw.", lambda r: r.power_w)
        energy = CounterMetricFamily(
            "wattledger_gpu_energy_joules",
            "Energy counter of the GPU since its driver was loaded.",
            labels=names,
        )
        for r in gpus:
            if r.energy_j is not None:
                energy.add_metric(self._gpu_labels(r.device), r.energy_j)
        yield energy
        temp = GaugeMetricFamily(
            "wattledger_gpu_temperature_celsius",
            "GPU die or memory (HBM) temperature.",
            labels=[*names, "sensor"],
        )
        for r in gpus:
            if r.temp_c is not None:
                temp.add_metric([*self._gpu_labels(r.device), "gpu"], r.temp_c)
            if r.mem_temp_c is not None:
                temp.add_metric([*self._gpu_labels(r.device), "memory"], r.mem_temp_c)
        yield temp
        yield gauge(
            "wattledger_gpu_slowdown_temperature_celsius",
            "Temperature at which the GPU slows itself down.",
            lambda r: r.device.slowdown_c,
        )
        yield gauge(
            "wattledger_gpu_shutdown_temperature_celsius",
            "Temperature at which the GPU shuts down.",
            lambda r: r.device.shutdown_c,
        )
        yield gauge(
            "wattledger_gpu_utilization_ratio", "Share of time a kernel ran (0..1).", lambda r: r.util
        )
        yield gauge(
            "wattledger_gpu_memory_utilization_ratio",
            "Share of time device memory was read or written (0..1).",
            lambda r: r.mem_util,
        )
        yield gauge("wattledger_gpu_memory_used_bytes", "Device memory in use.", lambda r: r.mem_used_bytes)
        yield gauge(
            "wattledger_gpu_memory_total_bytes", "Device memory installed.", lambda r: r.mem_total_bytes
        )
        yield gauge(
            "wattledger_gpu_power_limit_watts", "Enforced power limit.", lambda r: r.device.power_limit_w
        )
        yield gauge(
            "wattledger_gpu_sm_clock_hertz", "Streaming-multiprocessor clock.", lambda r: r.sm_clock_hz
        )
        events = GaugeMetricFamily(
            "wattledger_gpu_clock_event_active",
            "1 while a clock-event (throttle) reason is active.",
            labels=[*names, "reason"],
        )
        for r in gpus:
            if r.clock_events is not None:
                labels = self._gpu_labels(r.device)
                for bit, reason in CLOCK_EVENT_REASONS:
                    events.add_metric([*labels, reason], 1.0 if r.clock_events & bit else 0.0)
        yield events

    # ---------------------------------------------------------------- host and self-health

    def _node_gauge(self, name: str, doc: str, value: float) -> Metric:
        fam = GaugeMetricFamily(name, doc, labels=self._node_names)
        fam.add_metric(self._node_values, value)
        return fam

    def _node_counter(self, name: str, doc: str, value: float) -> Metric:
        fam = CounterMetricFamily(name.removesuffix("_total"), doc, labels=self._node_names)
        fam.add_metric(self._node_values, value)
        return fam

    def _host_families(self, snap: Snapshot) -> Iterator[Metric]:
        host = snap.host
        cpu = GaugeMetricFamily(
            "wattledger_host_cpu_utilization_ratio",
            "Host CPU busy share, all cores (0..1).",
            labels=self._node_names,
        )
        used = GaugeMetricFamily(
            "wattledger_host_memory_used_bytes", "Host memory in use.", labels=self._node_names
        )
        total = GaugeMetricFamily(
            "wattledger_host_memory_total_bytes", "Host memory installed.", labels=self._node_names
        )
        labels = [*self._node_names, "domain"]
        energy = CounterMetricFamily(
            "wattledger_host_energy_joules",
            "RAPL energy of a host power domain, counted since the agent started.",
            labels=labels,
        )
        power = GaugeMetricFamily(
            "wattledger_host_power_watts",
            "RAPL power of a host power domain over the last sample interval.",
            labels=labels,
        )
        if host is not None:
            for fam, value in (
                (cpu, host.cpu_util),
                (used, host.mem_used_bytes),
                (total, host.mem_total_bytes),
            ):
                if value is not None:
                    fam.add_metric(self._node_values, value)
            for d in host.rapl:
                values = [*self._node_values, d.domain]
                energy.add_metric(values, d.energy_j)
                if d.power_w is not None:
                    power.add_metric(values, d.power_w)
        yield from (cpu, used, total, energy, power)

    def _self_health(self, snap: Snapshot) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "wattledger_agent_source_up",
            "1 if the source answered the last sample.",
            labels=[*self._node_names, "source"],
        )
        for name, ok in sorted(snap.source_up.items()):
            up.add_metric([*self._node_values, name], 1.0 if ok else 0.0)
        yield up
        yield self._node_counter(
            "wattledger_agent_readings_total",
            "Device readings taken (one per device per sample).",
            snap.readings_total,
        )
        yield self._node_counter("wattledger_agent_samples_total", "Samples taken.", snap.samples_total)
        yield self._node_counter(
            "wattledger_agent_skipped_samples_total",
            "Samples skipped because the clock went backwards.",
            snap.skipped_total,
        )
        if snap.sample_seconds is not None:
            yield self._node_gauge(
                "wattledger_agent_sample_duration_seconds",
                "How long the last sample took.",
                snap.sample_seconds,
            )
        if snap.ts is not None:
            yield self._node_gauge(
                "wattledger_agent_last_sample_timestamp_seconds",
                "When the last sample was taken (unix time).",
                snap.ts,
            )
