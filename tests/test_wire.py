"""wattledger.wire: the contract's 400 and 422 rules, each with the field it names and a reason
a person reads (no regex, no pydantic wording; entries counted 1-based in the reason)."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest

from wattledger.wire import MAX_FUTURE_SECONDS, BatchError, validate

NOW = 1_764_260_000.0


def good() -> dict[str, Any]:
    return {
        "node": "gpu-node-01", "stream": "3f9c2b1e-8d5a", "seq": 1042,
        "labels": {"site": "default", "cluster": "train-a"},
        "devices": [{"id": "GPU-8c2e", "kind": "gpu", "index": 0, "model": "NVIDIA H100 80GB HBM3",
                     "power_limit_w": 700.0, "slowdown_c": 87.0, "shutdown_c": 92.0},
                    {"id": "cpu-0", "kind": "cpu", "index": 0}],  # a GPU 0 and a CPU package 0
        "readings": {"device": [0, 0, 1], "ts": [NOW - 2, NOW - 1, NOW - 1],
                     "power_w": [512.3, 515.0, None], "energy_j": [123456.7, 123971.7, 10.0],
                     "temp_c": [61.0, 61.5, None], "util": [0.93, 0.95, None]},
    }


def refusal(body: dict[str, Any] | bytes | str) -> BatchError:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    with pytest.raises(BatchError) as caught:
        validate(raw, NOW)
    return caught.value


def test_a_good_batch_becomes_columns() -> None:
    valid = validate(json.dumps(good()), NOW)
    cols = valid.columns
    assert len(cols) == 3
    assert cols.device.tolist() == [0, 0, 1]  # positions in devices
    assert cols.power_w[:2].tolist() == [512.3, 515.0] and math.isnan(cols.power_w[2])
    assert np.isnan(cols.mem_temp_c).all()  # an absent column is all NaN (null), never 0
    assert valid.batch.devices[1].power_limit_w is None


def test_an_empty_batch_is_valid() -> None:
    body = good()
    body["readings"] = {"device": [], "ts": [], "power_w": []}
    assert len(validate(json.dumps(body), NOW).columns) == 0


@pytest.mark.parametrize("raw", [b"{", b"", b"\x1f\x8b\x08\x00", b"[1, 2", b'{"node": "a",}'])
def test_broken_json_is_400(raw: bytes) -> None:
    error = refusal(raw)
    assert error.status == 400
    assert error.to_json()["error"] == "malformed JSON"


def mutate(path: str, value: Any) -> dict[str, Any]:
    """good() with the value at a dotted path replaced (or removed, for value ...)."""
    body = copy.deepcopy(good())
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


@pytest.mark.parametrize(("body", "field", "reason"), [
    ([1, 2], "body", "must be a JSON object"),
    (mutate("node", ...), "node", "is required"),
    (mutate("node", "bad node!"), "node",
     "must be a node name: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128"),
    (mutate("stream", ""), "stream", "must be a stream id: letters, digits, '.', '_', ':' and '-'"),
    (mutate("seq", 0), "seq", "must be at least 1"),
    (mutate("seq", "x"), "seq", "must be an integer"),
    (mutate("labels", {"bad-label": "x"}), "labels.bad-label",
     "the name 'bad-label' is not a label name: letters, digits and '_', not starting with a digit"),
    (mutate("labels", {f"l{i}": "x" for i in range(33)}), "labels", "must have at most 32 entries"),
    (mutate("labels.site", "x" * 257), "labels.site", "must be at most 256 characters"),
    (mutate("devices", []), "devices", "must have at least 1 entry"),
    (mutate("devices", {}), "devices", "must be a JSON array"),
    (mutate("readings", []), "readings", "must be a JSON object"),
    (mutate("devices.0.kind", "tpu"), "devices.0.kind",
     "the 1st device: must be one of 'gpu', 'cpu', 'host', 'node', 'meter', 'sensor' or 'partition'"),
    (mutate("devices.0.power_limit_w", 0), "devices.0.power_limit_w",
     "the 1st device: must be greater than 0"),
    (mutate("devices.1.index", -1), "devices.1.index", "the 2nd device: must be at least 0"),
    (mutate("devices.0.id", ""), "devices.0.id", "the 1st device: must not be empty"),
    (mutate("readings.ts", ...), "readings.ts", "is required"),
    (mutate("readings.device.0", -1), "readings.device.0", "the 1st reading: must be at least 0"),
    (mutate("readings.power_w.2", "300"), "readings.power_w.2", "the 3rd reading: must be a number"),
    (mutate("readings.ts.1", None), "readings.ts.1", "the 2nd reading: must be a number"),
])
def test_wrong_shapes_are_422_naming_the_field(body: Any, field: str, reason: str) -> None:
    error = refusal(body)
    assert error.status == 422
    assert error.field == field
    assert reason in error.reason


@pytest.mark.parametrize(("path", "value", "field", "reason"), [
    ("readings.ts", [NOW - 2, NOW - 1], "readings.device", "has 3 entries, but readings.ts has 2"),
    ("readings.power_w", [1.0, 2.0], "readings.power_w", "has 2 entries, but readings.ts has 3"),
    ("readings.temp_c", [1.0], "readings.temp_c", "has 1 entries, but readings.ts has 3"),
    ("readings.device", [0, 0, 2], "readings.device.2",
     "the 3rd reading names device position 2, but devices has 2 entries (positions 0 to 1)"),
    ("readings.power_w", [1.0, -0.5, None], "readings.power_w.1",
     "the 2nd reading: power_w must not be negative (-0.5)"),
    ("readings.energy_j", [1.0, -3.0, None], "readings.energy_j.1", "the 2nd reading: energy_j must not be"),
    ("readings.util", [0.5, 1.01, None], "readings.util.1", "the 2nd reading: util 1.01 is outside 0..1"),
    ("readings.util", [-0.1, 0.5, None], "readings.util.0", "the 1st reading: util -0.1 is outside 0..1"),
    ("readings.ts", [NOW - 2, NOW + MAX_FUTURE_SECONDS + 1, NOW], "readings.ts.1",
     "the 2nd reading: 1764260301.0 is more than 300 s ahead of the collector's clock (1764260000)"),
    ("readings.ts", [-5.0, -4.0, 1.0], "readings.ts.0", "the 1st reading: ts must not be negative"),
    ("readings.ts", [NOW - 1, NOW - 2, NOW], "readings.ts.1",
     "the 2nd reading, of device 'GPU-8c2e' (position 0), is not later than that device's reading before it"),
    ("readings.ts", [NOW - 1, NOW - 1, NOW], "readings.ts.1", "must be in time order"),
    ("devices.1.id", "GPU-8c2e", "devices.1.id", "the 2nd device has the id 'GPU-8c2e' of the 1st"),
])
def test_cross_field_rules_are_422_naming_the_entry(path: str, value: Any, field: str, reason: str) -> None:
    error = refusal(mutate(path, value))
    assert (error.status, error.field) == (422, field)
    assert reason in error.reason
    assert error.to_json() == {"error": "invalid batch", "detail": {"field": field, "reason": error.reason}}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_422(literal: str) -> None:
    raw = json.dumps(good()).replace("512.3", literal)
    error = refusal(raw)
    assert error.status == 422
    assert error.field == "readings.power_w.0"


def test_a_device_may_interleave_with_others() -> None:
    body = mutate("readings.ts", [NOW - 2, NOW - 1, NOW - 3])  # device 1 earlier than device 0: fine
    assert len(validate(json.dumps(body), NOW).columns) == 3
