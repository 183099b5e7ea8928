"""The sampler: one failing source never stops the others, delivery trouble never stops
sampling, a clock that steps back is not followed, closed sources are retried; allocation
sources are asked after the hardware, with the devices seen, and their holdings handed on."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from tests.agent.held_source import HeldSource
from wattledger.agent.allocations import Allocation
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sampler import Sampler
from wattledger.agent.sources.base import SourceError, SourceSample, SourceUnavailable
from wattledger.agent.sources.simulated import SimulatedSource

TS = 1_764_000_000.0


class Broken:
    """A source that fails to sample (or to open) while ``broken`` is set."""

    name = "broken"

    def __init__(self, *, on_open: bool = False) -> None:
        self.broken = True
        self.on_open = on_open
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        if self.on_open and self.broken:
            raise SourceUnavailable("not here")

    def close(self) -> None: ...

    def sample(self, ts: float) -> SourceSample:
        if self.broken:
            raise SourceError("read failed")
        return SourceSample()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_source_is_down_and_the_others_go_on() -> None:
    broken = Broken()
    sampler = Sampler([broken, SimulatedSource("n1", 2)])
    sampler.open()
    snap = sampler.sample(TS)
    assert snap.source_up == {"broken": False, "simulated": True}
    assert len(snap.readings) == 2 and snap.readings_total == 2
    broken.broken = False
    assert sampler.sample(TS + 1).source_up == {"broken": True, "simulated": True}


def test_a_source_that_cannot_open_is_retried_after_a_while() -> None:
    timer = Clock()
    broken = Broken(on_open=True)
    sampler = Sampler([broken], timer=timer, reopen_seconds=60)
    sampler.open()
    broken.broken = False
    timer.now = 30
    assert sampler.sample(TS).source_up == {"broken": False}
    assert broken.opens == 1  # not yet
    timer.now = 61
    assert sampler.sample(TS + 1).source_up == {"broken": True}
    assert broken.opens == 2


def test_readings_reach_delivery_and_its_failure_does_not_stop_sampling() -> None:
    got: list[int] = []

    def record(readings: Sequence[DeviceReading], allocations: Sequence[Allocation]) -> None:
        got.append(len(readings))
        if len(got) == 2:
            raise OSError("disk full")

    sampler = Sampler([SimulatedSource("n1", 3)], on_readings=record)
    sampler.open()
    for k in range(3):
        sampler.sample(TS + k)
    assert got == [3, 3, 3]
    assert sampler.snapshot.readings_total == 9 and sampler.snapshot.samples_total == 3


def test_a_clock_stepping_back_skips_samples_until_it_catches_up(caplog: pytest.LogCaptureFixture) -> None:
    sampler = Sampler([SimulatedSource("n1", 1)])
    sampler.open()
    sampler.sample(TS)
    with caplog.at_level(logging.WARNING):
        for back in (5, 4, 3):
            snap = sampler.sample(TS - back)
    assert snap.ts == TS and snap.skipped_total == 3 and snap.readings_total == 1
    assert len(caplog.records) == 1 and "went back 5.0 s" in caplog.records[0].getMessage()
    assert sampler.sample(TS + 1).readings_total == 2


def test_sample_duration_is_measured_with_the_injected_timer() -> None:
    ticks = iter([0.0, 10.0, 10.25])
    sampler = Sampler([SimulatedSource("n1", 1)], timer=lambda: next(ticks))
    sampler.open()
    assert sampler.sample(TS).sample_seconds == 0.25


def test_allocation_sources_are_asked_after_the_hardware_with_the_devices_seen() -> None:
    handed: list[tuple[int, list[tuple[str, float, float | None]]]] = []
    slurm, sim = HeldSource("slurm"), SimulatedSource("n1", 2)
    sampler = Sampler([slurm, sim], on_readings=lambda rs, allocs: handed.append(
        (len(rs), [(a.key, a.start, a.end) for a in allocs])))
    sampler.open()
    gpu0 = sim.sample(TS - 10).readings[0].device.id
    slurm.hold("slurm:48213", gpu0, since=TS - 60, account="vision")
    snap = sampler.sample(TS)
    assert snap.source_up == {"simulated": True, "slurm": True}
    assert slurm.seen[-1] == [r.device.id for r in snap.readings]  # the devices of this sample
    sampler.sample(TS + 1)
    slurm.release("slurm:48213")
    sampler.sample(TS + 2)
    assert handed == [(2, [("slurm:48213", TS - 60, None)]), (2, []), (2, [("slurm:48213", TS - 60, TS + 1)])]


def test_a_failing_allocation_source_is_down_its_holdings_end_and_readings_flow_on() -> None:
    handed: list[list[tuple[str, float | None]]] = []
    k8s = HeldSource("kubernetes")
    sampler = Sampler([SimulatedSource("n1", 1), k8s],
                      on_readings=lambda rs, allocs: handed.append([(a.key, a.end) for a in allocs]))
    sampler.open()
    k8s.hold("k8s:nlp/pod/c", "GPU-x", namespace="nlp")
    sampler.sample(TS)
    k8s.failing = True
    snap = sampler.sample(TS + 1)
    assert snap.source_up == {"simulated": True, "kubernetes": False}
    assert len(snap.readings) == 1 and snap.readings_total == 2
    assert handed == [[("k8s:nlp/pod/c", None)], [("k8s:nlp/pod/c", TS)]]


def test_an_allocation_source_that_cannot_open_is_down_and_retried() -> None:
    timer = Clock()
    k8s = HeldSource("kubernetes")
    k8s.unavailable = True
    sampler = Sampler([SimulatedSource("n1", 1), k8s], timer=timer, reopen_seconds=60)
    sampler.open()
    assert sampler.sample(TS).source_up["kubernetes"] is False
    k8s.unavailable = False
    timer.now = 61
    assert sampler.sample(TS + 1).source_up["kubernetes"] is True and k8s.opened == 2
    sampler.close()
    assert k8s.closed == 1
