"""The fast /metrics text (LedgerCollector.render) says exactly what client_python makes of the
same collector's families: same families, HELP and TYPE lines, series and values."""

from __future__ import annotations

from ledgerkit import at, make_batch, make_sites, open_ledger
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.readmodel.exposition import LedgerCollector
from wattledger.collector.service import Ledger
from wattledger.collector.sites import PlanEntry

T = at("2026-11-02 10:00")


def samples(text: bytes) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                  for family in text_string_to_metric_families(text.decode()) for s in family.samples)


def comments(text: bytes) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if line.startswith("#"))


def both(led: Ledger) -> tuple[bytes, bytes]:
    collector = led.collector()
    assert isinstance(collector, LedgerCollector)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry), collector.render()


def mixed_ledger() -> Ledger:
    """Two nodes (one goes stale), label values that need escaping, gaps in the optional columns."""
    plan = [PlanEntry(site="default", month="2026-11", cost=600.0)]
    led = open_ledger(make_sites(demand_charge_per_kw=2.0), plan, now=T + 60)
    gpus = [{"id": 'GPU-"a"\\0', "kind": "gpu", "index": 0, "power_limit_w": 700.0, "slowdown_c": 87.0},
            {"id": "GPU-b", "kind": "gpu", "index": 1}]
    led.ingest([make_batch(node="n1", stream="s1", labels={"cluster": 'train "x"\nline'},
                           devices=gpus, device=[0, 1, 0, 1], ts=[T, T, T + 10, T + 10],
                           power_w=[500.0, None, 510.0, 90.0], energy_j=[0.0, None, 5000.0, None],
                           temp_c=[60.0, None, 61.0, 40.0], clock_events=[0, None, 0x44, None],
                           util=[0.5, None, 0.6, None])])
    return led


def test_render_equals_client_python_text() -> None:
    led = mixed_ledger()
    led.ingest([make_batch(node="n2", stream="s2", ts=[T + 30, T + 40], power_w=[300.0, 310.0],
                           mem_temp_c=[70.0, 71.0])])
    slow, fast = both(led)
    assert samples(fast) == samples(slow)
    assert comments(fast) == comments(slow)
    # escaped label values come back as they were
    pairs = {pair for _, labels, _ in samples(fast) for pair in labels}
    assert {("device", 'GPU-"a"\\0'), ("cluster", 'train "x"\nline')} <= pairs


def test_render_follows_staleness_and_moves() -> None:
    led = mixed_ledger()
    collector = led.collector()
    assert isinstance(collector, LedgerCollector)
    collector.render()  # fills the label cache
    led.clock.now += 121  # type: ignore[attr-defined]  # n1 goes stale: its latest gauges go
    led.ingest([make_batch(node="n1", stream="s1", seq=2, labels={"cluster": "moved"},
                           devices=[{"id": "GPU-b", "kind": "gpu", "index": 1}], device=[0],
                           ts=[T + 20], power_w=[95.0])])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert samples(collector.render()) == samples(generate_latest(registry))
    clusters = {dict(labels).get("cluster") for name, labels, _ in samples(collector.render())
                if name == "wattledger_device_energy_joules_total"}
    assert clusters == {"moved"}  # both devices of n1 now carry its new cluster
