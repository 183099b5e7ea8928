"""Intel Gaudi accelerators (Gaudi 2, Gaudi 3) through HLML. The only module of wattledger
that imports ``pyhlml`` (PyPI ``habana-pyhlml``, the Python bindings of Habana's libhlml).

What each reading is, in HLML's own units (the bindings' ``pyhlml/main.py``):

- power: ``hlmlDeviceGetPowerUsage``, mW.
- energy: ``hlmlDeviceGetTotalEnergyConsumption``, mJ since the driver was loaded, an
  unsigned 64-bit integer; unfolded should the firmware's counter be 32 bits wide
  (``EnergyCounter``). The collector integrates power only where there is no counter.
- ``temp_c`` ("gpu"): ``hlmlDeviceGetTemperature`` of the ``HLML_TEMPERATURE_ON_AIP`` sensor
  (the accelerator chip), °C; ``mem_temp_c``: the ``HLML_TEMPERATURE_HBM`` sensor, which only
  the newer bindings name (the 2022 ones know ON_AIP and ON_BOARD only).
- slowdown / shutdown: ``hlmlDeviceGetTemperatureThreshold`` SLOWDOWN and SHUTDOWN, °C.
- utilization: ``hlmlDeviceGetUtilizationRates().aip``, % of the last second. The newer
  bindings also carry a ``memory`` member whose meaning HLML's documentation does not give:
  not read.
- memory: ``hlmlDeviceGetMemoryInfo()`` ``used`` / ``total``, bytes.
- power limit: ``hlmlDeviceGetPowerManagementLimit`` (the limit in force), mW; the bindings
  before it had only ``hlmlDeviceGetPowerManagementDefaultLimit``, which is used there (a
  limit an operator changed with ``hl-smi -p`` is then not seen).
- clock events: ``hlmlDeviceGetCurrentClocksThrottleReasons``: POWER (bit 0) is the
  contract's ``sw_power_cap``, THERMAL (bit 1) its ``sw_thermal``; HLML has no other reason.

Errors are HLML return codes (``HLMLError.value``). The C library's codes are those of HLML's
documentation (AIP_IS_LOST 15, NO_DATA 21, ...); the 2022 bindings named some with other
numbers (AIP_IS_LOST 11, NO_DATA 13), so both are read as what they name. Without libhlml,
``hlmlInit`` prints "Failed to load libhlml" and raises UNINITIALIZED: that is the one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from types import ModuleType
from typing import Any

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.accelerator import (
    AcceleratorSource,
    Board,
    classify,
    device_id,
    device_model,
    one_line,
    text,
)
from wattledger.agent.sources.base import DeviceLost, SourceError, SourceUnavailable
from wattledger.contract import CLOCK_EVENT_REASONS, Device

log = logging.getLogger(__name__)

UNAVAILABLE = "no Intel Gaudi driver (hlml)"

#: hlml_return_t as HLML's C API documentation has it, and the numbers the 2022 bindings gave
#: some of the same names
CODES = {
    "UNINITIALIZED": (1,), "INVALID_ARGUMENT": (2,), "NOT_SUPPORTED": (3,), "ALREADY_INITIALIZED": (5,),
    "NOT_FOUND": (6,), "INSUFFICIENT_SIZE": (7,), "DRIVER_NOT_LOADED": (9,), "TIMEOUT": (10,),
    "AIP_IS_LOST": (15, 11), "MEMORY": (20, 12), "NO_DATA": (21, 13), "UNKNOWN": (49, 14),
}
_ABSENT = ("NOT_SUPPORTED", "NO_DATA")
_LOST = ("AIP_IS_LOST",)
_NO_DRIVER = ("UNINITIALIZED", "DRIVER_NOT_LOADED")

# the bindings' constants (hlml_types), with the documented values for bindings without them
ON_AIP, HBM = ("HLML_TEMPERATURE_ON_AIP", 0), ("HLML_TEMPERATURE_HBM", 3)
SHUTDOWN, SLOWDOWN = ("HLML_TEMPERATURE_THRESHOLD_SHUTDOWN", 0), ("HLML_TEMPERATURE_THRESHOLD_SLOWDOWN", 1)
_BIT = {name: bit for bit, name in CLOCK_EVENT_REASONS}
#: HLML's throttle reasons -> the contract's bit that means the same: the clocks held down to
#: stay under the power limit (sw_power_cap), or to stay under the temperature limit (sw_thermal)
THROTTLE = ((1 << 0, _BIT["sw_power_cap"]), (1 << 1, _BIT["sw_thermal"]))


def names_of(lib: ModuleType | None) -> dict[int, str]:
    """Return code -> name, from the documentation and the bindings' own table."""
    out = {code: name for name, codes in CODES.items() for code in codes}
    table = getattr(getattr(lib, "hlml_t", None), "HLML_RETURN", None)
    for attr in dir(table) if table is not None else ():
        value = getattr(table, attr)
        if attr.startswith("HLML_ERROR_") and isinstance(value, int):
            out.setdefault(int(value), attr.removeprefix("HLML_ERROR_"))
    return out


def constant(lib: ModuleType, group: str, entry: tuple[str, int]) -> int | None:
    """A constant of the bindings' ``hlml_t.<group>``; the documented value where the bindings
    have the group but not the name is None (they predate it), and without ``hlml_t`` at all."""
    table = getattr(getattr(lib, "hlml_t", None), group, None)
    if table is None:
        return entry[1]
    value = getattr(table, entry[0], None)
    return None if value is None else int(value)


class HlmlSource(AcceleratorSource):
    name = "hlml"
    library = "HLML"
    lost_is_certain = True
    module_name, error_name, unavailable = "pyhlml", "HLMLError", UNAVAILABLE
    install_hint = " (pip install wattledger[gaudi], habana-pyhlml of the installed driver's release)"

    def __init__(self, node: str, pyhlml: Any = None, **kwargs: Any) -> None:
        super().__init__(node, pyhlml, **kwargs)
        self._names: dict[int, str] = {}

    def _classify(self, exc: Exception, what: str) -> SourceError:
        code = getattr(exc, "value", None)
        name = self._names.get(code) if isinstance(code, int) else None
        return classify(name, f"{what}: HLML_ERROR_{name or 'code ' + str(code)}",
                        absent=_ABSENT, lost=_LOST, no_driver=_NO_DRIVER)

    # ---------------------------------------------------------------- open / close

    def _open_library(self) -> int:
        lib = self.lib
        self._names = names_of(lib)
        said = io.StringIO()  # without libhlml, hlmlInit prints before it raises
        try:
            with contextlib.redirect_stdout(said):
                self.call(lib.hlmlInit)
        except SourceError as exc:
            printed = one_line(said.getvalue())
            raise SourceUnavailable(f"{UNAVAILABLE}: {printed + ': ' if printed else ''}{exc}") from None
        try:
            return int(self.call(lib.hlmlDeviceGetCount))
        except SourceError as exc:
            self._shut_down()
            raise SourceUnavailable(f"{UNAVAILABLE}: {exc}") from None

    def _shut_down(self) -> None:
        try:
            self.call(self.lib.hlmlShutdown)
        except SourceError as exc:
            log.debug("HLML: shut down: %s", exc)

    def _identify(self, index: int) -> tuple[Device, Any]:
        lib = self.lib
        handle = self.call(lib.hlmlDeviceGetHandleByIndex, index)
        ident = (self._optional(lib.hlmlDeviceGetUUID, handle)
                 or self._optional(lib.hlmlDeviceGetSerial, handle))
        name = self._optional(lib.hlmlDeviceGetName, handle)
        model = None if not name else device_model(name if "GAUDI" in name.upper() else f"Intel Gaudi {name}")
        return Device(
            id=device_id(ident or f"{self._node}:hlml:gpu{index}"), kind="gpu", index=index, model=model,
            slowdown_c=self._threshold(handle, SLOWDOWN), shutdown_c=self._threshold(handle, SHUTDOWN),
        ), handle

    def _optional(self, fn: Any, *args: Any) -> str | None:
        """A text fact, None if the board has none; DeviceLost propagates."""
        try:
            value = text(self.call(fn, *args)).strip()
        except DeviceLost:
            raise
        except SourceError:
            return None
        return value or None

    def _threshold(self, handle: Any, entry: tuple[str, int]) -> float | None:
        kind = constant(self.lib, "HLML_TEMP_THRESH", entry)
        try:
            value = self.call(self.lib.hlmlDeviceGetTemperatureThreshold, handle, kind)
        except DeviceLost:
            raise
        except SourceError:
            return None
        return float(value) if value else None  # 0 °C: not set

    # ---------------------------------------------------------------- sampling

    def _read(self, board: Board, ts: float) -> DeviceReading:
        lib = self.lib
        ask, h = self.ask, board.handle
        sensors = "HLML_TEMP_SENS"
        power_mw = ask(board, "power", lib.hlmlDeviceGetPowerUsage, h)
        energy_mj = ask(board, "energy", lib.hlmlDeviceGetTotalEnergyConsumption, h)
        temp = ask(board, "temp", lib.hlmlDeviceGetTemperature, h, constant(lib, sensors, ON_AIP))
        hbm = constant(lib, sensors, HBM)
        mem_temp = None if hbm is None else ask(board, "mem_temp", lib.hlmlDeviceGetTemperature, h, hbm)
        rates = ask(board, "utilization", lib.hlmlDeviceGetUtilizationRates, h)
        memory = ask(board, "memory", lib.hlmlDeviceGetMemoryInfo, h)
        limit_fn = getattr(lib, "hlmlDeviceGetPowerManagementLimit", None) or getattr(
            lib, "hlmlDeviceGetPowerManagementDefaultLimit", None)
        limit_mw = ask(board, "power_limit", limit_fn, h)
        reasons = ask(board, "throttle", getattr(lib, "hlmlDeviceGetCurrentClocksThrottleReasons", None), h)

        limit_w = float(limit_mw) / 1000.0 if limit_mw else None
        if limit_w != board.info.power_limit_w:  # rare: keep one Device while it holds
            board.info = dataclasses.replace(board.info, power_limit_w=limit_w)
        aip = getattr(rates, "aip", None)
        return DeviceReading(
            device=board.info,
            ts=ts,
            power_w=None if power_mw is None else float(power_mw) / 1000.0,
            energy_j=None if energy_mj is None else board.energy(int(energy_mj)) / 1000.0,
            temp_c=None if temp is None else float(temp),
            mem_temp_c=None if mem_temp is None else float(mem_temp),
            util=None if aip is None or aip > 100 else float(aip) / 100.0,
            clock_events=None if reasons is None else self._events(int(reasons)),
            mem_used_bytes=None if memory is None else float(memory.used),
            mem_total_bytes=None if memory is None else float(memory.total),
        )

    def _events(self, reasons: int) -> int:
        events = 0
        for bit, ours in THROTTLE:
            if reasons & bit:
                events |= ours
        return events
