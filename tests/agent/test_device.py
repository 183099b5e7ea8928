"""``contract.Device``, the agent's device, against ``wire.DeviceInfo``, the collector's: the
same wire dict, the same devices refused; and the contract's node and label checks against
the wire schema's pydantic types."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from wattledger.contract import Device, is_label, is_node_name
from wattledger.wire import DeviceInfo, LabelName, LabelValue, NodeName

DEVICES: list[dict[str, Any]] = [
    {"id": "GPU-0d6a3c2e-1", "kind": "gpu", "index": 0},  # only the required fields
    {"id": "GPU-0d6a3c2e-2", "kind": "gpu", "index": 7, "model": "NVIDIA H200", "power_limit_w": 700.0,
     "slowdown_c": 87.0, "shutdown_c": 92.0},
    {"id": "n1:rapl:package-0", "kind": "cpu", "index": 8, "model": "RAPL package-0"},
    {"id": "n1:rapl:psys", "kind": "host", "index": 9, "shutdown_c": 105.5},
    {"id": "GPU-ints", "kind": "gpu", "index": 1, "power_limit_w": 350, "slowdown_c": 0, "shutdown_c": -5},
    {"id": "x" * 128, "kind": "gpu", "index": 0, "model": "m" * 128, "power_limit_w": 1e-3},
]

BAD_DEVICES: list[dict[str, Any]] = [
    {"id": "", "kind": "gpu", "index": 0},
    {"id": "x" * 129, "kind": "gpu", "index": 0},
    {"id": "g", "kind": "tpu", "index": 0},
    {"id": "g", "kind": "gpu", "index": -1},
    {"id": "g", "kind": "gpu", "index": 0, "model": "m" * 129},
    {"id": "g", "kind": "gpu", "index": 0, "power_limit_w": 0.0},
    {"id": "g", "kind": "gpu", "index": 0, "power_limit_w": -700.0},
    {"id": "g", "kind": "gpu", "index": 0, "power_limit_w": float("nan")},
    {"id": "g", "kind": "gpu", "index": 0, "slowdown_c": float("inf")},
    {"id": "g", "kind": "gpu", "index": 0, "shutdown_c": "hot"},
]


@pytest.mark.parametrize("fields", DEVICES)
def test_wire_dict_is_what_device_info_dumps(fields: dict[str, Any]) -> None:
    ours = Device(**fields).wire_dict()
    theirs = DeviceInfo(**fields).model_dump(exclude_none=True)
    assert ours == theirs
    assert list(ours) == list(theirs)  # same order of keys ...
    assert orjson.dumps(ours) == orjson.dumps(theirs)  # ... and the same JSON, 350 as 350.0


@pytest.mark.parametrize("fields", BAD_DEVICES)
def test_a_device_the_wire_refuses_is_refused_at_construction(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DeviceInfo(**fields)
    with pytest.raises(ValueError, match="device"):
        Device(**fields)


def test_device_is_hashable_and_replaceable() -> None:
    import dataclasses

    a = Device(id="g", kind="gpu", index=0, power_limit_w=700.0)
    b = dataclasses.replace(a, power_limit_w=None)
    assert b.wire_dict() == {"id": "g", "kind": "gpu", "index": 0}
    assert len({a, b, Device(id="g", kind="gpu", index=0, power_limit_w=700)}) == 2


def _accepts(adapter: TypeAdapter[str], value: str) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


NODE, LABEL_NAME, LABEL_VALUE = TypeAdapter(NodeName), TypeAdapter(LabelName), TypeAdapter(LabelValue)
# mostly near-valid names, so both outcomes are explored
NAMEISH = st.one_of(st.from_regex(r"[A-Za-z0-9_.:\- \n]{0,140}", fullmatch=True), st.text(max_size=140))


@pytest.mark.parametrize("name", ["n1", "gpu-node.rack_2", "a" * 128, "a" * 129, "", "-n", "n 1",
                                  "n1\n", "\nn1", "nœud", "n/1"])
def test_node_names_as_the_wire_schema(name: str) -> None:
    assert is_node_name(name) == _accepts(NODE, name)


@given(NAMEISH)
def test_node_names_as_the_wire_schema_fuzzed(name: str) -> None:
    assert is_node_name(name) == _accepts(NODE, name)


@given(NAMEISH, st.text(max_size=300))
def test_labels_as_the_wire_schema_fuzzed(name: str, value: str) -> None:
    assert is_label(name, value) == (_accepts(LABEL_NAME, name) and _accepts(LABEL_VALUE, value))


@pytest.mark.parametrize(("name", "value"), [("site", "s1"), ("_x", ""), ("a" * 64, "v"), ("a" * 65, "v"),
                                             ("9bad", "v"), ("site\n", "v"), ("site", "v" * 256),
                                             ("site", "v" * 257)])
def test_labels_as_the_wire_schema(name: str, value: str) -> None:
    assert is_label(name, value) == (_accepts(LABEL_NAME, name) and _accepts(LABEL_VALUE, value))
