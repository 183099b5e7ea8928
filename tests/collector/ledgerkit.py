"""Helpers of the ledger tests: sites from YAML-like dicts, batches from columns, clocks, and the
store backend a test runs on (``backend`` fixture, tests/collector/conftest.py: SQLite, or a
database of the session's PostgreSQL)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter

from wattledger.collector.readmodel.view import NodeView
from wattledger.collector.service import Ledger
from wattledger.collector.sites import PlanEntry, SiteConfig, Sites
from wattledger.wire import Batch, ValidBatch, check_batch

#: validation "now" far ahead, so that tests may use any past or future timestamps
FAR_FUTURE = 4e9


def at(text: str, tz: str = "UTC") -> float:
    """Unix seconds of a local wall-clock time, e.g. at("2026-11-02 08:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def make_sites(raw: Mapping[str, Any] | None = None, **default: Any) -> dict[str, SiteConfig]:
    """Sites as the configuration gives them; keyword arguments configure the site `default`."""
    if raw is None:
        raw = {"default": {"timezone": "UTC", "price_per_kwh": 0.10, "pue": 1.5, **default}}
    return TypeAdapter(Sites).validate_python(raw)


def make_batch(*, node: str = "n1", stream: str = "s1", seq: int = 1,
               labels: Mapping[str, str] | None = None, devices: Sequence[Mapping[str, Any]] | None = None,
               device: Sequence[int] | None = None, ts: Sequence[float],
               power_w: Sequence[float | None] | None = None, energy_j: Sequence[float | None] | None = None,
               allocations: Sequence[Mapping[str, Any]] = (),
               **columns: Sequence[float | None]) -> ValidBatch:
    """A validated batch; one GPU (index 0, 700 W limit) unless ``devices`` is given."""
    n = len(ts)
    readings: dict[str, Any] = {"device": list(device) if device is not None else [0] * n,
                                "ts": list(ts),
                                "power_w": list(power_w) if power_w is not None else [None] * n}
    if energy_j is not None:
        readings["energy_j"] = list(energy_j)
    readings.update({k: list(v) for k, v in columns.items()})
    body = {"node": node, "stream": stream, "seq": seq, "labels": dict(labels or {}),
            "devices": list(devices or [{"id": "GPU-0", "kind": "gpu", "index": 0,
                                         "power_limit_w": 700.0, "slowdown_c": 87.0,
                                         "shutdown_c": 92.0}]),
            "readings": readings}
    if allocations:
        body["allocations"] = [dict(a) for a in allocations]
    batch = Batch.model_validate(body)
    return ValidBatch(batch, check_batch(batch, FAR_FUTURE))


class Backend:
    """Where a test's ledgers live. SQLite: each ledger in memory unless given a file. Postgres:
    ``fresh`` databases from the session's server (a copy of the migrated template each)."""

    def __init__(self, name: str, new_database: Callable[[], str] | None = None) -> None:
        self.name = name
        self._new_database = new_database
        self.opened: list[Ledger] = []
        self._main: str | None = None

    def fresh(self) -> str:
        """A URL no other ledger of this test uses."""
        if self._new_database is None:
            return "sqlite:///:memory:"
        return self._new_database()

    def reopenable(self, tmp_path: Path) -> str:
        """The URL of the test's one durable ledger (open it, close it, open it again)."""
        if self._new_database is None:
            return f"sqlite:///{tmp_path}/ledger.db"
        if self._main is None:
            self._main = self._new_database()
        return self._main

    def close_all(self) -> None:
        for ledger in self.opened:
            with contextlib.suppress(Exception):
                ledger.close()
        self.opened.clear()


#: the backend of the running test (the ``backend`` fixture sets it; SQLite otherwise)
BACKEND = Backend("sqlite")


def open_ledger(sites: Mapping[str, SiteConfig] | None = None, plan: Sequence[PlanEntry] = (),
                db: str | None = None, now: float = 1_764_260_000.0, **kw: Any) -> Ledger:
    """A ledger whose clock reads ``ledger.now`` (a settable attribute), on the test's backend
    (a fresh store, unless ``db`` names one)."""
    clock = Clock(now)
    ledger = Ledger(db or BACKEND.fresh(), sites if sites is not None else make_sites(), plan, clock=clock,
                    **kw)
    if BACKEND.name != "sqlite":  # its pool of connections is closed at the test's end
        BACKEND.opened.append(ledger)
    OPENED.append(ledger)
    return ledger


#: every ledger a test opened: the ``conservation`` fixture (conftest.py) checks each at its end
OPENED: list[Ledger] = []
#: the figures that teams (idle and unassigned included) add up to, as the site's row has them
CONSERVED = ("it_energy_kwh", "facility_energy_kwh", "energy_cost", "demand_charge", "total_cost",
             "carbon_kg")


def check_conservation(ledger: Ledger, rel: float = 1e-6) -> int:
    """Assert that, in every (site, month) of the ledger, its teams add up to the site (energy,
    cost, carbon: DESIGN.md "Teams, budgets and chargeback"), and its rows by job to the site's
    energy and energy cost; returns the months checked (a chiller's or metered site's cooling not
    yet shared out by IT is team ``unshared``'s: they add up at every commit)."""
    months = sorted({(str(site), str(month)) for site, month in
                     ledger.store.query("SELECT DISTINCT site, month FROM usage")})
    for site, month in months:
        whole = site_row(ledger, month, site)
        teams = ledger.spend(site=site, month=month, group_by="team")
        jobs = ledger.spend(site=site, month=month, group_by="job")
        for key in CONSERVED:
            got = sum(float(row[key]) for row in teams)
            assert got == pytest.approx(float(whole[key]), rel=rel, abs=1e-9), (site, month, key, teams)
        for key in ("it_energy_kwh", "facility_energy_kwh", "energy_cost", "carbon_kg"):
            got = sum(float(row[key]) for row in jobs)
            assert got == pytest.approx(float(whole[key]), rel=rel, abs=1e-9), (site, month, key, jobs)
    return len(months)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def device_totals(ledger: Ledger, slot: int = 0) -> dict[str, float]:
    """The counters of the ``slot``-th device the ledger made."""
    d = ledger.view().devices
    return {"energy_j": float(d.floats["energy_j"][slot]),
            "unmeasured_s": float(d.floats["unmeasured_s"][slot]),
            "resets": int(d.counts["resets"][slot]), "anomalies": int(d.counts["anomalies"][slot]),
            "late": int(d.counts["late"][slot])}


def site_row(ledger: Ledger, month: str, site: str = "default") -> dict[str, Any]:
    rows = ledger.spend(site=site, month=month, group_by="site")
    assert len(rows) == 1
    return rows[0]


def node_state(ledger: Ledger, node: str) -> NodeView:
    return ledger.view().nodes[node]


def committed_low(ledger: Ledger, stream: str) -> int:
    state = ledger.store.stream(stream)
    assert state is not None
    return state.low


CPU_W = 150.0


def gpu_devices(gpus: int, model: str, node_meter: bool = False) -> list[dict[str, Any]]:
    """``gpus`` GPUs of one model, a CPU package and (``node_meter``) the node's wall meter."""
    out: list[dict[str, Any]] = [{"id": f"GPU-{i}", "kind": "gpu", "index": i, "model": model,
                                  "power_limit_w": 700.0} for i in range(gpus)]
    out.append({"id": "cpu-0", "kind": "cpu", "index": 0, "model": "Xeon"})
    if node_meter:
        out.append({"id": "bmc", "kind": "node", "index": 0})
    return out


def line_readings(steps: int, *, idle_w: float, slope_w: float, utilization: Callable[[int], float],
                  every_s: float = 10.0, t0: float, gpus: int, overhead_w: float | None = None
                  ) -> list[dict[str, Any]]:
    """Per step, every GPU's reading exactly on the line ``idle_w + slope_w x u`` (u =
    ``utilization(step x gpus + gpu)``), the CPU's (``CPU_W``, no utilization) and, with
    ``overhead_w``, the node meter's: the parts plus ``overhead_w``."""
    out: list[dict[str, Any]] = []
    for step in range(steps):
        ts = t0 + step * every_s
        total = CPU_W
        for g in range(gpus):
            u = utilization(step * gpus + g)
            out.append({"device": g, "ts": ts, "power_w": idle_w + slope_w * u, "util": u})
            total += idle_w + slope_w * u
        out.append({"device": gpus, "ts": ts, "power_w": CPU_W, "util": None})
        if overhead_w is not None:
            out.append({"device": gpus + 1, "ts": ts, "power_w": total + overhead_w, "util": None})
    return out


def book_readings(ledger: Ledger, readings: Sequence[Mapping[str, Any]], per_batch: int, *, model: str,
                  gpus: int, node: str = "n1", stream: str = "s1", site: str = "default") -> None:
    """Readings of ``gpu_devices(gpus, model)`` (with the node meter when they have its readings)
    in batches of ``per_batch``, in order, one ingest each."""
    metered = any(r["device"] == gpus + 1 for r in readings)
    for seq, start in enumerate(range(0, len(readings), per_batch), start=1):
        chunk = readings[start:start + per_batch]
        batch = make_batch(node=node, stream=stream, seq=seq, labels={"site": site},
                           devices=gpu_devices(gpus, model, metered), device=[r["device"] for r in chunk],
                           ts=[r["ts"] for r in chunk], power_w=[r["power_w"] for r in chunk],
                           util=[r["util"] for r in chunk])
        ledger.ingest([batch])
