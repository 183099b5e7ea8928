"""A test-only allocation source: it implements the AllocationSource protocol for real (open,
holdings, close, the base module's errors) and lists what a test scripts. The real sources
(kubernetes, slurm, processes) are their own modules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from wattledger.agent.sources.base import Holding, SourceError, SourceUnavailable
from wattledger.contract import Device


class HeldSource:
    """Lists ``held`` (keyed holdings) at every sample; fails while ``failing`` is set, and
    refuses to open while ``unavailable`` is. ``seen`` keeps the devices each call was given."""

    def __init__(self, name: str = "held") -> None:
        self.name = name
        self.held: dict[str, Holding] = {}
        self.failing = False
        self.unavailable = False
        self.opened = self.closed = 0
        self.seen: list[list[str]] = []

    def hold(self, key: str, *device_ids: str, weight: float = 1.0, since: float | None = None,
             until: float | None = None, **owner: str) -> None:
        self.held[key] = Holding(key, tuple(device_ids), owner or {"job": key}, weight, since, until)

    def release(self, key: str) -> None:
        del self.held[key]

    def open(self) -> None:
        self.opened += 1
        if self.unavailable:
            raise SourceUnavailable("no scheduler here")

    def holdings(self, ts: float, devices: Sequence[Device]) -> list[Holding]:
        self.seen.append([d.id for d in devices])
        if self.failing:
            raise SourceError("the scheduler did not answer")
        return list(self.held.values())

    def close(self) -> None:
        self.closed += 1


def owner(**keys: str) -> Mapping[str, str]:
    return dict(keys)
