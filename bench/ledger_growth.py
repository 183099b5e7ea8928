"""How fast the ledger grows: bytes per GPU per month, with and without the roll-up.

Feeds a real Ledger (SQLite file, the collector's store) months of readings at per-minute
resolution — every GPU read every ``--step`` seconds (60), each batch an hour of one node —
with a simulated clock, and measures the database after each month (pages in use, the WAL
folded in). Run twice in one go: without roll-up, and with ``rollup_after_days`` (35), the
roll-up run once a simulated day as the collector's periodic work would. Both ledgers must
end with the same spend by month and by site, cluster, node and device.

The ledger never stores a row per reading or per minute: the minute split and pricing happen in
memory, and what is kept is one row per (month, device) plus one per (site, cluster,
quarter-hour) — the quarter-hours are what the roll-up sums into hours, after keeping each
month's peak for the demand charge. Target (issue 7): under 5 MB per GPU per month.

    .venv/bin/python bench/ledger_growth.py [--months 3] [--nodes 8] [--gpus 8] [--clusters 2]
    .venv/bin/python bench/ledger_growth.py --db postgresql   # the same on PostgreSQL

``--db postgresql``: the same ledgers on a throwaway PostgreSQL (started here, a database per
run), measured by ``pg_database_size`` (tables, indexes, TOAST and the dead row versions that
updates leave until autovacuum reuses them; not the WAL, which is the server's, not the
database's). Rows per day of each table are printed too: what a site's database takes.
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchkit import start_postgres

from wattledger.collector.service import Ledger
from wattledger.collector.sites import SiteConfig
from wattledger.wire import Batch, ValidBatch, check_batch

TARGET_BYTES = 5e6
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC
MONTH_SECONDS = 30 * 86400.0  # a simulated month (the ledger files every minute by its real month)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Fleet:
    nodes: int
    gpus: int
    clusters: int
    step: float

    def batch(self, node: int, seq: int, start: float, seconds: float) -> ValidBatch:
        """One node's readings over [start, start + seconds), every GPU every ``step`` s."""
        times = [start + k * self.step for k in range(int(seconds / self.step))]
        device = [g for g in range(self.gpus) for _ in times]
        watts = [250.0 + 40 * g + 100 * math.sin(t / 3600.0 + node) ** 2
                 for g in range(self.gpus) for t in times]
        energy = [(t - START + self.step) * 400.0 for _ in range(self.gpus) for t in times]
        # what an agent sends besides: utilization (the plan's statistics, table plan_days)
        util = [round(math.sin(t / 3600.0 + node + g) ** 2, 3) for g in range(self.gpus) for t in times]
        batch = Batch.model_validate({
            "node": f"node-{node:03d}", "stream": f"stream-{node:03d}", "seq": seq,
            "labels": {"site": "default", "cluster": f"cluster-{node % self.clusters}"},
            "devices": [{"id": f"GPU-{node}-{g}", "kind": "gpu", "index": g, "power_limit_w": 700.0,
                         "model": "NVIDIA H100 80GB HBM3"} for g in range(self.gpus)],
            "readings": {"device": device, "ts": times * self.gpus, "power_w": watts, "energy_j": energy,
                         "util": util}})
        return ValidBatch(batch, check_batch(batch, start + seconds))


def tables(ledger: Ledger) -> list[str]:
    """The ledger's tables (every migration's), but the schema version's own."""
    if ledger.store.shared:
        names = [n for (n,) in ledger.store.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
    else:
        names = [n for (n,) in ledger.store.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return sorted(n for n in names if n != "wattledger_schema" and not n.startswith("sqlite_"))


def run(fleet: Fleet, months: int, rollup_after_days: float | None, db: str
        ) -> tuple[list[int], dict[str, int], Ledger]:
    """Database size after each month; row counts at the end; the ledger (open)."""
    clock = Clock(START)
    sites = {"default": SiteConfig(name="default", timezone="UTC", currency="USD", pue=1.4,
                                   price_per_kwh=0.12, demand_charge_per_kw=10.0, carbon_g_per_kwh=400)}
    ledger = Ledger(db, sites, [], clock=clock, rollup_after_days=rollup_after_days)
    sizes = [ledger.store.size_bytes()]
    hour, seq = 3600.0, 0
    for month in range(months):
        for day in range(int(MONTH_SECONDS / 86400)):
            for h in range(24):
                start = START + month * MONTH_SECONDS + day * 86400 + h * hour
                seq += 1
                clock.now = start + hour
                ledger.ingest([fleet.batch(n, seq, start, hour) for n in range(fleet.nodes)])
            ledger.roll_up()  # what the periodic work does (a no-op without rollup_after_days)
        sizes.append(ledger.store.size_bytes())
    rows = {table: int(ledger.store.query(f"SELECT COUNT(*) FROM {table}")[0][0]) for table in tables(ledger)}
    return sizes, rows, ledger


def spend_of(ledger: Ledger) -> list[object]:
    months = [m for (m,) in ledger.store.query("SELECT DISTINCT month FROM usage ORDER BY month")]
    return [ledger.spend(site="default", month=m, group_by=level)  # type: ignore[arg-type]
            for m in months for level in ("site", "cluster", "node", "device")]


def within(a: object, b: object, rel: float) -> bool:
    """Equal, but floats to ``rel`` of their size."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(within(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(within(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= rel * max(abs(a), abs(b))
    return a == b


def differences(a: object, b: object, path: str = "") -> str:
    """Where two spend results differ first, and by how much (floats: relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a)} vs {sorted(b)}"
        found = [differences(a[k], b[k], f"{path}.{k}") for k in a if a[k] != b[k]]
        return found[0] if found else ""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} rows"
        pairs = enumerate(zip(a, b, strict=True))
        found = [differences(x, y, f"{path}[{i}]") for i, (x, y) in pairs if x != y]
        return f"{found[0]} ({len(found)} of {len(a)} rows differ)" if found else ""
    if isinstance(a, float) and isinstance(b, float):
        return f"{path}: {a!r} vs {b!r} (relative {abs(a - b) / max(abs(a), abs(b), 1e-300):.1e})"
    return f"{path}: {a!r} vs {b!r}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--step", type=float, default=60.0, help="seconds between readings")
    parser.add_argument("--rollup-after-days", type=float, default=35.0)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args(argv)
    if args.months < 2:
        raise SystemExit("--months must be at least 2 (growth is measured month over month)")
    fleet = Fleet(args.nodes, args.gpus, args.clusters, args.step)
    gpus = args.nodes * args.gpus
    folder = Path(tempfile.mkdtemp(prefix="wl-bench-growth-"))
    pg = start_postgres() if args.db == "postgresql" else None
    results = {}
    try:
        for name, days in (("no roll-up", None), (f"roll-up after {args.rollup_after_days:g} days",
                                                  args.rollup_after_days)):
            started = time.perf_counter()
            (folder / name).mkdir()
            db = f"sqlite:///{folder / name}/ledger.db" if pg is None else pg.new_database(prefix="growth")
            sizes, rows, ledger = run(fleet, args.months, days, db)
            results[name] = (sizes, rows, spend_of(ledger), time.perf_counter() - started)
            ledger.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if pg is not None:
            pg.destroy()
    readings = gpus * args.months * MONTH_SECONDS / args.step
    print(f"ledger growth ({args.db}): {args.nodes} nodes x {args.gpus} GPUs = {gpus} GPUs in "
          f"{args.clusters} clusters, "
          f"a reading every {args.step:g} s, {args.months} months of {MONTH_SECONDS / 86400:.0f} days "
          f"({readings / 1e6:.1f} M readings per run)")
    base = None
    for name, (sizes, rows, _, seconds) in results.items():
        growth = sorted(b - a for a, b in itertools.pairwise(sizes[1:])) or [sizes[1] - sizes[0]]
        per_gpu = growth[len(growth) // 2] / gpus
        base = base or per_gpu
        print(f"  {name:<24} {per_gpu:9,.0f} bytes per GPU per month (median month-over-month growth; "
              f"first month {(sizes[1] - sizes[0]) / gpus:,.0f}; {per_gpu / base:.2f}x of no roll-up; "
              f"{seconds:.0f} s)")
        print(f"  {'':<24} rows: " + ", ".join(f"{t} {n:,}" for t, n in rows.items() if n))
        days = args.months * MONTH_SECONDS / 86400
        print(f"  {'':<24} rows per day per GPU: " + ", ".join(
            f"{t} {n / days / gpus:.3g}" for t, n in rows.items() if n / days >= 1))
    (_, _, plain, _), (_, _, rolled, _) = results.values()
    same = plain == rolled
    # PostgreSQL's SUM adds rows in no fixed order: a float may differ in its last bit or two
    close = same or within(plain, rolled, 1e-12)
    if not same:
        print(f"  spend with and without roll-up differs: {differences(plain, rolled)}")
    worst = max(r[0] for r in results.values())
    print(f"  target < {TARGET_BYTES / 1e6:.0f} MB per GPU per month: "
          f"{'met' if (worst[-1] - worst[-2]) / gpus < TARGET_BYTES else 'MISSED'}; "
          f"spend by month x site/cluster/node/device identical with and without roll-up: "
          f"{'yes' if same else 'yes to 1e-12 (summation order)' if close else 'NO'}")
    return 0 if close else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
