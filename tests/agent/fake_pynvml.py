"""A stand-in for the ``pynvml`` module with NVML's behaviour, for the nvml source's tests.

It has the real module's shape: ``NVMLError`` whose constructor maps a return code to a
subclass (``NVMLError_NotSupported``, ``NVMLError_GpuIsLost``, ``NVMLError_LibraryNotFound``
...), the ``NVML_*`` constants, handles from ``nvmlDeviceGetHandleByIndex``, raw units (mW,
mJ, MHz, percent), ``NVMLError_Uninitialized`` before ``nvmlInit``, and field values that
carry their own return code. Boards differ the way real ones do: a board without an energy
counter raises NotSupported, one without HBM reports field 82 as NotSupported, an old driver
has no ``nvmlDeviceGetFieldValues`` at all (FunctionNotFound), a lost GPU raises GpuIsLost
for everything.
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

CODES = {
    "Uninitialized": 1,
    "InvalidArgument": 2,
    "NotSupported": 3,
    "NoPermission": 4,
    "DriverNotLoaded": 9,
    "LibraryNotFound": 12,
    "FunctionNotFound": 13,
    "GpuIsLost": 15,
    "Unknown": 999,
}
TEXT = {
    1: "Uninitialized",
    3: "Not Supported",
    9: "Driver Not Loaded",
    12: "NVML Shared Library Not Found",
    13: "Function Not Found",
    15: "GPU is lost",
    999: "Unknown Error",
}


class NVMLError(Exception):
    _valClassMapping: dict[int, type[NVMLError]] = {}  # noqa: RUF012 - as in pynvml
    value: int

    def __new__(cls, value: int) -> NVMLError:  # as pynvml: NVMLError(3) is an NVMLError_NotSupported
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return TEXT.get(self.value, f"NVML Error with code {self.value}")


ERROR_CLASSES: dict[str, type[NVMLError]] = {}
for _name, _code in CODES.items():
    _cls = type(f"NVMLError_{_name}", (NVMLError,), {})
    NVMLError._valClassMapping[_code] = _cls
    ERROR_CLASSES[_name] = _cls


@dataclass
class Board:
    """One fake GPU, in NVML's raw units. ``None`` for a reading means NotSupported."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    power_mw: int | None = 512_300
    energy_mj: int | None = 123_456_789
    temp: int | None = 61
    mem_temp: int | None = 70  # field 82
    util_gpu: int = 93
    util_mem: int = 41
    mem_used: int = 60 << 30  # what nvidia-smi shows (memory info v2's ``used``)
    mem_reserved: int = 615 << 20  # the driver's own; v1's ``used`` counts it too
    mem_total: int = 80 << 30
    limit_mw: int | None = 700_000
    sm_mhz: int | None = 1980
    events: int | None = 0x20
    slowdown: int | None = 87
    shutdown: int | None = 92
    lost: bool = False
    field_api: bool = True  # False: a driver too old for nvmlDeviceGetFieldValues
    memory_v2: bool = True  # False: a driver without nvmlDeviceGetMemoryInfo_v2
    energy_field: bool = True  # False: field 83 NotSupported though the direct call answers
    calls: Counter[str] = field(default_factory=Counter)


@dataclass
class _FieldValue:
    fieldId: int
    nvmlReturn: int
    valueType: int = 1
    value: Any = None


def make_nvml(boards: list[Board], *, driver: str | None = None) -> types.ModuleType:
    """A fake ``pynvml`` module over ``boards``. ``driver``: None (loaded), "missing"
    (LibraryNotFound from nvmlInit) or "not_loaded" (DriverNotLoaded)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError  # type: ignore[attr-defined]
    for name, cls in ERROR_CLASSES.items():
        setattr(m, f"NVMLError_{name}", cls)
    m.NVML_SUCCESS = 0  # type: ignore[attr-defined]
    m.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    m.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0  # type: ignore[attr-defined]
    m.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1  # type: ignore[attr-defined]
    m.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    m.NVML_FI_DEV_MEMORY_TEMP = 82  # type: ignore[attr-defined]
    m.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION = 83  # type: ignore[attr-defined]
    m.nvmlMemory_v2 = 0x02000028  # type: ignore[attr-defined]
    state = {"init": 0}

    def check_init() -> None:
        if not state["init"]:
            raise NVMLError(CODES["Uninitialized"])

    def board(handle: Board, what: str) -> Board:
        check_init()
        handle.calls[what] += 1
        if handle.lost:
            raise NVMLError(CODES["GpuIsLost"])
        return handle

    def value(handle: Board, what: str, attr: str) -> Any:
        v = getattr(board(handle, what), attr)
        if v is None:
            raise NVMLError(CODES["NotSupported"])
        return v

    def nvmlInit() -> None:
        if driver == "missing":
            raise NVMLError(CODES["LibraryNotFound"])
        if driver == "not_loaded":
            raise NVMLError(CODES["DriverNotLoaded"])
        state["init"] += 1

    def nvmlShutdown() -> None:
        check_init()
        state["init"] -= 1

    def nvmlDeviceGetCount() -> int:
        check_init()
        return len(boards)

    def nvmlDeviceGetHandleByIndex(index: int) -> Board:
        check_init()
        if not 0 <= index < len(boards):
            raise NVMLError(CODES["InvalidArgument"])
        if boards[index].lost:
            raise NVMLError(CODES["GpuIsLost"])
        return boards[index]

    def nvmlDeviceGetUUID(h: Board) -> str:
        return str(board(h, "uuid").uuid)

    def nvmlDeviceGetName(h: Board) -> bytes:
        return board(h, "name").name.encode()  # older bindings return bytes

    def nvmlDeviceGetTemperatureThreshold(h: Board, kind: int) -> int:
        return int(value(h, "threshold", "shutdown" if kind == 0 else "slowdown"))

    def nvmlDeviceGetPowerUsage(h: Board) -> int:
        return int(value(h, "power", "power_mw"))

    def nvmlDeviceGetTotalEnergyConsumption(h: Board) -> int:
        return int(value(h, "energy", "energy_mj"))

    def nvmlDeviceGetTemperature(h: Board, sensor: int) -> int:
        return int(value(h, "temp", "temp"))

    def nvmlDeviceGetUtilizationRates(h: Board) -> Any:
        b = board(h, "utilization")
        return types.SimpleNamespace(gpu=b.util_gpu, memory=b.util_mem)

    def nvmlDeviceGetMemoryInfo(h: Board, version: int | None = None) -> Any:
        free = h.mem_total - h.mem_used - h.mem_reserved
        if not version:  # v1: ``used`` includes what the driver reserved
            b = board(h, "memory")
            return types.SimpleNamespace(used=b.mem_used + b.mem_reserved, total=b.mem_total, free=free)
        b = board(h, "memory_v2")
        if not b.memory_v2:  # pynvml looks up nvmlDeviceGetMemoryInfo_v2 and finds none
            raise NVMLError(CODES["FunctionNotFound"])
        return types.SimpleNamespace(version=version, used=b.mem_used, reserved=b.mem_reserved,
                                     total=b.mem_total, free=free)

    def nvmlDeviceGetEnforcedPowerLimit(h: Board) -> int:
        return int(value(h, "power_limit", "limit_mw"))

    def nvmlDeviceGetClockInfo(h: Board, clock: int) -> int:
        return int(value(h, "sm_clock", "sm_mhz"))

    def nvmlDeviceGetCurrentClocksEventReasons(h: Board) -> int:
        return int(value(h, "clock_events", "events"))

    def nvmlDeviceGetFieldValues(h: Board, ids: list[int]) -> list[_FieldValue]:
        b = board(h, "field_values")
        if not b.field_api:
            raise NVMLError(CODES["FunctionNotFound"])
        out = []
        for fid in ids:
            b.calls[f"field {fid}"] += 1
            if fid == 82 and b.mem_temp is not None:
                out.append(_FieldValue(fid, 0, 1, types.SimpleNamespace(uiVal=b.mem_temp)))
            elif fid == 83 and b.energy_mj is not None and b.energy_field:  # unsigned long long
                out.append(_FieldValue(fid, 0, 3, types.SimpleNamespace(ullVal=b.energy_mj)))
            else:
                out.append(_FieldValue(fid, CODES["NotSupported"]))
        return out

    for fn in (
        nvmlInit,
        nvmlShutdown,
        nvmlDeviceGetCount,
        nvmlDeviceGetHandleByIndex,
        nvmlDeviceGetUUID,
        nvmlDeviceGetName,
        nvmlDeviceGetTemperatureThreshold,
        nvmlDeviceGetPowerUsage,
        nvmlDeviceGetTotalEnergyConsumption,
        nvmlDeviceGetTemperature,
        nvmlDeviceGetUtilizationRates,
        nvmlDeviceGetMemoryInfo,
        nvmlDeviceGetEnforcedPowerLimit,
        nvmlDeviceGetClockInfo,
        nvmlDeviceGetCurrentClocksEventReasons,
        nvmlDeviceGetFieldValues,
    ):
        setattr(m, fn.__name__, fn)
    m.initialized = lambda: state["init"] > 0  # type: ignore[attr-defined]
    return m
