"""ONE table of the readings' columns (contract.READING_COLUMNS): the agent's spool encoder, the
collector's decoder (wire.Readings, its column lists, its Columns) and the collector's latest
values all agree with it, and a reading that sets every column arrives with every value."""

from __future__ import annotations

import dataclasses
import gzip
import math
import time

import orjson
import pytest

from wattledger import contract, wire
from wattledger.agent import spool
from wattledger.agent.reading import DeviceReading
from wattledger.contract import READING_COLUMNS, VALUE_COLUMNS, Device

GPU = Device(id="GPU-cols", kind="gpu", index=0, model="NVIDIA H100 80GB HBM3", power_limit_w=700.0)
#: a value for each value column, within its bounds (distinct, so a swapped column shows)
EVERY_VALUE = {"power_w": 512.5, "energy_j": 123456.5, "temp_c": 61.5, "util": 0.93, "mem_temp_c": 70.5,
               "mem_util": 0.41, "sm_clock_hz": 1.98e9, "clock_events": 2**64 - 1, "mem_used_bytes": 8.5e10}


def body_of(readings: list[DeviceReading]) -> dict[str, object]:
    """What the agent's encoder makes of ``readings``: one batch, as sent."""
    rows = spool.encode_sample(readings, spool.DeviceDicts())
    (batch,) = spool.build_batches([rows], 1000, 1 << 20)
    doc: dict[str, object] = orjson.loads(gzip.decompress(batch.body("n1", "s-1", 1, {})))
    return doc


def test_the_decoder_is_the_table() -> None:
    fields = wire.Readings.model_fields
    assert list(fields) == [c.name for c in READING_COLUMNS]
    assert [f.is_required() for f in fields.values()] == [c.required for c in READING_COLUMNS]
    assert tuple(c.name for c in READING_COLUMNS if not c.required) == wire.OPTIONAL_COLUMNS
    assert set(wire.FLOAT_COLUMNS) | {"clock_events"} == {c.name for c in VALUE_COLUMNS}
    columns = {f.name for f in dataclasses.fields(wire.Columns)} - {"has_clock_events"}
    assert columns == {c.name for c in READING_COLUMNS}


def test_the_encoder_is_the_table() -> None:
    assert tuple(c.name for c in VALUE_COLUMNS) == spool.VALUE_COLUMNS
    # the order of the rows spooled by agents running today: a spool written before an upgrade
    # is read by the new agent positionally: never reorder the table
    assert spool.VALUE_COLUMNS[:9] == ("power_w", "energy_j", "temp_c", "util", "mem_temp_c", "mem_util",
                                       "sm_clock_hz", "clock_events", "mem_used_bytes")
    attributes = {f.name for f in dataclasses.fields(DeviceReading)}
    assert {c.attribute for c in READING_COLUMNS} <= attributes
    doc = body_of([DeviceReading(device=GPU, ts=1000.0, **EVERY_VALUE)])
    readings = doc["readings"]
    assert isinstance(readings, dict) and list(readings) == [c.name for c in READING_COLUMNS]
    # an optional column of nothing but nulls is left out; a required one never is
    sparse = body_of([DeviceReading(device=GPU, ts=1000.0)])["readings"]
    assert isinstance(sparse, dict) and list(sparse) == [c.name for c in READING_COLUMNS if c.required]


def test_the_collectors_columns_are_the_tables() -> None:
    """The collector's lists of columns come from the table: a column added there and not to
    the accounting's Readings (written out for mypy) fails here; the store's ``devices`` table
    is checked on both backends in tests/collector/test_store.py."""
    from wattledger.collector.accounting.readings import LATEST, READINGS_FIELDS, Readings
    from wattledger.collector.store.devicetable import DEVICE_COLUMNS, FLOATS

    assert LATEST == contract.LATEST_COLUMNS == tuple(c.name for c in READING_COLUMNS if c.latest)
    assert ("device", "group", *(c.name for c in READING_COLUMNS[1:]), "has_clock_events") == READINGS_FIELDS
    assert tuple(f.name for f in dataclasses.fields(Readings)) == READINGS_FIELDS
    assert set(LATEST) <= set(DEVICE_COLUMNS) and set(LATEST) <= set(FLOATS)


def test_every_value_arrives_as_it_was_read() -> None:
    now = time.time()
    doc = body_of([DeviceReading(device=GPU, ts=now - 1, **EVERY_VALUE)])
    cols = wire.validate(orjson.dumps(doc), now).columns
    for c in VALUE_COLUMNS:
        got = getattr(cols, c.name)[0]
        assert (int(got) if c.type == "uint64" else float(got)) == EVERY_VALUE[c.attribute], c.name
    assert bool(cols.has_clock_events[0])


def refusal_of(column: contract.ReadingColumn, value: float | int, now: float) -> wire.BatchError:
    """The collector's refusal of the agent's batch with ``value`` put in ``column`` as sent."""
    doc = body_of([DeviceReading(device=GPU, ts=now - 1, **EVERY_VALUE)])
    readings = doc["readings"]
    assert isinstance(readings, dict)
    readings[column.name] = [value]
    try:
        wire.validate(orjson.dumps(doc), now)
    except wire.BatchError as refused:
        return refused
    raise AssertionError(f"{column.name} = {value} was accepted")


@pytest.mark.parametrize("column", [c for c in VALUE_COLUMNS if c.non_negative or c.ratio],
                         ids=lambda c: c.name)
def test_a_bound_the_decoder_refuses_the_encoder_leaves_out(column: contract.ReadingColumn) -> None:
    """A value the table puts out of bounds (a negative count, a ratio over 1): the collector
    refuses the batch, so the agent writes it as null (the other values of the reading stay)."""
    now = time.time()
    bad: float | int = -1 if column.type == "uint64" else (1.5 if column.ratio else -1.0)
    refused = refusal_of(column, bad, now)
    assert refused.status == 422 and column.name in str(refused.field)
    cleaned = body_of([DeviceReading(device=GPU, ts=now - 1, **{**EVERY_VALUE, column.attribute: bad})])
    kept = wire.validate(orjson.dumps(cleaned), now).columns
    value = getattr(kept, column.name)[0]
    assert (not kept.has_clock_events[0]) if column.type == "uint64" else math.isnan(value)
    assert float(kept.ts[0]) == now - 1 and (column.name == "power_w" or float(kept.power_w[0]) == 512.5)


@pytest.mark.parametrize("column", [c for c in VALUE_COLUMNS if c.maximum is not None], ids=lambda c: c.name)
def test_a_value_past_the_tables_maximum_is_refused_and_left_out(column: contract.ReadingColumn) -> None:
    """A power or energy no source measures (1e300 W was booked, and made the CSV report a 500):
    the collector refuses it, the agent writes it as null."""
    assert column.maximum is not None
    now = time.time()
    bad = column.maximum * 10
    refused = refusal_of(column, bad, now)
    assert refused.status == 422 and refused.field == f"readings.{column.name}.0"
    assert f"is more than {column.maximum:g} {column.unit}" in refused.reason
    with pytest.raises(AssertionError, match="accepted"):  # the maximum itself is a value
        refusal_of(column, column.maximum, now)
    cleaned = body_of([DeviceReading(device=GPU, ts=now - 1, **{**EVERY_VALUE, column.attribute: bad})])
    kept = wire.validate(orjson.dumps(cleaned), now).columns
    assert math.isnan(getattr(kept, column.name)[0])
