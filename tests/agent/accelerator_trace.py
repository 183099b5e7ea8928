"""Real boards' answers, recorded by ``scripts/record_amdsmi_trace.py`` and
``scripts/record_hlml_trace.py``, replayed as the ``amdsmi`` and ``pyhlml`` modules.

Each call the source makes is answered with what the recorded library answered at the current
sample (``Replay.step``), in the vendor's raw units; where the library refused, the vendor's
exception is raised with the recorded code (the fakes' classes, which behave as the real
ones). No trace is recorded yet (no AMD or Gaudi machine has been lent to this project): the
recorders' round trip through these replays is tested against the fakes.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import fake_amdsmi, fake_pyhlml
from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import Source

TRACES = Path(__file__).parent / "traces"
ROOT = Path(__file__).resolve().parents[2]


def ok(value: Any) -> bool:
    """True where a recorded answer is a value, not the code the library refused with."""
    return value is not None and not (isinstance(value, dict) and set(value) == {"error"})


def load_trace(name: str) -> dict[str, Any]:
    trace: dict[str, Any] = json.loads((TRACES / name).read_text())
    return trace


@dataclass
class Replay:
    """The replayed module and the sample it answers from (advance ``step`` between samples)."""

    module: types.ModuleType
    trace: dict[str, Any]
    step: int = 0

    @property
    def samples(self) -> int:
        return min(len(d["samples"]) for d in self.trace["devices"])

    def answered(self, value: Any, error: type[Exception]) -> Any:
        if isinstance(value, dict) and set(value) == {"error"}:
            raise error(int(value["error"]))
        return value

    def now(self, device: int, key: str, error: type[Exception]) -> Any:
        return self.answered(self.trace["devices"][device]["samples"][self.step][key], error)


class _Handle(fake_amdsmi._Handle):
    """An ``amdsmi`` processor handle of the replay: the recorded device's position."""

    def __init__(self, index: int) -> None:
        self.index = index


def replay_amdsmi(trace: dict[str, Any]) -> Replay:
    m = types.ModuleType("amdsmi")
    r = Replay(m, trace)
    fake = fake_amdsmi.make_amdsmi([])  # the module's classes and enums, as the real one has them
    for name in dir(fake):
        if name.startswith("AmdSmi"):
            setattr(m, name, getattr(fake, name))
    error = fake_amdsmi.AmdSmiLibraryException
    devices = trace["devices"]

    def static(h: _Handle, key: str) -> Any:
        return r.answered(devices[h.index][key], error)

    def now(h: _Handle, key: str) -> Any:
        return r.now(h.index, key, error)

    def temp_metric(h: _Handle, sensor: Any, metric: Any) -> Any:
        key = f"{sensor.name} {metric.name}"
        recorded = devices[h.index]["temp"] if metric.name != "CURRENT" else \
            devices[h.index]["samples"][r.step]["temp"]
        return r.answered(recorded.get(key, {"error": fake_amdsmi.STATUS["NOT_SUPPORTED"]}), error)

    answers = {
        "amdsmi_init": lambda flag=None: None,
        "amdsmi_shut_down": lambda: None,
        "amdsmi_get_processor_handles": lambda: [_Handle(i) for i in range(len(devices))],
        "amdsmi_get_gpu_device_uuid": lambda h: static(h, "uuid"),
        "amdsmi_get_gpu_asic_info": lambda h: static(h, "asic_info"),
        "amdsmi_get_gpu_board_info": lambda h: static(h, "board_info"),
        "amdsmi_get_gpu_memory_total": lambda h, mem_type: static(h, "memory_total"),
        "amdsmi_get_temp_metric": temp_metric,
        "amdsmi_get_power_info": lambda h: now(h, "power_info"),
        "amdsmi_get_energy_count": lambda h: now(h, "energy_count"),
        "amdsmi_get_gpu_activity": lambda h: now(h, "activity"),
        "amdsmi_get_power_cap_info": lambda h: now(h, "power_cap_info"),
        "amdsmi_get_gpu_memory_usage": lambda h, mem_type: now(h, "memory_usage"),
        "amdsmi_get_gpu_metrics_info": lambda h: now(h, "metrics_info"),
    }
    for name, fn in answers.items():
        setattr(m, name, fn)
    return r


def replay_hlml(trace: dict[str, Any]) -> Replay:
    bindings = trace.get("bindings", {})
    fake = fake_pyhlml.make_pyhlml([], bindings="1.24" if bindings.get("hbm_sensor") else "2022")
    m = types.ModuleType("pyhlml")
    m.HLMLError = fake_pyhlml.HLMLError  # type: ignore[attr-defined]
    m.hlml_t = fake.hlml_t  # type: ignore[attr-defined]
    r = Replay(m, trace)
    error = fake_pyhlml.HLMLError
    devices = trace["devices"]

    def static(h: int, key: str) -> Any:
        value = r.answered(devices[h][key], error)
        return value.encode() if isinstance(value, str) else value

    def now(h: int, key: str) -> Any:
        return r.now(h, key, error)

    def temperature(h: int, sensor: int) -> Any:
        return now(h, {0: "temp_aip", 3: "temp_hbm"}[sensor])

    answers = {
        "hlmlInit": lambda: None,
        "hlmlShutdown": lambda: None,
        "hlmlDeviceGetCount": lambda: len(devices),
        "hlmlDeviceGetHandleByIndex": lambda i: int(i),
        "hlmlDeviceGetUUID": lambda h: static(h, "uuid"),
        "hlmlDeviceGetSerial": lambda h: static(h, "serial"),
        "hlmlDeviceGetName": lambda h: static(h, "name"),
        "hlmlDeviceGetTemperatureThreshold":
            lambda h, kind: static(h, "shutdown_c" if kind == 0 else "slowdown_c"),
        "hlmlDeviceGetPowerUsage": lambda h: now(h, "power_mw"),
        "hlmlDeviceGetTotalEnergyConsumption": lambda h: now(h, "energy_mj"),
        "hlmlDeviceGetTemperature": temperature,
        "hlmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(**now(h, "utilization")),
        "hlmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(**now(h, "memory")),
        "hlmlDeviceGetPowerManagementDefaultLimit": lambda h: now(h, "default_limit_mw"),
        "hlmlDeviceGetCurrentClocksThrottleReasons": lambda h: now(h, "throttle"),
    }
    if bindings.get("power_management_limit"):
        answers["hlmlDeviceGetPowerManagementLimit"] = lambda h: now(h, "limit_mw")
    for name, fn in answers.items():
        setattr(m, name, fn)
    return r


def readings(replayed: Replay, source: Callable[[types.ModuleType], Source]) -> list[list[DeviceReading]]:
    """Each recorded sample as the source (made over the replayed module) reads it."""
    src = source(replayed.module)
    src.open()
    out = []
    for step in range(replayed.samples):
        replayed.step = step
        sample = src.sample(float(step))
        assert sample.down == []
        out.append(sample.readings)
    return out


def check_the_counter_agrees_with_the_power(trace: dict[str, Any],
                                            samples: list[list[DeviceReading]]) -> None:
    """Where a device has both, the counter's rise is roughly the power's integral (a power
    reading averages over a second or so, so only roughly)."""
    for i, device in enumerate(trace["devices"]):
        series = [step[i] for step in samples]
        energy = [r.energy_j for r in series]
        if len(series) < 3 or any(e is None for e in energy):
            continue
        assert all(float(b or 0) >= float(a or 0) for a, b in itertools.pairwise(energy))
        ts = [s["ts"] for s in device["samples"]]
        power = [r.power_w or 0.0 for r in series]
        integral = sum((t1 - t0) * (p0 + p1) / 2
                       for t0, t1, p0, p1 in zip(ts, ts[1:], power, power[1:], strict=False))
        counted = float(energy[-1] or 0) - float(energy[0] or 0)
        assert 0.7 < integral / counted < 1.3


def record_from_fake(tmp_path: Path, script: str, package: str, body: str) -> dict[str, Any]:
    """Run ``scripts/<script>`` with ``package`` on its path being the fake module that ``body``
    builds (as ``module``); the trace it records."""
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(f"import sys\n{body}\nsys.modules[__name__] = module\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "tests"), str(ROOT)])}
    out = tmp_path / "trace.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--samples", "3", "--interval", "0.01",
                    "--out", str(out)], env=env, check=True, timeout=60, capture_output=True)
    trace: dict[str, Any] = json.loads(out.read_text())
    return trace
