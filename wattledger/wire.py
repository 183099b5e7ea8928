"""The agent -> collector wire format (docs/wire.md): the collector's side.

A batch is columnar: every array in ``readings`` has one entry per device reading, and
``readings.device[i]`` is a POSITION in ``devices`` (a device's ``index`` is its hardware number
within its kind, so a GPU 0 and a RAPL package 0 are two devices with index 0 in one batch).
Parsing is done by pydantic-core straight from the JSON bytes (whole arrays at once, in Rust,
strict: a number is a JSON number, never a boolean or a string); the cross-field rules (equal
lengths, ranges, positions, time order, clock skew, kinds, allocations) are then checked on
numpy arrays, so no Python object is made per reading on the collector's hot path.
The patterns and limits come from ``wattledger.contract``, which the agent uses instead of
this module (it never imports pydantic); numpy is loaded by the checks, so importing this
module stays light too.

Messages are for people: plain sentences, never a regex or pydantic's wording. ``field`` is a
JSON path, 0-based like the body's arrays (``readings.ts.2``); the reason counts 1-based, in
ordinals (``the 3rd reading``), so neither reads as a device position.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model
from pydantic_core import ErrorDetails

# the contract's names other code imports from here are re-exported ("X as X")
from wattledger.contract import CLOCK_EVENT_REASONS as CLOCK_EVENT_REASONS
from wattledger.contract import (
    DEVICE_ID_MAX_LENGTH,
    DEVICE_MODEL_MAX_LENGTH,
    LABEL_NAME_PATTERN,
    LABEL_VALUE_MAX_LENGTH,
    MAX_ALLOCATIONS,
    MAX_CLOCK_EVENTS,
    MAX_DEVICE_INDEX,
    MAX_OWNER_KEYS,
    MAX_SEQ,
    OWNER_KEY_PATTERN,
    OWNER_VALUE_MAX_LENGTH,
    PATTERN_WORDS,
    READING_COLUMNS,
    STREAM_ID_PATTERN,
    VALUE_COLUMNS,
    DeviceKind,
    DeviceRole,
    kind_problem,
)
from wattledger.contract import MAX_DEVICES as MAX_DEVICES
from wattledger.contract import MAX_FUTURE_SECONDS as MAX_FUTURE_SECONDS
from wattledger.contract import MAX_LABELS as MAX_LABELS
from wattledger.contract import NODE_NAME as NODE_NAME
from wattledger.contract import NODE_NAME_PATTERN as NODE_NAME_PATTERN

if TYPE_CHECKING:  # numpy is imported where batches are checked (the collector), not by the agent
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

NodeName = Annotated[str, StringConstraints(pattern=NODE_NAME_PATTERN)]
StreamId = Annotated[str, StringConstraints(pattern=STREAM_ID_PATTERN)]
LabelName = Annotated[str, StringConstraints(pattern=LABEL_NAME_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=LABEL_VALUE_MAX_LENGTH)]
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=DEVICE_ID_MAX_LENGTH)]
OwnerKey = Annotated[str, StringConstraints(pattern=OWNER_KEY_PATTERN)]
OwnerValue = Annotated[str, StringConstraints(max_length=OWNER_VALUE_MAX_LENGTH)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
#: a position in ``devices``
Position = Annotated[int, Field(ge=0, le=MAX_DEVICES - 1)]

#: optional arrays beyond the required ``device``, ``ts`` and ``power_w``
OPTIONAL_COLUMNS = tuple(c.name for c in READING_COLUMNS if not c.required)
#: the float columns of a reading's values (``clock_events`` is an unsigned 64-bit integer)
FLOAT_COLUMNS = tuple(c.name for c in VALUE_COLUMNS if c.type == "float")
#: value columns whose values must be >= 0 (``clock_events``' bound is in its schema)
NON_NEGATIVE = tuple(c.name for c in VALUE_COLUMNS if c.non_negative and c.type == "float")
#: columns whose values must lie in 0..1
RATIOS = tuple(c.name for c in VALUE_COLUMNS if c.ratio)
#: (column, the largest value it takes) of the columns with a maximum
MAXIMA = tuple((c.name, c.maximum, c.unit) for c in VALUE_COLUMNS if c.maximum is not None)

#: strict: JSON true/false and numeric strings are refused where a number is due (an integer
#: is still a number where a float is due); no NaN or infinity
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)


class DeviceInfo(BaseModel):
    """One measured device of a node (contract.Device is the agent's twin: same fields, rules)."""

    model_config = ConfigDict(frozen=True, strict=True, allow_inf_nan=False)

    id: DeviceId
    kind: DeviceKind
    index: Annotated[int, Field(ge=0, le=MAX_DEVICE_INDEX)]
    model: Annotated[str, StringConstraints(max_length=DEVICE_MODEL_MAX_LENGTH)] | None = None
    power_limit_w: Annotated[float, Field(gt=0)] | None = None
    slowdown_c: float | None = None
    shutdown_c: float | None = None
    role: DeviceRole | None = None
    parent: DeviceId | None = None
    share: Annotated[float, Field(gt=0, le=1)] | None = None


#: what one entry of a column of each type is (an ``int`` column is a position in ``devices``)
_ENTRY_OF: dict[str, Any] = {"float": Finite, "int": Position,
                             "uint64": Annotated[int, Field(ge=0, le=MAX_CLOCK_EVENTS)]}


def _readings_fields() -> dict[str, Any]:
    """``Readings``' fields, one per column of contract.READING_COLUMNS, in its order."""
    fields: dict[str, Any] = {}
    for c in READING_COLUMNS:
        entry = _ENTRY_OF[c.type] | None if c.nullable else _ENTRY_OF[c.type]
        array = list[entry]  # type: ignore[valid-type]  # made at run time from the table
        fields[c.name] = (array, ...) if c.required else (array | None, None)
    return fields


class ReadingsModel(BaseModel):
    """What ``Readings`` is to the type checker: its fields are the table's columns (read them
    by name: :func:`column`)."""

    model_config = _STRICT


if TYPE_CHECKING:
    Readings = ReadingsModel
else:  # the columnar ``readings`` of a batch, made from the contract's table
    Readings = create_model("Readings", __base__=ReadingsModel, __module__=__name__, **_readings_fields())


def column(readings: ReadingsModel, name: str) -> list[Any] | None:
    """A batch's column by its name (None: left out of the batch)."""
    values: list[Any] | None = getattr(readings, name)
    return values


class Allocation(BaseModel):
    """Who held devices (positions) from ``from`` to ``to`` (null: still held), by weight."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True, populate_by_name=True)

    devices: Annotated[list[Position], Field(min_length=1, max_length=MAX_DEVICES)]
    start: Annotated[float, Field(alias="from", ge=0, allow_inf_nan=False)]
    end: Annotated[Annotated[float, Field(ge=0, allow_inf_nan=False)] | None, Field(alias="to")] = None
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    owner: Annotated[dict[OwnerKey, OwnerValue], Field(min_length=1, max_length=MAX_OWNER_KEYS)]


class Batch(BaseModel):
    model_config = _STRICT

    node: NodeName
    stream: StreamId
    seq: Annotated[int, Field(ge=1, le=MAX_SEQ)]
    labels: Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)] = {}
    devices: Annotated[list[DeviceInfo], Field(min_length=1, max_length=MAX_DEVICES)]
    readings: Readings
    allocations: Annotated[list[Allocation], Field(max_length=MAX_ALLOCATIONS)] = []


class BatchError(ValueError):
    """A batch that must be refused. ``status`` is the HTTP code the contract gives it."""

    def __init__(self, status: int, error: str, field: str | None = None, reason: str = "") -> None:
        super().__init__(f"{error}: {field}: {reason}" if field else f"{error}: {reason}")
        self.status = status
        self.error = error
        self.field = field
        self.reason = reason

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "detail": {"field": self.field, "reason": self.reason}}


def invalid(field: str, reason: str) -> BatchError:
    return BatchError(422, "invalid batch", field, reason)


@dataclass(frozen=True)
class Columns:
    """A validated batch's readings as numpy arrays; a null (or absent column) is NaN, except
    in ``clock_events`` (exact unsigned 64-bit values), where ``has_clock_events`` says which
    readings carry one."""

    device: npt.NDArray[np.int64]  # positions in the batch's devices
    ts: FloatArray
    power_w: FloatArray
    energy_j: FloatArray
    temp_c: FloatArray
    util: FloatArray
    mem_temp_c: FloatArray
    mem_util: FloatArray
    sm_clock_hz: FloatArray
    clock_events: npt.NDArray[np.uint64]
    has_clock_events: npt.NDArray[np.bool_]
    mem_used_bytes: FloatArray

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(frozen=True)
class ValidBatch:
    batch: Batch
    columns: Columns
    #: made by the collector from a Prometheus remote-write request (``ingest/remotewrite.py``),
    #: not pushed by an agent: no (stream, seq) to dedupe by (its ``stream`` and ``seq`` are
    #: placeholders), and it never takes a device over from an agent's stream
    remote: bool = False


# ---------------------------------------------------------------------------- messages


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st…: how a reason counts entries (1-based)."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


#: what each kind of list holds, to say "the 3rd reading" of ``readings.ts.2``
_ENTRY = {"devices": "device", "allocations": "allocation"}


def _where(loc: Sequence[int | str]) -> str:
    """The entry a path points into, in words ("the 3rd reading: "), or ""."""
    if len(loc) >= 3 and loc[0] == "readings" and isinstance(loc[2], int):
        return f"the {ordinal(loc[2] + 1)} reading: "
    if len(loc) >= 2 and isinstance(loc[1], int) and str(loc[0]) in _ENTRY:
        where = f"the {ordinal(loc[1] + 1)} {_ENTRY[str(loc[0])]}"
        if len(loc) >= 4 and loc[2] == "devices" and isinstance(loc[3], int):
            where += f", its {ordinal(loc[3] + 1)} device"
        return where + ": "
    return ""


def _entries(n: object) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


#: pydantic's error types, in the words a person reads ({…} filled from the error's context)
_WORDS: dict[str, str] = {
    "missing": "is required",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "finite_number": "must be a finite number (not NaN or infinity)",
    "string_type": "must be a string",
    "dict_type": "must be a JSON object", "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object", "list_type": "must be a JSON array",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "greater_than_equal": "must be at least {ge}", "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}", "less_than": "must be less than {lt}",
    "string_too_long": "must be at most {max_length} characters",
    "literal_error": "must be one of {expected}",
}


def plain_reason(error: Mapping[str, Any]) -> str:
    """A pydantic error as a sentence a person reads: no regex, no pydantic wording."""
    kind, ctx = error["type"], dict(error.get("ctx") or {})
    # a bound written 0 or 2 in the model reads 0 or 2, not 0.0 (pydantic keeps a float field's float)
    ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ctx.items()}
    if kind in _WORDS:
        return _WORDS[kind].format(**ctx)
    if kind == "string_pattern_mismatch":
        return f"must be {PATTERN_WORDS.get(str(ctx.get('pattern')), 'in the documented format')}"
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must be at least {n} characters"
    if kind == "too_short":
        return f"must have at least {_entries(ctx['min_length'])}"
    if kind == "too_long":
        return f"must have at most {_entries(ctx['max_length'])}"
    if kind == "value_error":
        return str(ctx.get("error", "is not valid"))
    return "is not a value this field takes"


def plain_file_reason(error: Mapping[str, Any]) -> str:
    """:func:`plain_reason` for a key of a YAML file (the collector's configuration, a plan's
    scenario): a mapping and a list, not a JSON object and array."""
    return plain_reason(error).replace("a JSON object", "a mapping").replace("a JSON array", "a list")


def _refusal(errors: list[ErrorDetails]) -> BatchError:
    first = errors[0]
    loc = list(first["loc"])
    if first["type"] == "json_invalid":
        return BatchError(400, "malformed JSON", None,
                          f"not valid JSON: {(first.get('ctx') or {}).get('error', 'cannot be parsed')}")
    if first["type"] == "model_type" and not loc:
        return invalid("body", "must be a JSON object")
    if loc and loc[-1] == "[key]":  # a key of labels or owner: name the key, not pydantic's "[key]"
        loc = loc[:-1]
        reason = f"the name {str(loc[-1])!r} {plain_reason(first).replace('must be', 'is not', 1)}"
    else:
        reason = plain_reason(first)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return invalid(".".join(str(part) for part in loc) or "body", f"{_where(loc)}{reason}{more}")


# ---------------------------------------------------------------------------- parsing

def _duplicate_path(doc: Any, path: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(path of the object, key) of the first key given twice; ``doc`` parsed keeping pairs."""
    if isinstance(doc, _Pairs):
        seen: set[str] = set()
        for key, _ in doc.pairs:
            if key in seen:
                return ".".join(path) or "body", key
            seen.add(key)
        for key, value in doc.pairs:
            found = _duplicate_path(value, (*path, key))
            if found:
                return found
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found = _duplicate_path(value, (*path, str(i)))
            if found:
                return found
    return None


@dataclass(frozen=True)
class _Pairs:
    pairs: list[tuple[str, Any]]


def _colons_of(batch: Batch) -> int:
    """The colons a body that holds exactly ``batch`` has: one after each key (the keys pydantic
    kept: each object's given fields, each dict's keys), plus those inside its strings."""
    n = len(batch.model_fields_set) + len(batch.labels) + len(batch.readings.model_fields_set)
    n += batch.node.count(":") + batch.stream.count(":")
    n += sum(k.count(":") + v.count(":") for k, v in batch.labels.items())
    for d in batch.devices:
        n += len(d.model_fields_set) + d.id.count(":")
        n += (d.model or "").count(":") + (d.parent or "").count(":")
    for a in batch.allocations:
        n += len(a.model_fields_set) + len(a.owner) + sum(v.count(":") for v in a.owner.values())
    return n


def duplicate_key(body: bytes | str, batch: Batch | None = None) -> tuple[str, str] | None:
    """(object path, key) of the first key given twice in one JSON object, at any level.

    Run on a body pydantic parsed into ``batch``. The quick test: every key is followed by one
    colon, and a colon outside a string follows a key; pydantic keeps one of two equal keys, so
    a key given twice leaves the body with more colons than the batch accounts for (its keys
    and the colons inside its strings). Nothing else can make up for that as long as no string
    holds an escape (``\\u003a`` is a colon). Only when that count cannot clear the body (an
    escape, an unknown key pydantic left out, a key given twice) is every pair of the body read
    (json, with the path of the first key given twice)."""
    raw = body.encode() if isinstance(body, str) else body
    if batch is not None and b"\\" not in raw and raw.count(b":") == _colons_of(batch):
        return None
    try:
        return _duplicate_path(json.loads(raw, object_pairs_hook=_Pairs))
    except ValueError:  # pydantic read it; if json cannot, let pydantic's reading stand
        return None


def parse_batch(body: bytes | str) -> Batch:
    """Parse JSON bytes into a Batch; broken JSON is a 400, a wrong shape or a key given
    twice a 422."""
    try:
        batch = Batch.model_validate_json(body)
    except ValidationError as exc:
        raise _refusal(exc.errors(include_url=False)) from None
    twice = duplicate_key(body, batch)
    if twice is not None:
        where, key = twice
        raise invalid(where, f"duplicate key {key!r}: a key may be given once in an object")
    return batch


# ---------------------------------------------------------------------------- the rules


def _column(values: list[float | None] | None, n: int, field: str) -> FloatArray:
    import numpy as np

    if values is None:
        return np.full(n, np.nan)
    if len(values) != n:
        raise invalid(f"readings.{field}", f"has {len(values)} entries, but readings.ts has {n}")
    return np.array(values, dtype=np.float64)


def _clock_events(values: list[int | None] | None, n: int
                  ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    import numpy as np

    if values is None:
        return np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=bool)
    if len(values) != n:
        raise invalid("readings.clock_events", f"has {len(values)} entries, but readings.ts has {n}")
    known = np.array([v is not None for v in values], dtype=bool)
    return np.array([0 if v is None else v for v in values], dtype=np.uint64), known


def _check_devices(devices: Sequence[DeviceInfo]) -> None:
    first_of: dict[str, int] = {}
    for i, d in enumerate(devices):
        j = first_of.setdefault(d.id, i)
        if j != i:
            raise invalid(f"devices.{i}.id", f"the {ordinal(i + 1)} device has the id {d.id!r} of the "
                          f"{ordinal(j + 1)}: a device's id is unique in a batch")
        problem = kind_problem(d.kind, d.role, d.parent, d.share)
        if problem is not None:
            raise invalid(f"devices.{i}.{problem[0]}", f"the {ordinal(i + 1)} device: {problem[1]}")


def _check_allocations(allocations: Sequence[Allocation], n_devices: int, now: float) -> None:
    for i, a in enumerate(allocations):
        where = f"the {ordinal(i + 1)} allocation"
        seen: set[int] = set()
        for j, position in enumerate(a.devices):
            if position >= n_devices:
                raise invalid(f"allocations.{i}.devices.{j}",
                              f"{where} names device position {position}, but devices has "
                              f"{_entries(n_devices)} (positions 0 to {n_devices - 1})")
            if position in seen:
                raise invalid(f"allocations.{i}.devices.{j}",
                              f"{where} names device position {position} twice")
            seen.add(position)
        if a.end is not None and a.end < a.start:
            raise invalid(f"allocations.{i}.to", f"{where} ends ({a.end}) before it starts ({a.start})")
        for name, ts in (("from", a.start), ("to", a.end)):
            if ts is not None and ts > now + MAX_FUTURE_SECONDS:
                raise invalid(f"allocations.{i}.{name}",
                              f"{where}: {ts} is more than {MAX_FUTURE_SECONDS:.0f} s ahead of the "
                              f"collector's clock ({now:.0f})")


def check_batch(batch: Batch, now: float) -> Columns:
    """Apply the contract's cross-field rules to a parsed batch and return its columns."""
    import numpy as np

    r = batch.readings
    device, ts = column(r, "device") or [], column(r, "ts") or []  # both required
    n = len(ts)
    if len(device) != n:
        raise invalid("readings.device", f"has {len(device)} entries, but readings.ts has {n}")
    _check_devices(batch.devices)
    events, has_events = _clock_events(column(r, "clock_events"), n)
    cols = Columns(
        device=np.array(device, dtype=np.int64),
        ts=np.array(ts, dtype=np.float64),
        clock_events=events, has_clock_events=has_events,
        **{name: _column(column(r, name), n, name) for name in FLOAT_COLUMNS},
    )
    # most batches are good: a screen of a few whole-batch numpy calls clears them (numpy's
    # cost per call, not per value, dominates on batches this small); a batch it does not
    # clear goes through the checks one by one, which name the first offender
    if not _clearly_valid(cols, len(batch.devices), now):
        _find_offender(cols, batch.devices, now)
    if batch.allocations:
        _check_allocations(batch.allocations, len(batch.devices), now)
    return cols


def _clearly_valid(cols: Columns, n_devices: int, now: float) -> bool:
    """True only if the batch passes every check of ``_find_offender``."""
    import numpy as np

    if not cols.ts.shape[0]:
        return True
    device = cols.device
    if int(device.max()) >= n_devices:  # positions are >= 0 (the schema)
        return False
    # fmin/fmax skip NaN (a null); a column of nulls only gives NaN, which compares False
    if np.fmin.reduce(np.concatenate([getattr(cols, name) for name in (*NON_NEGATIVE, *RATIOS)])) < 0:
        return False
    if np.fmax.reduce(np.concatenate([getattr(cols, name) for name in RATIOS])) > 1:
        return False
    if any(np.fmax.reduce(getattr(cols, name)) > most for name, most, _ in MAXIMA):
        return False
    if float(cols.ts.max()) > now + MAX_FUTURE_SECONDS or float(cols.ts.min()) < 0:
        return False
    order = np.argsort(device, kind="stable")  # by device, keeping batch order
    ts = cols.ts[order]
    return not bool(((device[order][1:] == device[order][:-1]) & (ts[1:] <= ts[:-1])).any())


def _find_offender(cols: Columns, devices: Sequence[DeviceInfo], now: float) -> None:
    """Raise the BatchError of the first rule the batch breaks, naming the offending reading."""
    import numpy as np

    n, m = len(cols), len(devices)
    unknown = cols.device >= m
    if unknown.any():
        i = int(np.argmax(unknown))
        raise invalid(f"readings.device.{i}",
                      f"the {ordinal(i + 1)} reading names device position {int(cols.device[i])}, "
                      f"but devices has {_entries(m)} (positions 0 to {m - 1})")
    for name in NON_NEGATIVE:
        bad = getattr(cols, name) < 0
        if bad.any():
            i = int(np.argmax(bad))
            raise invalid(f"readings.{name}.{i}", f"the {ordinal(i + 1)} reading: {name} must not be "
                          f"negative ({float(getattr(cols, name)[i])})")
    for name in RATIOS:
        values = getattr(cols, name)
        bad = (values < 0) | (values > 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise invalid(f"readings.{name}.{i}",
                          f"the {ordinal(i + 1)} reading: {name} {float(values[i])} is outside 0..1")
    for name, most, unit in MAXIMA:
        values = getattr(cols, name)
        bad = values > most
        if bad.any():
            i = int(np.argmax(bad))
            raise invalid(f"readings.{name}.{i}", f"the {ordinal(i + 1)} reading: {name} "
                          f"{float(values[i]):g} is more than {most:g} {unit}, which no source measures")
    if n:
        ahead = cols.ts > now + MAX_FUTURE_SECONDS
        if ahead.any():
            i = int(np.argmax(ahead))
            raise invalid(f"readings.ts.{i}",
                          f"the {ordinal(i + 1)} reading: {cols.ts[i]} is more than "
                          f"{MAX_FUTURE_SECONDS:.0f} s ahead of the collector's clock ({now:.0f})")
        if (cols.ts < 0).any():
            i = int(np.argmax(cols.ts < 0))
            raise invalid(f"readings.ts.{i}", f"the {ordinal(i + 1)} reading: ts must not be negative")
        order = np.lexsort((np.arange(n), cols.device))  # by device, keeping batch order
        same = cols.device[order][1:] == cols.device[order][:-1]
        back = same & (np.diff(cols.ts[order]) <= 0)
        if back.any():
            i = int(order[int(np.argmax(back)) + 1])
            p = int(cols.device[i])
            raise invalid(f"readings.ts.{i}",
                          f"the {ordinal(i + 1)} reading, of device {devices[p].id!r} (position {p}), "
                          "is not later than that device's reading before it: a device's readings "
                          "must be in time order")


def validate(body: bytes | str, now: float) -> ValidBatch:
    """Parse and check one request body (already decompressed)."""
    batch = parse_batch(body)
    return ValidBatch(batch, check_batch(batch, now))
