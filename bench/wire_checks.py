"""What refusing duplicate JSON keys costs a batch, against parsing it (issue 16, item 2).

pydantic-core parses a body with the last of two equal keys winning; ``wire.duplicate_key``
then counts the body's colons (one C call) against the keys pydantic kept and the colons in
their strings, and reads the body pair by pair only when the two differ. Figures, per batch,
medians of ``--repeats`` timings of ``--loops`` calls each, in one run:

- ``pydantic parse``: ``Batch.model_validate_json`` alone (the baseline);
- ``duplicate check``: ``wire.duplicate_key`` alone, on a good batch;
- ``json.loads, every pair``: the naive check (``object_pairs_hook`` on the whole body), for
  comparison;
- ``rules``: parse + the wire rules (``check_batch``) without the duplicate check: what
  ``validate`` cost before it;
- ``validate``: the whole of ``wire.validate`` (parse + duplicate check + the wire rules).

    .venv/bin/python bench/wire_checks.py [--repeats 7] [--loops 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import batch_body

from wattledger.wire import Batch, check_batch, duplicate_key, validate

SHAPES = {"8 GPUs x 10 s": (8, 10), "1 GPU x 10 s": (1, 10), "8 GPUs x 300 s": (8, 300)}


def per_call_us(fn: Callable[[], object], loops: int, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        timings.append((time.perf_counter() - start) / loops * 1e6)
    return statistics.median(timings)


def _pairs(pairs: list[tuple[str, object]]) -> int:
    if len(dict(pairs)) != len(pairs):
        raise ValueError("duplicate")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loops", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'batch':>16} {'bytes':>7} {'pydantic parse':>15} {'duplicate check':>16} {'share':>6} "
          f"{'json.loads, every pair':>23} {'rules':>9} {'validate':>9} {'added':>6}")
    for name, (gpus, seconds) in SHAPES.items():
        body = batch_body("node-1", "s-1", 1, gpus=gpus, seconds=seconds, t0=1_764_000_000.0)
        loops = max(20, args.loops * 80 // (gpus * seconds))
        parse = per_call_us(lambda b=body: Batch.model_validate_json(b), loops, args.repeats)
        parsed = Batch.model_validate_json(body)
        dup = per_call_us(lambda b=body, m=parsed: duplicate_key(b, m), loops, args.repeats)
        naive = per_call_us(lambda b=body: json.loads(b, object_pairs_hook=_pairs), loops, args.repeats)
        now = 1_764_000_000.0 + seconds
        rules = per_call_us(lambda b=body, t=now: check_batch(Batch.model_validate_json(b), t), loops,
                            args.repeats)
        whole = per_call_us(lambda b=body, t=now: validate(b, t), loops, args.repeats)
        print(f"{name:>16} {len(body):>7} {parse:>12.1f} us {dup:>13.1f} us {dup / parse:>6.0%} "
              f"{naive:>20.1f} us {rules:>6.1f} us {whole:>6.1f} us {whole / rules - 1:>+6.0%}")


if __name__ == "__main__":
    main()
