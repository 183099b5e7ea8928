"""The agent's NVML source against a real driver: what one sample costs, and whether it agrees
with ``nvidia-smi``. Needs an NVIDIA GPU (it is the check run when a GPU machine is lent).

Three parts, each printing its figures:

1. agreement: the source's reading of each GPU next to ``nvidia-smi --query-gpu`` taken just
   after it (power, temperatures, utilization, memory, SM clock, power limit, clock events);
2. energy: while an optional load runs (``--load-seconds``, a matrix product through PyTorch
   when it is installed), the hardware energy counter's increase against the power readings
   integrated over the same window (ours and nvidia-smi's, polled in a thread);
3. cost: the median wall and CPU time of one ``sample()`` (all GPUs) and per GPU, against the
   baseline of one bare ``nvmlDeviceGetPowerUsage`` call in the same run, and each NVML call's
   share.

    python bench/nvml_sample.py [--rounds 5] [--load-seconds 20] [--samples 300] [--json F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.nvml import NvmlSource

SMI_FIELDS = (
    "index",
    "uuid",
    "power.draw",
    "power.draw.instant",
    "temperature.gpu",
    "temperature.memory",
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.total",
    "clocks.sm",
    "enforced.power.limit",
    "clocks_event_reasons.active",
)
MIB = float(1 << 20)


def smi_query(fields: tuple[str, ...] = SMI_FIELDS) -> list[dict[str, str]]:
    """One ``nvidia-smi --query-gpu`` run: a dict per GPU, ``[N/A]`` and the like left as text."""
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [
        dict(zip(fields, (c.strip() for c in line.split(",")), strict=True))
        for line in out.strip().splitlines()
    ]


def number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(int(text, 16)) if text.startswith("0x") else float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def ours_vs_smi(r: DeviceReading, s: dict[str, str]) -> list[tuple[str, float | None, float | None]]:
    """(what, ours in nvidia-smi's units, nvidia-smi's) for every reading both can give."""

    def scaled(v: float | None, k: float) -> float | None:
        return None if v is None else v * k

    return [
        ("power W (smi power.draw)", r.power_w, number(s.get("power.draw"))),
        ("power W (smi power.draw.instant)", r.power_w, number(s.get("power.draw.instant"))),
        ("GPU temperature C", r.temp_c, number(s.get("temperature.gpu"))),
        ("memory temperature C", r.mem_temp_c, number(s.get("temperature.memory"))),
        ("GPU utilization %", scaled(r.util, 100), number(s.get("utilization.gpu"))),
        ("memory utilization %", scaled(r.mem_util, 100), number(s.get("utilization.memory"))),
        ("memory used MiB", scaled(r.mem_used_bytes, 1 / MIB), number(s.get("memory.used"))),
        ("memory total MiB", scaled(r.mem_total_bytes, 1 / MIB), number(s.get("memory.total"))),
        ("SM clock MHz", scaled(r.sm_clock_hz, 1e-6), number(s.get("clocks.sm"))),
        ("power limit W", r.device.power_limit_w, number(s.get("enforced.power.limit"))),
        (
            "clock-event bits",
            None if r.clock_events is None else float(r.clock_events),
            number(s.get("clocks_event_reasons.active")),
        ),
    ]


def agreement(source: NvmlSource, rounds: int, report: dict[str, Any]) -> None:
    print("== 1. agreement with nvidia-smi (ours, then nvidia-smi just after)")
    rows: dict[str, list[tuple[float | None, float | None]]] = {}
    for i in range(rounds):
        sample = source.sample(time.time())
        smi = {s["uuid"]: s for s in smi_query()}
        nvml: Any = source._nvml
        for r in sample.readings:
            direct = nvml.nvmlDeviceGetTotalEnergyConsumption(nvml.nvmlDeviceGetHandleByIndex(r.device.index))
            rows.setdefault(f"GPU {r.device.index} energy counter J (smi: direct call)", []).append(
                (r.energy_j, direct / 1000.0))
            for what, ours, theirs in ours_vs_smi(r, smi.get(r.device.id, {})):
                rows.setdefault(f"GPU {r.device.index} {what}", []).append((ours, theirs))
        for d in sample.down:
            print(f"   GPU {d.index} down: {d.id}")
        if i + 1 < rounds:
            time.sleep(0.5)
    print(f"   {'reading':<42} {'ours (each round)':<44} nvidia-smi")
    for what, pairs in rows.items():
        ours_text = " ".join("absent" if o is None else f"{o:.10g}" for o, _ in pairs)
        smi_text = " ".join("n/a" if t is None else f"{t:.10g}" for _, t in pairs)
        print(f"   {what:<42} {ours_text:<44} {smi_text}")
    report["agreement"] = dict(rows)


def start_load(seconds: float) -> subprocess.Popen[bytes] | None:
    """A bf16 matrix product loop on GPU 0 for ``seconds`` (None when PyTorch is missing)."""
    code = (
        "import sys,time,torch\n"
        "a=torch.randn(8192,8192,device='cuda',dtype=torch.bfloat16); b=a.clone()\n"
        "end=time.time()+float(sys.argv[1])\n"
        "while time.time()<end:\n"
        "    for _ in range(20): c=a@b\n"
        "    torch.cuda.synchronize()\n"
    )
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return None
    except ValueError:
        return None
    return subprocess.Popen([sys.executable, "-c", code, str(seconds)])


def energy(source: NvmlSource, load_seconds: float, report: dict[str, Any]) -> None:
    print(f"== 2. energy counter against integrated power ({load_seconds:.0f} s window)")
    smi_power: list[tuple[float, dict[str, float | None]]] = []
    stop = threading.Event()

    def poll_smi() -> None:
        while not stop.is_set():
            t = time.time()
            rows = smi_query(("uuid", "power.draw", "power.draw.instant"))
            smi_power.append((t, {r["uuid"]: number(r["power.draw"]) for r in rows}))
            stop.wait(0.25)

    load = start_load(load_seconds + 2)
    print(f"   load: {'bf16 matmul loop on GPU 0' if load else 'none (no PyTorch): idle GPUs'}")
    time.sleep(2.0 if load else 0.0)  # let the load start before the window opens
    poller = threading.Thread(target=poll_smi, daemon=True)
    poller.start()
    series: list[tuple[float, list[DeviceReading]]] = []
    end = time.time() + load_seconds
    while time.time() < end:
        t = time.time()
        series.append((t, source.sample(t).readings))
        time.sleep(0.1)
    stop.set()
    poller.join(30)
    if load is not None:
        load.wait(60)
    first, last = series[0][1], series[-1][1]
    window = series[-1][0] - series[0][0]
    report["energy"] = []
    for a, b in zip(first, last, strict=False):
        if a.energy_j is None or b.energy_j is None:
            print(f"   GPU {a.device.index}: no energy counter on this board")
            continue
        counter = b.energy_j - a.energy_j
        if counter <= 0:
            print(f"   GPU {a.device.index}: the counter did not move in {window:.2f} s ({a.energy_j} J)")
            continue
        points = [(t, next((r.power_w for r in rs if r.device.id == a.device.id), None)) for t, rs in series]
        pts = [(t, p) for t, p in points if p is not None]
        ours = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(pts))
        smi = [(t, d.get(a.device.id)) for t, d in smi_power]
        smi_pts = [(t, p) for t, p in smi if p is not None]
        smi_mean = statistics.fmean(p for _, p in smi_pts) if smi_pts else float("nan")
        row = {
            "gpu": a.device.index,
            "window_s": window,
            "counter_j": counter,
            "our_power_integral_j": ours,
            "smi_mean_power_w": smi_mean,
            "counter_mean_w": counter / window,
            "samples": len(pts),
            "smi_polls": len(smi_pts),
        }
        report["energy"].append(row)
        print(
            f"   GPU {a.device.index}: counter {counter:,.1f} J over {window:.2f} s"
            f" = {counter / window:.1f} W;"
            f" our power integrated {ours:,.1f} J ({ours / counter:.4f}x counter, {len(pts)} samples);"
            f" nvidia-smi power.draw mean {smi_mean:.1f} W ({smi_mean * window / counter:.4f}x counter,"
            f" {len(smi_pts)} polls)"
        )


def cost(source: NvmlSource, samples: int, report: dict[str, Any]) -> None:
    print(f"== 3. cost of one sample ({samples} samples, medians)")
    nvml: Any = source._nvml
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    n_gpus = len(handles)

    def timed(fn: Any, n: int) -> tuple[float, float]:
        wall, cpu = [], []
        for _ in range(n):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        return statistics.median(wall), statistics.fmean(cpu)

    base_wall, base_cpu = timed(lambda: nvml.nvmlDeviceGetPowerUsage(handles[0]), samples)
    wall, cpu = timed(lambda: source.sample(time.time()), samples)
    print(
        f"   baseline, one nvmlDeviceGetPowerUsage: {base_wall * 1e6:,.0f} us wall (median),"
        f" {base_cpu * 1e6:,.0f} us CPU (mean)"
    )
    print(
        f"   one sample of {n_gpus} GPU(s): {wall * 1e6:,.0f} us wall (median),"
        f" {cpu * 1e6:,.0f} us CPU (mean);"
        f" per GPU {wall / n_gpus * 1e6:,.0f} us wall = {wall / base_wall / n_gpus:.1f}x the baseline call;"
        f" at 1 s intervals {100 * cpu:.3f} % of one core"
    )
    calls = {
        "nvmlDeviceGetPowerUsage": lambda h: nvml.nvmlDeviceGetPowerUsage(h),
        "nvmlDeviceGetTotalEnergyConsumption": lambda h: nvml.nvmlDeviceGetTotalEnergyConsumption(h),
        "nvmlDeviceGetTemperature": lambda h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
        "nvmlDeviceGetFieldValues(mem temp)": lambda h: nvml.nvmlDeviceGetFieldValues(h, [82]),
        "nvmlDeviceGetUtilizationRates": lambda h: nvml.nvmlDeviceGetUtilizationRates(h),
        "nvmlDeviceGetFieldValues(energy)": lambda h: nvml.nvmlDeviceGetFieldValues(h, [83]),
        "nvmlDeviceGetFieldValues(mem temp, energy)": lambda h: nvml.nvmlDeviceGetFieldValues(h, [82, 83]),
        "nvmlDeviceGetMemoryInfo": lambda h: nvml.nvmlDeviceGetMemoryInfo(h),
        "nvmlDeviceGetMemoryInfo(v2)": lambda h: nvml.nvmlDeviceGetMemoryInfo(h, nvml.nvmlMemory_v2),
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: nvml.nvmlDeviceGetEnforcedPowerLimit(h),
        "nvmlDeviceGetClockInfo(SM)": lambda h: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
        "clock events": lambda h: source._clock_events_fn(h),  # type: ignore[misc]
    }
    per_call = {}
    for name, call in calls.items():
        try:
            w, _ = timed(lambda call=call: call(handles[0]), max(20, samples // 5))
        except nvml.NVMLError as exc:
            print(f"   {name:<40} {exc}")
            continue
        per_call[name] = w
        print(f"   {name:<40} {w * 1e6:>8,.0f} us")
    report["cost"] = {
        "gpus": n_gpus,
        "sample_wall_s": wall,
        "sample_cpu_s": cpu,
        "baseline_wall_s": base_wall,
        "baseline_cpu_s": base_cpu,
        "per_call_wall_s": per_call,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--load-seconds", type=float, default=20.0)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if shutil.which("nvidia-smi") is None:
        print("nvml_sample: no nvidia-smi on this machine (needs an NVIDIA GPU)")
        return 2
    print(
        subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,driver_version,pci.bus_id", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    source = NvmlSource(node="bench")
    source.open()
    report: dict[str, Any] = {}
    failed = False
    try:
        parts: list[tuple[Any, float]] = [
            (agreement, args.rounds),
            (energy, args.load_seconds),
            (cost, args.samples),
        ]
        for part, arg in parts:
            try:
                part(source, arg, report)
            except Exception as exc:
                print(f"   FAILED: {type(exc).__name__}: {exc}")
                failed = True
    finally:
        source.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
