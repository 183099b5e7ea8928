"""NVIDIA GPUs through NVML. The only module of wattledger that imports ``pynvml``.

Static facts (UUID, name, temperature thresholds) are read once when a GPU is discovered;
each sample then makes one pass over each GPU for the values that change. A reading the board
does not support is absent (``None``), never 0, and is not asked for again. A GPU that falls
off the bus is reported down while the others go on; it is looked at again every sample.
The ``pynvml`` module is injected so that tests can pass a fake with NVML's behaviour.

MIG: a board in MIG mode also reports each of its MIG devices (a compute instance of a GPU
instance) as a ``partition`` device: id = the MIG UUID, parent = the board's UUID, share = the
instance's compute slices / the board's slices (``nvmlDeviceGetMaxMigDeviceCount``: 7 on
A100/H100, 4 on A30). Slices, not measured activity: NVML has no utilization per MIG instance
(its utilization calls answer NotSupported on MIG handles; only DCGM's profiling fields have
it), and a slice is what a tenant is given whether it uses it or not. A partition has no
power of its own: its readings carry none, and the board's readings (its energy counter
above all) are unchanged. The instances are looked at again every ``MIG_RECHECK_SECONDS``
(MIG is reconfigured rarely, and only with no process on the board).

:class:`NvmlProcesses` lists each board's running compute processes (for the ``processes``
allocation source), each on its MIG instance where it runs in one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import (
    DeviceLost,
    FieldUnsupported,
    SourceError,
    SourceSample,
    SourceUnavailable,
)
from wattledger.contract import Device

log = logging.getLogger(__name__)

FIELD_MEMORY_TEMP = 82  # NVML_FI_DEV_MEMORY_TEMP (HBM temperature)
FIELD_ENERGY = 83  # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ since the driver was loaded)
#: read together in one nvmlDeviceGetFieldValues call per sample
FIELDS = (FIELD_MEMORY_TEMP, FIELD_ENERGY)
#: nvmlValue_t's member for each nvmlValueType_t (double, uint, ulong, ulonglong, slonglong, sint, ushort)
VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")

# NVML return codes (stable across NVML versions), used to map errors to our own types
SUCCESS, NOT_SUPPORTED, NO_PERMISSION, DRIVER_NOT_LOADED = 0, 3, 4, 9
LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND, GPU_IS_LOST, RESET_REQUIRED = 12, 13, 15, 16
LIB_RM_VERSION_MISMATCH, NO_DATA, GPU_NOT_FOUND = 18, 21, 28
NOT_FOUND, INVALID_ARGUMENT = 6, 2
MIG_ENABLED = 1  # NVML_DEVICE_MIG_ENABLE
NOT_IN_MIG = 0xFFFFFFFF  # a process's gpuInstanceId outside MIG (NVML_VALUE_NOT_AVAILABLE)
MIG_RECHECK_SECONDS = 60.0
_ABSENT = {NOT_SUPPORTED, FUNCTION_NOT_FOUND, NO_DATA}
_LOST = {GPU_IS_LOST, RESET_REQUIRED, GPU_NOT_FOUND}
_NO_DRIVER = {LIBRARY_NOT_FOUND, DRIVER_NOT_LOADED, LIB_RM_VERSION_MISMATCH, NO_PERMISSION}


def map_error(code: int, what: str) -> SourceError:
    """An NVML return code as one of our exception types."""
    if code in _ABSENT:
        return FieldUnsupported(what)
    if code in _LOST:
        return DeviceLost(what)
    if code in _NO_DRIVER:
        return SourceUnavailable(what)
    return SourceError(what)


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG device of a board, as NVML describes it."""

    handle: Any
    device: Device  # kind "partition": id = MIG UUID, parent = the board's UUID
    gpu_instance: int
    compute_instance: int


def _call(nvml: ModuleType, fn: Callable[..., Any], *args: Any) -> Any:
    """Call NVML; its errors come out as our exception types."""
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        raise map_error(int(getattr(exc, "value", -1)), f"{fn.__name__}: {exc}") from None


def mig_instances(nvml: ModuleType, board: Any, board_id: str, board_index: int) -> list[MigInstance]:
    """The MIG devices of a board in MIG mode ([] for a board without MIG or with it off).
    DeviceLost propagates; an instance that does not answer is left out this time."""
    get_mode = getattr(nvml, "nvmlDeviceGetMigMode", None)
    if get_mode is None:
        return []
    try:
        current = _call(nvml, get_mode, board)[0]
    except FieldUnsupported:  # no MIG on this board
        return []
    if int(current) != MIG_ENABLED:
        return []
    slots = int(_call(nvml, nvml.nvmlDeviceGetMaxMigDeviceCount, board))
    out = []
    for i in range(slots):
        try:
            handle = _call(nvml, nvml.nvmlDeviceGetMigDeviceHandleByIndex, board, i)
        except DeviceLost:
            raise
        except SourceError:  # NotFound: an empty slot
            continue
        try:
            uuid = _text(_call(nvml, nvml.nvmlDeviceGetUUID, handle))
            attrs = _call(nvml, nvml.nvmlDeviceGetAttributes, handle)
            gi = int(_call(nvml, nvml.nvmlDeviceGetGpuInstanceId, handle))
            ci = int(_call(nvml, nvml.nvmlDeviceGetComputeInstanceId, handle))
        except DeviceLost:
            raise
        except SourceError as exc:
            log.warning("NVML: GPU %d MIG device %d does not answer (%s)", board_index, i, exc)
            continue
        slices = int(attrs.computeInstanceSliceCount)
        share = min(1.0, slices / slots) if slots and slices > 0 else None
        if share is None:
            log.warning("NVML: GPU %d MIG device %s reports no compute slices; left out", board_index, uuid)
            continue
        model = (f"MIG {int(attrs.gpuInstanceSliceCount)}g ({slices}c, {int(attrs.multiprocessorCount)} SMs, "
                 f"{int(attrs.memorySizeMB)} MiB)")
        device = Device(id=uuid, kind="partition", index=board_index * slots + i, model=model,
                        parent=board_id, share=share)
        out.append(MigInstance(handle, device, gi, ci))
    return out


class _Gpu:
    """What the source keeps about one GPU between samples."""

    def __init__(self, index: int, handle: Any, info: Device) -> None:
        self.index = index
        self.handle = handle
        self.info = info
        self.unsupported: set[str] = set()  # readings this board answered NotSupported to
        self.migs: list[MigInstance] = []
        self.migs_at = float("-inf")  # ts of the last look at the board's MIG devices


class NvmlSource:
    name = "nvml"

    def __init__(self, node: str, nvml: ModuleType | None = None) -> None:
        self._node = node
        self._nvml = nvml
        self._gpus: list[_Gpu | None] = []  # None: not discovered yet (lost at start)
        self._clock_events_fn: Callable[[Any], int] | None = None

    # ---------------------------------------------------------------- errors

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call NVML; its errors come out as our exception types."""
        assert self._nvml is not None
        return _call(self._nvml, fn, *args)

    # ---------------------------------------------------------------- open / close

    def open(self) -> None:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:  # nvidia-ml-py missing from the install
                raise SourceUnavailable(f"NVML bindings (nvidia-ml-py) missing: {exc}") from None
            self._nvml = pynvml
        nvml = self._nvml
        try:
            self._call(nvml.nvmlInit)
        except SourceError as exc:
            raise SourceUnavailable(f"no NVIDIA driver (NVML): {exc}") from None
        count = int(self._call(nvml.nvmlDeviceGetCount))
        self._clock_events_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        self._gpus = [self._discover(i) for i in range(count)]
        found = [g for g in self._gpus if g is not None]
        log.info("NVML: %d GPU(s): %s", count, ", ".join(f"{g.index}={g.info.model}" for g in found))

    def _discover(self, index: int) -> _Gpu | None:
        nvml = self._nvml
        assert nvml is not None
        try:
            handle = self._call(nvml.nvmlDeviceGetHandleByIndex, index)
            uuid = _text(self._call(nvml.nvmlDeviceGetUUID, handle))
            name = _text(self._call(nvml.nvmlDeviceGetName, handle))
        except SourceError as exc:
            log.warning("NVML: GPU %d does not answer (%s); reported down", index, exc)
            return None
        info = Device(
            id=uuid, kind="gpu", index=index, model=name[:128],
            slowdown_c=self._optional(nvml.nvmlDeviceGetTemperatureThreshold, handle,
                                      nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
            shutdown_c=self._optional(nvml.nvmlDeviceGetTemperatureThreshold, handle,
                                      nvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN),
        )
        return _Gpu(index, handle, info)

    def _optional(self, fn: Callable[..., Any], *args: Any) -> float | None:
        try:
            value = self._call(fn, *args)
        except SourceError:
            return None
        return float(value) if value else None  # a 0 °C threshold means "not set"

    def close(self) -> None:
        if self._nvml is not None and self._gpus:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
        self._gpus = []

    # ---------------------------------------------------------------- sampling

    def sample(self, ts: float) -> SourceSample:
        out = SourceSample()
        for i, gpu in enumerate(self._gpus):
            if gpu is None:
                gpu = self._gpus[i] = self._discover(i)
                if gpu is None:
                    out.down.append(Device(id=f"{self._node}:gpu{i}", kind="gpu", index=i))
                    continue
            try:
                out.readings.append(self._read(gpu, ts))
                out.readings.extend(DeviceReading(device=m.device, ts=ts) for m in self._migs(gpu, ts))
            except DeviceLost:
                out.down.append(gpu.info)
        return out

    def _migs(self, gpu: _Gpu, ts: float) -> list[MigInstance]:
        """The board's MIG devices, looked at again every MIG_RECHECK_SECONDS."""
        if abs(ts - gpu.migs_at) >= MIG_RECHECK_SECONDS and "mig" not in gpu.unsupported:
            assert self._nvml is not None
            gpu.migs_at = ts
            try:
                gpu.migs = mig_instances(self._nvml, gpu.handle, gpu.info.id, gpu.index)
            except DeviceLost:
                raise
            except SourceError as exc:  # a transient failure: keep what was known
                log.debug("NVML: GPU %d MIG devices: %s", gpu.index, exc)
            if not gpu.migs and getattr(self._nvml, "nvmlDeviceGetMigMode", None) is None:
                gpu.unsupported.add("mig")
        return gpu.migs

    def _field(self, gpu: _Gpu, key: str, fn: Callable[..., Any] | None, *args: Any) -> Any:
        """One reading of one GPU; None if the board lacks it. DeviceLost propagates."""
        if key in gpu.unsupported or fn is None:
            return None
        try:
            return self._call(fn, gpu.handle, *args)
        except FieldUnsupported:
            gpu.unsupported.add(key)
            log.debug("NVML: GPU %d has no %s", gpu.index, key)
            return None
        except DeviceLost:
            raise
        except SourceError as exc:  # a transient failure: absent this time, asked again next
            log.debug("NVML: GPU %d %s failed: %s", gpu.index, key, exc)
            return None

    def _field_values(self, gpu: _Gpu) -> dict[int, float]:
        """The fields of ``FIELDS`` this board has, in one call (the field API carries a return
        code per field: NotSupported marks that field absent for good, as ``_field`` does)."""
        nvml = self._nvml
        assert nvml is not None
        wanted = [fid for fid in FIELDS if f"field {fid}" not in gpu.unsupported]
        values = self._field(gpu, "field_values", getattr(nvml, "nvmlDeviceGetFieldValues", None),
                             wanted) if wanted else None
        out: dict[int, float] = {}
        for fid, value in zip(wanted, values or (), strict=False):
            code = int(value.nvmlReturn)
            if code == SUCCESS:
                out[fid] = float(getattr(value.value, VALUE_MEMBERS[int(value.valueType)]))
                continue
            error = map_error(code, "")
            if isinstance(error, FieldUnsupported):
                gpu.unsupported.add(f"field {fid}")
            elif isinstance(error, DeviceLost):
                raise DeviceLost(f"GPU {gpu.index} field {fid}")
        return out

    def _energy_mj(self, gpu: _Gpu, fields: dict[int, float]) -> float | None:
        """The energy counter from the field call; through its own call only where the driver
        has no field API or no field 83 (the same counter either way)."""
        if FIELD_ENERGY in fields:
            return fields[FIELD_ENERGY]
        if "field_values" in gpu.unsupported or f"field {FIELD_ENERGY}" in gpu.unsupported:
            nvml = self._nvml
            assert nvml is not None
            value = self._field(gpu, "energy", nvml.nvmlDeviceGetTotalEnergyConsumption)
            return None if value is None else float(value)
        return None  # the field call failed this time: absent now, asked again next sample

    def _memory(self, gpu: _Gpu) -> Any:
        """Memory info as nvidia-smi shows it: version 2 leaves out what the driver reserves
        (version 1's ``used`` counts it, ~600 MiB on an idle H200); version 1 on older drivers."""
        nvml = self._nvml
        assert nvml is not None
        v2 = getattr(nvml, "nvmlMemory_v2", None)
        if v2 is not None and "memory_v2" not in gpu.unsupported:
            memory = self._field(gpu, "memory_v2", nvml.nvmlDeviceGetMemoryInfo, v2)
            if memory is not None or "memory_v2" not in gpu.unsupported:
                return memory
        return self._field(gpu, "memory", nvml.nvmlDeviceGetMemoryInfo)

    def _read(self, gpu: _Gpu, ts: float) -> DeviceReading:
        nvml = self._nvml
        assert nvml is not None
        f = self._field
        power_mw = f(gpu, "power", nvml.nvmlDeviceGetPowerUsage)
        fields = self._field_values(gpu)
        energy_mj = self._energy_mj(gpu, fields)
        die = nvml.NVML_TEMPERATURE_GPU
        temp = f(gpu, "temp", getattr(nvml, "nvmlDeviceGetTemperature", None), die)
        if temp is None and "temp" in gpu.unsupported:  # the old call is gone from future NVML
            temp = f(gpu, "temp_v", getattr(nvml, "nvmlDeviceGetTemperatureV", None), die)
        rates = f(gpu, "utilization", nvml.nvmlDeviceGetUtilizationRates)
        memory = self._memory(gpu)
        limit_mw = f(gpu, "power_limit", nvml.nvmlDeviceGetEnforcedPowerLimit)
        clock_mhz = f(gpu, "sm_clock", nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM)
        events = f(gpu, "clock_events", self._clock_events_fn)

        limit_w = float(limit_mw) / 1000.0 if limit_mw else None
        if limit_w != gpu.info.power_limit_w:  # rare: keep one Device while it holds
            gpu.info = dataclasses.replace(gpu.info, power_limit_w=limit_w)
        return DeviceReading(
            device=gpu.info,
            ts=ts,
            power_w=None if power_mw is None else power_mw / 1000.0,
            energy_j=None if energy_mj is None else int(energy_mj) / 1000.0,  # 64-bit mJ counter
            temp_c=None if temp is None else float(temp),
            mem_temp_c=fields.get(FIELD_MEMORY_TEMP),
            util=None if rates is None else rates.gpu / 100.0,
            mem_util=None if rates is None else rates.memory / 100.0,
            sm_clock_hz=None if clock_mhz is None else clock_mhz * 1e6,
            clock_events=None if events is None else int(events),
            mem_used_bytes=None if memory is None else float(memory.used),
            mem_total_bytes=None if memory is None else float(memory.total),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process NVML sees on a device."""

    pid: int  # in the host's pid namespace
    device_id: str  # the board's UUID, or its MIG device's where the process runs in one
    used_memory_bytes: float | None


class NvmlProcesses:
    """The compute processes on each board (``nvmlDeviceGetComputeRunningProcesses``, v3: pid,
    used memory, GPU and compute instance), for the ``processes`` allocation source. It holds
    its own reference to NVML (``nvmlInit`` counts them; ``close`` gives it back), so it runs
    beside the nvml source or without it."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._nvml = nvml
        self._boards: list[tuple[Any, str, int]] = []  # handle, UUID, index
        self._migs: dict[str, dict[tuple[int, int], str]] = {}  # board UUID -> (gi, ci) -> MIG UUID
        self._migs_at = float("-inf")
        self._open = False

    def open(self) -> None:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                raise SourceUnavailable(f"NVML bindings (nvidia-ml-py) missing: {exc}") from None
            self._nvml = pynvml
        nvml = self._nvml
        try:
            _call(nvml, nvml.nvmlInit)
        except SourceError as exc:
            raise SourceUnavailable(f"no NVIDIA driver (NVML): {exc}") from None
        self._open = True
        self._boards = []
        for i in range(int(_call(nvml, nvml.nvmlDeviceGetCount))):
            try:
                handle = _call(nvml, nvml.nvmlDeviceGetHandleByIndex, i)
                self._boards.append((handle, _text(_call(nvml, nvml.nvmlDeviceGetUUID, handle)), i))
            except SourceError as exc:
                log.warning("NVML: GPU %d does not answer (%s); its processes are not listed", i, exc)

    def close(self) -> None:
        if self._nvml is not None and self._open:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
        self._open = False

    def processes(self, now: float) -> list[GpuProcess]:
        """Every compute process on every board that answers; a board that is lost or does not
        list processes is left out (its holdings end), the others go on."""
        nvml = self._nvml
        assert nvml is not None
        if abs(now - self._migs_at) >= MIG_RECHECK_SECONDS:
            self._migs_at = now
            self._migs = {}
            for handle, uuid, index in self._boards:
                with contextlib.suppress(SourceError):
                    self._migs[uuid] = {(m.gpu_instance, m.compute_instance): m.device.id
                                        for m in mig_instances(nvml, handle, uuid, index)}
        out: list[GpuProcess] = []
        for handle, uuid, index in self._boards:
            try:
                listed: Sequence[Any] = _call(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle)
            except SourceError as exc:
                log.debug("NVML: GPU %d processes: %s", index, exc)
                continue
            migs = self._migs.get(uuid, {})
            for p in listed:
                gi = int(getattr(p, "gpuInstanceId", NOT_IN_MIG))
                ci = int(getattr(p, "computeInstanceId", NOT_IN_MIG))
                used = p.usedGpuMemory
                out.append(GpuProcess(pid=int(p.pid), device_id=migs.get((gi, ci), uuid),
                                      used_memory_bytes=None if used is None else float(used)))
        return out
