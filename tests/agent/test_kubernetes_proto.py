"""The kubelet PodResources stubs: the .proto has the wire names and field numbers the kubelet
uses (tests/test_protos.py checks that the committed modules are what the generator makes)."""

from __future__ import annotations

from wattledger.agent.sources.podresources import api_pb2


def _fields(message: str) -> dict[str, int]:
    return {f.name: f.number for f in api_pb2.DESCRIPTOR.message_types_by_name[message].fields}


def test_service_and_field_numbers_are_the_kubelets() -> None:
    service = api_pb2.DESCRIPTOR.services_by_name["PodResourcesLister"]
    assert service.full_name == "v1.PodResourcesLister"
    assert [m.name for m in service.methods] == ["List", "GetAllocatableResources", "Get"]
    assert _fields("ListPodResourcesResponse") == {"pod_resources": 1}
    assert _fields("PodResources") == {"name": 1, "namespace": 2, "containers": 3}
    assert _fields("ContainerResources") == {"name": 1, "devices": 2, "cpu_ids": 3, "memory": 4,
                                             "dynamic_resources": 5}
    assert _fields("ContainerDevices") == {"resource_name": 1, "device_ids": 2, "topology": 3}
    assert _fields("DynamicResource") == {"claim_name": 2, "claim_namespace": 3, "claim_resources": 4}


def test_an_answer_encoded_by_hand_decodes() -> None:
    # ListPodResourcesResponse{pod_resources: [{name: "p", namespace: "n", containers: [{name: "c",
    # devices: [{resource_name: "nvidia.com/gpu", device_ids: ["GPU-1"]}]}]}]}, tag by tag
    device = b"\x0a\x0envidia.com/gpu" + b"\x12\x05GPU-1"
    container = b"\x0a\x01c" + b"\x12" + bytes([len(device)]) + device
    pod = b"\x0a\x01p" + b"\x12\x01n" + b"\x1a" + bytes([len(container)]) + container
    answer = api_pb2.ListPodResourcesResponse.FromString(b"\x0a" + bytes([len(pod)]) + pod)
    (got,) = answer.pod_resources
    assert (got.name, got.namespace, got.containers[0].name) == ("p", "n", "c")
    assert list(got.containers[0].devices[0].device_ids) == ["GPU-1"]
