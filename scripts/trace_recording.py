"""What the recorders of accelerator traces share (``record_amdsmi_trace.py``,
``record_hlml_trace.py``; ``record_nvml_trace.py`` is the NVML one).

A trace (JSON) holds, per device, the static facts the source reads at discovery and, per
sample, the raw answer of every call the source makes, in the vendor's own units, or
``{"error": code}`` where the library refused. The tests replay it as the vendor module
(``tests/agent/accelerator_trace.py``), so the source is tested against what real boards say.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Answer = Callable[[Callable[[], Any], Callable[[Any], Any]], Any]


def answerer(error: type[BaseException], code_of: Callable[[Any], Any]) -> Answer:
    """``answer(fn, convert)``: the converted answer of ``fn()``, or ``{"error": code}``."""

    def answer(fn: Callable[[], Any], convert: Callable[[Any], Any] = lambda v: v) -> Any:
        try:
            return convert(fn())
        except error as exc:
            return {"error": code_of(exc)}

    return answer


def text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def plain(value: Any) -> Any:
    """A vendor dict as JSON holds it (nested lists and dicts kept, anything else as text)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return text(value)


def sample_devices(handles: list[Any], static: Callable[[int, Any], dict[str, Any]],
                   sample: Callable[[Any], dict[str, Any]], samples: int,
                   interval: float) -> list[dict[str, Any]]:
    devices = [{"index": i, **static(i, h), "samples": []} for i, h in enumerate(handles)]
    for n in range(samples):
        for device, handle in zip(devices, handles, strict=True):
            device["samples"].append({"ts": time.time(), **sample(handle)})
        if n + 1 < samples:
            time.sleep(interval)
    return devices


def main(description: str, record: Callable[[int, float], dict[str, Any]]) -> int:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    trace = record(args.samples, args.interval)
    args.out.write_text(json.dumps(trace, indent=1) + "\n")
    print(f"recorded {args.samples} samples of {len(trace['devices'])} device(s), library "
          f"{trace.get('library')} -> {args.out}")
    return 0
