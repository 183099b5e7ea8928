"""A BMC that hangs never delays the GPU samples: the redfish source reads on its own thread,
and the sampler takes its samples while a request to the BMC is still unanswered (the fake
BMC counts the requests it is holding). No wall-clock assertion: the proof is the order of
events, a sample completed while the BMC still held the request."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.redfish_bmc import FakeBmc
from wattledger.agent.sampler import Sampler, Snapshot
from wattledger.agent.sources.redfish import RedfishSource
from wattledger.agent.sources.remote import RedfishSettings
from wattledger.agent.sources.simulated import SimulatedSource

pytestmark = pytest.mark.timeout(120)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def bmc() -> Iterator[FakeBmc]:
    server = FakeBmc("public-rackmount1")
    yield server
    server.close()


def kinds(snap: Snapshot) -> list[str]:
    return sorted(r.device.kind for r in snap.readings)


def make(bmc: FakeBmc, tmp_path: Path, *, timeout: float = 60.0) -> tuple[Sampler, RedfishSource]:
    password = tmp_path / "pw"
    password.write_text("s3cret-pw\n")
    redfish = RedfishSource("n1", RedfishSettings(url=bmc.url, user="monitor", password_file=password,
                                                  interval=0.2, timeout=timeout))
    return Sampler([SimulatedSource("n1", 2), redfish]), redfish


def test_a_hanging_bmc_never_delays_the_gpu_samples(bmc: FakeBmc, tmp_path: Path) -> None:
    sampler, _ = make(bmc, tmp_path)
    sampler.open()
    try:
        wait_for(lambda: "node" in kinds(sampler.sample()), "a first BMC reading")
        assert kinds(sampler.snapshot) == ["gpu", "gpu", "node", "sensor"]

        bmc.hang.set()
        wait_for(lambda: bmc.hanging >= 1, "the poll thread to be stuck in a request")
        for _ in range(5):
            snap = sampler.sample()
            assert kinds(snap).count("gpu") == 2
        assert bmc.hanging >= 1, "the samples were taken while the BMC still held the request"

        # once the last reading is older than 3 polls it is not shown any more: source down
        wait_for(lambda: not sampler.sample().source_up["redfish"], "the stale BMC reading to go")
        snap = sampler.snapshot
        assert kinds(snap) == ["gpu", "gpu"] and snap.source_up["simulated"]

        bmc.hang.clear()
        bmc.release.set()
        wait_for(lambda: sampler.sample().source_up["redfish"], "the BMC to answer again")
        assert "node" in kinds(sampler.snapshot)
    finally:
        bmc.release.set()
        sampler.close()


def test_a_bmc_hanging_from_the_start_holds_up_neither_open_nor_sample(bmc: FakeBmc, tmp_path: Path) -> None:
    bmc.hang.set()
    sampler, _ = make(bmc, tmp_path)
    try:
        sampler.open()  # starts the poll thread, which hangs in the first request
        wait_for(lambda: bmc.hanging >= 1, "the first request to hang")
        snap = sampler.sample()
        assert kinds(snap) == ["gpu", "gpu"] and snap.source_up == {"simulated": True, "redfish": False}
        assert bmc.hanging >= 1
    finally:
        bmc.release.set()
        sampler.close()


def test_the_read_timeout_ends_a_hung_request(bmc: FakeBmc, tmp_path: Path) -> None:
    bmc.hang.set()
    _, redfish = make(bmc, tmp_path, timeout=0.5)
    try:
        assert not redfish.poller.poll_once()
        assert redfish.poller.last_error == "no answer in time (read timed out)"
    finally:
        bmc.release.set()


def test_readings_are_delivered_once_however_often_they_are_sampled(bmc: FakeBmc, tmp_path: Path) -> None:
    """The sampler hands each BMC reading to delivery once (its ts is the read's), while
    /metrics shows it at every sample until the next read."""
    delivered: list[tuple[str, float]] = []
    password = tmp_path / "pw"
    password.write_text("s3cret-pw\n")
    redfish = RedfishSource("n1", RedfishSettings(url=bmc.url, user="monitor", password_file=password,
                                                  interval=3600))
    sampler = Sampler([redfish], on_readings=lambda rs, _: delivered.extend((r.device.id, r.ts) for r in rs))
    assert redfish.poller.poll_once()
    for _ in range(3):
        snap = sampler.sample()
        assert {r.device.id for r in snap.readings} == {"n1:bmc", "n1:bmc:inlet"}
    assert [d for d, _ in delivered] == ["n1:bmc", "n1:bmc:inlet"] and snap.readings_total == 2
    assert redfish.poller.poll_once()
    sampler.sample()
    assert len(delivered) == 4 and delivered[2][1] > delivered[0][1]
