"""A stand-in for the ``amdsmi`` module with AMD SMI's behaviour, for the amdsmi source's tests.

Where each shape comes from (ROCm/amdsmi ``py-interface/``, as published on PyPI as
``amdsmi`` 7.0.2, and the ROCm 6.3 sources):

- function names, arguments and the dicts they return: ``amdsmi_interface.py``
  (``amdsmi_get_gpu_device_bdf`` writes the PCI address as its ``_format_bdf`` does: lower-case
  hex, ``0000:c1:00.0``). Handles come from ``amdsmi_get_processor_handles()``; a call given
  something else than a handle, or an int where an enum member is wanted
  (``AmdSmiTemperatureType`` ...), raises ``AmdSmiParameterException``, as the real
  ``isinstance`` checks do.
- errors: ``amdsmi_exception.py``: ``AmdSmiLibraryException(err_code)`` with ``err_code``,
  ``err_info``, ``get_error_info()`` and a two-line ``__str__``; ``AmdSmiRetryException`` and
  ``AmdSmiTimeoutException`` for RETRY and TIMEOUT; the status codes of ``amdsmi_wrapper.py``
  (``amdsmi_status_t``). Before ``amdsmi_init`` every call fails with AMDSMI_STATUS_NOT_INIT
  (``AMDSMI_CHECK_INIT`` in ``src/amd_smi/amd_smi.cc``).
- units: socket power in W (``amd-smi metric --power`` prints ``current_socket_power`` /
  ``average_socket_power`` as W); ``power_cap`` in µW (``amdsmi.h``, ``amdsmi_power_cap_info_t``);
  the energy counter in steps of ``counter_resolution`` µJ (``amdsmi.h``,
  ``amdsmi_get_energy_count``; rocm_smi reports 15.3, a C float); temperatures in °C
  (``amd_smi.cc`` divides rocm_smi's millidegrees by 1000, although the README says
  millidegrees); activity in %; memory in bytes. The library writes "N/A" for the firmware's
  "no value" (0xFFFF in ``amdsmi_get_power_info`` and ``amdsmi_get_gpu_activity``, all-ones
  in ``amdsmi_get_gpu_metrics_info``).
- versions: before 6.4 ``amdsmi_get_energy_count`` also had the count under ``power``
  ("deprecating in 6.4"; 6.0 had only ``power``); 7.0 added ``socket_power`` to
  ``amdsmi_get_power_info``.
- the two generations (the Linux amdgpu driver, ``aldebaran_ppt.c`` and
  ``smu_v13_0_6_ppt.c``): an MI250X module is two GPUs, and "valid power data is available only
  from primary die": the second die answers 0 W, an energy count of 0 and a power cap of 0;
  MI200 fills ``average_socket_power`` (``current_socket_power`` N/A) and has no throttle
  residency counters. MI300X fills ``current_socket_power`` (``average_socket_power`` N/A),
  has no edge sensor (NOT_SUPPORTED), and counts throttle residency (``ppt_residency_acc``,
  ``socket_thm_residency_acc`` ... with ``accumulation_counter``) in its metrics table, from
  which ``amdsmi_get_violation_status`` works out what is active (sleeping 100 ms in between).
- a virtual machine guest has no energy counter (``amdsmi.h``: "not supported on virtual
  machine guest"): NOT_SUPPORTED.
- a GPU that stopped answering: AMD SMI has no "lost" code; its sysfs reads fail with EIO,
  which rocm_smi maps to UNEXPECTED_SIZE (``ErrnoToRsmiStatus``). That a lost GPU fails every
  call that way is this fake's assumption, until a trace of one is recorded.
- no library: the ``amdsmi`` package imports its ctypes wrapper, which prints the loader's
  error to stdout and then fails with ``KeyError('libamd_smi.so')`` (``amdsmi_wrapper.py``):
  :func:`import_without_rocm` does the same.

The numbers of the boards below are test values in the library's units, not measurements.
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

STATUS = {
    "INVAL": 1, "NOT_SUPPORTED": 2, "NOT_YET_IMPLEMENTED": 3, "FAIL_LOAD_MODULE": 4, "DRM_ERROR": 6,
    "TIMEOUT": 8, "RETRY": 9, "NO_PERM": 10, "IO": 12, "FILE_ERROR": 14, "INIT_ERROR": 18,
    "BUSY": 30, "NOT_FOUND": 31, "NOT_INIT": 32, "DRIVER_NOT_LOADED": 34, "NO_DATA": 40,
    "UNEXPECTED_SIZE": 42, "UNEXPECTED_DATA": 43, "UNKNOWN_ERROR": 0xFFFFFFFF,
}
INFO = {
    1: "AMDSMI_STATUS_INVAL - Invalid parameters",
    2: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    8: "AMDSMI_STATUS_TIMEOUT - Timeout in API call",
    9: "AMDSMI_STATUS_RETRY - Retry operation",
    32: "AMDSMI_STATUS_NOT_INIT - Device not initialized",
    34: "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded",
    42: "AMDSMI_STATUS_UNEXPECTED_SIZE - unexpected size of data was read",
}
RESOLUTION_UJ = 15.300000190734863  # 15.3 as the C float it is
UINT64_MAX = 0xFFFFFFFFFFFFFFFF


class AmdSmiException(Exception):
    """Base smi exception class"""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = INFO.get(err_code, "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred")

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_info(self) -> str:
        return self.err_info

    def get_error_code(self) -> int:
        return self.err_code


class AmdSmiRetryException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(STATUS["RETRY"])


class AmdSmiTimeoutException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(STATUS["TIMEOUT"])


class AmdSmiParameterException(AmdSmiException):
    def __init__(self, received: object, expected: object) -> None:
        super().__init__()
        self.err_code = None
        self.err_msg = f"Invalid parameter:\nActual type: {type(received)}\nExpected type: {expected}"

    def __str__(self) -> str:
        return self.err_msg


class AmdSmiInitFlags(IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1
    INIT_AMD_GPUS = 2
    INIT_NON_AMD_CPUS = 4
    INIT_NON_AMD_GPUS = 8
    INIT_AMD_APUS = 3


class AmdSmiTemperatureType(IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2
    HBM_0 = 3
    HBM_1 = 4
    HBM_2 = 5
    HBM_3 = 6
    PLX = 7


class AmdSmiTemperatureMetric(IntEnum):
    CURRENT = 0
    MAX = 1
    MIN = 2
    MAX_HYST = 3
    MIN_HYST = 4
    CRITICAL = 5
    CRITICAL_HYST = 6
    EMERGENCY = 7
    EMERGENCY_HYST = 8
    CRIT_MIN = 9
    CRIT_MIN_HYST = 10
    OFFSET = 11
    LOWEST = 12
    HIGHEST = 13


class AmdSmiMemoryType(IntEnum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


#: the throttle residency counters of the MI300 metrics table
RESIDENCY_KEYS = ("prochot_residency_acc", "ppt_residency_acc", "socket_thm_residency_acc",
                  "vr_thm_residency_acc", "hbm_thm_residency_acc")


@dataclass
class Gpu:
    """One fake GPU (one die / processor handle), in AMD SMI's units. ``None``: NOT_SUPPORTED."""

    generation: str = "mi300"  # "mi300" | "mi200": which power key and which metrics it fills
    market_name: str = "AMD Instinct MI300X"
    product_name: str = "AMD Instinct MI300X OAM"
    uuid: str | None = "ecff74b5-0000-1000-80da-0dd9ae88d8a5"
    bdf: str = "0000:05:00.0"  # the PCI address, as amdsmi_interface._format_bdf writes it
    asic_serial: str = "0x2B7A1D5C3E4F6071"
    power_w: int = 612  # current_socket_power (MI300) or average_socket_power (MI200)
    energy_count: int | None = 1_234_567_890_123  # steps of RESOLUTION_UJ
    edge: int | None = None
    hotspot: int | None = 71
    vram: int | None = 64
    critical: int | None = 100  # junction CRITICAL (amd-smi: SLOWDOWN)
    emergency: int | None = 105  # junction EMERGENCY (amd-smi: SHUTDOWN)
    gfx: int | str = 97
    umc: int | str = 38
    power_cap_uw: int = 750_000_000
    vram_used: int = 150 << 30
    vram_total: int = 192 << 30
    #: MI300: the residency counters of the metrics table and the firmware's sample count
    accumulation: int = 1_000_000
    residency: dict[str, int] | None = field(default_factory=lambda: dict.fromkeys(RESIDENCY_KEYS, 10))
    lost: bool = False
    calls: Counter[str] = field(default_factory=Counter)

    def tick(self, samples: int = 1000, throttled: tuple[str, ...] = ()) -> None:
        """The firmware's metrics advancing by ``samples``, ``throttled`` counting in all of them."""
        self.accumulation += samples
        for key in throttled:
            assert self.residency is not None
            self.residency[key] += samples


#: the PCI buses of an 8-GPU MI300X platform's OAMs (each GPU behind its own switch)
MI300X_BUSES = (0x05, 0x26, 0x46, 0x65, 0x85, 0xA6, 0xC6, 0xE5)


def mi300x(i: int = 0) -> Gpu:
    return Gpu(uuid=f"ecff74b5-0000-1000-80da-0dd9ae88d8{i:02x}", asic_serial=f"0x2B7A1D5C3E4F60{i:02X}",
               bdf=f"0000:{MI300X_BUSES[i % 8]:02x}:00.0")


def mi250x(module: int = 0) -> list[Gpu]:
    """The two dies of one MI250X module: the module's power and energy on the first."""
    dies = []
    for die in range(2):
        primary = die == 0
        dies.append(Gpu(
            generation="mi200", market_name="AMD Instinct MI250X", product_name="AMD Instinct MI250X",
            uuid=f"1aff740c-0000-1000-8026-a0b1c2d3e{module:01x}{die:02x}",
            bdf=f"0000:{0xC1 + 8 * module + 5 * die:02x}:00.0",  # each die is a PCI device of its own
            asic_serial=f"0x5C1E0A2B3C4D{module:02X}{die:02X}",
            power_w=402 if primary else 0, energy_count=987_654_321_000 if primary else 0,
            edge=52, hotspot=68, vram=61, critical=100, emergency=105, gfx=88, umc=22,
            power_cap_uw=560_000_000 if primary else 0, vram_used=40 << 30, vram_total=64 << 30,
            residency=None))
    return dies


class _Handle:
    """``amdsmi_wrapper.amdsmi_processor_handle``: an opaque pointer to one processor."""

    def __init__(self, gpu: Gpu) -> None:
        self.gpu = gpu


def import_without_rocm(name: str) -> types.ModuleType:
    """``import amdsmi`` on a machine with the package but without ROCm's libamd_smi.so."""
    print("libamd_smi.so: cannot open shared object file: No such file or directory")
    print("Unable to find libamd_smi.so library try installing amd-smi-lib from your package manager")
    raise KeyError("libamd_smi.so")


def make_amdsmi(gpus: list[Gpu], *, driver: str | None = None, version: str = "7.0",
                vm_guest: bool = False) -> types.ModuleType:
    """A fake ``amdsmi`` module over ``gpus``. ``driver``: None (loaded) or "not_loaded"
    (DRIVER_NOT_LOADED from amdsmi_init). ``version``: "6.0", "6.2" or "7.0" (the keys of the
    energy and power dicts). ``vm_guest``: no energy counter."""
    m = types.ModuleType("amdsmi")
    for cls in (AmdSmiException, AmdSmiLibraryException, AmdSmiRetryException, AmdSmiTimeoutException,
                AmdSmiParameterException, AmdSmiInitFlags, AmdSmiTemperatureType, AmdSmiTemperatureMetric,
                AmdSmiMemoryType):
        setattr(m, cls.__name__, cls)
    handles = [_Handle(g) for g in gpus]
    state = {"init": 0}

    def gpu(handle: object, what: str) -> Gpu:
        if not state["init"]:
            raise AmdSmiLibraryException(STATUS["NOT_INIT"])
        if not isinstance(handle, _Handle):
            raise AmdSmiParameterException(handle, _Handle)
        handle.gpu.calls[what] += 1
        if handle.gpu.lost:
            raise AmdSmiLibraryException(STATUS["UNEXPECTED_SIZE"])
        return handle.gpu

    def need(value: Any) -> Any:
        if value is None:
            raise AmdSmiLibraryException(STATUS["NOT_SUPPORTED"])
        return value

    def amdsmi_init(flag: AmdSmiInitFlags = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        if not isinstance(flag, AmdSmiInitFlags):
            raise AmdSmiParameterException(flag, AmdSmiInitFlags)
        if driver == "not_loaded":
            raise AmdSmiLibraryException(STATUS["DRIVER_NOT_LOADED"])
        state["init"] += 1

    def amdsmi_shut_down() -> None:
        state["init"] = 0

    def amdsmi_get_processor_handles() -> list[_Handle]:
        if not state["init"]:
            raise AmdSmiLibraryException(STATUS["NOT_INIT"])
        return list(handles)

    def amdsmi_get_gpu_device_uuid(h: object) -> str:
        return str(need(gpu(h, "uuid").uuid))

    def amdsmi_get_gpu_device_bdf(h: object) -> str:
        return gpu(h, "bdf").bdf

    def amdsmi_get_gpu_asic_info(h: object) -> dict[str, Any]:
        g = gpu(h, "asic")
        return {"market_name": g.market_name, "vendor_id": "0x1002",
                "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                "subvendor_id": "0x1002", "device_id": "0x74a1" if g.generation == "mi300" else "0x740c",
                "rev_id": "0x00", "asic_serial": g.asic_serial, "oam_id": 0, "num_compute_units": 304,
                "target_graphics_version": "gfx942" if g.generation == "mi300" else "gfx90a",
                "subsystem_id": "0x74a1"}

    def amdsmi_get_gpu_board_info(h: object) -> dict[str, Any]:
        g = gpu(h, "board")
        return {"model_number": "102-G30211-0C", "product_serial": "692251001124", "fru_id": "N/A",
                "product_name": g.product_name, "manufacturer_name": "AMD"}

    def amdsmi_get_gpu_driver_info(h: object) -> dict[str, Any]:
        gpu(h, "driver")
        return {"driver_name": "amdgpu", "driver_version": "6.10.5", "driver_date": "2015/01/01 00:00"}

    def amdsmi_get_lib_version() -> dict[str, Any]:
        if not state["init"]:
            raise AmdSmiLibraryException(STATUS["NOT_INIT"])
        major, minor = (int(x) for x in version.split("."))
        return {"major": major, "minor": minor, "release": 0, "build": f"{version}.0"}

    def amdsmi_get_power_info(h: object) -> dict[str, Any]:
        g = gpu(h, "power")
        current = g.power_w if g.generation == "mi300" else "N/A"
        average = g.power_w if g.generation == "mi200" else "N/A"
        out: dict[str, Any] = {"current_socket_power": current, "average_socket_power": average,
                               "gfx_voltage": "N/A", "soc_voltage": "N/A", "mem_voltage": "N/A",
                               "power_limit": g.power_cap_uw}
        if version >= "7":
            out = {"socket_power": g.power_w, **out}
        return out

    def amdsmi_get_energy_count(h: object) -> dict[str, Any]:
        g = gpu(h, "energy")
        if vm_guest:
            raise AmdSmiLibraryException(STATUS["NOT_SUPPORTED"])
        count = need(g.energy_count)
        keys = {"6.0": ("power",), "6.2": ("power", "energy_accumulator")}.get(version,
                                                                            ("energy_accumulator",))
        return {**dict.fromkeys(keys, count), "counter_resolution": RESOLUTION_UJ,
                "timestamp": 1_712_024_507_665_000}

    def amdsmi_get_temp_metric(h: object, sensor: object, metric: object) -> int:
        g = gpu(h, "temp")
        if not isinstance(sensor, AmdSmiTemperatureType):
            raise AmdSmiParameterException(sensor, AmdSmiTemperatureType)
        if not isinstance(metric, AmdSmiTemperatureMetric):
            raise AmdSmiParameterException(metric, AmdSmiTemperatureMetric)
        g.calls[f"temp {sensor.name} {metric.name}"] += 1
        if metric == AmdSmiTemperatureMetric.CURRENT:
            value = {AmdSmiTemperatureType.EDGE: g.edge, AmdSmiTemperatureType.HOTSPOT: g.hotspot,
                     AmdSmiTemperatureType.VRAM: g.vram}.get(sensor)
        elif sensor == AmdSmiTemperatureType.HOTSPOT:
            value = {AmdSmiTemperatureMetric.CRITICAL: g.critical,
                     AmdSmiTemperatureMetric.EMERGENCY: g.emergency}.get(metric)
        else:
            value = None
        return int(need(value))

    def amdsmi_get_gpu_activity(h: object) -> dict[str, Any]:
        g = gpu(h, "activity")
        return {"gfx_activity": g.gfx, "umc_activity": g.umc, "mm_activity": "N/A"}

    def amdsmi_get_power_cap_info(h: object) -> dict[str, Any]:
        g = gpu(h, "power_cap")
        return {"power_cap": g.power_cap_uw, "default_power_cap": g.power_cap_uw, "dpm_cap": 0,
                "min_power_cap": 0 if not g.power_cap_uw else 200_000_000, "max_power_cap": g.power_cap_uw}

    def amdsmi_get_gpu_memory_usage(h: object, mem_type: object) -> int:
        g = gpu(h, "memory_used")
        if not isinstance(mem_type, AmdSmiMemoryType):
            raise AmdSmiParameterException(mem_type, AmdSmiMemoryType)
        return g.vram_used

    def amdsmi_get_gpu_memory_total(h: object, mem_type: object) -> int:
        g = gpu(h, "memory_total")
        if not isinstance(mem_type, AmdSmiMemoryType):
            raise AmdSmiParameterException(mem_type, AmdSmiMemoryType)
        return g.vram_total

    def amdsmi_get_gpu_metrics_info(h: object) -> dict[str, Any]:
        g = gpu(h, "metrics")
        g.accumulation += 1  # the firmware samples on its own (every ms) between two reads
        na = "N/A"
        mi300 = g.generation == "mi300"
        res = g.residency
        return {
            "temperature_edge": na if g.edge is None else g.edge,
            "temperature_hotspot": na if g.hotspot is None else g.hotspot,
            "temperature_mem": na if g.vram is None else g.vram,
            "average_gfx_activity": g.gfx, "average_umc_activity": g.umc,
            "average_socket_power": na if mi300 else g.power_w,
            "current_socket_power": g.power_w if mi300 else na,
            "energy_accumulator": na if g.energy_count is None else g.energy_count,
            "throttle_status": False,  # the library turns the firmware's bitmask into a bool
            "indep_throttle_status": na if mi300 else False,
            "accumulation_counter": g.accumulation if res is not None else na,
            **{key: (na if res is None else res[key]) for key in RESIDENCY_KEYS},
        }

    def amdsmi_get_violation_status(h: object) -> dict[str, Any]:
        g = gpu(h, "violation_status")  # the real one sleeps 100 ms between two metrics reads
        if g.residency is None:
            raise AmdSmiLibraryException(STATUS["NOT_SUPPORTED"])
        return dict.fromkeys(("active_prochot_thrm", "active_ppt_pwr", "active_socket_thrm", "active_vr_thrm",
                              "active_hbm_thrm"), False)

    for fn in (amdsmi_init, amdsmi_shut_down, amdsmi_get_processor_handles, amdsmi_get_gpu_device_uuid,
               amdsmi_get_gpu_device_bdf, amdsmi_get_gpu_asic_info, amdsmi_get_gpu_board_info,
               amdsmi_get_gpu_driver_info,
               amdsmi_get_lib_version, amdsmi_get_power_info,
               amdsmi_get_energy_count, amdsmi_get_temp_metric, amdsmi_get_gpu_activity,
               amdsmi_get_power_cap_info, amdsmi_get_gpu_memory_usage, amdsmi_get_gpu_memory_total,
               amdsmi_get_gpu_metrics_info, amdsmi_get_violation_status):
        setattr(m, fn.__name__, fn)
    m.initialized = lambda: state["init"] > 0  # type: ignore[attr-defined]
    return m
