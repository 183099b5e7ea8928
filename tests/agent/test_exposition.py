"""/metrics as Prometheus sees it: a golden file of a seeded simulator on a fixed clock, plus
the cases the golden file does not show (lost GPU, failing source, delivery metrics).

Regenerate the golden file after an intended change with
``WATTLEDGER_UPDATE_GOLDEN=1 pytest tests/agent/test_exposition.py``, and read the diff.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from wattledger.agent.exposition import AgentCollector
from wattledger.agent.sampler import Sampler
from wattledger.agent.sources.host import HostSource
from wattledger.agent.sources.simulated import SimulatedSource

GOLDEN = Path(__file__).parent / "golden" / "metrics.txt"
TS = 1_764_000_000.0


def fake_sysfs(root: Path) -> Path:
    d = root / "class" / "powercap" / "intel-rapl:0"
    d.mkdir(parents=True)
    (d / "name").write_text("package-0\n")
    (d / "energy_uj").write_text("1000000\n")
    (d / "max_energy_range_uj").write_text("262143328850\n")
    return d / "energy_uj"


def render(sampler: Sampler, delivery: object = None) -> str:
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: sampler.snapshot, "golden-node", {"site": "s1"}, delivery))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def seeded(tmp_path: Path) -> tuple[Sampler, SimulatedSource, Path]:
    energy = fake_sysfs(tmp_path)
    memory = SimpleNamespace(total=64 << 30, available=40 << 30)
    host = HostSource(
        "golden-node", sysfs_root=tmp_path, cpu_percent=lambda: 12.5, virtual_memory=lambda: memory
    )
    sim = SimulatedSource("golden-node", 2, workloads=("training", "hot"), seed=42)
    ticks = iter(float(i) / 1000 for i in range(1000))  # every sample "takes" 1 ms
    sampler = Sampler([sim, host], timer=lambda: next(ticks))
    sampler.open()
    return sampler, sim, energy


def test_golden_metrics(tmp_path: Path) -> None:
    sampler, _, energy = seeded(tmp_path)
    sampler.sample(TS)
    energy.write_text("151000000\n")  # 150 J in the next second
    sampler.sample(TS + 1)
    text = render(sampler)
    if os.environ.get("WATTLEDGER_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_every_contract_name_is_exposed(tmp_path: Path) -> None:
    sampler, _, _ = seeded(tmp_path)
    sampler.sample(TS)
    names = {s.name for fam in text_string_to_metric_families(render(sampler)) for s in fam.samples}
    names |= {fam.name for fam in text_string_to_metric_families(render(sampler))}
    contract = [
        "wattledger_gpu_power_watts",
        "wattledger_gpu_energy_joules_total",
        "wattledger_gpu_temperature_celsius",
        "wattledger_gpu_slowdown_temperature_celsius",
        "wattledger_gpu_shutdown_temperature_celsius",
        "wattledger_gpu_utilization_ratio",
        "wattledger_gpu_memory_used_bytes",
        "wattledger_gpu_power_limit_watts",
        "wattledger_gpu_clock_event_active",
        "wattledger_host_cpu_utilization_ratio",
        "wattledger_host_energy_joules_total",
        "wattledger_agent_source_up",
        "wattledger_agent_readings_total",
        "wattledger_agent_spool_batches",
        "wattledger_agent_dropped_readings_total",
        "wattledger_agent_shipped_batches",
    ]
    assert [n for n in contract if n not in names] == []


def test_lost_gpu_is_down_without_values_and_a_failed_source_is_zero(tmp_path: Path) -> None:
    sampler, sim, energy = seeded(tmp_path)
    sampler.sample(TS)
    sim.gpus[1].lose()
    energy.unlink()
    energy.parent.joinpath("name").unlink()
    fams = {f.name: f for f in text_string_to_metric_families(render_after(sampler, TS + 1))}
    up = {s.labels["gpu"]: s.value for s in fams["wattledger_gpu_up"].samples}
    assert up == {"0": 1.0, "1": 0.0}
    assert [s.labels["gpu"] for s in fams["wattledger_gpu_power_watts"].samples] == ["0"]


def render_after(sampler: Sampler, ts: float) -> str:
    sampler.sample(ts)
    return render(sampler)


def test_source_down_shows_zero_and_keeps_the_scrape(tmp_path: Path) -> None:
    sampler, sim, _ = seeded(tmp_path)

    def broken(ts: float) -> None:
        raise RuntimeError("boom")

    sim.sample = broken  # type: ignore[assignment,method-assign]
    fams = {f.name: f for f in text_string_to_metric_families(render_after(sampler, TS))}
    up = {s.labels["source"]: s.value for s in fams["wattledger_agent_source_up"].samples}
    assert up == {"host": 1.0, "simulated": 0.0}
    assert fams["wattledger_gpu_power_watts"].samples == []
    assert fams["wattledger_host_cpu_utilization_ratio"].samples[0].value == 0.125


class FakeDelivery:
    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily("wattledger_agent_spool_batches", "x", labels=["node"])
        g.add_metric(["golden-node"], 7)
        yield g


def test_delivery_metrics_replace_the_exporter_only_zeros(tmp_path: Path) -> None:
    sampler, _, _ = seeded(tmp_path)
    text = render_after(sampler, TS)
    assert 'wattledger_agent_spool_batches{node="golden-node",site="s1"} 0.0' in text
    assert 'wattledger_agent_shipped_batches_total{node="golden-node",outcome="ok",site="s1"} 0.0' in text
    with_delivery = render(sampler, FakeDelivery())
    assert 'wattledger_agent_spool_batches{node="golden-node"} 7.0' in with_delivery
    assert "shipped_batches" not in with_delivery
