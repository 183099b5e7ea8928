"""The host itself: CPU utilization and memory (psutil), and RAPL energy where readable.

RAPL zones live under ``<sysfs>/class/powercap/intel-rapl:N[:M]`` (AMD CPUs use the same
names). Each has ``name`` (package-0, core, uncore, dram, psys), ``energy_uj`` (a counter that
wraps at ``max_energy_range_uj``) and, since Linux 5.10, ``energy_uj`` is readable by root
only. The counters are unfolded across wrap-arounds and reported as joules counted since this
agent started, so a restart never makes the ledger count energy twice.

Only domains that do not overlap become device readings for the collector: packages and
DRAM (core and uncore are parts of a package; psys contains the packages, so it is delivered
only when there are no package zones). All readable domains are exposed on /metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil  # type: ignore[import-untyped]

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import HostStats, RaplDomain, SourceSample
from wattledger.contract import Device

log = logging.getLogger(__name__)


@dataclass
class _Zone:
    domain: str  # "package-0" or "package-0/dram"
    path: Path
    max_range_uj: int
    info: Device | None  # None: exposed only, not delivered (overlaps another domain)
    last_uj: int | None = None
    last_ts: float | None = None
    counted_j: float = 0.0


class HostSource:
    name = "host"

    def __init__(
        self,
        node: str,
        sysfs_root: Path = Path("/sys"),
        cpu_percent: Callable[[], float] | None = None,
        virtual_memory: Callable[[], Any] | None = None,
        read_text: Callable[[Path], str] = Path.read_text,
    ) -> None:
        self._node = node
        self._powercap = Path(sysfs_root) / "class" / "powercap"
        # psutil.cpu_percent(None) measures since its previous call: exactly one sample interval
        self._cpu_percent = cpu_percent or (lambda: psutil.cpu_percent(interval=None))
        self._virtual_memory = virtual_memory or psutil.virtual_memory
        self._read_text = read_text  # injectable: tests stand in for root-only files
        self._zones: list[_Zone] = []

    def _read_int(self, path: Path) -> int:
        return int(self._read_text(path).strip())

    def open(self) -> None:
        self._cpu_percent()  # prime the CPU-time baseline
        self._zones = self._discover_rapl()

    def close(self) -> None:
        self._zones = []

    def _discover_rapl(self) -> list[_Zone]:
        if not self._powercap.is_dir():
            log.info("RAPL: no %s on this host; host energy not measured", self._powercap)
            return []
        names: dict[str, str] = {}
        candidates: list[tuple[str, Path]] = []
        for path in sorted(self._powercap.glob("intel-rapl:*")):
            try:
                name = self._read_text(path / "name").strip()
            except OSError:
                continue
            names[path.name] = name
            parent = path.name.rsplit(":", 1)[0]
            candidates.append((f"{names[parent]}/{name}" if parent in names else name, path))
        has_package = any(d.startswith("package") and "/" not in d for d, _ in candidates)
        zones: list[_Zone] = []
        unreadable: list[str] = []
        for domain, path in candidates:
            try:
                max_range = self._read_int(path / "max_energy_range_uj")
                self._read_int(path / "energy_uj")
            except PermissionError:
                unreadable.append(domain)
                continue
            except (OSError, ValueError):
                continue
            leaf = domain.rsplit("/", 1)[-1]
            delivered = (leaf.startswith("package") or leaf == "dram"
                         or (leaf == "psys" and not has_package))
            info = None
            if delivered:
                kind: Literal["cpu", "host"] = "host" if leaf in ("dram", "psys") else "cpu"
                info = Device(id=f"{self._node}:rapl:{domain}", kind=kind,
                                  index=sum(z.info is not None for z in zones), model=f"RAPL {leaf}")
            zones.append(_Zone(domain, path, max_range, info))
        if unreadable:
            log.warning("RAPL: %s not readable (energy_uj is root-only since Linux 5.10); "
                        "those host energy domains are not measured", ", ".join(unreadable))
        return zones

    def _read_zone(self, zone: _Zone, ts: float) -> RaplDomain | None:
        try:
            raw = self._read_int(zone.path / "energy_uj")
        except (OSError, ValueError):
            return None
        power = None
        if zone.last_uj is not None and zone.last_ts is not None:
            delta = raw - zone.last_uj
            if delta < 0:  # wrapped around (the counter counts 0..max_energy_range_uj)
                delta += zone.max_range_uj
            zone.counted_j += delta / 1e6
            if ts > zone.last_ts:
                power = delta / 1e6 / (ts - zone.last_ts)
        zone.last_uj, zone.last_ts = raw, ts
        return RaplDomain(zone.domain, zone.counted_j, power)

    def sample(self, ts: float) -> SourceSample:
        memory = self._virtual_memory()
        domains: list[RaplDomain] = []
        readings: list[DeviceReading] = []
        for zone in self._zones:
            domain = self._read_zone(zone, ts)
            if domain is None:
                continue
            domains.append(domain)
            if zone.info is not None:
                readings.append(DeviceReading(device=zone.info, ts=ts, power_w=domain.power_w,
                                              energy_j=domain.energy_j))
        host = HostStats(
            cpu_util=min(1.0, max(0.0, self._cpu_percent() / 100.0)),
            mem_used_bytes=float(memory.total - memory.available),
            mem_total_bytes=float(memory.total),
            rapl=tuple(domains),
        )
        return SourceSample(readings=readings, host=host)
