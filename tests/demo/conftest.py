"""Fixtures of the demo's tests: the demo's own scenario, state folder and a real ledger."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from demokit import NOW, collector_settings

from wattledger.collector.service import Ledger
from wattledger.demo.backfill import node_batches, simulated_source, timestamps
from wattledger.demo.layout import DemoState, Ports
from wattledger.demo.scenario import Scenario, default_scenario
from wattledger.wire import validate


@pytest.fixture
def scenario() -> Scenario:
    return default_scenario()


@pytest.fixture
def state(tmp_path: Path) -> DemoState:
    s = DemoState(tmp_path / "demo")
    s.prepare(fresh=False)
    return s


@pytest.fixture
def ports(scenario: Scenario) -> Ports:
    return Ports(collector=19861, prometheus=19090,
                 agents={s.node: 19871 + i for i, s in enumerate(scenario.servers)})


@pytest.fixture
def ledger(scenario: Scenario, state: DemoState, ports: Ports) -> Iterator[Ledger]:
    """A real ledger on the demo's configuration, holding a day of every server's backfill."""
    settings = collector_settings(scenario, state, ports)
    led = Ledger(settings.db, settings.sites, settings.plan, max_gap_seconds=settings.max_gap_seconds,
                 clock=lambda: NOW, stale_after_seconds=1e9)
    try:
        for server in scenario.servers:
            source = simulated_source(server)
            ts = timestamps(NOW - 86400, NOW - 60, 600.0)
            for _, body in node_batches(server.node, source, server.devices, f"test-{server.node}",
                                        server.labels(scenario.site.name), ts):
                led.ingest([validate(gzip.decompress(body), NOW)])
        yield led
    finally:
        led.close()
