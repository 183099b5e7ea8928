"""Ingest, side by side: the collector's full path against VictoriaMetrics and against parsing.

One run, three servers on loopback, the same readings:
- the collector (HTTP, auth, validation, dedupe, accounting, durable group commit), fed agent
  batches (``--gpus`` GPUs x ``--batch-seconds`` 1-s readings) by ``--nodes`` streams over
  ``--conns`` keep-alive connections, each stream in seq order, one batch in flight;
- VictoriaMetrics (``victoria-metrics``, Debian package) importing the same readings as
  Prometheus text (``/api/v1/import/prometheus``, 5 samples per reading), sent the same way;
- a null server that reads each request and answers at once: what the sender alone can do.
Then ``wire.validate`` on the same bodies in this process: parsing alone.

Each repeat uses fresh streams and devices; the servers take turns in a rotating order. The
figures are medians over the repeats and ratios of medians (this machine is shared and noisy).

    .venv/bin/python bench/ingest.py [--repeats 5] [--nodes 100] [--rounds 20] [--conns 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
from benchkit import (
    Proc,
    SendStats,
    batch_body,
    collector_request,
    free_port,
    median,
    post,
    scrape_total,
    send_in_order,
    start_collector,
    start_null_server,
    wait_http,
    workdir,
)

COLLECTOR_TARGET, PARSE_TARGET = 1.0, 0.5


def vm_request(node: str, seq: int, gpus: int, seconds: int, t0: float) -> bytes:
    """The readings of one batch as Prometheus text: 5 samples (series) per GPU reading."""
    lines = []
    for g in range(gpus):
        labels = f'node="{node}",gpu="{g}",uuid="GPU-{node}-{g}"'
        for s in range(seconds):
            ms = int((t0 + s) * 1000)
            p = 300.0 + 10 * g + s
            e = 1e6 + (seq * seconds + s) * 400.0
            lines += [f"gpu_power_watts{{{labels}}} {p} {ms}",
                      f"gpu_energy_joules_total{{{labels}}} {e} {ms}",
                      f"gpu_temperature_celsius{{{labels}}} 60.5 {ms}",
                      f"gpu_utilization_ratio{{{labels}}} 0.87 {ms}",
                      f"gpu_memory_temperature_celsius{{{labels}}} 70.0 {ms}"]
    return post("/api/v1/import/prometheus", ("\n".join(lines) + "\n").encode(), {})


class Load:
    """One repeat's requests: per node, its batches in seq order, for both servers."""

    def __init__(self, tag: str, args: argparse.Namespace, t0: float) -> None:
        self.nodes = [f"n{tag}-{n}" for n in range(args.nodes)]
        self.tokens = {node: f"token-{node}" for node in self.nodes}
        self.bodies: list[list[bytes]] = []
        self.collector: list[list[bytes]] = []
        self.vm: list[list[bytes]] = []
        for node in self.nodes:
            bodies = [batch_body(node, f"stream-{node}", r + 1, args.gpus, args.batch_seconds,
                                 t0 + r * args.batch_seconds) for r in range(args.rounds)]
            self.bodies.append(bodies)
            self.collector.append([collector_request(b, self.tokens[node]) for b in bodies])
            self.vm.append([vm_request(node, r + 1, args.gpus, args.batch_seconds,
                                       t0 + r * args.batch_seconds) for r in range(args.rounds)])
        self.readings = args.nodes * args.rounds * args.gpus * args.batch_seconds


async def _blast(port: int, per_node: Sequence[Sequence[bytes]], conns: int) -> SendStats:
    """Each connection carries some nodes' streams, round by round (every stream in seq order)."""
    stats = SendStats()
    rounds = len(per_node[0])

    def connection_requests(c: int) -> list[bytes]:
        mine = range(c, len(per_node), conns)
        return [per_node[n][r] for r in range(rounds) for n in mine]

    await asyncio.wait_for(asyncio.gather(
        *(send_in_order(port, connection_requests(c), stats) for c in range(conns))), timeout=600)
    return stats


def blast(name: str, port: int, per_node: Sequence[Sequence[bytes]], conns: int,
          readings: int, good: int, server: psutil.Process) -> tuple[float, float]:
    """Readings per second of one server, and its CPU (% of one core) meanwhile; every batch
    must have been answered ``good``."""
    family = [server, *server.children()]  # a collector's worker processes count too
    cpu = [p.cpu_times() for p in family]
    started = time.perf_counter()
    stats = asyncio.run(_blast(port, per_node, conns))
    elapsed = time.perf_counter() - started
    after = [p.cpu_times() for p in family]
    if len(family) > 1:
        print(f"  {name}: " + ", ".join(
            f"pid {p.pid} {100.0 * ((a.user - b.user) + (a.system - b.system)) / elapsed:.0f} %"
            for p, b, a in zip(family, cpu, after, strict=True)), flush=True)
    batches = sum(len(requests) for requests in per_node)
    if stats.codes.get(good, 0) != batches:
        raise SystemExit(f"{name} answered {stats.codes} to {batches} batches")
    used = sum((a.user - b.user) + (a.system - b.system) for b, a in zip(cpu, after, strict=True))
    return readings / elapsed, 100.0 * used / elapsed


def parse_alone(bodies: Sequence[Sequence[bytes]], readings: int) -> float:
    """Readings per second of ``wire.validate`` on the same bodies (one thread, this process)."""
    from wattledger.wire import validate

    now = time.time()
    started = time.perf_counter()
    for node_bodies in bodies:
        for body in node_bodies:
            validate(body, now)
    return readings / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=100, help="streams (agents)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--batch-seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20, help="batches per stream per repeat")
    parser.add_argument("--conns", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--profile", metavar="FILE",
                        help="record the collector with py-spy (raw folded stacks) into FILE")
    parser.add_argument("--no-vm", action="store_true", help="skip VictoriaMetrics")
    parser.add_argument("--ingest-workers", type=int, default=None,
                        help="the collector's --ingest-workers (default: its own default)")
    parser.add_argument("--compare-workers", type=int, default=None, metavar="N",
                        help="also run a second collector with N ingest workers, in the same turns")
    args = parser.parse_args(argv)

    vm_bin = shutil.which("victoria-metrics") or shutil.which("victoria-metrics-prod")
    if vm_bin is None and not args.no_vm:
        raise SystemExit("victoria-metrics is not installed (apt-get install victoria-metrics), "
                         "or pass --no-vm")
    d = workdir("wl-bench-ingest-")
    now = time.time()
    loads = [Load(str(k), args, now - 86400 + k * (args.rounds + 1) * args.batch_seconds)
             for k in range(args.repeats)]
    tokens = {node: token for load in loads for node, token in load.tokens.items()}
    procs: list[Proc] = []
    try:
        wrap = [] if args.ingest_workers is None else [
            "env", f"WATTLEDGER_INGEST_WORKERS={args.ingest_workers}"]
        collector, cport = start_collector(d, tokens, wrap=wrap)
        procs.append(collector)
        other: tuple[str, Proc, int] | None = None
        if args.compare_workers is not None:
            (d / "other").mkdir()
            name = f"collector x{args.compare_workers}"
            proc, port = start_collector(d / "other", tokens, wrap=[
                "env", f"WATTLEDGER_INGEST_WORKERS={args.compare_workers}"])
            procs.append(proc)
            other = (name, proc, port)
        if args.profile:
            procs.append(Proc(["py-spy", "record", "--pid", str(collector.pid), "--rate", "250",
                               "--format", "raw", "--threads", "--gil", "--output", args.profile],
                              d / "py-spy.log", stop_signal=signal.SIGINT))
        null, nport = start_null_server(d)
        procs.append(null)
        vport = 0
        if not args.no_vm:
            assert vm_bin is not None
            vport = free_port()
            vm = Proc([vm_bin, f"-storageDataPath={d}/vm", f"-httpListenAddr=127.0.0.1:{vport}",
                       "-retentionPeriod=100y", "-loggerLevel=ERROR"], d / "vm.log")
            procs.append(vm)
            wait_http(f"http://127.0.0.1:{vport}/health", vm)
        rates: dict[str, list[float]] = {"collector": [], "victoria-metrics": [], "sender alone": [],
                                         "parsing alone": []}
        if other is not None:
            rates[other[0]] = []
        cpu: dict[str, list[float]] = {name: [] for name in rates}
        for k, load in enumerate(loads):
            turns = [("collector", cport, load.collector, 200, collector),
                     ("sender alone", nport, load.collector, 200, null)]
            if not args.no_vm:
                turns.append(("victoria-metrics", vport, load.vm, 204, vm))
            if other is not None:
                turns.append((other[0], other[2], load.collector, 200, other[1]))
            turns = turns[k % len(turns):] + turns[:k % len(turns)]
            for name, port, requests, good, server in turns:
                rate, busy = blast(name, port, requests, args.conns, load.readings, good,
                                   psutil.Process(server.pid))
                rates[name].append(rate)
                cpu[name].append(busy)
            rates["parsing alone"].append(parse_alone(load.bodies, load.readings))
            print(f"repeat {k + 1}/{args.repeats}: " + ", ".join(
                f"{name} {values[-1] / 1e3:.0f}k/s" for name, values in rates.items() if values),
                flush=True)
        expected = sum(load.readings for load in loads)
        for port in [cport] + ([other[2]] if other is not None else []):
            committed = scrape_total(port, "wattledger_ingest_readings_total")
            if committed != expected:
                raise SystemExit(f"the ledger holds {committed:.0f} readings of {expected} sent")
    finally:
        for proc in reversed(procs):
            proc.stop()
    report(args, rates, cpu)
    shutil.rmtree(d, ignore_errors=True)
    return 0


def report(args: argparse.Namespace, rates: dict[str, list[float]],
           cpu: dict[str, list[float]]) -> None:
    med = {name: median(values) for name, values in rates.items() if values}
    print(f"\ningest: {args.nodes} streams x {args.rounds} batches of {args.gpus} GPUs x "
          f"{args.batch_seconds} s, {args.conns} connections, {args.repeats} repeats "
          f"(median readings/s; {os.cpu_count()} cores)")
    for name, value in med.items():
        busy = f"   server CPU {median(cpu[name]):4.0f} % of one core" if cpu[name] else ""
        print(f"  {name:<17} {value / 1e3:8.0f}k readings/s{busy}")
    c = med["collector"]
    if "victoria-metrics" in med:
        v = med["victoria-metrics"]
        for name in [n for n in med if n.startswith("collector")]:
            print(f"  {name} / VictoriaMetrics = {med[name] / v:.2f}x (target >= {COLLECTOR_TARGET:.1f}x)"
                  f"{'' if med[name] / v >= COLLECTOR_TARGET else '  MISSES'}")
    top = max(value for name, value in med.items() if name not in ("sender alone", "parsing alone"))
    print(f"  sender alone / fastest server = {med['sender alone'] / top:.1f}x "
          f"(> 1: the load generator is not the bottleneck)")
    ratio = c / med["parsing alone"]
    print(f"  collector / parsing alone = {ratio:.0%} (target >= {PARSE_TARGET:.0%})"
          f"{'' if ratio >= PARSE_TARGET else '  MISSES'}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
