"""AMD GPUs in Kubernetes: the ROCm device plugin hands ``amd.com/gpu`` out by PCI address
(``0000:c6:00.0``, time-sliced ``…-slice-<n>``), the amdsmi source names each GPU by its AMD
SMI UUID. The amdsmi source gives each GPU's PCI address (``amdsmi_get_gpu_device_bdf``) as an
alias, and the sampler names the kubelet's holdings by the GPUs' ids: the allocations, and the
batches' allocations, are on the GPUs the readings are of (fake amdsmi + fake kubelet, a real
gRPC server on a unix socket)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agent.fake_amdsmi import make_amdsmi, mi250x, mi300x
from agent.fake_kubelet import FakeKubelet, pod
from agent.test_kubernetes import wait_for
from wattledger.agent.allocations import Allocation, for_batch
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sampler import Sampler
from wattledger.agent.sources.amdsmi import AmdSmiSource
from wattledger.agent.sources.kubernetes import KubernetesSettings, KubernetesSource

GPUS = [mi300x(0), mi300x(1), *mi250x(0)]  # two MI300X, then an MI250X module's two dies


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    k = FakeKubelet(tmp_path / "kubelet.sock").start()
    yield k
    k.stop()


class Recorder:
    def __init__(self) -> None:
        self.readings: list[DeviceReading] = []
        self.allocations: list[Allocation] = []

    def __call__(self, readings: Sequence[DeviceReading], allocations: Sequence[Allocation]) -> None:
        self.readings += readings
        self.allocations += allocations


def test_pci_addresses_are_aliases_of_the_gpus() -> None:
    src = AmdSmiSource("n1", amdsmi=make_amdsmi(GPUS))
    src.open()
    try:
        sample = src.sample(1000.0)
    finally:
        src.close()
    ids = [r.device.id for r in sample.readings]
    assert ids == [g.uuid for g in GPUS]
    assert sample.aliases == {g.bdf: g.uuid for g in GPUS}  # each die is a PCI device of its own


def test_kubelet_holdings_by_pci_address_are_on_the_amd_gpus(kubelet: FakeKubelet) -> None:
    a, b, die0, die1 = GPUS
    kubelet.pods = [
        pod("nlp", "train-1", {"trainer": [("amd.com/gpu", [a.bdf])]}),
        # b time-sliced between two pods; the MI250X's second die held alone
        pod("vision", "eval-2", {"main": [("amd.com/gpu", [f"{b.bdf}-slice-0", die1.bdf])]}),
        pod("vision", "eval-3", {"main": [("amd.com/gpu", [f"{b.bdf}-slice-1"])]}),
    ]
    kube = KubernetesSource(KubernetesSettings(socket=kubelet.socket, interval=0.05, timeout=1.0))
    recorder = Recorder()
    sampler = Sampler([AmdSmiSource("n1", amdsmi=make_amdsmi(GPUS)), kube], on_readings=recorder)
    sampler.open()
    try:
        wait_for(lambda: kube.poller.latest() is not None)
        sampler.sample(1000.0)
        sampler.sample(1001.0)
    finally:
        sampler.close()
    held = {(x.owner["pod"], tuple(sorted(x.device_ids))) for x in recorder.allocations}
    assert held == {("train-1", (a.uuid,)), ("eval-2", tuple(sorted((b.uuid, die1.uuid)))),
                    ("eval-3", (b.uuid,))}
    assert die0.uuid not in {d for x in recorder.allocations for d in x.device_ids}  # unheld: idle
    # a batch of these readings carries each allocation, its devices as positions of the GPUs
    position = {g.uuid: i for i, g in enumerate(GPUS)}
    spans = {g.uuid: (1000.0, 1001.0) for g in GPUS}
    carried = for_batch(recorder.allocations, spans, position)
    assert sorted((x["owner"]["pod"], tuple(x["devices"])) for x in carried) == [
        ("eval-2", (1, 3)), ("eval-3", (1,)), ("train-1", (0,))]
    assert {r.device.id for r in recorder.readings} == set(position)


def test_an_id_without_an_alias_is_left_as_the_plugin_gave_it(kubelet: FakeKubelet) -> None:
    """A PCI address no hardware source knows (the amdsmi source not running) stays as it is:
    its allocation holds no device the batches carry, and the readings flow unattributed."""
    kubelet.pods = [pod("nlp", "train-1", {"trainer": [("amd.com/gpu", ["0000:c1:00.0"])]})]
    kube = KubernetesSource(KubernetesSettings(socket=kubelet.socket, interval=0.05, timeout=1.0))
    recorder = Recorder()
    sampler = Sampler([kube], on_readings=recorder)
    sampler.open()
    try:
        wait_for(lambda: kube.poller.latest() is not None)
        sampler.sample(1000.0)
    finally:
        sampler.close()
    assert [x.device_ids for x in recorder.allocations] == [("0000:c1:00.0",)]
