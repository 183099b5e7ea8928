"""The wire contract of issue 16: positions, device kinds and roles, partitions, allocations,
numbers that are numbers, integers the store holds, keys given once, and plain messages."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from tests.collector.httpkit import changed
from wattledger.contract import MAX_ALLOCATIONS, MAX_OWNER_KEYS, Device
from wattledger.wire import BatchError, duplicate_key, ordinal, validate

NOW = 1_764_260_000.0
#: what no reason a person reads may contain: a regex, pydantic's phrasing, its "[key]" locs
PYDANTIC_WORDING = re.compile(r"Input should|String should|should match|Field required|\[key\]|"
                              r"\^\[|\]\{|\$'|pattern|Value error|valid dictionary|url")


def batch(**extra: Any) -> dict[str, Any]:
    """A GPU server with RAPL: GPU 0, GPU 1 and CPU package 0 (index 0 twice), plus extras."""
    doc: dict[str, Any] = {
        "node": "gpu-node-01", "stream": "s-1", "seq": 7, "labels": {"site": "default"},
        "devices": [{"id": "GPU-a", "kind": "gpu", "index": 0, "power_limit_w": 700.0},
                    {"id": "GPU-b", "kind": "gpu", "index": 1, "power_limit_w": 700.0},
                    {"id": "n1:rapl:package-0", "kind": "cpu", "index": 0}],
        "readings": {"device": [0, 1, 2, 0, 1, 2], "ts": [NOW - 2] * 3 + [NOW - 1] * 3,
                     "power_w": [300.0, 310.0, 90.0, 301.0, 311.0, 91.0]},
    }
    doc.update(extra)
    return doc


def refusal(doc: dict[str, Any] | str) -> BatchError:
    with pytest.raises(BatchError) as caught:
        validate(doc if isinstance(doc, str) else json.dumps(doc), NOW)
    assert caught.value.status == 422
    assert not PYDANTIC_WORDING.search(caught.value.reason), caught.value.reason
    return caught.value


def at(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    return changed(doc, {path: value})


# ---------------------------------------------------------------------------- positions (item 1)


def test_a_gpu_0_and_a_cpu_package_0_are_two_devices_of_one_batch() -> None:
    valid = validate(json.dumps(batch()), NOW)
    assert valid.columns.device.tolist() == [0, 1, 2, 0, 1, 2]
    assert [d.index for d in valid.batch.devices] == [0, 1, 0]


def test_a_position_past_the_devices_is_refused() -> None:
    error = refusal(at(batch(), "readings.device.4", 3))
    assert error.field == "readings.device.4"
    assert error.reason == ("the 5th reading names device position 3, but devices has 3 entries "
                            "(positions 0 to 2)")


def test_an_older_agents_batch_with_a_hole_in_its_indexes_is_refused_never_misread() -> None:
    # an agent before positions wrote device = index; with GPU 0 missing, GPUs 1 and 2 made
    # positions 0 and 1 but readings naming 1 and 2: the 2 names no device, so nothing of the
    # batch is read as the wrong GPU's (docs/delivery.md, "Upgrading an agent")
    doc = batch()
    doc["devices"] = [{"id": "GPU-b", "kind": "gpu", "index": 1}, {"id": "GPU-c", "kind": "gpu", "index": 2}]
    doc["readings"] = {"device": [1, 2], "ts": [NOW - 1, NOW - 1], "power_w": [300.0, 310.0]}
    assert refusal(doc).field == "readings.device.1"


def test_indexes_with_holes_are_fine_positions_are_what_counts() -> None:
    doc = at(batch(), "devices.1.index", 7)
    assert validate(json.dumps(doc), NOW).batch.devices[1].index == 7


# ---------------------------------------------------------------------------- kinds (contract)


@pytest.mark.parametrize("device", [
    {"id": "bmc", "kind": "node", "index": 0, "power_limit_w": 3000.0},
    {"id": "feed-a", "kind": "meter", "index": 0, "role": "facility"},
    {"id": "crah", "kind": "meter", "index": 1, "role": "cooling"},
    {"id": "pdu-1", "kind": "meter", "index": 2, "role": "it"},
    {"id": "wx-1:outdoor", "kind": "sensor", "index": 0, "role": "outdoor"},
    {"id": "bmc:inlet", "kind": "sensor", "index": 1, "role": "inlet"},
    {"id": "MIG-1", "kind": "partition", "index": 0, "parent": "GPU-a", "share": 3 / 7},
    {"id": "MIG-2", "kind": "partition", "index": 1, "parent": "GPU-a", "share": 1},
])
def test_every_kind_of_the_contract_is_accepted(device: dict[str, Any]) -> None:
    doc = batch()
    doc["devices"].append(device)
    doc["readings"] = {"device": [3], "ts": [NOW - 1], "power_w": [None], "temp_c": [21.0]}
    got = validate(json.dumps(doc), NOW).batch.devices[3]
    assert (got.kind, got.role, got.parent, got.share) == (
        device["kind"], device.get("role"), device.get("parent"), device.get("share"))
    # the agent's Device is the same contract: it builds, and carries the same wire dict
    mine = Device(**device)
    assert mine.wire_dict() == {k: float(v) if k in ("share", "power_limit_w") else v
                                for k, v in device.items()}


@pytest.mark.parametrize(("device", "field", "reason"), [
    ({"kind": "meter"}, "role", "the 4th device: a meter device needs a role: facility, it or cooling"),
    ({"kind": "meter", "role": "inlet"}, "role", "a meter's role is facility, it or cooling, not 'inlet'"),
    ({"kind": "sensor"}, "role", "a sensor device needs a role: outdoor or inlet"),
    ({"kind": "sensor", "role": "it"}, "role", "a sensor's role is outdoor or inlet, not 'it'"),
    ({"kind": "gpu", "role": "it"}, "role", "only meter and sensor devices have a role, not a gpu device"),
    ({"kind": "meter", "role": "boiler"}, "role",
     "the 4th device: must be one of 'facility', 'it', 'cooling'"),
    ({"kind": "partition", "share": 0.5}, "parent", "a partition device needs parent: the id of the board"),
    ({"kind": "partition", "parent": "GPU-a"}, "share", "a partition device needs share: its fraction"),
    ({"kind": "partition", "parent": "GPU-a", "share": 0}, "share", "must be greater than 0"),
    ({"kind": "partition", "parent": "GPU-a", "share": 1.5}, "share", "must be at most 1"),
    ({"kind": "partition", "parent": "", "share": 0.5}, "parent", "must not be empty"),
    ({"kind": "gpu", "parent": "GPU-a"}, "parent", "only partition devices have a parent and a share"),
    ({"kind": "cpu", "share": 0.5}, "share", "only partition devices have a parent and a share"),
])
def test_each_rule_of_a_kind_is_a_plain_422(device: dict[str, Any], field: str, reason: str) -> None:
    doc = batch()
    doc["devices"].append({"id": "extra", "index": 0, **device})
    error = refusal(doc)
    assert error.field == f"devices.3.{field}"
    assert reason in error.reason


@pytest.mark.parametrize("fields", [{"kind": "meter"}, {"kind": "gpu", "role": "it"},
                                    {"kind": "partition", "parent": "GPU-a"},
                                    {"kind": "partition", "parent": "GPU-a", "share": 2.0},
                                    {"kind": "gpu", "index": 65536}])
def test_the_agent_device_refuses_what_the_collector_refuses(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Device(**{"id": "x", "index": 0, **fields})


# ---------------------------------------------------------------------------- allocations


def allocation(**fields: Any) -> dict[str, Any]:
    return {"devices": [0, 1], "from": NOW - 600, "to": None, "weight": 1.0,
            "owner": {"namespace": "nlp", "pod": "llama-ft-7", "team": "nlp"}, **fields}


def test_allocations_are_accepted_with_their_defaults() -> None:
    doc = batch(allocations=[allocation(),
                             {"devices": [2], "from": NOW - 900, "to": NOW - 10, "owner": {"job": "48213"}}])
    got = validate(json.dumps(doc), NOW).batch.allocations
    assert [(a.devices, a.start, a.end, a.weight) for a in got] == [
        ([0, 1], NOW - 600, None, 1.0), ([2], NOW - 900, NOW - 10, 1.0)]
    assert got[1].owner == {"job": "48213"}


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"devices": [0, 3]}, "allocations.0.devices.1",
     "the 1st allocation names device position 3, but devices has 3 entries (positions 0 to 2)"),
    ({"devices": [1, 1]}, "allocations.0.devices.1", "the 1st allocation names device position 1 twice"),
    ({"devices": []}, "allocations.0.devices", "the 1st allocation: must have at least 1 entry"),
    ({"devices": [-1]}, "allocations.0.devices.0", "the 1st allocation, its 1st device: must be at least 0"),
    ({"devices": ["0"]}, "allocations.0.devices.0", "must be an integer"),
    ({"from": None}, "allocations.0.from", "the 1st allocation: must be a number"),
    ({"from": "yesterday"}, "allocations.0.from", "must be a number"),
    ({"from": -1.0}, "allocations.0.from", "must be at least 0"),
    ({"from": NOW + 301}, "allocations.0.from", "is more than 300 s ahead of the collector's clock"),
    ({"to": NOW - 700}, "allocations.0.to", "the 1st allocation ends (1764259300.0) before it starts"),
    ({"to": NOW + 301}, "allocations.0.to", "ahead of the collector's clock"),
    ({"to": True}, "allocations.0.to", "must be a number"),
    ({"weight": 0}, "allocations.0.weight", "must be greater than 0"),
    ({"weight": -2.0}, "allocations.0.weight", "must be greater than 0"),
    ({"weight": "1"}, "allocations.0.weight", "must be a number"),
    ({"owner": {}}, "allocations.0.owner", "must have at least 1 entry"),
    ({"owner": {"Team": "x"}}, "allocations.0.owner.Team",
     "the name 'Team' is not an owner key: lower-case letters, digits and '_', starting with a letter"),
    ({"owner": {"9lives": "x"}}, "allocations.0.owner.9lives", "is not an owner key"),
    ({"owner": {"team": "x" * 257}}, "allocations.0.owner.team", "must be at most 256 characters"),
    ({"owner": {"team": 5}}, "allocations.0.owner.team", "must be a string"),
    ({"owner": {f"k{i}": "v" for i in range(MAX_OWNER_KEYS + 1)}}, "allocations.0.owner",
     f"must have at most {MAX_OWNER_KEYS} entries"),
    ({"owner": ["team"]}, "allocations.0.owner", "must be a JSON object"),
])
def test_every_bad_allocation_is_refused(fields: dict[str, Any], field: str, reason: str) -> None:
    error = refusal(batch(allocations=[allocation(**fields)]))
    assert error.field == field
    assert reason in error.reason


def test_an_allocation_without_owner_or_from_is_refused() -> None:
    for missing in ("owner", "from", "devices"):
        doc = allocation()
        del doc[missing]
        error = refusal(batch(allocations=[doc]))
        assert (error.field, error.reason) == (f"allocations.0.{missing}", "the 1st allocation: is required")


def test_too_many_allocations_are_refused() -> None:
    error = refusal(batch(allocations=[allocation()] * (MAX_ALLOCATIONS + 1)))
    assert (error.field, error.reason) == ("allocations", f"must have at most {MAX_ALLOCATIONS} entries")


# ---------------------------------------------------------------------------- numbers (item 2)


@pytest.mark.parametrize(("path", "value", "reason"), [
    ("seq", True, "must be an integer"),
    ("seq", "7", "must be an integer"),
    ("seq", 7.0, "must be an integer"),
    ("seq", 2**62 + 1, "must be at most 4611686018427387904"),
    ("seq", 2**64, "must be at most"),
    ("devices.0.slowdown_c", True, "the 1st device: must be a number"),
    ("devices.0.power_limit_w", "700", "must be a number"),
    ("devices.0.index", True, "must be an integer"),
    ("devices.0.index", 2**63, "the 1st device: must be at most 65535"),
    ("devices.0.index", 2**40, "must be at most 65535"),
    ("devices.0.index", 65536, "must be at most 65535"),
    ("readings.power_w.0", "300", "the 1st reading: must be a number"),
    ("readings.power_w.1", False, "the 2nd reading: must be a number"),
    ("readings.power_w", ["300"] * 6, "must be a number"),
    ("readings.ts.0", "1764259998", "must be a number"),
    ("readings.device.0", True, "must be an integer"),
    ("readings.device.0", 0.0, "must be an integer"),
    ("readings.device.0", 2**63, "must be at most 4095"),
])
def test_numbers_are_numbers_and_integers_fit(path: str, value: Any, reason: str) -> None:
    error = refusal(at(batch(), path, value))
    assert error.field == (f"{path}.0" if isinstance(value, list) else path)
    assert reason in error.reason


@pytest.mark.parametrize(("column", "values", "reason"), [
    ("clock_events", [2**70] * 6, "must be at most 18446744073709551615"),
    ("clock_events", [2**64] * 6, "must be at most 18446744073709551615"),
    ("clock_events", [-1] * 6, "must be at least 0"),
    ("clock_events", [True] * 6, "must be an integer"),
    ("clock_events", [1.5] * 6, "must be an integer"),
    ("util", [True] * 6, "must be a number"),
    ("energy_j", ["1e6"] * 6, "must be a number"),
])
def test_optional_columns_follow_the_same_rules(column: str, values: list[Any], reason: str) -> None:
    doc = batch()
    doc["readings"][column] = values
    error = refusal(doc)
    assert error.field == f"readings.{column}.0"
    assert error.reason.startswith(f"the 1st reading: {reason}")


def test_integers_are_numbers_where_a_float_is_due_and_bitmasks_are_exact() -> None:
    doc = batch()
    doc["readings"]["power_w"] = [300, 310, 90, 301, 311, 91]
    doc["readings"]["clock_events"] = [2**64 - 1, 0, None, 2**63, 2**53 + 1, 0x44]
    doc["devices"][0]["slowdown_c"] = 87
    valid = validate(json.dumps(doc), NOW)
    assert valid.columns.power_w.tolist() == [300.0, 310.0, 90.0, 301.0, 311.0, 91.0]
    assert valid.columns.clock_events.dtype == np.uint64
    assert valid.columns.clock_events.tolist() == [2**64 - 1, 0, 0, 2**63, 2**53 + 1, 0x44]
    assert valid.columns.has_clock_events.tolist() == [True, True, False, True, True, True]
    assert valid.batch.devices[0].slowdown_c == 87.0


# ---------------------------------------------------------------------------- keys given once


def _twice(doc: dict[str, Any], marker: str, extra: str) -> str:
    text = json.dumps(doc)
    assert marker in text
    return text.replace(marker, marker + extra, 1)


@pytest.mark.parametrize(("marker", "extra", "field", "key"), [
    ('"node": "gpu-node-01"', ', "node": "gpu-node-02"', "body", "node"),
    ('"seq": 7', ', "seq": 8', "body", "seq"),
    ('"site": "default"', ', "site": "other"', "labels", "site"),
    ('"kind": "cpu"', ', "kind": "gpu"', "devices.2", "kind"),
    ('"device": [0, 1, 2, 0, 1, 2]', ', "device": [0, 0, 0, 0, 0, 0]', "readings", "device"),
    ('"team": "nlp"', ', "team": "vision"', "allocations.0.owner", "team"),
    ('"weight": 1.0', ', "weight": 9.0', "allocations.0", "weight"),
])
def test_a_key_given_twice_is_refused_at_every_level(marker: str, extra: str, field: str, key: str) -> None:
    error = refusal(_twice(batch(allocations=[allocation()]), marker, extra))
    assert error.field == field
    assert error.reason == f"duplicate key {key!r}: a key may be given once in an object"


def test_an_escaped_key_is_the_same_key() -> None:
    text = json.dumps(batch()).replace('"seq": 7', '"seq": 7, "s\\u0065q": 8', 1)
    assert refusal(text).reason.startswith("duplicate key 'seq'")


def test_unknown_keys_and_escapes_are_read_pair_by_pair_and_judged_right() -> None:
    # the quick count (colons of the body against the keys pydantic kept) cannot clear these:
    # the exact reading decides, and finds a duplicate only where there is one
    plain = json.dumps(batch())
    unknown = plain.replace('"seq": 7', '"seq": 7, "x:1": {"a": "b:c"}, "x[2]": 2', 1)
    assert validate(unknown, NOW).batch.seq == 7
    escaped = plain.replace('"GPU-a"', '"GPU\\u003aa"', 1)  # a colon, escaped
    assert validate(escaped, NOW).batch.devices[0].id == "GPU:a"
    masked = plain.replace('"seq": 7', '"seq": 7, "seq": 8', 1).replace('"s-1"', '"s\\u003a1"', 1)
    assert refusal(masked).reason.startswith("duplicate key 'seq'")
    hidden = plain.replace('"seq": 7', '"seq": 7, "extra": {"k": 1, "k": 2}', 1)
    assert (refusal(hidden).field, refusal(hidden).reason[:19]) == ("extra", "duplicate key 'k': ")
    assert duplicate_key(b'{"a": {"b": [1, 2], "c": {"d": 1, "d": [3]}}}') == ("a.c", "d")


# ---------------------------------------------------------------------------- messages (item 20)


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]


def test_broken_json_is_a_plain_400() -> None:
    with pytest.raises(BatchError) as caught:
        validate(b'{"node": ', NOW)
    assert caught.value.status == 400
    assert caught.value.reason.startswith("not valid JSON: EOF while parsing")
    assert "Invalid JSON" not in caught.value.reason


def test_several_errors_say_how_many_more() -> None:
    doc = batch()
    doc["readings"]["power_w"] = ["1", "2", "3", 4.0, 5.0, 6.0]
    assert refusal(doc).reason == "the 1st reading: must be a number (and 2 more)"
