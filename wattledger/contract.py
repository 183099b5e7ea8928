"""The wire contract's names, patterns and limits, shared by the agent and the collector.

The collector validates batches with the pydantic models of ``wattledger.wire``, which take
their patterns and limits from here. The agent only needs these constants and :class:`Device`,
so it never imports pydantic (about 16 MB of its resident memory): keep this module free of
pydantic and numpy.

Patterns are written with ``^…$`` for pydantic (Rust regex, where ``$`` is the very end);
Python code must check them with ``fullmatch`` (Python's ``$`` also matches before a final
newline), as the helpers below do.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

#: readings may be at most this far ahead of the collector's clock
MAX_FUTURE_SECONDS = 300.0
MAX_DEVICES = 4096
MAX_LABELS = 32
#: a device's hardware number within its kind (GPU 0..7, RAPL package 0..1): 0..MAX_DEVICE_INDEX
MAX_DEVICE_INDEX = 65535
#: a stream's batches are numbered 1..MAX_SEQ (a signed 64-bit integer in every store)
MAX_SEQ = 2**62
#: ``clock_events`` is NVML's bitmask: an unsigned 64-bit integer
MAX_CLOCK_EVENTS = 2**64 - 1

#: a node's name: on the wire, in tokens and tokens files, and the agent's --node
NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NODE_NAME = re.compile(NODE_NAME_PATTERN)
#: a batch stream's id (the agent's spool makes a uuid4)
STREAM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
#: a label's name: a Prometheus label name of at most 64 characters
LABEL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
LABEL_NAME = re.compile(LABEL_NAME_PATTERN)
LABEL_VALUE_MAX_LENGTH = 256
#: label names Prometheus gives a meaning of its own: ``__``-prefixed names are its internal
#: ones (``__name__`` would rename every series), ``le`` and ``quantile`` those of histograms
#: and summaries
RESERVED_LABEL_PREFIX = "__"
RESERVED_LABEL_NAMES = frozenset({"le", "quantile"})

#: what a device is: ``gpu`` any accelerator; ``cpu`` / ``host`` a host power domain (RAPL
#: package, DRAM, psys); ``node`` the whole server at the wall (its BMC); ``meter`` a facility
#: meter (feed, UPS, PDU, chiller plant); ``sensor`` a temperature-only device; ``partition`` a
#: slice of a board (a MIG instance), which has no power of its own
DeviceKind = Literal["gpu", "cpu", "host", "node", "meter", "sensor", "partition"]
DEVICE_KINDS: tuple[str, ...] = get_args(DeviceKind)
#: what a meter measures, and where a sensor is
MeterRole = Literal["facility", "it", "cooling"]
SensorRole = Literal["outdoor", "inlet"]
DeviceRole = Literal[MeterRole, SensorRole]
METER_ROLES: tuple[str, ...] = get_args(MeterRole)
SENSOR_ROLES: tuple[str, ...] = get_args(SensorRole)
DEVICE_ROLES: tuple[str, ...] = (*METER_ROLES, *SENSOR_ROLES)
#: the kinds that must carry a ``role``, and the roles each may have (no other kind has one)
ROLES_OF_KIND: dict[str, tuple[str, ...]] = {"meter": METER_ROLES, "sensor": SENSOR_ROLES}
#: the kind that carries ``parent`` (the id of its board) and ``share`` (0 < share <= 1)
PARTITION_KIND = "partition"
#: kinds whose readings are never IT energy (a meter's energy is the facility's, cooling's or the
#: IT feed's; a sensor has none; a partition's is its board's): the collector accounts none
NOT_IT_KINDS: frozenset[str] = frozenset({"meter", "sensor", "partition"})
#: a node's *parts*: the devices whose energy is its own, priced per device; a ``node`` device
#: (the BMC's wall power) is the node's meter, and its IT energy when measured (DESIGN.md, "The
#: whole node"), never a part beside them (that would count the GPUs twice)
PART_KINDS: frozenset[str] = frozenset({"gpu", "cpu", "host"})
NODE_METER_KIND = "node"
DEVICE_ID_MAX_LENGTH = 128
DEVICE_MODEL_MAX_LENGTH = 128

#: allocations of one batch (who held which device when) and their owners
MAX_ALLOCATIONS = 10_000
MAX_OWNER_KEYS = 16
OWNER_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
OWNER_KEY = re.compile(OWNER_KEY_PATTERN)
OWNER_VALUE_MAX_LENGTH = 256

#: a billing month, as /v1/spend and the configuration's plan take it
MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"

#: what each pattern means, in words, for the messages people read (never the regex itself)
PATTERN_WORDS: dict[str, str] = {
    NODE_NAME_PATTERN: "a node name: letters, digits, '.', '_' and '-', starting with a letter or "
                       "digit, at most 128 characters",
    STREAM_ID_PATTERN: "a stream id: letters, digits, '.', '_', ':' and '-', starting with a letter "
                       "or digit, at most 128 characters",
    LABEL_NAME_PATTERN: "a label name: letters, digits and '_', not starting with a digit, at most "
                        "64 characters",
    MONTH_PATTERN: "a month written YYYY-MM, e.g. 2026-12",
    OWNER_KEY_PATTERN: "an owner key: lower-case letters, digits and '_', starting with a letter, at "
                       "most 64 characters",
}

# ---------------------------------------------------------------------------- readings' columns

#: how a column's entries are written: ``float`` a finite JSON number; ``int`` a JSON integer
#: (the one such column, ``device``, a position in ``devices``); ``uint64`` a JSON integer of
#: 0..2^64-1 kept bit for bit
ColumnType = Literal["float", "int", "uint64"]


@dataclass(frozen=True, slots=True)
class ReadingColumn:
    """One array of a batch's ``readings``: one entry per device reading."""

    name: str  # ``readings.<name>`` on the wire
    type: ColumnType
    unit: str  # the base unit of its values
    attribute: str  # the agent's DeviceReading attribute it is written from
    required: bool = False  # in every batch (an optional column of nothing but nulls is left out)
    nullable: bool = True  # an entry may be null: not measured at that reading
    non_negative: bool = False
    ratio: bool = False  # a fraction, 0..1
    #: the largest value a reading can have: more is a broken source, never a measurement, and
    #: once booked it would stay in the ledger's sums (1e300 W made every CSV report a 500)
    maximum: float | None = None
    latest: bool = False  # the collector keeps each device's latest value (/v1/nodes, /metrics)


#: THE table of the readings' columns, in their wire order: the agent's spool encoder, the
#: collector's decoder (``wire.Readings``) and its store of latest values are made from it.
#: Never reorder or remove one: the agent's spooled sample rows hold the values positionally.
READING_COLUMNS: tuple[ReadingColumn, ...] = (
    ReadingColumn("device", "int", "position", "device", required=True, nullable=False, non_negative=True),
    ReadingColumn("ts", "float", "s", "ts", required=True, nullable=False, non_negative=True),
    # power: a GW is more than any site's meter reads; energy: 1e18 J is 32 GW for a year
    ReadingColumn("power_w", "float", "W", "power_w", required=True, non_negative=True, maximum=1e9),
    ReadingColumn("energy_j", "float", "J", "energy_j", non_negative=True,  # the cumulative counter
                  maximum=1e18),
    ReadingColumn("temp_c", "float", "°C", "temp_c", latest=True),
    ReadingColumn("util", "float", "ratio", "util", ratio=True, latest=True),
    ReadingColumn("mem_temp_c", "float", "°C", "mem_temp_c", latest=True),
    ReadingColumn("mem_util", "float", "ratio", "mem_util", ratio=True, latest=True),
    ReadingColumn("sm_clock_hz", "float", "Hz", "sm_clock_hz", non_negative=True, latest=True),
    ReadingColumn("clock_events", "uint64", "bitmask", "clock_events", non_negative=True),  # NVML's
    ReadingColumn("mem_used_bytes", "float", "bytes", "mem_used_bytes", non_negative=True, latest=True),
)
#: what a reading measured: every column but the device and its time
VALUE_COLUMNS: tuple[ReadingColumn, ...] = tuple(c for c in READING_COLUMNS if c.name not in ("device", "ts"))
#: the columns whose latest value the collector keeps per device, in the table's order
LATEST_COLUMNS: tuple[str, ...] = tuple(c.name for c in VALUE_COLUMNS if c.latest)

#: NVML clock-event (throttle) reason bits of ``clock_events`` and the ``reason`` label each
#: gets on the agent's and the collector's /metrics
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal"),
    (0x40, "hw_thermal"),
    (0x80, "hw_power_brake"),
)


def is_node_name(name: object) -> bool:
    return isinstance(name, str) and NODE_NAME.fullmatch(name) is not None


def is_label(name: object, value: object) -> bool:
    """True when ``name=value`` is a label the wire accepts."""
    return (isinstance(name, str) and LABEL_NAME.fullmatch(name) is not None
            and isinstance(value, str) and len(value) <= LABEL_VALUE_MAX_LENGTH)


def label_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a label of an agent's series (None when it can)."""
    if LABEL_NAME.fullmatch(name) is None:
        return f"{name!r} is not {PATTERN_WORDS[LABEL_NAME_PATTERN]}"
    if name.startswith(RESERVED_LABEL_PREFIX):
        return f"{name!r}: names starting with '__' are reserved for Prometheus' own use"
    if name in RESERVED_LABEL_NAMES:
        return f"{name!r} is reserved by Prometheus (histogram buckets and summary quantiles)"
    return None


def owner_problem(owner: object) -> str | None:
    """Why ``owner`` is not an allocation's owner the wire accepts (None when it is)."""
    if not isinstance(owner, dict) or not owner:
        return "must be an object of at least one key"
    if len(owner) > MAX_OWNER_KEYS:
        return f"must have at most {MAX_OWNER_KEYS} keys"
    for key, value in owner.items():
        if not isinstance(key, str) or OWNER_KEY.fullmatch(key) is None:
            return f"{key!r} is not {PATTERN_WORDS[OWNER_KEY_PATTERN]}"
        if not isinstance(value, str) or len(value) > OWNER_VALUE_MAX_LENGTH:
            return f"{key}: must be a string of at most {OWNER_VALUE_MAX_LENGTH} characters"
    return None


def one_of(words: tuple[str, ...] | list[str]) -> str:
    """``a, b or c``: a choice in words."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def kind_problem(kind: str, role: object, parent: object, share: object) -> tuple[str, str] | None:
    """(field, reason) of the first rule of a device's kind that ``role``, ``parent`` and
    ``share`` break, or None. One rule for the agent's Device and the collector's check."""
    roles = ROLES_OF_KIND.get(kind)
    if roles is not None:
        if role is None:
            return "role", f"a {kind} device needs a role: {one_of(roles)}"
        if role not in roles:
            return "role", f"a {kind}'s role is {one_of(roles)}, not {role!r}"
    elif role is not None:
        return "role", f"only meter and sensor devices have a role, not a {kind} device"
    if kind == PARTITION_KIND:
        if parent is None:
            return "parent", "a partition device needs parent: the id of the board it is a slice of"
        if share is None:
            return "share", "a partition device needs share: its fraction of the board, 0 < share <= 1"
    elif parent is not None or share is not None:
        return ("parent" if parent is not None else "share"), \
            f"only partition devices have a parent and a share, not a {kind} device"
    if parent is not None and (not isinstance(parent, str)
                               or not 1 <= len(parent) <= DEVICE_ID_MAX_LENGTH):
        return "parent", f"must be a device id of 1 to {DEVICE_ID_MAX_LENGTH} characters"
    if share is not None and (isinstance(share, bool) or not isinstance(share, int | float)
                              or not 0 < share <= 1):
        return "share", f"must be a number with 0 < share <= 1, not {share!r}"
    return None


@dataclass(frozen=True, slots=True)
class Device:
    """One measured device of a node: a GPU (by UUID), a host power domain, the node at the wall,
    a facility meter, a temperature sensor, or a partition (slice) of a board.

    The agent's twin of ``wire.DeviceInfo``: the same fields, defaults and rules, checked at
    construction (a ValueError), so a device the collector would refuse never reaches the
    spool. Numbers are stored as floats, as DeviceInfo stores them, so the wire JSON is the
    same."""

    id: str
    kind: DeviceKind
    index: int
    model: str | None = None
    power_limit_w: float | None = None
    slowdown_c: float | None = None
    shutdown_c: float | None = None
    role: DeviceRole | None = None  # a meter's or a sensor's (required for those two kinds)
    parent: str | None = None  # a partition's board (its Device.id)
    share: float | None = None  # a partition's fraction of its board, 0 < share <= 1

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 1 <= len(self.id) <= DEVICE_ID_MAX_LENGTH:
            raise ValueError(f"device id must be 1 to {DEVICE_ID_MAX_LENGTH} characters: {self.id!r}")
        if self.kind not in DEVICE_KINDS:
            raise ValueError(f"device kind must be one of {', '.join(DEVICE_KINDS)}: {self.kind!r}")
        if (not isinstance(self.index, int) or isinstance(self.index, bool)
                or not 0 <= self.index <= MAX_DEVICE_INDEX):
            raise ValueError(f"device index must be an integer 0..{MAX_DEVICE_INDEX}: {self.index!r}")
        if self.model is not None and (not isinstance(self.model, str)
                                       or len(self.model) > DEVICE_MODEL_MAX_LENGTH):
            raise ValueError(f"device model must be at most {DEVICE_MODEL_MAX_LENGTH} characters")
        for name in ("power_limit_w", "slowdown_c", "shutdown_c"):
            value = getattr(self, name)
            if value is None:
                continue
            number = _finite(name, value)
            if name == "power_limit_w" and number <= 0:
                raise ValueError(f"device power_limit_w must be greater than 0: {value!r}")
            object.__setattr__(self, name, number)
        problem = kind_problem(self.kind, self.role, self.parent, self.share)
        if problem is not None:
            raise ValueError(f"device {self.id}: {problem[0]}: {problem[1]}")
        if self.share is not None:
            object.__setattr__(self, "share", float(self.share))

    def wire_dict(self) -> dict[str, Any]:
        """The device as the wire carries it: ``DeviceInfo.model_dump(exclude_none=True)``."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "index": self.index}
        for name in _OPTIONAL_DEVICE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


#: Device's optional fields, in the order the wire dict carries them
_OPTIONAL_DEVICE_FIELDS = ("model", "power_limit_w", "slowdown_c", "shutdown_c", "role", "parent", "share")


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"device {name} must be a finite number: {value!r}")
    return float(value)
