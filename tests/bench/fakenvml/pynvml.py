"""``pynvml`` for the GPU benchmarks' tests: the project's fake NVML over two fake boards.

A test puts this folder first on PYTHONPATH, so the benchmark, the agent it starts and the
fake ``nvidia-smi`` beside this file all import this instead of nvidia-ml-py and see the same
boards. ``nvmlInit`` is left to the caller, as with the real module (the fake enforces it).

The energy counter advances at the board's power times elapsed time, measured on the system's
monotonic clock (shared by all processes, so each sees one counter, as with a real driver):
the counter's increase over a window is exactly the constant power integrated over it.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

_FAKE = Path(__file__).resolve().parents[2] / "agent" / "fake_pynvml.py"
_spec = importlib.util.spec_from_file_location("wattledger_tests_fake_pynvml", _FAKE)
assert _spec is not None and _spec.loader is not None
_fake = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _fake  # dataclasses looks the module up while building Board
_spec.loader.exec_module(_fake)


class LiveBoard(_fake.Board):
    """A Board whose energy counter (mJ) grows at ``power_mw`` (mW x s = mJ) with time."""

    @property
    def energy_mj(self) -> int | None:
        if self._energy_at_zero is None or self.power_mw is None:
            return self._energy_at_zero
        return int(self._energy_at_zero + self.power_mw * time.monotonic())

    @energy_mj.setter
    def energy_mj(self, value: int | None) -> None:  # Board's __init__ sets the counter at t=0
        self._energy_at_zero = value


BOARDS = [
    LiveBoard(),  # an H100 with HBM temperature, clock event 0x20 (SW power cap)
    LiveBoard(name="NVIDIA A100-PCIE-40GB", uuid="GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
              power_mw=61_250, energy_mj=9_000_000, temp=34, mem_temp=None, util_gpu=0, util_mem=0,
              mem_used=5 << 20, mem_total=40 << 30, limit_mw=250_000, sm_mhz=210, events=0x1),
]

_module = _fake.make_nvml(BOARDS)
_names: dict[str, Any] = {k: v for k, v in vars(_module).items() if not k.startswith("__")}
globals().update(_names)
