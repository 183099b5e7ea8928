"""Checks every accelerator source beside NVML must pass, whatever its vendor (``amdsmi``,
``hlml``): run against that vendor's fake module by the vendor's own tests."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wattledger.agent.exposition import AgentCollector
from wattledger.agent.sampler import Sampler
from wattledger.agent.sources.base import Source, SourceSample
from wattledger.contract import CLOCK_EVENT_REASONS

TS = 1_764_000_000.0
#: the series of a GPU with every reading (names without ``wattledger_gpu_``; ``up`` left out)
EVERY_SERIES = frozenset({
    "power_watts", "energy_joules_total", "temperature_celsius{gpu}", "temperature_celsius{memory}",
    "slowdown_temperature_celsius", "shutdown_temperature_celsius", "utilization_ratio",
    "memory_utilization_ratio", "memory_used_bytes", "memory_total_bytes", "power_limit_watts",
    "sm_clock_hertz",
    *(f"clock_event_active{{{reason}}}" for _, reason in CLOCK_EVENT_REASONS)})


class FakeBoard(Protocol):
    """A board of a fake vendor module: its id, and a switch to make it stop answering."""

    uuid: str | None
    lost: bool


class Steady:
    """A host source that always answers."""

    name = "host"

    def open(self) -> None: ...

    def close(self) -> None: ...

    def sample(self, ts: float) -> SourceSample:
        return SourceSample()


def check_a_lost_device_goes_down_and_the_others_go_on(source: Source, boards: Sequence[FakeBoard]) -> None:
    """``source`` opened over three boards: the middle one is lost, then back."""
    boards[1].lost = True
    out = source.sample(TS)
    assert [r.device.id for r in out.readings] == [boards[0].uuid, boards[2].uuid]
    assert [d.id for d in out.down] == [boards[1].uuid]
    boards[1].lost = False
    assert [r.device.id for r in source.sample(TS + 1).readings] == [b.uuid for b in boards]


def check_a_device_lost_before_discovery_is_down_then_found(
        open_source: Callable[[Sequence[FakeBoard]], Source], boards: Sequence[FakeBoard],
        down_id: str) -> None:
    """Two boards, the second lost when the source opens: down as ``down_id``, found later."""
    boards[1].lost = True
    source = open_source(boards)
    out = source.sample(TS)
    assert [r.device.id for r in out.readings] == [boards[0].uuid]
    assert [(d.id, d.index) for d in out.down] == [(down_id, 1)]
    boards[1].lost = False
    assert [r.device.id for r in source.sample(TS + 1).readings] == [boards[0].uuid, boards[1].uuid]


def check_no_library_is_one_line_and_the_host_keeps_running(
        source: Source, said: str, caplog: pytest.LogCaptureFixture) -> None:
    sampler = Sampler([source, Steady()], clock=lambda: TS)
    with caplog.at_level(logging.WARNING):
        sampler.open()
        sampler.sample(TS)
        sampler.sample(TS + 1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and said in lines[0] and "keep running" in lines[0], lines
    assert sampler.snapshot.source_up == {source.name: False, "host": True}


def gpu_series(source: Source, samples: int = 2) -> dict[str, set[str]]:
    """The ``wattledger_gpu_*`` families /metrics shows for each device of ``source`` after
    ``samples`` samples (clock events and temperatures by their reason / sensor)."""
    sampler = Sampler([source])
    sampler.open()
    for i in range(samples):
        sampler.sample(TS + i)
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: sampler.snapshot, "n1", {}))
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if not s.name.startswith("wattledger_gpu_") or s.name == "wattledger_gpu_up":
                continue
            detail = s.labels.get("sensor") or s.labels.get("reason")
            name = s.name.removeprefix("wattledger_gpu_")
            out.setdefault(s.labels["uuid"], set()).add(f"{name}{{{detail}}}" if detail else name)
    return out
