"""Record what a real NVIDIA driver answers to every NVML call the agent's nvml source makes.

The trace (JSON) holds, per GPU, the static facts read at discovery and, per sample, the raw
answer of each call in NVML's own units (mW, mJ, MHz, percent, bytes) or the NVML return
code it failed with. ``tests/agent/nvml_trace.py`` replays such a trace as a ``pynvml``
module, so the source is tested against what real boards say, not only against the values
someone typed into a fake.

    python scripts/record_nvml_trace.py --samples 10 --interval 1 --out trace.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# the same field ids and value members as the source whose calls this records
from wattledger.agent.sources.nvml import FIELD_ENERGY, FIELD_MEMORY_TEMP, VALUE_MEMBERS


def answer(nvml: Any, fn: Callable[[], Any], convert: Callable[[Any], Any]) -> Any:
    """The converted answer, or ``{"error": code}`` when NVML refused."""
    try:
        return convert(fn())
    except nvml.NVMLError as exc:
        return {"error": int(getattr(exc, "value", -1))}


def text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def field_values(values: Any) -> dict[str, Any]:
    out = {}
    for v in values:
        member = VALUE_MEMBERS[int(v.valueType)]
        out[str(int(v.fieldId))] = ({"error": int(v.nvmlReturn)} if int(v.nvmlReturn) else
                                    {"type": int(v.valueType), "value": getattr(v.value, member)})
    return out


def static(nvml: Any, handle: Any) -> dict[str, Any]:
    return {
        "uuid": answer(nvml, lambda: nvml.nvmlDeviceGetUUID(handle), text),
        "name": answer(nvml, lambda: nvml.nvmlDeviceGetName(handle), text),
        "slowdown_c": answer(nvml, lambda: nvml.nvmlDeviceGetTemperatureThreshold(
            handle, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN), int),
        "shutdown_c": answer(nvml, lambda: nvml.nvmlDeviceGetTemperatureThreshold(
            handle, nvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN), int),
    }


def sample(nvml: Any, handle: Any) -> dict[str, Any]:
    """One answer per call of the nvml source (wattledger/agent/sources/nvml.py)."""
    events = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    v2 = getattr(nvml, "nvmlMemory_v2", None)
    return {
        "ts": time.time(),
        "power_mw": answer(nvml, lambda: nvml.nvmlDeviceGetPowerUsage(handle), int),
        "fields": answer(nvml, lambda: nvml.nvmlDeviceGetFieldValues(
            handle, [FIELD_MEMORY_TEMP, FIELD_ENERGY]), field_values),
        "energy_mj": answer(nvml, lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle), int),
        "temp_c": answer(nvml, lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU), int),
        "utilization": answer(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle),
                              lambda r: {"gpu": int(r.gpu), "memory": int(r.memory)}),
        "memory_v1": answer(nvml, lambda: nvml.nvmlDeviceGetMemoryInfo(handle),
                            lambda m: {"used": int(m.used), "total": int(m.total), "free": int(m.free)}),
        "memory_v2": {"error": 13} if v2 is None else answer(
            nvml, lambda: nvml.nvmlDeviceGetMemoryInfo(handle, v2),
            lambda m: {"used": int(m.used), "total": int(m.total), "free": int(m.free),
                       "reserved": int(m.reserved)}),
        "power_limit_mw": answer(nvml, lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle), int),
        "sm_clock_mhz": answer(nvml, lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM), int),
        "clock_events": answer(nvml, lambda: events(handle), int),
    }


def record(nvml: Any, samples: int, interval: float) -> dict[str, Any]:
    nvml.nvmlInit()
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        trace: dict[str, Any] = {
            "driver": answer(nvml, getattr(nvml, "nvmlSystemGetDriverVersion", lambda: "unknown"), text),
            "nvml": answer(nvml, getattr(nvml, "nvmlSystemGetNVMLVersion", lambda: "unknown"), text),
            "gpus": [{"index": i, **static(nvml, h), "samples": []} for i, h in enumerate(handles)],
        }
        for n in range(samples):
            for gpu, handle in zip(trace["gpus"], handles, strict=True):
                gpu["samples"].append(sample(nvml, handle))
            if n + 1 < samples:
                time.sleep(interval)
        return trace
    finally:
        nvml.nvmlShutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import pynvml

    trace = record(pynvml, args.samples, args.interval)
    args.out.write_text(json.dumps(trace, indent=1) + "\n")
    print(f"recorded {args.samples} samples of {len(trace['gpus'])} GPU(s), driver {trace['driver']}"
          f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
