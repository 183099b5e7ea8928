"""The kubelet PodResources stubs: committed files are what the generator makes from the
.proto, and the .proto has the wire names and field numbers the kubelet uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wattledger.agent.sources.podresources import api_pb2

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path("wattledger/agent/sources/podresources")


def test_regenerating_the_stubs_gives_the_committed_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts/generate_podresources.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    made = sorted(p.name for p in (tmp_path / PACKAGE).glob("api_pb2*"))
    assert made == ["api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi"]
    for name in made:
        assert (tmp_path / PACKAGE / name).read_bytes() == (ROOT / PACKAGE / name).read_bytes(), name


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
