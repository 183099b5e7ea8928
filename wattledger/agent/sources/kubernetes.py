"""Who holds which accelerator on a Kubernetes node: the kubelet's PodResources API.

``v1.PodResourcesLister/List`` over the kubelet's unix socket (default
``/var/lib/kubelet/pod-resources/kubelet.sock``) answers, for every pod on the node, the
device-plugin device ids each container holds. Kept: the resources whose devices the agent
measures, with the device-plugin id formats their plugins document:

- ``nvidia.com/gpu``: ``GPU-<uuid>`` (NVML's UUID, the nvml source's device id); with
  time-slicing each GPU is advertised N times as ``GPU-<uuid>::<replica>``;
- ``nvidia.com/mig-<profile>``: ``MIG-<uuid>`` (the MIG instance's UUID, the nvml source's
  partition device), ``MIG-<uuid>::<replica>`` when time-sliced;
- ``amd.com/gpu``: the PCI address (``0000:19:00.0``), ``<address>-slice-<n>`` when
  time-sliced (ROCm/k8s-device-plugin);
- ``habana.ai/gaudi``: HLML's UUID (HabanaAI/habanalabs-k8s-device-plugin).

Every replica a container holds is a holding of weight 1 on the physical device, so the pods
sharing a time-sliced board split it evenly (two replicas in one container: weight 2). The
kubelet gives no start time and no pod UID: ``since`` stays None (the tracker uses the first
sample that sees the holding).

The socket is polled on the source's own thread every ``interval`` seconds (the call has a
deadline): ``holdings()`` hands over the last answer at once, so a slow kubelet never delays
a sample. A kubelet that is restarting keeps its pods; its last answer is used for up to
three polls, after which the source is down (``source_up`` 0) and its holdings end until it
answers again. Each failed call closes the channel, so the next poll dials the socket anew
(the kubelet re-creates it on restart: mount its folder, not the file).

With ``team_label`` set, each pod's team is the value of that label on the pod, else on its
namespace, read from the Kubernetes API (:mod:`wattledger.agent.sources.kubeapi`); a label
that cannot be read leaves the holding without ``team`` (never the source down).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattledger.agent.sources.base import Holding, SourceError, SourceUnavailable
from wattledger.agent.sources.polling import Poller
from wattledger.contract import LABEL_VALUE_MAX_LENGTH, Device

if TYPE_CHECKING:
    from wattledger.agent.sources.kubeapi import KubeApi
    from wattledger.agent.sources.podresources import api_pb2

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
#: the extended resources whose device ids are accelerators the agent measures
WHOLE_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi")
MIG_PREFIX = "nvidia.com/mig-"
#: a time-sliced replica's id: NVIDIA's ``<id>::<n>``, AMD's ``<id>-slice-<n>``
_REPLICA = re.compile(r"^(?P<id>.+?)(?:::|-slice-)\d+$")


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    socket: Path = DEFAULT_SOCKET
    interval: float = 5.0  # seconds between List calls
    timeout: float = 2.0  # deadline of one List call
    team_label: str | None = None  # pod (else namespace) label whose value is the team


def is_accelerator(resource_name: str) -> bool:
    return resource_name in WHOLE_RESOURCES or resource_name.startswith(MIG_PREFIX)


def physical_id(device_id: str) -> str:
    """The device a (possibly time-sliced) device-plugin id stands for."""
    match = _REPLICA.match(device_id)
    return match.group("id") if match else device_id


def _value(text: str) -> str:
    return text[:LABEL_VALUE_MAX_LENGTH]


def holdings_from(answer: api_pb2.ListPodResourcesResponse,
                  team_of: Callable[[str, str], str | None] | None = None) -> list[Holding]:
    """The holdings in one List answer: per container, the devices it holds once (weight 1)
    and, apart, those it holds several replicas of (weight = how many)."""
    out: list[Holding] = []
    for pod in answer.pod_resources:
        team = team_of(pod.namespace, pod.name) if team_of is not None else None
        for container in pod.containers:
            replicas: dict[str, int] = {}
            for devices in container.devices:
                if not is_accelerator(devices.resource_name):
                    continue
                for device_id in devices.device_ids:
                    board = physical_id(device_id)
                    replicas[board] = replicas.get(board, 0) + 1
            if not replicas:
                continue
            owner = {"namespace": _value(pod.namespace), "pod": _value(pod.name),
                     "container": _value(container.name)}
            if team:
                owner["team"] = _value(team)
            key = f"k8s:{pod.namespace}/{pod.name}/{container.name}"
            by_weight: dict[int, list[str]] = {}
            for board, count in replicas.items():
                by_weight.setdefault(count, []).append(board)
            for weight, boards in sorted(by_weight.items()):
                out.append(Holding(key=key if weight == 1 else f"{key}*{weight}",
                                   device_ids=tuple(sorted(boards)), owner=owner, weight=float(weight)))
    return out


class KubernetesSource:
    """An allocation source: the kubelet's answer, polled on its own thread."""

    name = "kubernetes"

    def __init__(self, settings: KubernetesSettings, kube_api: KubeApi | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._kube_api = kube_api
        self._channel: Any = None
        self._stub: Any = None
        self.poller: Poller[list[Holding]] = Poller(
            f"kubelet {settings.socket}", self._read, settings.interval, clock=clock,
            max_backoff=max(30.0, settings.interval), on_stop=self._close_channel)

    # ------------------------------------------------------------------ AllocationSource

    def open(self) -> None:
        try:
            import grpc  # noqa: F401 - the agent's install has it; say so plainly if not

            from wattledger.agent.sources.podresources import api_pb2_grpc  # noqa: F401
        except ImportError as exc:
            raise SourceUnavailable(f"kubernetes: gRPC (grpcio, protobuf) missing: {exc}") from None
        if not self.settings.socket.exists():
            raise SourceUnavailable(f"kubernetes: no kubelet pod-resources socket at {self.settings.socket} "
                                    "(mount the kubelet's pod-resources folder into the agent)")
        self.poller.start()

    def holdings(self, ts: float, devices: Sequence[Device]) -> list[Holding]:
        latest = self.poller.latest()
        if latest is None:
            raise SourceError(self.poller.describe_failure())
        return latest.value

    def close(self) -> None:
        self.poller.stop(timeout=self.settings.timeout + 1.0)

    # ------------------------------------------------------------------ the poll thread

    def _read(self) -> list[Holding]:
        import grpc

        from wattledger.agent.sources.podresources import api_pb2, api_pb2_grpc

        if self._stub is None:
            self._channel = grpc.insecure_channel(f"unix://{self.settings.socket}")
            self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)
        try:
            answer = self._stub.List(api_pb2.ListPodResourcesRequest(), timeout=self.settings.timeout)
        except grpc.RpcError as exc:
            self._close_channel()  # dial the (re-created) socket afresh next time
            if isinstance(exc, grpc.Call):  # what a failed call raises: it has a code and details
                raise SourceError(f"List: {exc.code().name}: {exc.details()}") from None
            raise SourceError(f"List: {exc}") from None
        return holdings_from(answer, self._team_of if self._kube_api is not None else None)

    def _team_of(self, namespace: str, pod: str) -> str | None:
        assert self._kube_api is not None and self.settings.team_label is not None
        return self._kube_api.team(namespace, pod, self.settings.team_label)

    def _close_channel(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

