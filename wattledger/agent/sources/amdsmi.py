"""AMD Instinct GPUs (MI200, MI300) through AMD SMI. The only module of wattledger that
imports ``amdsmi``.

What each reading is, in AMD SMI's own units (the Python package's ``amdsmi_interface``):

- power: ``amdsmi_get_power_info`` in watts: ``socket_power`` (AMD SMI 7), else
  ``current_socket_power`` (MI300: the instantaneous socket power), else
  ``average_socket_power`` (MI200: its 1-second average). "N/A" (0xFFFF) is absent.
- energy: ``amdsmi_get_energy_count``: ``energy_accumulator`` (``power`` before AMD SMI 6.4)
  counts steps of ``counter_resolution`` µJ (15.3); joules = count x resolution / 1e6. The
  count is 64 bits on MI200/MI300; a 32-bit firmware counter is unfolded across its wrap
  (``EnergyCounter``). The collector integrates power only where there is no counter.
- ``temp_c`` ("gpu") is the junction (hotspot) temperature: the one sensor every Instinct
  has (MI300 has no edge sensor) and the one its limits are set on; ``mem_temp_c`` the HBM
  (VRAM) sensor. ``amdsmi_get_temp_metric`` answers °C (its documentation says millidegrees;
  the library divides by 1000; a value of 1000 or more is taken as millidegrees all the same).
- slowdown / shutdown: the junction's CRITICAL and EMERGENCY limits (what ``amd-smi static
  --limit`` calls SLOWDOWN and SHUTDOWN); 0 means "not set".
- utilization: ``amdsmi_get_gpu_activity`` ``gfx_activity`` % (-> ``util``) and
  ``umc_activity`` % (the memory controller's, -> ``mem_util``).
- power limit: ``amdsmi_get_power_cap_info`` ``power_cap`` in µW.
- memory: ``amdsmi_get_gpu_memory_usage`` / ``_total`` of VRAM, bytes.
- clock events: MI300 firmware keeps residency counters of each throttle cause in its metrics
  table (``amdsmi_get_gpu_metrics_info``); a cause whose counter rose since the previous
  sample is active, mapped to the contract's NVML-style bits where it means the same
  (``VIOLATIONS``). AMD SMI's own ``amdsmi_get_violation_status`` works the same way but
  sleeps 100 ms per call to get its two readings: far too long for a 1 s sample of 8 GPUs.
  MI200 has no such counters (the Python library reduces its throttle status to a yes/no
  with no cause): its clock events are absent.

On MI250X each OAM module shows as two GPUs (GCDs), and each is a GPU to Slurm and Kubernetes;
but the firmware measures the module's power and energy as one, reported on the first die,
while the second answers 0 W, an energy count of 0 and a power cap of 0 (the amdgpu driver:
"valid power data is available only from primary die"). Those zeros are not readings. A die
that answers exactly that when it is discovered belongs to the module of the die before it,
and the module's power, energy and power cap are split evenly between its dies: each GCD
carries its half, the node adds up to what the firmware measured, and no die is left with
time the ledger cannot account for. The halves are that split, not a measurement per die.

Each GPU's PCI address (``amdsmi_get_gpu_device_bdf``, ``0000:c1:00.0``) is given as an alias
of its device (``SourceSample.aliases``): the ROCm device plugin hands AMD GPUs out to pods by
that address, and the sampler names the kubelet's holdings by the GPUs' ids through it.

AMD SMI has no "device lost" code: a GPU that stops answering shows as I/O failures
(rocm_smi maps EIO to UNEXPECTED_SIZE, ENXIO to UNEXPECTED_DATA). So such a failure takes the
GPU down only when it is the first thing asked of the GPU in a sample; later in the sample it
is a transient failure of that one reading.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Any

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.accelerator import (
    AcceleratorSource,
    Board,
    classify,
    device_id,
    device_model,
    one_line,
)
from wattledger.agent.sources.base import FieldUnsupported, SourceError, SourceSample, SourceUnavailable
from wattledger.contract import CLOCK_EVENT_REASONS, Device

log = logging.getLogger(__name__)

UNAVAILABLE = "no AMD GPU driver (amdsmi)"

# amdsmi_status_t (amdsmi.h; stable across AMD SMI versions), to map errors to our own types
NOT_SUPPORTED, NOT_YET_IMPLEMENTED, FAIL_LOAD_MODULE, FAIL_LOAD_SYMBOL, DRM_ERROR = 2, 3, 4, 5, 6
IO, NO_PERM, FILE_ERROR, INIT_ERROR, NOT_FOUND, NOT_INIT, DRIVER_NOT_LOADED = 12, 10, 14, 18, 31, 32, 34
NO_DATA, UNEXPECTED_SIZE, UNEXPECTED_DATA, NO_DRV = 40, 42, 43, 51
SETTING_UNAVAILABLE, AMDGPU_RESTART_ERR, UNKNOWN_ERROR = 55, 54, 0xFFFFFFFF
_ABSENT = {NOT_SUPPORTED, NOT_YET_IMPLEMENTED, NO_DATA, SETTING_UNAVAILABLE}
_GONE = {DRM_ERROR, IO, FILE_ERROR, NOT_FOUND, UNEXPECTED_SIZE, UNEXPECTED_DATA, AMDGPU_RESTART_ERR,
         UNKNOWN_ERROR}
_NO_DRIVER = {FAIL_LOAD_MODULE, FAIL_LOAD_SYMBOL, NO_PERM, INIT_ERROR, NOT_INIT, DRIVER_NOT_LOADED, NO_DRV}

_BIT = {name: bit for bit, name in CLOCK_EVENT_REASONS}
#: MI300 metrics-table residency counters -> the contract's bit that means the same:
#: PPT (package power tracking) holds the clocks under the power cap, as NVML's sw_power_cap;
#: socket and HBM thermal are the firmware keeping the die or the memory under its limit, as
#: NVML's sw_thermal (which covers the memory too); PROCHOT is the hardware thermal line, as
#: hw_thermal; a voltage regulator too hot is a hardware slowdown, as hw_slowdown
VIOLATIONS = (
    ("ppt_residency_acc", _BIT["sw_power_cap"]),
    ("socket_thm_residency_acc", _BIT["sw_thermal"]),
    ("hbm_thm_residency_acc", _BIT["sw_thermal"]),
    ("prochot_residency_acc", _BIT["hw_thermal"]),
    ("vr_thm_residency_acc", _BIT["hw_slowdown"]),
)
POWER_KEYS = ("socket_power", "current_socket_power", "average_socket_power")
#: a PCI address, domain:bus:device.function
PCI_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def number(value: object) -> float | None:
    """A number from AMD SMI's dicts; its "N/A" strings (the library's spelling of the
    firmware's all-ones "no value") are absent."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def positive(value: object) -> float | None:
    v = number(value)
    return v if v is not None and v > 0 else None


def celsius(value: object) -> float | None:
    v = number(value)
    if v is None:
        return None
    return v / 1000.0 if abs(v) >= 1000 else v  # millidegrees, as the documentation has it


class AmdSmiSource(AcceleratorSource):
    name = "amdsmi"
    library = "AMD SMI"
    lost_is_certain = False
    module_name, error_name, unavailable = "amdsmi", "AmdSmiException", UNAVAILABLE
    #: ROCm's own copy matches its libamd_smi.so; PyPI's must be of the same ROCm release
    install_hint = " (pip install /opt/rocm/share/amd_smi, or wattledger[amd] of the same ROCm release)"

    def __init__(self, node: str, amdsmi: Any = None, **kwargs: Any) -> None:
        super().__init__(node, amdsmi, **kwargs)
        self._handles: list[Any] = []
        self._seen_ids: set[str] = set()
        self._module_of: dict[int, int] = {}  # a die without power data -> its module's first die
        self._firsts: list[int] = []  # the dies that report a module's power (or their own)

    def _classify(self, exc: Exception, what: str) -> SourceError:
        info = getattr(exc, "err_info", None) or one_line(exc) or type(exc).__name__
        return classify(getattr(exc, "err_code", None), f"{what}: {info}",
                        absent=_ABSENT, lost=_GONE, no_driver=_NO_DRIVER)

    # ---------------------------------------------------------------- open / close

    def _open_library(self) -> int:
        lib = self.lib
        try:
            self.call(lib.amdsmi_init, lib.AmdSmiInitFlags.INIT_AMD_GPUS)
        except SourceError as exc:
            raise SourceUnavailable(f"{UNAVAILABLE}: {exc}") from None
        try:
            self._handles = list(self.call(lib.amdsmi_get_processor_handles))
        except SourceError as exc:
            self._shut_down()
            raise SourceUnavailable(f"{UNAVAILABLE}: {exc}") from None
        self._seen_ids = set()
        self._module_of, self._firsts = {}, []
        return len(self._handles)

    def _shut_down(self) -> None:
        try:
            self.call(self.lib.amdsmi_shut_down)
        except SourceError as exc:
            log.debug("AMD SMI: shut down: %s", exc)

    def _identify(self, index: int) -> tuple[Device, Any]:
        lib = self.lib
        handle = self._handles[index]
        try:  # the liveness check: any other failure leaves the GPU undiscovered, down
            uuid: str | None = one_line(self.call(lib.amdsmi_get_gpu_device_uuid, handle))
        except FieldUnsupported:
            uuid = None
        asic = self._optional(lib.amdsmi_get_gpu_asic_info, handle) or {}
        ident = uuid if uuid and uuid != "N/A" else None
        serial = asic.get("asic_serial")
        if ident is None and isinstance(serial, str) and serial != "N/A":
            ident = f"AMD-{serial}"
        ident = device_id(ident or f"{self._node}:amdsmi:gpu{index}")
        if ident in self._seen_ids:  # two handles of one UUID (a partitioned GPU): keep both
            ident = device_id(f"{ident}:{index}")
        self._seen_ids.add(ident)
        first = max((f for f in self._firsts if f < index), default=None)
        if first is not None and self._answers_no_power(handle):
            self._module_of[index] = first
        else:
            self._firsts.append(index)
        temp = lib.AmdSmiTemperatureType.HOTSPOT
        metric = lib.AmdSmiTemperatureMetric
        return Device(
            id=ident, kind="gpu", index=index, model=self._model(handle, asic),
            slowdown_c=self._threshold(handle, temp, metric.CRITICAL),
            shutdown_c=self._threshold(handle, temp, metric.EMERGENCY),
        ), handle

    def _aliases(self, handle: Any) -> tuple[str, ...]:
        """The GPU's PCI address, which the ROCm device plugin hands it out by in Kubernetes
        (``amd.com/gpu``): ``amdsmi_get_gpu_device_bdf``, ``0000:c1:00.0`` (lower-case hex, as
        the kernel's sysfs and the plugin write it)."""
        bdf_of = getattr(self.lib, "amdsmi_get_gpu_device_bdf", None)
        bdf = self._optional(bdf_of, handle) if bdf_of is not None else None
        if not isinstance(bdf, str) or not PCI_ADDRESS.fullmatch(bdf.strip().lower()):
            return ()
        return (bdf.strip().lower(),)

    def _answers_no_power(self, handle: Any) -> bool:
        """Exactly 0 W, an energy count of 0 and a power cap of 0: the second die of a module."""
        lib = self.lib

        def zero(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value == 0

        power = self._optional(lib.amdsmi_get_power_info, handle)
        energy = self._optional(lib.amdsmi_get_energy_count, handle)
        cap = self._optional(lib.amdsmi_get_power_cap_info, handle)
        return (isinstance(power, dict) and any(zero(power.get(k)) for k in POWER_KEYS)
                and all(zero(power.get(k)) or number(power.get(k)) is None for k in POWER_KEYS)
                and isinstance(energy, dict) and zero(energy.get("energy_accumulator", energy.get("power")))
                and isinstance(cap, dict) and zero(cap.get("power_cap")))

    def _dies(self, first: int) -> int:
        """How many dies share the power data of die ``first`` (1 for a GPU of its own)."""
        return 1 + sum(1 for f in self._module_of.values() if f == first)

    def _optional(self, fn: Any, *args: Any) -> Any:
        try:
            return self.call(fn, *args)
        except SourceError:
            return None

    def _model(self, handle: Any, asic: dict[str, Any]) -> str | None:
        """The product name, which says the vendor: the ASIC's market name ("AMD Instinct
        MI300X"), else the board's product name, "AMD " put in front where it is missing."""
        name = asic.get("market_name")
        if not isinstance(name, str) or name in ("", "N/A"):
            board = self._optional(self.lib.amdsmi_get_gpu_board_info, handle) or {}
            name = board.get("product_name")
        if not isinstance(name, str) or name in ("", "N/A"):
            return None
        name = one_line(name)
        return device_model(name if "AMD" in name.upper() else f"AMD {name}")

    def _threshold(self, handle: Any, sensor: Any, metric: Any) -> float | None:
        value = celsius(self._optional(self.lib.amdsmi_get_temp_metric, handle, sensor, metric))
        return value if value else None  # 0 °C: not set

    # ---------------------------------------------------------------- sampling

    def sample(self, ts: float) -> SourceSample:
        out = super().sample(ts)
        if self._module_of:
            firsts = {r.device.index: r for r in out.readings}
            for i, r in enumerate(out.readings):
                if r.device.index in self._module_of:
                    out.readings[i] = self._module_share(r, firsts.get(self._module_of[r.device.index]))
        return out

    def _module_share(self, reading: DeviceReading, first: DeviceReading | None) -> DeviceReading:
        """A second die's reading with its share of the module, as its first die reports it
        (absent while the first die does not answer)."""
        board = self._boards[reading.device.index]
        assert board is not None
        limit_w = None if first is None else first.device.power_limit_w
        if limit_w != board.info.power_limit_w:
            board.info = dataclasses.replace(board.info, power_limit_w=limit_w)
        return dataclasses.replace(reading, device=board.info,
                                   power_w=None if first is None else first.power_w,
                                   energy_j=None if first is None else first.energy_j)

    def _read(self, board: Board, ts: float) -> DeviceReading:
        lib = self.lib
        ask, h = self.ask, board.handle
        second = board.index in self._module_of  # its module's power data is its first die's
        dies = 1 if second else self._dies(board.index)
        power = None if second else ask(board, "power", lib.amdsmi_get_power_info, h)
        energy = None if second else ask(board, "energy", lib.amdsmi_get_energy_count, h)
        temps, metric = lib.AmdSmiTemperatureType, lib.AmdSmiTemperatureMetric.CURRENT
        temp = ask(board, "temp", lib.amdsmi_get_temp_metric, h, temps.HOTSPOT, metric)
        mem_temp = ask(board, "mem_temp", lib.amdsmi_get_temp_metric, h, temps.VRAM, metric)
        activity = ask(board, "activity", lib.amdsmi_get_gpu_activity, h) or {}
        cap = {} if second else ask(board, "power_cap", lib.amdsmi_get_power_cap_info, h) or {}
        vram = lib.AmdSmiMemoryType.VRAM
        used = ask(board, "memory_used", lib.amdsmi_get_gpu_memory_usage, h, vram)
        total = board.state.get("memory_total")
        if total is None:  # installed memory does not change: asked until it is answered
            total = board.state["memory_total"] = ask(board, "memory_total", lib.amdsmi_get_gpu_memory_total,
                                                      h, vram)
        events = self._clock_events(board)

        cap_uw = positive(cap.get("power_cap"))
        limit_w = None if cap_uw is None or second else cap_uw / 1e6 / dies
        if limit_w != board.info.power_limit_w and not second:  # rare: keep one Device while it holds
            board.info = dataclasses.replace(board.info, power_limit_w=limit_w)
        gfx, umc = number(activity.get("gfx_activity")), number(activity.get("umc_activity"))
        watts, joules = self._socket_power(power), self._energy_j(board, energy)
        return DeviceReading(
            device=board.info,
            ts=ts,
            power_w=None if watts is None else watts / dies,
            energy_j=None if joules is None else joules / dies,
            temp_c=celsius(temp),
            mem_temp_c=celsius(mem_temp),
            util=None if gfx is None or gfx > 100 else gfx / 100.0,
            mem_util=None if umc is None or umc > 100 else umc / 100.0,
            clock_events=events,
            mem_used_bytes=number(used),
            mem_total_bytes=positive(total),
        )

    @staticmethod
    def _socket_power(info: Any) -> float | None:
        if not isinstance(info, dict):
            return None
        for key in POWER_KEYS:
            watts = positive(info.get(key))
            if watts is not None:
                return watts
        return None  # every key N/A, or 0 W (the second die of an MI250X)

    @staticmethod
    def _energy_j(board: Board, answer: Any) -> float | None:
        if not isinstance(answer, dict):
            return None
        raw = answer.get("energy_accumulator", answer.get("power"))
        resolution_uj = positive(answer.get("counter_resolution"))
        if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0 or resolution_uj is None:
            return None  # no counter here (a count of 0: the second die of an MI250X)
        return board.energy(raw) * resolution_uj / 1e6

    def _clock_events(self, board: Board) -> int | None:
        """The throttle causes active since the previous sample, from MI300's residency
        counters; None on the first sample, after a counter went back, and where there are
        none (MI200: asked once, then no more)."""
        metrics = self.ask(board, "violations", self.lib.amdsmi_get_gpu_metrics_info, board.handle)
        if not isinstance(metrics, dict):
            return None
        now = {key: number(metrics.get(key)) for key, _ in VIOLATIONS}
        if all(v is None for v in now.values()):
            board.unsupported.add("violations")
            return None
        ticks = number(metrics.get("accumulation_counter"))
        before, board.state["violations"] = board.state.get("violations"), (ticks, now)
        if before is None or ticks is None or before[0] is None or ticks <= before[0]:
            return None
        events = 0
        for key, bit in VIOLATIONS:
            old, new = before[1].get(key), now[key]
            if old is None or new is None or new < old:
                continue
            if new > old:
                events |= bit
        return events
