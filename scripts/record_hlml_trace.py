"""Record what a real Intel Gaudi answers to every HLML call the agent's hlml source makes.

Per device: the static facts read at discovery (UUID, serial, name, slowdown and shutdown
temperatures) and, per sample, the raw answer of each call (power in mW, the energy counter
in mJ, chip and HBM temperature, utilization %, memory bytes, the power limit in force and
the default one in mW, the throttle reasons), or the HLML return code it failed with; and
which of the newer calls and sensors the installed bindings have. ``tests/agent/
accelerator_trace.py`` replays such a trace as a ``pyhlml`` module; list the file in
``tests/agent/test_hlml_trace.py``. Run it idle, then under load.

    pip install 'habana-pyhlml==<the installed driver release>'
    python scripts/record_hlml_trace.py --samples 20 --interval 0.5 \\
        --out tests/agent/traces/gaudi3-1.24.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_recording import answerer, main, sample_devices, text


def fields(struct: Any) -> dict[str, Any]:
    """A ctypes structure of the bindings (utilization, memory info) as a dict."""
    return {name: int(getattr(struct, name)) for name, *_ in getattr(struct, "_fields_", [])} or vars(struct)


def record(pyhlml: Any, samples: int, interval: float) -> dict[str, Any]:
    answer = answerer(pyhlml.HLMLError, lambda exc: getattr(exc, "value", None))
    sensors, thresholds = pyhlml.hlml_t.HLML_TEMP_SENS, pyhlml.hlml_t.HLML_TEMP_THRESH
    hbm = getattr(sensors, "HLML_TEMPERATURE_HBM", None)
    limit = getattr(pyhlml, "hlmlDeviceGetPowerManagementLimit", None)

    def static(index: int, h: Any) -> dict[str, Any]:
        return {
            "uuid": answer(lambda: pyhlml.hlmlDeviceGetUUID(h), text),
            "serial": answer(lambda: pyhlml.hlmlDeviceGetSerial(h), text),
            "name": answer(lambda: pyhlml.hlmlDeviceGetName(h), text),
            "slowdown_c": answer(lambda: pyhlml.hlmlDeviceGetTemperatureThreshold(
                h, thresholds.HLML_TEMPERATURE_THRESHOLD_SLOWDOWN), int),
            "shutdown_c": answer(lambda: pyhlml.hlmlDeviceGetTemperatureThreshold(
                h, thresholds.HLML_TEMPERATURE_THRESHOLD_SHUTDOWN), int),
        }

    def sample(h: Any) -> dict[str, Any]:
        """One answer per call of the hlml source (wattledger/agent/sources/hlml.py)."""
        return {
            "power_mw": answer(lambda: pyhlml.hlmlDeviceGetPowerUsage(h), int),
            "energy_mj": answer(lambda: pyhlml.hlmlDeviceGetTotalEnergyConsumption(h), int),
            "temp_aip": answer(lambda: pyhlml.hlmlDeviceGetTemperature(h, sensors.HLML_TEMPERATURE_ON_AIP),
                               int),
            "temp_hbm": None if hbm is None else answer(lambda: pyhlml.hlmlDeviceGetTemperature(h, hbm), int),
            "utilization": answer(lambda: pyhlml.hlmlDeviceGetUtilizationRates(h), fields),
            "memory": answer(lambda: pyhlml.hlmlDeviceGetMemoryInfo(h), fields),
            "limit_mw": None if limit is None else answer(lambda: limit(h), int),
            "default_limit_mw": answer(lambda: pyhlml.hlmlDeviceGetPowerManagementDefaultLimit(h), int),
            "throttle": answer(lambda: pyhlml.hlmlDeviceGetCurrentClocksThrottleReasons(h), int),
        }

    pyhlml.hlmlInit()
    try:
        version = getattr(pyhlml, "hlmlGetHLMLVersion", lambda: "unknown")
        handles = [pyhlml.hlmlDeviceGetHandleByIndex(i) for i in range(pyhlml.hlmlDeviceGetCount())]
        return {"library": answer(version, text),
                "driver": answer(getattr(pyhlml, "hlmlGetDriverVersion", lambda: "unknown"), text),
                "bindings": {"hbm_sensor": hbm is not None, "power_management_limit": limit is not None},
                "devices": sample_devices(handles, static, sample, samples, interval)}
    finally:
        pyhlml.hlmlShutdown()


if __name__ == "__main__":
    import pyhlml

    sys.exit(main((__doc__ or "").splitlines()[0], lambda n, dt: record(pyhlml, n, dt)))
