"""Record what a real AMD GPU answers to every AMD SMI call the agent's amdsmi source makes.

Per GPU: the static facts read at discovery (UUID, ASIC and board info, the junction's
CRITICAL and EMERGENCY limits, installed VRAM) and, per sample, the raw answer of each call
(power info in W, the energy count and its resolution in µJ, junction and VRAM temperature,
activity %, power cap in µW, VRAM used, the metrics table), or the AMD SMI status code it
failed with. ``tests/agent/accelerator_trace.py`` replays such a trace as an ``amdsmi`` module;
list the file in ``tests/agent/test_amdsmi_trace.py``. Run it idle, then under load (a power
cap reached, a hot GPU) to catch what the source has to tell apart.

    pip install /opt/rocm/share/amd_smi      # the bindings of the installed ROCm
    python scripts/record_amdsmi_trace.py --samples 20 --interval 0.5 \\
        --out tests/agent/traces/mi300x-rocm-6.4.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_recording import answerer, main, plain, sample_devices


def record(amdsmi: Any, samples: int, interval: float) -> dict[str, Any]:
    answer = answerer(amdsmi.AmdSmiException, lambda exc: getattr(exc, "err_code", None))
    temps, metric = amdsmi.AmdSmiTemperatureType, amdsmi.AmdSmiTemperatureMetric
    vram = amdsmi.AmdSmiMemoryType.VRAM

    def static(index: int, h: Any) -> dict[str, Any]:
        return {
            "uuid": answer(lambda: amdsmi.amdsmi_get_gpu_device_uuid(h), str),
            "asic_info": answer(lambda: amdsmi.amdsmi_get_gpu_asic_info(h), plain),
            "board_info": answer(lambda: amdsmi.amdsmi_get_gpu_board_info(h), plain),
            "driver_info": answer(lambda: amdsmi.amdsmi_get_gpu_driver_info(h), plain),
            "temp": {f"HOTSPOT {m}": answer(
                lambda m=m: amdsmi.amdsmi_get_temp_metric(h, temps.HOTSPOT, metric[m]), int)
                for m in ("CRITICAL", "EMERGENCY")},
            "memory_total": answer(lambda: amdsmi.amdsmi_get_gpu_memory_total(h, vram), int),
        }

    def sample(h: Any) -> dict[str, Any]:
        """One answer per call of the amdsmi source (wattledger/agent/sources/amdsmi.py)."""
        return {
            "power_info": answer(lambda: amdsmi.amdsmi_get_power_info(h), plain),
            "energy_count": answer(lambda: amdsmi.amdsmi_get_energy_count(h), plain),
            "temp": {f"{s} CURRENT": answer(
                lambda s=s: amdsmi.amdsmi_get_temp_metric(h, temps[s], metric.CURRENT), int)
                for s in ("HOTSPOT", "VRAM")},
            "activity": answer(lambda: amdsmi.amdsmi_get_gpu_activity(h), plain),
            "power_cap_info": answer(lambda: amdsmi.amdsmi_get_power_cap_info(h), plain),
            "memory_usage": answer(lambda: amdsmi.amdsmi_get_gpu_memory_usage(h, vram), int),
            "metrics_info": answer(lambda: amdsmi.amdsmi_get_gpu_metrics_info(h), plain),
        }

    amdsmi.amdsmi_init(amdsmi.AmdSmiInitFlags.INIT_AMD_GPUS)
    try:
        version = getattr(amdsmi, "amdsmi_get_lib_version", lambda: "unknown")
        return {"library": answer(version, plain),
                "devices": sample_devices(list(amdsmi.amdsmi_get_processor_handles()), static, sample,
                                          samples, interval)}
    finally:
        amdsmi.amdsmi_shut_down()


if __name__ == "__main__":
    import amdsmi

    sys.exit(main((__doc__ or "").splitlines()[0], lambda n, dt: record(amdsmi, n, dt)))
