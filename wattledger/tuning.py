"""Process tuning of the long-running entry points (``wattledger collector``): ONE place, called
by the entry point once its process is set up, never at import.

- Cyclic garbage collection less often, and never over what start-up made: checking a batch
  makes ~1,000 short-lived containers, almost all freed by reference count; at the default
  threshold the cyclic collector ran after every batch or so and took ~7 % of the ingest path
  (docs/performance.md: +7-8 % readings/s in same-run A/B tests). What exists once the ledger
  is loaded (its state, the app, the libraries) lives as long as the process: frozen, it is
  skipped by every collection.
- A shorter thread switch interval: the ledger writer gives the GIL up at every step of a
  commit and must win it back each time; while /metrics is being written in a worker thread,
  each win waited up to the default 5 ms, which at 20,000+ GPUs made a commit take 100s of ms.
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL_SECONDS = 0.0005
#: young-generation collections every 50,000 allocations, not the interpreter's 700
GC_THRESHOLDS = (50_000, 20, 20)


def tune_threads() -> None:
    """The switch interval (before the server's threads start)."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def tune_gc() -> None:
    """Freeze what exists now and collect the young generation less often (once start-up is
    done: call it right before serving)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
