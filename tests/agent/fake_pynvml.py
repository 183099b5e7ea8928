"""A stand-in for the ``pynvml`` module with NVML's behaviour, for the nvml source's tests.

It has the real module's shape: ``NVMLError`` whose constructor maps a return code to a
subclass (``NVMLError_NotSupported``, ``NVMLError_GpuIsLost``, ``NVMLError_LibraryNotFound``
...), the ``NVML_*`` constants, handles from ``nvmlDeviceGetHandleByIndex``, raw units (mW,
mJ, MHz, percent), ``NVMLError_Uninitialized`` before ``nvmlInit``, and field values that
carry their own return code. Boards differ the way real ones do: a board without an energy
counter raises NotSupported, one without HBM reports field 82 as NotSupported, an old driver
has no ``nvmlDeviceGetFieldValues`` at all (FunctionNotFound), a lost GPU raises GpuIsLost
for everything.

MIG and processes as nvidia-ml-py 13 has them: ``nvmlDeviceGetMigMode`` -> [current, pending]
(NotSupported on a board without MIG), ``nvmlDeviceGetMaxMigDeviceCount``,
``nvmlDeviceGetMigDeviceHandleByIndex`` (NotFound for an empty slot, InvalidArgument past the
count), ``nvmlDeviceGetAttributes`` (``c_nvmlDeviceAttributes``' fields), the MIG handle's
``nvmlDeviceGetGpuInstanceId`` / ``nvmlDeviceGetComputeInstanceId``, and
``nvmlDeviceGetComputeRunningProcesses`` in the v3 shape (``pid``, ``usedGpuMemory`` - None
where NVML has no value -, ``gpuInstanceId``, ``computeInstanceId``; 0xFFFFFFFF outside MIG):
the board's handle lists every process, a MIG handle those of its instance.
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
    "NotFound": 6,
    "DriverNotLoaded": 9,
    "LibraryNotFound": 12,
    "FunctionNotFound": 13,
    "GpuIsLost": 15,
    "Unknown": 999,
}
TEXT = {
    1: "Uninitialized",
    2: "Invalid Argument",
    3: "Not Supported",
    4: "Insufficient Permissions",
    6: "Not Found",
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
    #: None: a board without MIG (NotSupported); else its MIG slots (None: an empty slot)
    mig: list[Mig | None] | None = None
    mig_enabled: bool = True  # with ``mig`` set: the current MIG mode
    sms: int = 132
    processes: list[Process] = field(default_factory=list)
    process_permission: bool = True  # False: NoPermission for the process list


NA_UINT = 0xFFFFFFFF  # NVML_VALUE_NOT_AVAILABLE_uint: a process outside any MIG instance


@dataclass
class Process:
    pid: int
    used_bytes: int | None = 1 << 30
    gpu_instance: int = NA_UINT
    compute_instance: int = NA_UINT


@dataclass
class Mig:
    """One MIG device (a compute instance in a GPU instance) of a board."""

    uuid: str
    gpu_instance: int
    compute_instance: int = 0
    gpu_slices: int = 1
    compute_slices: int = 1
    sms: int = 16
    memory_mb: int = 9856
    parent: Board | None = None  # set by make_nvml
    calls: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> bool:
        return self.parent is not None and self.parent.lost


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
    m.NVML_DEVICE_MIG_DISABLE = 0  # type: ignore[attr-defined]
    m.NVML_DEVICE_MIG_ENABLE = 1  # type: ignore[attr-defined]
    state = {"init": 0}
    for b in boards:
        for slot in b.mig or ():
            if slot is not None:
                slot.parent = b

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

    def whole(h: Any, what: str) -> Board:
        """A board's handle (a MIG handle is refused, as NVML refuses it for board-only calls)."""
        if isinstance(h, Mig):
            check_init()
            raise NVMLError(CODES["InvalidArgument"])
        return board(h, what)

    def mig_of(h: Any, what: str) -> Mig:
        check_init()
        if not isinstance(h, Mig):
            raise NVMLError(CODES["InvalidArgument"])
        h.calls[what] += 1
        if h.lost:
            raise NVMLError(CODES["GpuIsLost"])
        return h

    def nvmlDeviceGetMigMode(h: Board) -> list[int]:
        b = whole(h, "mig_mode")
        if b.mig is None:
            raise NVMLError(CODES["NotSupported"])
        return [int(b.mig_enabled), int(b.mig_enabled)]

    def nvmlDeviceGetMaxMigDeviceCount(h: Board) -> int:
        b = whole(h, "max_mig")
        if b.mig is None:
            raise NVMLError(CODES["NotSupported"])
        return len(b.mig)

    def nvmlDeviceGetMigDeviceHandleByIndex(h: Board, index: int) -> Mig:
        b = whole(h, "mig_handle")
        if b.mig is None or not b.mig_enabled or not 0 <= index < len(b.mig):
            raise NVMLError(CODES["InvalidArgument"])
        slot = b.mig[index]
        if slot is None:
            raise NVMLError(CODES["NotFound"])
        return slot

    def nvmlDeviceGetAttributes(h: Any) -> Any:
        if isinstance(h, Mig):
            g = mig_of(h, "attributes")
            return types.SimpleNamespace(multiprocessorCount=g.sms, sharedCopyEngineCount=1,
                                         sharedDecoderCount=0, sharedEncoderCount=0, sharedJpegCount=0,
                                         sharedOfaCount=0, gpuInstanceSliceCount=g.gpu_slices,
                                         computeInstanceSliceCount=g.compute_slices, memorySizeMB=g.memory_mb)
        b = board(h, "attributes")
        return types.SimpleNamespace(multiprocessorCount=b.sms, sharedCopyEngineCount=0, sharedDecoderCount=0,
                                     sharedEncoderCount=0, sharedJpegCount=0, sharedOfaCount=0,
                                     gpuInstanceSliceCount=0, computeInstanceSliceCount=0,
                                     memorySizeMB=b.mem_total >> 20)

    def nvmlDeviceGetGpuInstanceId(h: Mig) -> int:
        return mig_of(h, "gpu_instance").gpu_instance

    def nvmlDeviceGetComputeInstanceId(h: Mig) -> int:
        return mig_of(h, "compute_instance").compute_instance

    def nvmlDeviceGetComputeRunningProcesses(h: Any) -> list[Any]:
        if isinstance(h, Mig):
            g = mig_of(h, "processes")
            assert g.parent is not None
            b = g.parent
            procs = [p for p in b.processes if (p.gpu_instance, p.compute_instance) ==
                     (g.gpu_instance, g.compute_instance)]
        else:
            b = board(h, "processes")
            procs = list(b.processes)
        if not b.process_permission:
            raise NVMLError(CODES["NoPermission"])
        return [types.SimpleNamespace(pid=p.pid, usedGpuMemory=p.used_bytes, gpuInstanceId=p.gpu_instance,
                                      computeInstanceId=p.compute_instance) for p in procs]

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
        nvmlDeviceGetMigMode,
        nvmlDeviceGetMaxMigDeviceCount,
        nvmlDeviceGetMigDeviceHandleByIndex,
        nvmlDeviceGetAttributes,
        nvmlDeviceGetGpuInstanceId,
        nvmlDeviceGetComputeInstanceId,
        nvmlDeviceGetComputeRunningProcesses,
    ):
        setattr(m, fn.__name__, fn)
    m.initialized = lambda: state["init"] > 0  # type: ignore[attr-defined]
    return m
