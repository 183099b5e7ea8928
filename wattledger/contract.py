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

#: a node's name: on the wire, in tokens and tokens files, and the agent's --node
NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NODE_NAME = re.compile(NODE_NAME_PATTERN)
#: a batch stream's id (the agent's spool makes a uuid4)
STREAM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
#: a label's name: a Prometheus label name of at most 64 characters
LABEL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
LABEL_NAME = re.compile(LABEL_NAME_PATTERN)
LABEL_VALUE_MAX_LENGTH = 256

#: what a device is: a GPU, a CPU package power domain, or another host power domain
DeviceKind = Literal["gpu", "cpu", "host"]
DEVICE_KINDS: tuple[str, ...] = get_args(DeviceKind)
DEVICE_ID_MAX_LENGTH = 128
DEVICE_MODEL_MAX_LENGTH = 128

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


@dataclass(frozen=True, slots=True)
class Device:
    """One measured device of a node: a GPU (by UUID) or a host power domain.

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

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 1 <= len(self.id) <= DEVICE_ID_MAX_LENGTH:
            raise ValueError(f"device id must be 1 to {DEVICE_ID_MAX_LENGTH} characters: {self.id!r}")
        if self.kind not in DEVICE_KINDS:
            raise ValueError(f"device kind must be one of {', '.join(DEVICE_KINDS)}: {self.kind!r}")
        if not isinstance(self.index, int) or isinstance(self.index, bool) or self.index < 0:
            raise ValueError(f"device index must be an integer >= 0: {self.index!r}")
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

    def wire_dict(self) -> dict[str, Any]:
        """The device as the wire carries it: ``DeviceInfo.model_dump(exclude_none=True)``."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "index": self.index}
        if self.model is not None:
            out["model"] = self.model
        if self.power_limit_w is not None:
            out["power_limit_w"] = self.power_limit_w
        if self.slowdown_c is not None:
            out["slowdown_c"] = self.slowdown_c
        if self.shutdown_c is not None:
            out["shutdown_c"] = self.shutdown_c
        return out


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"device {name} must be a finite number: {value!r}")
    return float(value)
