"""A site on one collector: many agents pushing for minutes, the collector's cost measured.

Simulates ``--agents`` GPU servers (default 1,250 x 8 GPUs = 10,000 GPUs sampled every second),
each sending one batch (8 GPUs x 10 s) every 10 s on its own keep-alive connection, in seq
order, one in flight, re-sending after a 429 as an agent does. Agents start spread over the
first 10 s. Meanwhile /metrics is scraped every 15 s, as Prometheus would.

Reported (after a warm-up, so that start-up is not counted): the collector's CPU as % of one
core, its peak RSS, answer times (p50, p99, max), 5xx answers, /metrics time and size, and the
load generator's own CPU (it must stay small beside the collector's). Targets (issue 7):
CPU < 50 % of one core, RSS < 1 GiB, p99 < 250 ms, no 5xx, /metrics < 1 s.

    .venv/bin/python bench/site.py [--minutes 10] [--agents 1250]
    .venv/bin/python bench/site.py --find-max [--minutes 1]   # grow the fleet until it fails
    .venv/bin/python bench/site.py --db postgresql --replicas 2 [--find-max]

``--db postgresql --replicas N``: N collectors on one PostgreSQL (started here, fsync on, a
fresh database per run), the agents spread over them as a load balancer would (agent i on
replica i mod N), every replica's /metrics scraped every 15 s (Prometheus scrapes each one).
The collector's CPU and RSS are then those of the busiest replica (each is one Python process,
near one core at most), beside every replica's and PostgreSQL's own CPU.

The load generator is light: bodies are made with orjson from pre-built columns (only the
timestamps, energy counters and seq change), and the HTTP client reads only status lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from benchkit import (
    SendStats,
    collector_request,
    cpu_seconds,
    median,
    percentile,
    postgres_processes,
    read_answer,
    start_collector,
    start_postgres,
    workdir,
)

BATCH_SECONDS = 10
SCRAPE_SECONDS = 15
TARGETS = {"cpu_pct": 50.0, "rss_mib": 1024.0, "p99_ms": 250.0, "metrics_s": 1.0}


class Agent:
    """One simulated GPU server: its devices and columns are made once; each batch only gets
    new timestamps, energy counters and seq."""

    def __init__(self, index: int, gpus: int) -> None:
        self.node = f"site-{index:05d}"
        self.token = f"token-{self.node}"
        self.stream = f"stream-{self.node}"
        self.seq = 0
        self.devices = [{"id": f"GPU-{self.node}-{g}", "kind": "gpu", "index": g,
                         "model": "NVIDIA H100 80GB HBM3", "power_limit_w": 700.0,
                         "slowdown_c": 87.0, "shutdown_c": 92.0} for g in range(gpus)]
        n = gpus * BATCH_SECONDS
        self.device = [g for g in range(gpus) for _ in range(BATCH_SECONDS)]
        self.power = [300.0 + 10 * g + s for g in range(gpus) for s in range(BATCH_SECONDS)]
        self.temp, self.util, self.mem_temp = [60.5] * n, [0.87] * n, [70.0] * n
        self.steps = [float(s) for s in range(BATCH_SECONDS)] * gpus
        self.energy = 1e6 + index  # every GPU's counter moves 400 J/s

    def next_request(self, end: float) -> bytes:
        """The batch of the 10 s before ``end`` (unix seconds)."""
        self.seq += 1
        start = end - BATCH_SECONDS
        e0 = self.energy
        self.energy += 400.0 * BATCH_SECONDS
        body = orjson.dumps({
            "node": self.node, "stream": self.stream, "seq": self.seq, "labels": {"site": "default"},
            "devices": self.devices,
            "readings": {"device": self.device, "ts": [start + s for s in self.steps],
                         "power_w": self.power, "energy_j": [e0 + 400.0 * s for s in self.steps],
                         "temp_c": self.temp, "util": self.util, "mem_temp_c": self.mem_temp}})
        return collector_request(body, self.token)


@dataclass
class Samples:
    """What the monitor and the scraper saw."""

    #: per replica: (monotonic, cpu seconds)
    cpu: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    pg_cpu: list[tuple[float, float]] = field(default_factory=list)  # PostgreSQL's, all processes
    rss: list[float] = field(default_factory=list)  # bytes, the largest replica's, after the warm-up
    metrics: list[tuple[float, int]] = field(default_factory=list)  # (seconds, bytes)
    metrics_errors: int = 0


async def run_agent(agent: Agent, port: int, first: float, until: float, stats: SendStats,
                    measure_from: float) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    due = first
    try:
        while due < until:
            await asyncio.sleep(max(0.0, due - loop.time()))
            request = agent.next_request(time.time())
            while True:
                started = loop.time()
                try:
                    writer.write(request)
                    code, retry = await read_answer(reader)
                except (ConnectionError, asyncio.IncompleteReadError):
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                if started >= measure_from:
                    stats.latencies.append(loop.time() - started)
                    stats.count(code)
                if code not in (429, 503):
                    break
                stats.retries += 1
                await asyncio.sleep(retry)
            due += BATCH_SECONDS
    finally:
        writer.close()


async def monitor(procs: list[psutil.Process], pg: Any, until: float, measure_from: float,
                  samples: Samples) -> None:
    """Each second after the warm-up: every replica's CPU seconds and RSS, PostgreSQL's CPU."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        if loop.time() >= measure_from:
            now = loop.time()
            for i, proc in enumerate(procs):
                samples.cpu.setdefault(i, []).append((now, cpu_seconds([proc])))
            samples.rss.append(max(float(proc.memory_info().rss) for proc in procs))
            if pg is not None:
                samples.pg_cpu.append((now, cpu_seconds(postgres_processes(pg))))
        await asyncio.sleep(1.0)


def scrape(port: int) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        size = len(answer.read())
    return time.perf_counter() - started, size


async def scraper(ports: list[int], until: float, measure_from: float, samples: Samples) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, measure_from - loop.time()))
    while loop.time() < until:
        for port in ports:
            try:
                samples.metrics.append(await asyncio.to_thread(scrape, port))
            except OSError:
                samples.metrics_errors += 1
        await asyncio.sleep(SCRAPE_SECONDS)


@dataclass
class Result:
    agents: int
    gpus: int
    seconds: float
    cpu_pct: float
    rss_mib: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    codes: dict[int, int]
    retries: int
    metrics_s: float
    metrics_max_s: float
    metrics_mib: float
    sender_cpu_pct: float
    replica_cpu_pct: list[float] = field(default_factory=list)  # each replica's, % of one core
    pg_cpu_pct: float | None = None  # PostgreSQL's (all its processes), % of one core

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.codes.items() if code >= 500)

    def misses(self) -> list[str]:
        out = []
        if self.cpu_pct >= TARGETS["cpu_pct"]:
            out.append(f"CPU {self.cpu_pct:.0f} % >= {TARGETS['cpu_pct']:.0f} %")
        if self.rss_mib >= TARGETS["rss_mib"]:
            out.append(f"RSS {self.rss_mib:.0f} MiB >= {TARGETS['rss_mib']:.0f} MiB")
        if self.p99_ms >= TARGETS["p99_ms"]:
            out.append(f"p99 {self.p99_ms:.0f} ms >= {TARGETS['p99_ms']:.0f} ms")
        if self.server_errors:
            out.append(f"{self.server_errors} answers 5xx")
        if not self.metrics_s < TARGETS["metrics_s"]:
            out.append(f"/metrics {self.metrics_s:.2f} s >= {TARGETS['metrics_s']:.0f} s")
        return out

    def sustained(self) -> bool:
        """Kept up: every batch answered (no 5xx), in time, by a collector not at its limit.

        The GIL keeps one collector on about one core, so 'at its limit' is 90 % of one core
        (for replicas: the busiest one).
        """
        good = self.codes.get(200, 0)
        return (not self.server_errors and good > 0 and self.p99_ms < TARGETS["p99_ms"]
                and self.cpu_pct < 90.0 and self.retries == 0)


def run_site(agents: int, gpus: int, minutes: float, warmup: float, pg: Any = None,
             replicas: int = 1) -> Result:
    """One fleet for ``minutes``: on one SQLite collector, or (``pg``: a running PostgreSQL) on
    ``replicas`` collectors sharing a fresh database of it."""
    fleet = [Agent(i, gpus) for i in range(agents)]
    d = workdir("wl-bench-site-")
    tokens = {a.node: a.token for a in fleet}
    db = pg.new_database(prefix="site") if pg is not None else None
    started = [start_collector(d, tokens, {"max_queue_batches": 4096}, db=db, name=f"collector-{i}")
               for i in range(replicas if pg is not None else 1)]
    ports = [port for _, port in started]
    me = psutil.Process()
    try:
        stats, samples = SendStats(), Samples()

        async def main() -> float:
            loop = asyncio.get_running_loop()
            begin = loop.time()
            measure_from = begin + warmup
            until = measure_from + minutes * 60.0
            rng = random.Random(7)
            mine = me.cpu_times()
            # a load balancer's spread: agent i on replica i mod N
            tasks = [run_agent(a, ports[i % len(ports)], begin + rng.uniform(0, BATCH_SECONDS), until, stats,
                               measure_from) for i, a in enumerate(fleet)]
            procs = [psutil.Process(proc.pid) for proc, _ in started]
            await asyncio.gather(monitor(procs, pg, until, measure_from, samples),
                                 scraper(ports, until, measure_from, samples), *tasks)
            used = me.cpu_times()
            return 100.0 * ((used.user - mine.user) + (used.system - mine.system)) / (loop.time() - begin)

        sender_cpu = asyncio.run(main())
    finally:
        for proc, _ in started:
            proc.stop()
        if db is not None:
            pg.drop_database(db)

    def pct(series: list[tuple[float, float]]) -> float:
        (t0, c0), (t1, c1) = series[0], series[-1]
        return 100.0 * (c1 - c0) / (t1 - t0)

    each = [pct(samples.cpu[i]) for i in sorted(samples.cpu)]
    seconds = samples.cpu[0][-1][0] - samples.cpu[0][0][0]
    times = [m[0] for m in samples.metrics]
    return Result(agents, agents * gpus, seconds, max(each),
                  max(samples.rss) / 2**20, 1e3 * median(stats.latencies),
                  1e3 * percentile(stats.latencies, 0.99), 1e3 * max(stats.latencies, default=0.0),
                  stats.codes, stats.retries, median(times), max(times, default=float("nan")),
                  median([m[1] for m in samples.metrics]) / 2**20, sender_cpu, each,
                  pct(samples.pg_cpu) if samples.pg_cpu else None)


def show(r: Result) -> None:
    print(f"site: {r.agents} agents x {r.gpus // r.agents} GPUs = {r.gpus} GPUs at 1 s, batches every "
          f"{BATCH_SECONDS} s, measured over {r.seconds / 60:.1f} min ({os.cpu_count()} cores)")
    print(f"  collector CPU      {r.cpu_pct:6.1f} % of one core   (target < {TARGETS['cpu_pct']:.0f} %)"
          + (f"; replicas {', '.join(f'{c:.1f}' for c in r.replica_cpu_pct)} %, PostgreSQL "
             f"{r.pg_cpu_pct:.1f} %" if r.pg_cpu_pct is not None else ""))
    print(f"  collector RSS      {r.rss_mib:6.0f} MiB peak        (target < {TARGETS['rss_mib']:.0f} MiB)")
    print(f"  answer time        p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, max {r.max_ms:.0f} ms "
          f"(target p99 < {TARGETS['p99_ms']:.0f} ms)")
    print(f"  answers            {dict(sorted(r.codes.items()))}, re-sent after 429: {r.retries}")
    print(f"  /metrics           median {r.metrics_s:.2f} s, max {r.metrics_max_s:.2f} s, "
          f"{r.metrics_mib:.1f} MiB (target < {TARGETS['metrics_s']:.0f} s)")
    print(f"  load generator CPU {r.sender_cpu_pct:6.1f} % of one core (baseline: it must stay small)")
    misses = r.misses()
    print("  meets every target" if not misses else "  MISSES: " + "; ".join(misses))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured time (per step)")
    parser.add_argument("--agents", type=int, default=1250)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per agent")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds not measured at start")
    parser.add_argument("--find-max", action="store_true",
                        help="grow the fleet by --growth per step until it is not sustained")
    parser.add_argument("--growth", type=float, default=1.5)
    parser.add_argument("--max-agents", type=int, default=20000, help="find-max stops here")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite",
                        help="one SQLite collector, or replicas on one PostgreSQL")
    parser.add_argument("--replicas", type=int, default=1, help="collector replicas (with --db postgresql)")
    args = parser.parse_args(argv)
    if args.replicas != 1 and args.db != "postgresql":
        raise SystemExit("--replicas needs --db postgresql (replicas share one PostgreSQL)")
    pg = start_postgres() if args.db == "postgresql" else None
    try:
        if args.find_max:
            return find_max(args, pg)
        show(run_site(args.agents, args.gpus, args.minutes, args.warmup, pg, args.replicas))
        return 0
    finally:
        if pg is not None:
            pg.destroy()


def find_max(args: argparse.Namespace, pg: Any) -> int:
    agents, best = args.agents, None
    while True:
        result = run_site(agents, args.gpus, args.minutes, args.warmup, pg, args.replicas)
        show(result)
        if not result.sustained():
            break
        best = result
        agents = max(agents + 1, int(agents * args.growth))
        if agents > args.max_agents:
            print(f"\nfind-max: stopped at --max-agents {args.max_agents}")
            break
    if best is None:
        print(f"\nfind-max: not even {args.agents * args.gpus} GPUs are sustained")
    else:
        print(f"find-max: largest fleet sustained {best.gpus} GPUs ({best.agents} agents; "
              f"{best.cpu_pct:.0f} % of one core, p99 {best.p99_ms:.0f} ms)"
              + ("" if agents > args.max_agents else f"; {agents * args.gpus} GPUs were not"))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
