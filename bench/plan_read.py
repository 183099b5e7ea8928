"""How long a plan takes to read a big site's history from its ledger.

A SQLite ledger is given ``--days`` of the plan's statistics for ``--gpus`` GPUs of
``--models`` models (the rows the ingest transaction writes: per model and day its sums, 20
utilization and ~60 power bins, one row per GPU), written through the store's own ingest path;
then ``wattledger plan``'s read model reads it over the read-only connection the command line
uses, as a plan does (span, per-day statistics, node meters, the 30-day fleet, the months).

    .venv/bin/python bench/plan_read.py [--gpus 10000] [--days 90] [--models 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from wattledger.collector.readmodel.history import LedgerHistory
from wattledger.collector.store.base import Changes
from wattledger.collector.store.reader import LedgerReader
from wattledger.collector.store.sqlite import SqliteStore
from wattledger.plan.reading import read_history

FIRST_DAY = date(2026, 6, 1)
T0 = datetime(2026, 6, 1, tzinfo=UTC).timestamp()  # the first day's midnight (UTC, the site's zone)


def day_rows(site: str, model: str, day: date, gpus: range, first_ts: float) -> list[tuple[object, ...]]:
    zero = (0.0,) * 5
    text = day.isoformat()
    n = 8640 * len(gpus)  # a reading every 10 s
    rows: list[tuple[object, ...]] = [
        (site, model, text, "all", 0, n, 0.5 * n, 400.0 * n, 0.33 * n, 200.0 * n, 1.7e5 * n, n // 20,
         80.0 * n, 86400.0 * len(gpus), 3.5e7 * len(gpus), 4320.0, 1.0e6, 3.6e7 * len(gpus), *zero,
         first_ts, first_ts + 86390)]
    rows += [(site, model, text, "util", b, n // 20, 0.0, 400.0 * n / 20, *(0.0,) * 3, 0, *(0.0,) * 11,
              None, None) for b in range(20)]
    rows += [(site, model, text, "power", b, n // 60, *(0.0,) * 5, 0, *(0.0,) * 11, None, None)
             for b in range(10, 70)]
    rows += [(site, model, text, "gpu", g, 8640, *(0.0,) * 5, 0, *(0.0,) * 11, first_ts, first_ts + 86390)
             for g in gpus]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--models", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'ledger.db'}"
        store = SqliteStore(url)
        started = time.perf_counter()
        per_model = args.gpus // args.models
        first = FIRST_DAY
        total = 0
        for d in range(args.days):
            day = first + timedelta(days=d)
            rows = []
            for m in range(args.models):
                rows += day_rows("default", f"model-{m}", day, range(m * per_model, (m + 1) * per_model),
                                 T0 + d * 86400)
            with store.ingest() as unit:
                unit.write(Changes(plan_days=rows))
            total += len(rows)
        written = time.perf_counter() - started
        size = store.size_bytes()
        store.close()
        started = time.perf_counter()
        reader = LedgerReader(url)
        history = read_history(LedgerHistory(reader, {"default": ZoneInfo("UTC")}), "default")
        read = time.perf_counter() - started
        reader.close()
    fleet = history.fleet
    print(f"plan read: {args.gpus:,} GPUs of {args.models} models x {args.days} days = {total:,} "
          f"plan_days rows ({size / 1e6:.0f} MB, written in {written:.0f} s)")
    print(f"  read by the plan (span, days, node meters, 30-day fleet, months): {read:.2f} s; "
          f"{len(history.profiles)} profiles, fleet {fleet.gpus if fleet else 0:,} GPUs")


if __name__ == "__main__":
    main()
