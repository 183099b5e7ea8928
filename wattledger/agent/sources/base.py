"""The small interfaces every source implements, and the errors they raise.

A hardware source (:class:`Source`) is opened once, then asked for a sample at a given
timestamp (the sampler's clock, so the simulator can run on a virtual clock), and closed at the
end. An allocation source (:class:`AllocationSource`: Kubernetes, Slurm, the process list) is
asked, after the hardware sources, who holds the devices seen in that sample. Vendor errors
(NVML's, sysfs', the kubelet's) never leave a source: they are mapped to the exception types
below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from wattledger.agent.reading import DeviceReading
from wattledger.contract import Device

#: the clock-event bits the simulator sets (all bits and their labels: contract.CLOCK_EVENT_REASONS)
GPU_IDLE, SW_POWER_CAP, SW_THERMAL, HW_THERMAL = 0x1, 0x4, 0x20, 0x40


class SourceError(Exception):
    """Something a source could not do; the message is one line for the operator."""


class SourceUnavailable(SourceError):
    """The source cannot run on this machine (no driver, no permission): it stays off."""


class DeviceLost(SourceError):
    """One device stopped answering (fell off the bus); the others go on."""


class FieldUnsupported(SourceError):
    """The device does not have this reading; it is reported absent, never as 0."""


@dataclass(frozen=True, slots=True)
class RaplDomain:
    """One RAPL power domain's counter as seen by this agent."""

    domain: str  # "package-0", "package-0/dram", ...
    energy_j: float  # joules counted since the agent started (wrap-arounds unfolded)
    power_w: float | None  # average over the last sample interval; None on the first


@dataclass(frozen=True, slots=True)
class HostStats:
    cpu_util: float | None = None  # 0..1, all cores
    mem_used_bytes: float | None = None
    mem_total_bytes: float | None = None
    rapl: tuple[RaplDomain, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceSample:
    """What one source yields for one sample."""

    #: device readings, one per device that answered; these are exposed and delivered
    readings: list[DeviceReading] = field(default_factory=list)
    #: devices the source knows but which did not answer this time (reported down)
    down: list[Device] = field(default_factory=list)
    host: HostStats | None = None
    #: other ids of this source's devices, alias -> Device.id: the names a device plugin hands
    #: a device out by, where they are not its id (an AMD GPU's PCI address, ``0000:c1:00.0``);
    #: the sampler maps the allocation sources' device ids through them
    aliases: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    """A named provider of readings. ``open`` may raise :class:`SourceUnavailable`;
    ``sample`` may raise any :class:`SourceError` (the sampler marks the source down)."""

    name: str

    def open(self) -> None: ...

    def sample(self, ts: float) -> SourceSample: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Holding:
    """Who holds devices now, as an allocation source sees it at one sample."""

    key: str  # stable identity across samples, e.g. "k8s:<ns>/<pod>/<container>", "slurm:48213"
    device_ids: tuple[str, ...]  # Device.id of each held device (GPU UUID, MIG UUID)
    owner: Mapping[str, str]  # wire owner keys: job, account, user, partition, namespace, pod, ...
    weight: float = 1.0  # time-slicing/MPS share (several holdings of one device split by weight)
    since: float | None = None  # start time when the source knows it (Slurm prolog), else first seen
    until: float | None = None  # end time when the source knows it (epilog), else when no longer seen


@runtime_checkable
class AllocationSource(Protocol):
    """A named provider of holdings. ``open`` may raise :class:`SourceUnavailable`; ``holdings``
    may raise any :class:`SourceError` (the sampler marks the source down and its holdings end).
    ``devices`` are the devices of this sample (to map a Slurm GPU index to its UUID, a MIG
    UUID to its partition device)."""

    name: str

    def open(self) -> None: ...

    def holdings(self, ts: float, devices: Sequence[Device]) -> list[Holding]: ...

    def close(self) -> None: ...
