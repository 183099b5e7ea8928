"""wattledger.wire: the contract's 400 and 422 rules, each with the field it names."""

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
                    {"id": "cpu-0", "kind": "cpu", "index": 3}],
        "readings": {"device": [0, 0, 3], "ts": [NOW - 2, NOW - 1, NOW - 1],
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
    assert cols.device.tolist() == [0, 0, 3]
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
    (mutate("node", ...), "node", "Field required"),
    (mutate("node", "bad node!"), "node", "String should match pattern"),
    (mutate("stream", ""), "stream", "String should match pattern"),
    (mutate("seq", 0), "seq", "greater than or equal to 1"),
    (mutate("seq", "x"), "seq", "valid integer"),
    (mutate("labels", {"bad-label": "x"}), "labels.bad-label.[key]", "String should match pattern"),
    (mutate("labels", {f"l{i}": "x" for i in range(33)}), "labels", "at most 32"),
    (mutate("devices", []), "devices", "at least 1 item"),
    (mutate("devices.0.kind", "tpu"), "devices.0.kind", "'gpu', 'cpu' or 'host'"),
    (mutate("devices.0.power_limit_w", 0), "devices.0.power_limit_w", "greater than 0"),
    (mutate("devices.0.index", -1), "devices.0.index", "greater than or equal to 0"),
    (mutate("readings.ts", ...), "readings.ts", "Field required"),
    (mutate("readings.device.0", -1), "readings.device.0", "greater than or equal to 0"),
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
    ("readings.device", [0, 0, 7], "readings.device.2", "device index 7 is not in devices"),
    ("readings.power_w", [1.0, -0.5, None], "readings.power_w.1", "must not be negative"),
    ("readings.energy_j", [1.0, -3.0, None], "readings.energy_j.1", "must not be negative"),
    ("readings.util", [0.5, 1.01, None], "readings.util.1", "outside 0..1"),
    ("readings.util", [-0.1, 0.5, None], "readings.util.0", "outside 0..1"),
    ("readings.ts", [NOW - 2, NOW + MAX_FUTURE_SECONDS + 1, NOW], "readings.ts.1",
     "ahead of the collector's clock"),
    ("readings.ts", [-5.0, -4.0, 1.0], "readings.ts.0", "must not be negative"),
    ("readings.ts", [NOW - 1, NOW - 2, NOW], "readings.ts.1", "readings of device 0 are not in time order"),
    ("readings.ts", [NOW - 1, NOW - 1, NOW], "readings.ts.1", "readings of device 0 are not in time order"),
    ("devices.1.index", 0, "devices", "two devices share one index"),
    ("devices.1.id", "GPU-8c2e", "devices", "two devices share one id"),
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


def test_a_device_index_may_interleave_with_others() -> None:
    body = mutate("readings.ts", [NOW - 2, NOW - 1, NOW - 3])  # device 3 earlier than device 0: fine
    assert len(validate(json.dumps(body), NOW).columns) == 3
