"""A real driver's answers, recorded by ``scripts/record_nvml_trace.py``, replayed as ``pynvml``.

The module answers each NVML call the nvml source makes with what the recorded driver
answered at the current sample (``Replay.step``), in NVML's raw units, and raises NVMLError
with the recorded return code where the driver refused. Errors are the fake's classes
(``fake_pynvml.NVMLError``, which maps a code to its subclass as pynvml does).
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.fake_pynvml import NVMLError
from wattledger.agent.sources.nvml import VALUE_MEMBERS

TRACES = Path(__file__).parent / "traces"


def load_trace(name: str) -> dict[str, Any]:
    trace: dict[str, Any] = json.loads((TRACES / name).read_text())
    return trace


@dataclass
class _FieldValue:
    fieldId: int
    nvmlReturn: int
    valueType: int = 0
    value: Any = None


@dataclass
class Replay:
    """The replayed module and the sample it answers from (advance ``step`` between samples)."""

    nvml: types.ModuleType
    trace: dict[str, Any]
    step: int = 0

    @property
    def samples(self) -> int:
        return min(len(g["samples"]) for g in self.trace["gpus"])


def replay(trace: dict[str, Any]) -> Replay:
    m = types.ModuleType("pynvml")
    r = Replay(m, trace)
    gpus = trace["gpus"]

    def answered(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"error"}:
            raise NVMLError(int(value["error"]))
        return value

    def now(handle: int, key: str) -> Any:
        return answered(gpus[handle]["samples"][r.step][key])

    m.NVMLError = NVMLError  # type: ignore[attr-defined]
    m.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    m.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0  # type: ignore[attr-defined]
    m.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1  # type: ignore[attr-defined]
    m.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    m.nvmlMemory_v2 = 0x02000028  # type: ignore[attr-defined]
    m.nvmlInit = lambda: None  # type: ignore[attr-defined]
    m.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    m.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    m.nvmlDeviceGetHandleByIndex = lambda i: int(i)  # type: ignore[attr-defined]
    m.nvmlDeviceGetUUID = lambda h: answered(gpus[h]["uuid"])  # type: ignore[attr-defined]
    m.nvmlDeviceGetName = lambda h: answered(gpus[h]["name"])  # type: ignore[attr-defined]
    m.nvmlDeviceGetTemperatureThreshold = lambda h, kind: answered(  # type: ignore[attr-defined]
        gpus[h]["shutdown_c" if kind == 0 else "slowdown_c"])
    m.nvmlDeviceGetPowerUsage = lambda h: now(h, "power_mw")  # type: ignore[attr-defined]
    m.nvmlDeviceGetTotalEnergyConsumption = lambda h: now(h, "energy_mj")  # type: ignore[attr-defined]
    m.nvmlDeviceGetTemperature = lambda h, sensor: now(h, "temp_c")  # type: ignore[attr-defined]
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: now(h, "power_limit_mw")  # type: ignore[attr-defined]
    m.nvmlDeviceGetClockInfo = lambda h, clock: now(h, "sm_clock_mhz")  # type: ignore[attr-defined]
    m.nvmlDeviceGetCurrentClocksEventReasons = lambda h: now(h, "clock_events")  # type: ignore[attr-defined]
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        **now(h, "utilization"))

    def memory_info(h: int, version: int | None = None) -> Any:
        return types.SimpleNamespace(**now(h, "memory_v2" if version else "memory_v1"))

    def field_values(h: int, ids: list[int]) -> list[_FieldValue]:
        recorded = now(h, "fields")
        out = []
        for fid in ids:
            value = recorded.get(str(fid), {"error": 3})  # a field not recorded: NotSupported
            if "error" in value:
                out.append(_FieldValue(fid, int(value["error"])))
            else:
                member = VALUE_MEMBERS[int(value["type"])]
                out.append(_FieldValue(fid, 0, int(value["type"]),
                                       types.SimpleNamespace(**{member: value["value"]})))
        return out

    m.nvmlDeviceGetMemoryInfo = memory_info  # type: ignore[attr-defined]
    m.nvmlDeviceGetFieldValues = field_values  # type: ignore[attr-defined]
    return r
