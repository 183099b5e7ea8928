"""Node rows (GET /v1/nodes): every node with its devices, their latest readings and counters."""

from __future__ import annotations

import math
from typing import Any

from wattledger.collector.accounting.readings import LATEST
from wattledger.collector.readmodel.view import FleetView


def _num(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def node_rows(view: FleetView) -> list[dict[str, Any]]:
    """Rows of /v1/nodes, from one view of the fleet."""
    dev = view.devices
    slots: dict[str, list[int]] = {}
    for slot in range(dev.size):
        slots.setdefault(dev.node[slot], []).append(slot)
    rows = []
    for node in sorted(view.nodes):
        state = view.nodes[node]
        devices = []
        for slot in sorted(slots.get(node, []), key=lambda s: dev.index[s]):
            f = dev.floats
            latest = {name: _num(f[name][slot]) for name in LATEST}
            events = int(dev.clock_events[slot]) if dev.has_clock_events[slot] else None
            devices.append({
                "id": dev.device[slot], "kind": dev.kind[slot], "index": dev.index[slot],
                "model": dev.model[slot], "power_limit_w": _num(f["power_limit_w"][slot]),
                "slowdown_c": dev.slowdown_c[slot], "shutdown_c": dev.shutdown_c[slot],
                "latest": {"ts": _num(f["last_ts"][slot]), "power_w": _num(f["last_power_w"][slot]),
                           "energy_j": _num(f["last_energy_j"][slot]), **latest,
                           "clock_events": events},
                "energy_j_total": float(f["energy_j"][slot]),
                "unmeasured_seconds_total": float(f["unmeasured_s"][slot]),
                "counter_resets_total": int(dev.counts["resets"][slot]),
                "energy_anomalies_total": int(dev.counts["anomalies"][slot]),
                "late_readings_total": int(dev.counts["late"][slot]),
            })
        rows.append({"node": node, "site": state.site, "cluster": state.cluster,
                     "labels": dict(state.labels), "last_seen": state.last_seen,
                     "stale": state.stale, "readings_total": state.readings,
                     "duplicate_agent": state.duplicate_agent,
                     "duplicate_agent_batches_total": state.conflicts,
                     "devices": devices})
    return rows
