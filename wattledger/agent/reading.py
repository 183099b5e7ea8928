"""What one sample of one device yields, as the agent passes it from sources to exposition
and to the delivery spool. Base units throughout; ``None`` means "not available on this
device" (not supported, or the query failed), never 0."""

from __future__ import annotations

from dataclasses import dataclass

from wattledger.contract import Device


@dataclass(frozen=True, slots=True)
class DeviceReading:
    device: Device
    ts: float  # unix seconds when the device was queried
    power_w: float | None = None
    energy_j: float | None = None  # cumulative hardware counter, joules
    temp_c: float | None = None
    mem_temp_c: float | None = None
    util: float | None = None  # 0..1
    mem_util: float | None = None  # 0..1
    sm_clock_hz: float | None = None
    clock_events: int | None = None  # NVML clock-event (throttle) reason bitmask
    mem_used_bytes: float | None = None
    mem_total_bytes: float | None = None
