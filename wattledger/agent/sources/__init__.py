"""Sources of readings, registered by name (``--sources nvml,host``).

Each factory takes the agent's :class:`SourceSettings` and returns a :class:`Source`; a
source's module is imported only when that source is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wattledger.agent.sources.base import Source
from wattledger.agent.sources.remote import IpmiSettings, ModbusTarget, RedfishSettings, SnmpTarget


@dataclass(frozen=True)
class SourceSettings:
    node: str
    simulate: int = 0
    simulate_model: str = "h100-sxm"
    workloads: tuple[str, ...] = ("training",)
    seed: int = 0
    sysfs_root: Path = Path("/sys")
    redfish: RedfishSettings | None = None  # the node's BMC (checked: set when redfish runs)
    ipmi: IpmiSettings = field(default_factory=IpmiSettings)
    snmp_targets: tuple[SnmpTarget, ...] = ()
    modbus_targets: tuple[ModbusTarget, ...] = ()


def _nvml(s: SourceSettings) -> Source:
    from wattledger.agent.sources.nvml import NvmlSource

    return NvmlSource(s.node)


def _host(s: SourceSettings) -> Source:
    from wattledger.agent.sources.host import HostSource

    return HostSource(s.node, sysfs_root=s.sysfs_root)


def _simulated(s: SourceSettings) -> Source:
    from wattledger.agent.sources.simulated import SimulatedSource

    return SimulatedSource(s.node, s.simulate, model=s.simulate_model, workloads=s.workloads, seed=s.seed)


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


REGISTRY: dict[str, Callable[[SourceSettings], Source]] = {
    "nvml": _nvml,
    "host": _host,
    "simulated": _simulated,
    "redfish": _redfish,
    "ipmi": _ipmi,
    "snmp": _snmp,
    "modbus": _modbus,
}


def default_sources(simulate: int) -> list[str]:
    """Simulated GPUs replace NVML only when asked for (``--simulate N``), never silently."""
    return ["simulated", "host"] if simulate > 0 else ["nvml", "host"]


def build_sources(names: Sequence[str], settings: SourceSettings) -> list[Source]:
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r} (known: {', '.join(REGISTRY)})")
    return [REGISTRY[name](settings) for name in dict.fromkeys(names)]
