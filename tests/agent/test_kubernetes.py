"""The kubernetes allocation source against a fake kubelet: a real gRPC server on a unix socket
serving the PodResources proto (whole GPUs, MIG, time-slicing, pods going away, the kubelet
restarting and down, a kubelet that hangs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.fake_kubelet import FakeKubelet, pod
from wattledger.agent.sources.base import Holding, SourceError, SourceUnavailable
from wattledger.agent.sources.kubernetes import KubernetesSettings, KubernetesSource, physical_id

A = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
B = "GPU-bbbbbbbb-0000-0000-0000-000000000000"
MIG1 = "MIG-11111111-0000-0000-0000-000000000000"
MIG2 = "MIG-22222222-0000-0000-0000-000000000000"


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    k = FakeKubelet(tmp_path / "kubelet.sock").start()
    yield k
    k.stop()


def source_for(k: FakeKubelet, interval: float = 0.05) -> KubernetesSource:
    return KubernetesSource(KubernetesSettings(socket=k.socket, interval=interval, timeout=1.0))


def current(src: KubernetesSource) -> list[Holding]:
    return sorted(src.holdings(time.time(), []), key=lambda h: h.key)


def polled(src: KubernetesSource, k: FakeKubelet) -> list[Holding]:
    """The holdings after a List that started once the test changed the kubelet's pods."""
    calls = k.calls
    wait_for(lambda: k.calls >= calls + 2)
    return current(src)


@pytest.fixture
def opened(kubelet: FakeKubelet) -> Iterator[KubernetesSource]:
    src = source_for(kubelet)
    src.open()
    wait_for(lambda: src.poller.latest() is not None)
    yield src
    src.close()


def test_whole_gpus_and_mig_instances_of_each_container(kubelet: FakeKubelet) -> None:
    kubelet.pods = [
        pod("nlp", "llama-ft-7", {"trainer": [("nvidia.com/gpu", [A, B])], "sidecar": []}),
        pod("vision", "eval-3", {"main": [("nvidia.com/mig-1g.10gb", [MIG1]),
                                          ("nvidia.com/mig-3g.40gb", [MIG2])]}),
        pod("web", "frontend", {"nginx": [("example.com/foo", ["x"])]}),  # not an accelerator
    ]
    src = source_for(kubelet)
    src.open()
    try:
        wait_for(lambda: src.poller.latest() is not None)
        trainer, main = current(src)
    finally:
        src.close()
    assert trainer.key == "k8s:nlp/llama-ft-7/trainer"
    assert trainer.device_ids == (A, B) and trainer.weight == 1.0 and trainer.since is None
    assert dict(trainer.owner) == {"namespace": "nlp", "pod": "llama-ft-7", "container": "trainer"}
    assert main.key == "k8s:vision/eval-3/main" and main.device_ids == (MIG1, MIG2)


def test_time_sliced_replicas_split_the_board_by_replica(opened: KubernetesSource,
                                                          kubelet: FakeKubelet) -> None:
    kubelet.pods = [
        pod("a", "p1", {"c": [("nvidia.com/gpu", [f"{A}::0"])]}),
        pod("b", "p2", {"c": [("nvidia.com/gpu", [f"{A}::1"])]}),
        pod("c", "p3", {"c": [("nvidia.com/gpu", [f"{A}::2", f"{A}::3", f"{B}::0"])]}),
    ]
    p1, p2, p3_whole, p3_two = polled(opened, kubelet)
    assert (p1.device_ids, p1.weight) == ((A,), 1.0)
    assert (p2.device_ids, p2.weight) == ((A,), 1.0)
    # p3 holds two of A's replicas (weight 2 on A) and one of B's (weight 1 on B)
    assert (p3_whole.key, p3_whole.device_ids, p3_whole.weight) == ("k8s:c/p3/c", (B,), 1.0)
    assert (p3_two.key, p3_two.device_ids, p3_two.weight) == ("k8s:c/p3/c*2", (A,), 2.0)
    weights_on_a = [h.weight for h in (p1, p2, p3_two)]
    assert [w / sum(weights_on_a) for w in weights_on_a] == [0.25, 0.25, 0.5]


def test_replica_ids_of_each_plugin() -> None:
    assert physical_id(f"{A}::7") == A
    assert physical_id(f"{MIG1}::0") == MIG1
    assert physical_id("0000:19:00.0-slice-2") == "0000:19:00.0"  # ROCm/k8s-device-plugin
    assert physical_id(A) == A and physical_id("0000:19:00.0") == "0000:19:00.0"


def test_a_pod_that_goes_away_holds_nothing_more(opened: KubernetesSource, kubelet: FakeKubelet) -> None:
    kubelet.pods = [pod("nlp", "a", {"c": [("nvidia.com/gpu", [A])]}),
                    pod("nlp", "b", {"c": [("nvidia.com/gpu", [B])]})]
    assert [h.key for h in polled(opened, kubelet)] == ["k8s:nlp/a/c", "k8s:nlp/b/c"]
    kubelet.pods = kubelet.pods[1:]
    assert [h.key for h in polled(opened, kubelet)] == ["k8s:nlp/b/c"]


def test_a_restarted_kubelet_is_dialled_again(opened: KubernetesSource, kubelet: FakeKubelet) -> None:
    kubelet.pods = [pod("nlp", "a", {"c": [("nvidia.com/gpu", [A])]})]
    assert [h.key for h in polled(opened, kubelet)] == ["k8s:nlp/a/c"]
    kubelet.stop()  # the socket is gone, then re-created by the new kubelet
    wait_for(lambda: opened.poller.failures > 0)
    kubelet.pods = [pod("nlp", "a2", {"c": [("nvidia.com/gpu", [A])]})]
    kubelet.start()
    wait_for(lambda: opened.poller.failures == 0, timeout=60)
    assert [h.key for h in current(opened)] == ["k8s:nlp/a2/c"]


def test_kubelet_down_is_an_error_once_its_last_answer_is_stale(opened: KubernetesSource,
                                                               kubelet: FakeKubelet) -> None:
    kubelet.pods = [pod("nlp", "a", {"c": [("nvidia.com/gpu", [A])]})]
    polled(opened, kubelet)
    kubelet.stop()
    wait_for(lambda: opened.poller.latest() is None)
    with pytest.raises(SourceError, match=r"kubelet .*List: UNAVAILABLE"):
        opened.holdings(time.time(), [])


def test_a_hanging_kubelet_never_delays_a_sample(opened: KubernetesSource, kubelet: FakeKubelet) -> None:
    kubelet.pods = [pod("nlp", "a", {"c": [("nvidia.com/gpu", [A])]})]
    polled(opened, kubelet)
    kubelet.hold()  # List now blocks until its deadline
    calls = kubelet.calls
    wait_for(lambda: kubelet.calls > calls)  # a List is in progress, blocked
    assert [h.key for h in current(opened)] == ["k8s:nlp/a/c"]  # answered from the cache
    kubelet.release()


def test_no_socket_means_the_source_is_off(tmp_path: Path) -> None:
    src = KubernetesSource(KubernetesSettings(socket=tmp_path / "missing.sock"))
    with pytest.raises(SourceUnavailable, match="pod-resources socket"):
        src.open()
