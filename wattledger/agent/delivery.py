"""Durable delivery of an agent's readings to the collector: spool + shipper (issue 4).

This is the interface the agent runtime calls; the spool and shipper behind it are built in
``spool.py`` and ``shipper.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import Metric

from wattledger.agent.reading import DeviceReading


@dataclass(frozen=True)
class DeliveryStats:
    shipped_readings: int  # readings acknowledged by the collector during this run
    spooled_readings: int  # readings still in the spool (shipped at the next start)


class Delivery:
    """Spool every sample durably, cut batches, ship them in seq order to the collector."""

    def __init__(
        self,
        *,
        spool_dir: Path,
        collector_url: str,
        token: str | None,
        node: str,
        labels: Mapping[str, str],
        batch_seconds: float = 10.0,
        max_spool_bytes: int = 1 << 30,
    ) -> None:
        raise NotImplementedError("delivery is being built (issue 4)")

    def record(self, readings: Sequence[DeviceReading]) -> None:
        """Called by the sampler after each sample; durable when it returns."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> DeliveryStats:
        """Cut the open batch, ship for up to ``timeout`` seconds, close the spool."""
        raise NotImplementedError

    def collect(self) -> Iterable[Metric]:
        """Self-health metric families (spool batches, dropped readings, shipped batches)."""
        raise NotImplementedError
