"""A kubelet's PodResources service for the tests: a real gRPC server on a unix socket.

It serves ``v1.PodResourcesLister`` (List, GetAllocatableResources, Get) from the same
.proto as the agent's client, answering from ``pods`` as a kubelet answers from its device
manager. ``stop()`` removes the socket as a kubelet going down does; ``start()`` again is a
restarted kubelet (a new server on a re-created socket). ``hold()`` makes List block until
``release()``, as a kubelet stuck on its own lock does; ``calls`` counts List calls.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from wattledger.agent.sources.podresources import api_pb2, api_pb2_grpc

#: container name -> [(resource name, [device ids])]
Containers = Mapping[str, Sequence[tuple[str, Sequence[str]]]]


def pod(namespace: str, name: str, containers: Containers) -> api_pb2.PodResources:
    return api_pb2.PodResources(
        name=name, namespace=namespace,
        containers=[api_pb2.ContainerResources(
            name=cname,
            devices=[api_pb2.ContainerDevices(resource_name=res, device_ids=list(ids)) for res, ids in devs],
            cpu_ids=[0, 1],
        ) for cname, devs in containers.items()],
    )


class FakeKubelet(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.pods: list[api_pb2.PodResources] = []
        self.allocatable: list[str] = []
        self.calls = 0
        self._open = threading.Event()
        self._open.set()
        self._server: grpc.Server | None = None

    # ------------------------------------------------------------------ the service

    def List(self, request: api_pb2.ListPodResourcesRequest,
             context: Any) -> api_pb2.ListPodResourcesResponse:
        self.calls += 1
        self._open.wait(30)
        return api_pb2.ListPodResourcesResponse(pod_resources=list(self.pods))

    def GetAllocatableResources(self, request: api_pb2.AllocatableResourcesRequest,
                                context: Any) -> api_pb2.AllocatableResourcesResponse:
        return api_pb2.AllocatableResourcesResponse(
            devices=[api_pb2.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=self.allocatable)])

    def Get(self, request: api_pb2.GetPodResourcesRequest, context: Any) -> api_pb2.GetPodResourcesResponse:
        for p in self.pods:
            if (p.namespace, p.name) == (request.pod_namespace, request.pod_name):
                return api_pb2.GetPodResourcesResponse(pod_resources=p)
        context.abort(grpc.StatusCode.NOT_FOUND, f"pod {request.pod_namespace}/{request.pod_name} not found")
        raise AssertionError("abort raises")

    # ------------------------------------------------------------------ the process around it

    def start(self) -> FakeKubelet:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(self, server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        self._open.set()
        if self._server is not None:
            self._server.stop(grace=None).wait(10)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def restart(self) -> None:
        self.stop()
        self.start()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()
