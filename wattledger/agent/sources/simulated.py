"""Simulated GPUs (``--simulate N``): a named feature for demos and tests, never a fallback.

Each GPU follows a small physical model driven by the timestamps it is sampled at (a virtual
clock: ``sample(ts)`` for any increasing ``ts``, no sleeping), so a month of history can be
generated in seconds and tests can compare against exact ground truth:

* utilization comes from the workload (training, inference with a daily swing, idle, hot);
* power = idle floor + (full draw - idle) x utilization, capped at the power limit, and
  reduced by thermal throttling;
* between two samples power is taken as linear, so the energy counter grows by exactly the
  trapezoid of the two reported powers: the counter *is* the integral of the reported power;
* temperature is a first-order model, dT/dt = (ambient + R x P - T) / tau, solved exactly
  over each interval (so it never overshoots): it follows power and, when the cooling is
  poor, climbs to the slowdown threshold where the GPU throttles (SwThermal, then HwThermal).
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import (
    GPU_IDLE,
    HW_THERMAL,
    SW_POWER_CAP,
    SW_THERMAL,
    DeviceLost,
    SourceSample,
)
from wattledger.agent.sources.remote import bmc_node_id
from wattledger.contract import Device

GIB = 1 << 30


@dataclass(frozen=True)
class GpuModel:
    name: str  # what NVML's nvmlDeviceGetName says
    power_limit_w: float
    idle_w: float
    full_draw_w: float  # what the board would draw at 100 % if the limit did not cap it
    slowdown_c: float
    shutdown_c: float
    mem_total_bytes: float
    max_sm_clock_hz: float
    idle_sm_clock_hz: float
    thermal_resistance: float  # °C per W between the die and the inlet air
    time_constant_s: float
    has_mem_temp: bool = True  # HBM boards report field 82, GDDR boards do not


MODELS: dict[str, GpuModel] = {
    "h100-sxm": GpuModel("NVIDIA H100 80GB HBM3", 700.0, 70.0, 735.0, 87.0, 92.0, 80 * GIB,
                         1980e6, 345e6, 0.062, 40.0),
    "a100-sxm": GpuModel("NVIDIA A100-SXM4-80GB", 400.0, 55.0, 420.0, 85.0, 92.0, 80 * GIB,
                         1410e6, 210e6, 0.11, 35.0),
    "l40s": GpuModel("NVIDIA L40S", 350.0, 35.0, 365.0, 88.0, 93.0, 48 * GIB,
                     2520e6, 210e6, 0.14, 30.0, has_mem_temp=False),
}


@dataclass(frozen=True)
class Workload:
    name: str
    ambient_c: float = 25.0
    cooling: float = 1.0  # multiplies the thermal resistance (poor cooling > 1)


WORKLOADS: dict[str, Workload] = {
    "training": Workload("training"),
    "inference": Workload("inference"),
    "idle": Workload("idle"),
    # a training job in a badly cooled slot: it settles just under its slowdown threshold
    "hot": Workload("hot", ambient_c=35.0, cooling=1.4),
}

#: a training job pauses for a checkpoint this often, for this long
CHECKPOINT_EVERY_S, CHECKPOINT_FOR_S = 1800.0, 60.0
#: throttling starts this many °C below the slowdown threshold
THROTTLE_MARGIN_C = 3.0


def utilization(workload: str, ts: float, phase: float, noise: float) -> float:
    """Target utilization (0..1) of a workload at ``ts``; ``noise`` is a N(0,1) draw."""
    if workload == "idle":
        return 0.0
    if workload == "inference":
        hour = (ts % 86400.0) / 3600.0
        day = 0.5 - 0.5 * math.cos(2 * math.pi * (hour - 3.0) / 24.0)  # low at 03:00, high 15:00
        value = 0.12 + 0.7 * day + 0.08 * noise
    else:  # training, hot
        in_checkpoint = (ts + phase) % CHECKPOINT_EVERY_S < CHECKPOINT_FOR_S
        value = (0.15 if in_checkpoint else 0.97) + 0.02 * noise
    return min(1.0, max(0.0, value))


def fake_uuid(node: str, index: int, seed: int) -> str:
    digest = hashlib.sha256(f"{node}:{index}:{seed}".encode()).digest()
    return "GPU-" + str(uuid.UUID(bytes=digest[:16], version=4))


class SimulatedGpu:
    """One simulated GPU. ``counter_j`` is what NVML's energy counter would say (0 when the
    simulation begins, and again after a driver reload); ``drawn_j`` is the ground truth drawn
    since the simulation began."""

    def __init__(self, node: str, index: int, model: GpuModel, workload: str, seed: int) -> None:
        self.model = model
        self.workload = WORKLOADS[workload]
        self.info = Device(id=fake_uuid(node, index, seed), kind="gpu", index=index,
                               model=model.name, power_limit_w=model.power_limit_w,
                               slowdown_c=model.slowdown_c, shutdown_c=model.shutdown_c)
        self._rng = random.Random(f"{seed}:{node}:{index}")
        # data-parallel jobs checkpoint together: one phase per node, not per GPU
        self._phase = random.Random(f"{seed}:{node}").uniform(0, CHECKPOINT_EVERY_S)
        # The counter starts at 0, as if the driver had just been loaded: a restarted simulation
        # (the demo's live agent after its backfill) then looks like a driver reload to the
        # collector, which adds exactly the energy since the restart, never a made-up offset.
        self.counter_j = 0.0
        self.drawn_j = 0.0
        self.temp_c = self.workload.ambient_c + self._resistance * model.idle_w
        self.power_w = model.idle_w
        self.last_ts: float | None = None
        # faults, for tests
        self.lost = False
        self.unsupported: frozenset[str] = frozenset()

    @property
    def _resistance(self) -> float:
        return self.model.thermal_resistance * self.workload.cooling

    # ---------------------------------------------------------------- faults

    def reset_counter(self) -> None:
        """A driver reload: the hardware energy counter restarts at 0."""
        self.counter_j = 0.0

    def lose(self) -> None:
        """The GPU falls off the bus: it stops answering (its model keeps running)."""
        self.lost = True

    def recover(self) -> None:
        """Back after a GPU reset, which also restarts its energy counter."""
        self.lost = False
        self.reset_counter()

    # ---------------------------------------------------------------- the model

    def _throttle(self, temp_c: float) -> float:
        """Power factor (0.5..1) at a temperature: 1 below slowdown - margin, 0.5 at slowdown."""
        over = temp_c - (self.model.slowdown_c - THROTTLE_MARGIN_C)
        return 1.0 - 0.5 * min(1.0, max(0.0, over / THROTTLE_MARGIN_C))

    def _temp_after(self, power: float, ts: float) -> float:
        """Temperature at ``ts`` if the power goes linearly from the last sample's to ``power``."""
        if self.last_ts is None:  # it was running before we looked: start at its steady state
            return self.workload.ambient_c + self._resistance * power
        dt = ts - self.last_ts
        steady = self.workload.ambient_c + self._resistance * (self.power_w + power) / 2.0
        return steady + (self.temp_c - steady) * math.exp(-dt / self.model.time_constant_s)

    def _power(self, wanted: float, ts: float) -> float:
        """The power the board settles on by ``ts``: ``wanted``, unless the temperature that
        would give calls for throttling; then the p for which p = wanted x factor(T(p)).
        (The throttle reacts within milliseconds on a real board: solving for the end of the
        interval keeps the model stable however far apart the samples are.)"""
        if self._throttle(self._temp_after(wanted, ts)) == 1.0:
            return wanted
        lo, hi = 0.5 * wanted, wanted  # g(p) = wanted x factor(T(p)) - p falls with p
        for _ in range(24):
            mid = (lo + hi) / 2.0
            if wanted * self._throttle(self._temp_after(mid, ts)) > mid:
                lo = mid
            else:
                hi = mid
        return lo

    def advance(self, ts: float) -> DeviceReading:
        """Move the model to ``ts`` and read it like NVML would. Raises DeviceLost if lost."""
        m = self.model
        util = utilization(self.workload.name, ts, self._phase, self._rng.gauss(0.0, 1.0))
        demand = m.idle_w + (m.full_draw_w - m.idle_w) * util
        wanted = min(demand, m.power_limit_w)
        if self.last_ts is not None and ts <= self.last_ts:  # no time passed: read it again
            power = self.power_w
        else:
            power = round(self._power(wanted, ts), 3)  # NVML reports whole mW
            self.temp_c = self._temp_after(power, ts)
            if self.last_ts is not None:
                energy = (self.power_w + power) / 2.0 * (ts - self.last_ts)  # power is linear
                self.counter_j += energy
                self.drawn_j += energy
            self.power_w, self.last_ts = power, ts
        factor = power / wanted
        if self.lost:
            raise DeviceLost(f"simulated GPU {self.info.index} is lost")

        events = 0
        if util < 0.01:
            events |= GPU_IDLE
        if demand > m.power_limit_w:
            events |= SW_POWER_CAP
        if factor < 0.999:
            events |= SW_THERMAL
        if self.temp_c >= m.slowdown_c:
            events |= HW_THERMAL
        clock = m.idle_sm_clock_hz if util < 0.01 else round(m.max_sm_clock_hz * factor / 1e6) * 1e6  # MHz
        mem_used = 0.5 * GIB if util < 0.01 else m.mem_total_bytes * (0.9 if util > 0.5 else 0.6)
        reading = DeviceReading(
            device=self.info, ts=ts, power_w=power, energy_j=round(self.counter_j, 3),
            temp_c=round(self.temp_c, 1),
            mem_temp_c=round(self.temp_c + 2.0 + 6.0 * util, 1) if m.has_mem_temp else None,
            util=round(util, 2), mem_util=round(util * 0.6, 2), sm_clock_hz=clock,
            clock_events=events, mem_used_bytes=mem_used, mem_total_bytes=m.mem_total_bytes,
        )
        if self.unsupported:
            reading = replace(reading, **dict.fromkeys(self.unsupported))  # type: ignore[arg-type]
        return reading


#: the simulated server's power supplies' efficiency (what its BMC's wall reading adds on top)
PSU_EFFICIENCY = 0.94


class SimulatedBmc:
    """The server's wall power as its BMC would read it (a ``node`` device): its GPUs' power
    through the power supplies, plus a base draw (fans, NICs, CPUs, storage)."""

    def __init__(self, node: str, base_w: float) -> None:
        self.info = Device(id=bmc_node_id(node), kind="node", index=0, model="simulated BMC")
        self.base_w = base_w
        self.counter_j = 0.0
        self.last: tuple[float, float] | None = None  # ts, power

    def advance(self, ts: float, gpus_w: float) -> DeviceReading:
        power = round((gpus_w + self.base_w) / PSU_EFFICIENCY, 1)
        if self.last is not None and ts > self.last[0]:
            self.counter_j += (self.last[1] + power) / 2.0 * (ts - self.last[0])
        if self.last is None or ts > self.last[0]:
            self.last = (ts, power)
        return DeviceReading(device=self.info, ts=ts, power_w=self.last[1], energy_j=round(self.counter_j, 3))


class SimulatedSource:
    """N simulated GPUs of one model; ``workloads`` are assigned to the GPUs in turn; with
    ``node_meter_w``, the server's BMC too (wall power = (GPUs + node_meter_w) / PSU efficiency)."""

    name = "simulated"

    def __init__(self, node: str, count: int, *, model: str = "h100-sxm",
                 workloads: Sequence[str] = ("training",), seed: int = 0,
                 node_meter_w: float | None = None) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown GPU model {model!r} (known: {', '.join(MODELS)})")
        unknown = [w for w in workloads if w not in WORKLOADS]
        if unknown or not workloads:
            raise ValueError(f"unknown workload {unknown!r} (known: {', '.join(WORKLOADS)})")
        self.gpus = [SimulatedGpu(node, i, MODELS[model], workloads[i % len(workloads)], seed)
                     for i in range(count)]
        self.bmc = SimulatedBmc(node, node_meter_w) if node_meter_w is not None else None

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def sample(self, ts: float) -> SourceSample:
        out = SourceSample()
        for gpu in self.gpus:
            try:
                out.readings.append(gpu.advance(ts))
            except DeviceLost:
                out.down.append(gpu.info)
        if self.bmc is not None:
            gpus_w = sum(r.power_w or 0.0 for r in out.readings)
            out.readings.append(self.bmc.advance(ts, gpus_w))
        return out
