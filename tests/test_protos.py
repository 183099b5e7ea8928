"""The project's generated protobuf modules: each committed file is what scripts/generate_protos.py
makes from its .proto (the kubelet's PodResources API, Prometheus' remote-write messages), and
the remote-write .proto has Prometheus' message names and field numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wattledger.collector.ingest.prompb import remote_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from generate_protos import PROTOS  # noqa: E402 - the script's own list


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts/generate_protos.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    for proto, service in PROTOS.items():
        made = sorted(p.name for p in (tmp_path / proto.parent).glob(f"{proto.stem}_pb2*"))
        want = [f"{proto.stem}_pb2.py", f"{proto.stem}_pb2.pyi"]
        want += [f"{proto.stem}_pb2_grpc.py", f"{proto.stem}_pb2_grpc.pyi"] if service else []
        assert made == sorted(want), proto
        for name in made:
            got = (tmp_path / proto.parent / name).read_bytes()
            assert got == (ROOT / proto.parent / name).read_bytes(), f"{proto.parent / name} is stale"


def _fields(message: str) -> dict[str, tuple[int, int]]:
    """name -> (field number, protobuf type) of a remote-write message."""
    return {f.name: (f.number, f.type) for f in remote_pb2.DESCRIPTOR.message_types_by_name[message].fields}


@pytest.mark.parametrize(("message", "fields"), [
    ("WriteRequest", {"timeseries": (1, 11), "metadata": (3, 11)}),
    ("TimeSeries", {"labels": (1, 11), "samples": (2, 11), "exemplars": (3, 11)}),
    ("Label", {"name": (1, 9), "value": (2, 9)}),
    ("Sample", {"value": (1, 1), "timestamp": (2, 3)}),  # double, int64 (ms)
    ("Exemplar", {"labels": (1, 11), "value": (2, 1), "timestamp": (3, 3)}),
    ("MetricMetadata", {"type": (1, 14), "metric_family_name": (2, 9), "help": (4, 9), "unit": (5, 9)}),
])
def test_remote_write_messages_have_prometheus_field_numbers(message: str, fields: dict[str, tuple[int, int]]
                                                             ) -> None:
    assert remote_pb2.DESCRIPTOR.package == "prometheus"
    assert _fields(message) == fields


def test_a_write_request_encoded_by_hand_decodes() -> None:
    # WriteRequest{timeseries: [{labels: [{__name__: up}], samples: [{value: 1.0, timestamp: 1000}]}]},
    # tag by tag as the wire has it
    label = b"\x0a\x08__name__" + b"\x12\x02up"
    sample = b"\x09" + bytes.fromhex("000000000000f03f") + b"\x10\xe8\x07"  # 1.0 (LE double), 1000
    series = b"\x0a" + bytes([len(label)]) + label + b"\x12" + bytes([len(sample)]) + sample
    request = remote_pb2.WriteRequest.FromString(b"\x0a" + bytes([len(series)]) + series)
    (ts,) = request.timeseries
    assert [(lb.name, lb.value) for lb in ts.labels] == [("__name__", "up")]
    assert [(s.value, s.timestamp) for s in ts.samples] == [(1.0, 1000)]
