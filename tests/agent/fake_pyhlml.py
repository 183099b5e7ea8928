"""A stand-in for the ``pyhlml`` module (PyPI ``habana-pyhlml``) with HLML's behaviour, for the
hlml source's tests.

Where each shape comes from:

- function names, arguments, return shapes and units: the bindings' ``pyhlml/main.py``
  (habana-pyhlml 1.24.2 on PyPI; HabanaAI/pyhlml on GitHub, archived 2025, for the 2022
  bindings): names, UUID and serial as ``bytes``; power and power limits in mW, the energy
  counter in mJ "since last driver reload" (a ``c_ulonglong``), temperatures and thresholds in
  °C, utilization an object with ``aip`` (1.24 also ``memory``) in %, memory info an object
  with ``free``, ``total``, ``used`` in bytes, the throttle reasons an int bitmask.
- constants: ``hlml_t`` (``pyhlml.hlml_types``, re-exported by ``from pyhlml.main import *``):
  ``HLML_TEMP_SENS`` (ON_AIP 0, ON_BOARD 1; 1.24 adds OTHER 2, HBM 3, VRM 4, CTEMP 5),
  ``HLML_TEMP_THRESH`` (SHUTDOWN 0, SLOWDOWN 1, MEM_MAX 2, GPU_MAX 3),
  ``HLML_DEFINE.HLML_CLOCKS_THROTTLE_REASON_POWER`` (1 << 0) and ``..._THERMAL`` (1 << 1).
- errors: ``pyhlml/hlml_error.py``: ``HLMLError(value)`` whose ``__new__`` maps a code to its
  subclass (``HLMLError_NotSupported``, ``HLMLError_AipIsLost`` ...), ``.value`` the code,
  ``__str__`` "HLML Error with code N". The library's return codes are those of HLML's C API
  documentation (docs.habana.ai, "HLML C API": NOT_SUPPORTED 3, DRIVER_NOT_LOADED 9,
  AIP_IS_LOST 15, NO_DATA 21, UNKNOWN 49), which the 1.24 bindings' table matches; the 2022
  bindings' table named AIP_IS_LOST 11, MEMORY 12, NO_DATA 13, UNKNOWN 14.
- the two binding generations: the 2022 ones have no ``hlmlDeviceGetPowerManagementLimit``
  (only the default limit), no HBM sensor and an ``aip``-only utilization.
- no library: ``hlmlInit`` builds ``LibHLML()``, whose ``ctypes.CDLL`` failure prints "Failed
  to load libhlml" and raises ``HLMLError(HLML_ERROR_UNINITIALIZED)`` (``pyhlml/hlml_lib.py``);
  any call before ``hlmlInit`` fails with AttributeError (the module's ``_hlmlOBJ`` is None).
- a lost device answers AIP_IS_LOST to every query; a reading a board does not have,
  NOT_SUPPORTED. Which Gaudi board lacks which reading is this fake's assumption until a
  trace is recorded.

The numbers of the boards below are test values in HLML's units, not measurements.
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: the C library's return codes (HLML C API documentation)
CODES = {"UNINITIALIZED": 1, "INVALID_ARGUMENT": 2, "NOT_SUPPORTED": 3, "ALREADY_INITIALIZED": 5,
         "NOT_FOUND": 6, "INSUFFICIENT_SIZE": 7, "DRIVER_NOT_LOADED": 9, "TIMEOUT": 10, "AIP_IS_LOST": 15,
         "MEMORY": 20, "NO_DATA": 21, "UNKNOWN": 49}
#: what the 2022 bindings' HLML_RETURN said where it differs
CODES_2022 = {**CODES, "AIP_IS_LOST": 11, "MEMORY": 12, "NO_DATA": 13, "UNKNOWN": 14}


class HLMLError(Exception):
    _cMap: dict[int, type[HLMLError]] = {}  # noqa: RUF012 - as in pyhlml
    value: int

    def __new__(cls, value: int) -> HLMLError:
        if cls is HLMLError:
            cls = HLMLError._cMap.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return f"HLML Error with code {self.value}"


def _error_classes(codes: dict[str, int]) -> dict[str, type[HLMLError]]:
    """``ErrorsAsClass``: HLMLError_NotSupported ... registered for their codes."""
    out = {}
    for name, code in codes.items():
        cls = type("HLMLError_" + "".join(w.capitalize() for w in name.split("_")), (HLMLError,), {})
        HLMLError._cMap[code] = cls
        out[cls.__name__] = cls
    return out


@dataclass
class Aip:
    """One fake Gaudi, in HLML's units. ``None`` for a reading: NOT_SUPPORTED."""

    name: str = "HL-225"
    uuid: str | None = "01P0-HL2080A0-15-TNAP19-20-07-07"
    serial: str | None = "AN45000001"
    power_mw: int | None = 421_000
    energy_mj: int | None = 73_456_789_012
    temp_aip: int | None = 48
    temp_board: int | None = 36
    temp_hbm: int | None = 44
    slowdown: int | None = 100
    shutdown: int | None = 105
    util_aip: int = 91
    util_memory: int = 37
    mem_used: int = 80 << 30
    mem_total: int = 96 << 30
    default_limit_mw: int | None = 600_000
    limit_mw: int | None = 550_000  # the limit in force (an operator set it below the default)
    throttle: int | None = 0
    lost: bool = False
    calls: Counter[str] = field(default_factory=Counter)


def gaudi2(i: int = 0) -> Aip:
    return Aip(uuid=f"01P0-HL2080A0-15-TNAP19-20-07-{i:02d}", serial=f"AN450000{i:02d}")


def gaudi3(i: int = 0) -> Aip:
    return Aip(name="HL-325L", uuid=f"01P0-HL3090A0-18-TNCM33-11-02-{i:02d}", serial=f"AN5200{i:02d}",
               power_mw=812_000, energy_mj=141_000_000_000, temp_aip=57, temp_hbm=52, slowdown=95,
               shutdown=105, mem_total=128 << 30, mem_used=110 << 30, default_limit_mw=900_000,
               limit_mw=900_000)


def make_pyhlml(aips: list[Aip], *, driver: str | None = None, bindings: str = "1.24") -> types.ModuleType:
    """A fake ``pyhlml`` over ``aips``. ``driver``: None (loaded), "missing" (no libhlml.so) or
    "not_loaded" (DRIVER_NOT_LOADED from hlml_init). ``bindings``: "1.24" or "2022"."""
    new = bindings != "2022"
    m = types.ModuleType("pyhlml")
    m.HLMLError = HLMLError  # type: ignore[attr-defined]
    for name, cls in _error_classes(CODES if new else CODES_2022).items():
        setattr(m, name, cls)
    table = CODES if new else CODES_2022
    sensors = {"HLML_TEMPERATURE_ON_AIP": 0, "HLML_TEMPERATURE_ON_BOARD": 1}
    if new:
        sensors |= {"HLML_TEMPERATURE_OTHER": 2, "HLML_TEMPERATURE_HBM": 3, "HLML_TEMPERATURE_VRM": 4,
                    "HLML_TEMPERATURE_CTEMP": 5}
    m.hlml_t = types.SimpleNamespace(  # type: ignore[attr-defined]
        HLML_RETURN=types.SimpleNamespace(HLML_SUCCESS=0, **{f"HLML_ERROR_{k}": v for k, v in table.items()}),
        HLML_TEMP_SENS=types.SimpleNamespace(**sensors),
        HLML_TEMP_THRESH=types.SimpleNamespace(
            HLML_TEMPERATURE_THRESHOLD_SHUTDOWN=0, HLML_TEMPERATURE_THRESHOLD_SLOWDOWN=1,
            HLML_TEMPERATURE_THRESHOLD_MEM_MAX=2, HLML_TEMPERATURE_THRESHOLD_GPU_MAX=3),
        HLML_DEFINE=types.SimpleNamespace(HLML_CLOCKS_THROTTLE_REASON_POWER=1 << 0,
                                          HLML_CLOCKS_THROTTLE_REASON_THERMAL=1 << 1),
    )
    state: dict[str, Any] = {"lib": None}

    def lib() -> None:
        if state["lib"] is None:  # _hlmlOBJ.get_func_ptr(...) with _hlmlOBJ None
            raise AttributeError("'NoneType' object has no attribute 'get_func_ptr'")

    def aip(handle: object, what: str) -> Aip:
        lib()
        if not isinstance(handle, Aip):
            raise HLMLError(CODES["INVALID_ARGUMENT"])
        handle.calls[what] += 1
        if handle.lost:
            raise HLMLError(CODES["AIP_IS_LOST"])
        return handle

    def value(handle: object, what: str, attr: str) -> Any:
        v = getattr(aip(handle, what), attr)
        if v is None:
            raise HLMLError(CODES["NOT_SUPPORTED"])
        return v

    def hlmlInit() -> None:
        if driver == "missing":
            print("Failed to load libhlml")
            raise HLMLError(CODES["UNINITIALIZED"])
        state["lib"] = object()
        if driver == "not_loaded":
            raise HLMLError(CODES["DRIVER_NOT_LOADED"])

    def hlmlShutdown() -> None:
        lib()
        state["lib"] = None

    def hlmlDeviceGetCount() -> int:
        lib()
        return len(aips)

    def hlmlDeviceGetHandleByIndex(index: int) -> Aip:
        lib()
        if not 0 <= index < len(aips):
            raise HLMLError(CODES["INVALID_ARGUMENT"])
        return aips[index]

    def hlmlDeviceGetName(device: object) -> bytes:
        return str(value(device, "name", "name")).encode()

    def hlmlDeviceGetUUID(device: object) -> bytes:
        return str(value(device, "uuid", "uuid")).encode()

    def hlmlDeviceGetSerial(device: object) -> bytes:
        return str(value(device, "serial", "serial")).encode()

    def hlmlDeviceGetPowerUsage(device: object) -> int:
        return int(value(device, "power", "power_mw"))

    def hlmlDeviceGetTotalEnergyConsumption(device: object) -> int:
        return int(value(device, "energy", "energy_mj"))

    def hlmlDeviceGetTemperature(device: object, sensor_type: int) -> int:
        a = aip(device, f"temp {sensor_type}")
        attr = {0: "temp_aip", 1: "temp_board", 3: "temp_hbm"}.get(sensor_type)
        if attr is None or (sensor_type == 3 and not new):  # a sensor these bindings do not know
            raise HLMLError(CODES["INVALID_ARGUMENT"])
        reading = getattr(a, attr)
        if reading is None:
            raise HLMLError(CODES["NOT_SUPPORTED"])
        return int(reading)

    def hlmlDeviceGetTemperatureThreshold(device: object, threshold_type: int) -> int:
        attr = {0: "shutdown", 1: "slowdown"}.get(threshold_type)
        if attr is None:
            raise HLMLError(CODES["NOT_SUPPORTED"])
        return int(value(device, "threshold", attr))

    def hlmlDeviceGetUtilizationRates(device: object) -> Any:
        a = aip(device, "utilization")
        return types.SimpleNamespace(aip=a.util_aip, memory=a.util_memory) if new else \
            types.SimpleNamespace(aip=a.util_aip)

    def hlmlDeviceGetMemoryInfo(device: object) -> Any:
        a = aip(device, "memory")
        return types.SimpleNamespace(free=a.mem_total - a.mem_used, total=a.mem_total, used=a.mem_used)

    def hlmlDeviceGetPowerManagementDefaultLimit(device: object) -> int:
        return int(value(device, "default_limit", "default_limit_mw"))

    def hlmlDeviceGetPowerManagementLimit(device: object) -> int:
        return int(value(device, "power_limit", "limit_mw"))

    def hlmlDeviceGetCurrentClocksThrottleReasons(device: object) -> int:
        return int(value(device, "throttle", "throttle"))

    fns = [hlmlInit, hlmlShutdown, hlmlDeviceGetCount, hlmlDeviceGetHandleByIndex, hlmlDeviceGetName,
           hlmlDeviceGetUUID, hlmlDeviceGetSerial, hlmlDeviceGetPowerUsage,
           hlmlDeviceGetTotalEnergyConsumption, hlmlDeviceGetTemperature, hlmlDeviceGetTemperatureThreshold,
           hlmlDeviceGetUtilizationRates, hlmlDeviceGetMemoryInfo, hlmlDeviceGetPowerManagementDefaultLimit,
           hlmlDeviceGetCurrentClocksThrottleReasons]
    if new:
        fns.append(hlmlDeviceGetPowerManagementLimit)
    for fn in fns:
        setattr(m, fn.__name__, fn)
    m.initialized = lambda: state["lib"] is not None  # type: ignore[attr-defined]
    return m
