"""Sources of readings, registered by name (``--sources nvml,host``).

Each factory takes the agent's :class:`SourceSettings` and returns a :class:`Source` (readings)
or an :class:`AllocationSource` (who holds the devices: ``kubernetes``, ``slurm``,
``processes``); a source's module is imported only when that source is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wattledger.agent.sources.base import AllocationSource, Source
from wattledger.agent.sources.remote import IpmiSettings, ModbusTarget, RedfishSettings, SnmpTarget
from wattledger.agent.sources.slurmrestd import SlurmrestdSettings


@dataclass(frozen=True)
class SourceSettings:
    node: str
    simulate: int = 0
    simulate_model: str = "h100-sxm"
    simulate_node_meter: float | None = None  # the simulated server's BMC: its base draw, W
    workloads: tuple[str, ...] = ("training",)
    seed: int = 0
    sysfs_root: Path = Path("/sys")
    redfish: RedfishSettings | None = None  # the node's BMC (checked: set when redfish runs)
    ipmi: IpmiSettings = field(default_factory=IpmiSettings)
    snmp_targets: tuple[SnmpTarget, ...] = ()
    modbus_targets: tuple[ModbusTarget, ...] = ()
    # the allocation sources
    kubelet_socket: Path = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    kubernetes_interval: float = 5.0
    kubernetes_team_label: str | None = None
    slurm_job_dir: Path = Path("/run/wattledger/slurm-jobs")
    slurmrestd: SlurmrestdSettings | None = None  # set: the slurm source asks slurmrestd
    proc_root: Path = Path("/proc")


def _nvml(s: SourceSettings) -> Source:
    from wattledger.agent.sources.nvml import NvmlSource

    return NvmlSource(s.node)


def _amdsmi(s: SourceSettings) -> Source:
    from wattledger.agent.sources.amdsmi import AmdSmiSource

    return AmdSmiSource(s.node)


def _hlml(s: SourceSettings) -> Source:
    from wattledger.agent.sources.hlml import HlmlSource

    return HlmlSource(s.node)


def _host(s: SourceSettings) -> Source:
    from wattledger.agent.sources.host import HostSource

    return HostSource(s.node, sysfs_root=s.sysfs_root)


def _simulated(s: SourceSettings) -> Source:
    from wattledger.agent.sources.simulated import SimulatedSource

    return SimulatedSource(s.node, s.simulate, model=s.simulate_model, workloads=s.workloads, seed=s.seed,
                           node_meter_w=s.simulate_node_meter)


def _redfish(s: SourceSettings) -> Source:
    from wattledger.agent.sources.redfish import RedfishSource

    if s.redfish is None:
        raise ValueError("the redfish source needs --redfish-url")
    return RedfishSource(s.node, s.redfish)


def _ipmi(s: SourceSettings) -> Source:
    from wattledger.agent.sources.ipmi import IpmiSource

    return IpmiSource(s.node, s.ipmi)


def _snmp(s: SourceSettings) -> Source:
    from wattledger.agent.sources.snmp import SnmpSource

    return SnmpSource(s.snmp_targets)


def _modbus(s: SourceSettings) -> Source:
    from wattledger.agent.sources.modbus import ModbusSource

    return ModbusSource(s.modbus_targets)


def _kubernetes(s: SourceSettings) -> AllocationSource:
    from wattledger.agent.sources.kubernetes import KubernetesSettings, KubernetesSource

    kube_api = None
    if s.kubernetes_team_label is not None:
        from wattledger.agent.sources.base import SourceUnavailable
        from wattledger.agent.sources.kubeapi import KubeApi, KubeApiSettings

        try:
            kube_api = KubeApi(KubeApiSettings.in_cluster())
        except SourceUnavailable as exc:  # teams unknown; attribution goes on without them
            logging.getLogger(__name__).warning("%s; holdings carry no team", exc)
    return KubernetesSource(KubernetesSettings(socket=s.kubelet_socket, interval=s.kubernetes_interval,
                                               team_label=s.kubernetes_team_label), kube_api=kube_api)


def _slurm(s: SourceSettings) -> AllocationSource:
    from wattledger.agent.sources.slurm import SlurmSettings, SlurmSource

    return SlurmSource(SlurmSettings(job_dir=s.slurm_job_dir, rest=s.slurmrestd))


def _processes(s: SourceSettings) -> AllocationSource:
    from wattledger.agent.sources.processes import ProcessesSettings, ProcessesSource

    return ProcessesSource(ProcessesSettings(proc_root=s.proc_root))


#: the sources that say who holds the devices (they add allocations, never readings)
ALLOCATION_SOURCES = frozenset({"kubernetes", "slurm", "processes"})

REGISTRY: dict[str, Callable[[SourceSettings], Source | AllocationSource]] = {
    "nvml": _nvml,
    "amdsmi": _amdsmi,
    "hlml": _hlml,
    "host": _host,
    "simulated": _simulated,
    "redfish": _redfish,
    "ipmi": _ipmi,
    "snmp": _snmp,
    "modbus": _modbus,
    "kubernetes": _kubernetes,
    "slurm": _slurm,
    "processes": _processes,
}


def default_sources(simulate: int) -> list[str]:
    """Simulated GPUs replace NVML only when asked for (``--simulate N``), never silently."""
    return ["simulated", "host"] if simulate > 0 else ["nvml", "host"]


def _check(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r} (known: {', '.join(REGISTRY)})")


def build_sources(names: Sequence[str], settings: SourceSettings) -> list[Source]:
    """The hardware sources among ``names``."""
    _check(names)
    built = [REGISTRY[name](settings) for name in dict.fromkeys(names) if name not in ALLOCATION_SOURCES]
    return [s for s in built if not isinstance(s, AllocationSource)]


def build_allocation_sources(names: Sequence[str], settings: SourceSettings) -> list[AllocationSource]:
    """The allocation sources among ``names``."""
    _check(names)
    built = [REGISTRY[name](settings) for name in dict.fromkeys(names) if name in ALLOCATION_SOURCES]
    return [s for s in built if isinstance(s, AllocationSource)]
