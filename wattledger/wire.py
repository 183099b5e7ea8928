"""The agent -> collector wire format (DESIGN.md, "Wire format"): one module for both sides.

A batch is columnar: every array in ``readings`` has one entry per device reading. Parsing is
done by pydantic-core straight from the JSON bytes (whole arrays at once, in Rust); the
cross-field rules (equal lengths, ranges, device indexes, time order, clock skew) are then
checked on numpy arrays, so no Python object is made per reading on the collector's hot path.
The patterns and limits come from ``wattledger.contract``, which the agent uses instead of
this module (it never imports pydantic); numpy is loaded by the checks, so importing this
module stays light too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

# the contract's names other code imports from here are re-exported ("X as X")
from wattledger.contract import CLOCK_EVENT_REASONS as CLOCK_EVENT_REASONS
from wattledger.contract import (
    DEVICE_ID_MAX_LENGTH,
    DEVICE_MODEL_MAX_LENGTH,
    LABEL_NAME_PATTERN,
    LABEL_VALUE_MAX_LENGTH,
    STREAM_ID_PATTERN,
    DeviceKind,
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
Finite = Annotated[float, Field(allow_inf_nan=False)]
Column = list[Finite | None]

#: optional arrays beyond the required ``device``, ``ts`` and ``power_w``
OPTIONAL_COLUMNS = ("energy_j", "temp_c", "util", "mem_temp_c", "mem_util", "sm_clock_hz",
                    "clock_events", "mem_used_bytes")
#: columns whose values must be >= 0
NON_NEGATIVE = ("power_w", "energy_j", "sm_clock_hz", "mem_used_bytes")
#: columns whose values must lie in 0..1
RATIOS = ("util", "mem_util")


class DeviceInfo(BaseModel):
    """One measured device of a node: a GPU (by UUID) or a host power domain."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    id: Annotated[str, StringConstraints(min_length=1, max_length=DEVICE_ID_MAX_LENGTH)]
    kind: DeviceKind
    index: Annotated[int, Field(ge=0)]
    model: Annotated[str, StringConstraints(max_length=DEVICE_MODEL_MAX_LENGTH)] | None = None
    power_limit_w: Annotated[float, Field(gt=0)] | None = None
    slowdown_c: float | None = None
    shutdown_c: float | None = None


class Readings(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    device: list[Annotated[int, Field(ge=0)]]
    ts: list[Finite]
    power_w: Column
    energy_j: Column | None = None
    temp_c: Column | None = None
    util: Column | None = None
    mem_temp_c: Column | None = None
    mem_util: Column | None = None
    sm_clock_hz: Column | None = None
    clock_events: list[Annotated[int, Field(ge=0)] | None] | None = None
    mem_used_bytes: Column | None = None


class Batch(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    node: NodeName
    stream: StreamId
    seq: Annotated[int, Field(ge=1, le=2**62)]
    labels: Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)] = {}
    devices: Annotated[list[DeviceInfo], Field(min_length=1, max_length=MAX_DEVICES)]
    readings: Readings


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


@dataclass(frozen=True)
class Columns:
    """A validated batch's readings as numpy arrays; a null (or absent column) is NaN."""

    device: npt.NDArray[np.int64]
    ts: FloatArray
    power_w: FloatArray
    energy_j: FloatArray
    temp_c: FloatArray
    util: FloatArray
    mem_temp_c: FloatArray
    mem_util: FloatArray
    sm_clock_hz: FloatArray
    clock_events: FloatArray
    mem_used_bytes: FloatArray

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(frozen=True)
class ValidBatch:
    batch: Batch
    columns: Columns


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def parse_batch(body: bytes | str) -> Batch:
    """Parse JSON bytes into a Batch; broken JSON is a 400, a wrong shape a 422."""
    try:
        return Batch.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            raise BatchError(400, "malformed JSON", None, str(first.get("msg", ""))) from None
        if first["type"] == "model_type" and not first["loc"]:
            raise BatchError(422, "invalid batch", "body", "must be a JSON object") from None
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BatchError(422, "invalid batch", _loc(first["loc"]), f"{first['msg']}{more}") from None


def _column(values: list[float | None] | list[int | None] | None, n: int, field: str) -> FloatArray:
    import numpy as np

    if values is None:
        return np.full(n, np.nan)
    if len(values) != n:
        raise BatchError(422, "invalid batch", f"readings.{field}",
                         f"has {len(values)} entries, but readings.ts has {n}")
    return np.array(values, dtype=np.float64)


def check_batch(batch: Batch, now: float) -> Columns:
    """Apply the contract's cross-field rules to a parsed batch and return its columns."""
    import numpy as np

    r = batch.readings
    n = len(r.ts)
    if len(r.device) != n:
        raise BatchError(422, "invalid batch", "readings.device",
                         f"has {len(r.device)} entries, but readings.ts has {n}")
    indexes = [d.index for d in batch.devices]
    if len(set(indexes)) != len(indexes):
        raise BatchError(422, "invalid batch", "devices", "two devices share one index")
    ids = [d.id for d in batch.devices]
    if len(set(ids)) != len(ids):
        raise BatchError(422, "invalid batch", "devices", "two devices share one id")
    cols = Columns(
        device=np.array(r.device, dtype=np.int64),
        ts=np.array(r.ts, dtype=np.float64),
        **{name: _column(getattr(r, name), n, name) for name in ("power_w", *OPTIONAL_COLUMNS)},
    )
    # most batches are good: a screen of a few whole-batch numpy calls clears them (numpy's
    # cost per call, not per value, dominates on batches this small); a batch it does not
    # clear goes through the checks one by one, which name the first offender
    if not _clearly_valid(cols, indexes, now):
        _find_offender(cols, indexes, now)
    return cols


def _clearly_valid(cols: Columns, indexes: list[int], now: float) -> bool:
    """True only if the batch passes every check of ``_find_offender``."""
    import numpy as np

    if not cols.ts.shape[0]:
        return True
    device = cols.device
    top = max(indexes)
    if int(device.min()) < 0 or int(device.max()) > top:
        return False
    if len(indexes) != top + 1:  # indexes with holes: are the devices read all declared?
        known = np.zeros(top + 1, dtype=bool)
        known[indexes] = True
        if not known[device].all():
            return False
    # fmin/fmax skip NaN (a null); a column of nulls only gives NaN, which compares False
    if np.fmin.reduce(np.concatenate([getattr(cols, name) for name in (*NON_NEGATIVE, *RATIOS)])) < 0:
        return False
    if np.fmax.reduce(np.concatenate([getattr(cols, name) for name in RATIOS])) > 1:
        return False
    if float(cols.ts.max()) > now + MAX_FUTURE_SECONDS or float(cols.ts.min()) < 0:
        return False
    order = np.argsort(device, kind="stable")  # by device, keeping batch order
    ts = cols.ts[order]
    return not bool(((device[order][1:] == device[order][:-1]) & (ts[1:] <= ts[:-1])).any())


def _find_offender(cols: Columns, indexes: list[int], now: float) -> None:
    """Raise the BatchError of the first rule the batch breaks, naming the offending reading."""
    import numpy as np

    n = len(cols)
    known = np.array(sorted(indexes), dtype=np.int64)
    unknown = ~np.isin(cols.device, known)
    if unknown.any():
        i = int(np.argmax(unknown))
        raise BatchError(422, "invalid batch", f"readings.device.{i}",
                         f"device index {int(cols.device[i])} is not in devices")
    for name in NON_NEGATIVE:
        bad = getattr(cols, name) < 0
        if bad.any():
            i = int(np.argmax(bad))
            raise BatchError(422, "invalid batch", f"readings.{name}.{i}", "must not be negative")
    for name in RATIOS:
        values = getattr(cols, name)
        bad = (values < 0) | (values > 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise BatchError(422, "invalid batch", f"readings.{name}.{i}",
                             f"{float(values[i])} is outside 0..1")
    if n:
        ahead = cols.ts > now + MAX_FUTURE_SECONDS
        if ahead.any():
            i = int(np.argmax(ahead))
            raise BatchError(422, "invalid batch", f"readings.ts.{i}",
                             f"{cols.ts[i]} is more than {MAX_FUTURE_SECONDS:.0f} s ahead of the "
                             f"collector's clock ({now:.0f})")
        if (cols.ts < 0).any():
            i = int(np.argmax(cols.ts < 0))
            raise BatchError(422, "invalid batch", f"readings.ts.{i}", "must not be negative")
        order = np.lexsort((np.arange(n), cols.device))  # by device, keeping batch order
        same = cols.device[order][1:] == cols.device[order][:-1]
        back = same & (np.diff(cols.ts[order]) <= 0)
        if back.any():
            i = int(order[int(np.argmax(back)) + 1])
            raise BatchError(422, "invalid batch", f"readings.ts.{i}",
                             f"readings of device {int(cols.device[i])} are not in time order")


def validate(body: bytes | str, now: float) -> ValidBatch:
    """Parse and check one request body (already decompressed)."""
    batch = parse_batch(body)
    return ValidBatch(batch, check_batch(batch, now))
