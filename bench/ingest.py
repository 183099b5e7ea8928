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
figures are medians over the repeats and ratios of medians (this machine is shared and noisy),
with the CPU time each part (collector or replicas, PostgreSQL, VictoriaMetrics, the sender)
spent per reading.

    .venv/bin/python bench/ingest.py [--repeats 5] [--nodes 100] [--rounds 20] [--conns 16]
    .venv/bin/python bench/ingest.py --db postgresql --replicas 2 [--scaling] [--sqlite-too]
    .venv/bin/python bench/ingest.py --compare-with /tmp/wl-old   # a worktree of an older commit
    .venv/bin/python bench/ingest.py --db postgresql --replicas 2 --sqlite-too --compare-with /tmp/wl-old

``--db postgresql --replicas N``: N collectors on one PostgreSQL (started here, fsync on), the
connections spread over them; ``--scaling`` adds 1..N-1 replicas (each on its own database) in
the same turns. PostgreSQL's busy sessions are sampled every 5 ms: what they are busy with, and
on which relation the lock waits wait (bench/pgwaits.py).

``--cooling pue|chiller|metered`` and ``--node-meters``: the site's cooling model and the
devices besides the GPUs that the streams carry (bench/wholebill.py); every collector's ledger
is then checked against the IT, cooling and other energy the readings sent must give.

    .venv/bin/python bench/ingest.py --db postgresql --replicas 2 --scaling --sqlite-too \
        --cooling chiller --node-meters --repeats 3
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from benchkit import (
    Extra,
    Proc,
    SendStats,
    batch_body,
    collector_request,
    cpu_seconds,
    free_port,
    median,
    post,
    postgres_processes,
    scrape_total,
    send_in_order,
    start_collector,
    start_null_server,
    start_postgres,
    wait_http,
    workdir,
)
from pgwaits import WaitSampler, shares_line
from wholebill import COOLING_MODELS, WholeBill, booked, months

COLLECTOR_TARGET, PARSE_TARGET = 1.0, 0.5


def vm_request(node: str, seq: int, gpus: int, seconds: int, t0: float,
               extras: Sequence[Extra] = ()) -> bytes:
    """The readings of one batch as Prometheus text: 5 samples (series) per GPU reading, and
    each extra device's power, energy and temperature where it has them."""
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
    for extra in extras:
        labels = f'node="{node}",device="{extra.device["id"]}",kind="{extra.device["kind"]}"'
        for s in range(seconds):
            ms = int((t0 + s) * 1000)
            if extra.power_w is not None:
                e = 1e6 + (seq * seconds + s) * extra.power_w
                lines += [f"device_power_watts{{{labels}}} {extra.power_w} {ms}",
                          f"device_energy_joules_total{{{labels}}} {e} {ms}"]
            if extra.temp_c is not None:
                lines.append(f"device_temperature_celsius{{{labels}}} {extra.temp_c} {ms}")
    return post("/api/v1/import/prometheus", ("\n".join(lines) + "\n").encode(), {})


class Load:
    """One repeat's requests: per node, its batches in seq order, for both servers; its readings
    start at ``t0`` (a whole second), each stream's every second for ``seconds``."""

    def __init__(self, tag: str, args: argparse.Namespace, t0: int, bill: WholeBill) -> None:
        self.nodes = [f"n{tag}-{n}" for n in range(args.nodes)]
        self.tokens = {node: f"token-{node}" for node in self.nodes}
        self.t0, self.seconds = t0, args.rounds * args.batch_seconds
        self.bodies: list[list[bytes]] = []
        self.collector: list[list[bytes]] = []
        self.vm: list[list[bytes]] = []
        self.readings = 0
        for n, node in enumerate(self.nodes):
            extras = bill.extras(n, node)
            starts = [t0 + r * args.batch_seconds for r in range(args.rounds)]
            bodies = [batch_body(node, f"stream-{node}", r + 1, args.gpus, args.batch_seconds, start,
                                 extras=extras, site=bill.site_of(n)) for r, start in enumerate(starts)]
            self.bodies.append(bodies)
            self.collector.append([collector_request(b, self.tokens[node]) for b in bodies])
            self.vm.append([vm_request(node, r + 1, args.gpus, args.batch_seconds, start, extras)
                            for r, start in enumerate(starts)])
            self.readings += args.rounds * (args.gpus + len(extras)) * args.batch_seconds


async def _blast(ports: Sequence[int], per_node: Sequence[Sequence[bytes]], conns: int) -> SendStats:
    """Each connection carries some nodes' streams, round by round (every stream in seq order);
    connection c goes to ``ports[c % len(ports)]`` (replicas behind no balancer: spread evenly)."""
    stats = SendStats()
    rounds = len(per_node[0])

    def connection_requests(c: int) -> list[bytes]:
        mine = range(c, len(per_node), conns)
        return [per_node[n][r] for r in range(rounds) for n in mine]

    await asyncio.wait_for(asyncio.gather(
        *(send_in_order(ports[c % len(ports)], connection_requests(c), stats) for c in range(conns))),
        timeout=600)
    return stats


def blast(name: str, ports: Sequence[int], per_node: Sequence[Sequence[bytes]], conns: int,
          readings: int, good: int, parts: dict[str, list[psutil.Process]]) -> tuple[float, dict[str, float]]:
    """Readings per second of one server (its connections spread over ``ports``: replicas), and
    the CPU seconds per reading of each of its ``parts`` (and of the sender, this process);
    every batch must have been answered ``good``."""
    parts = {**parts, "sender": [psutil.Process()]}
    before = {part: cpu_seconds(procs) for part, procs in parts.items()}
    started = time.perf_counter()
    stats = asyncio.run(_blast(ports, per_node, conns))
    elapsed = time.perf_counter() - started
    used = {part: (cpu_seconds(procs) - before[part]) / readings for part, procs in parts.items()}
    batches = sum(len(requests) for requests in per_node)
    if stats.codes.get(good, 0) != batches:
        raise SystemExit(f"{name} answered {stats.codes} to {batches} batches")
    return readings / elapsed, used


def parse_alone(bodies: Sequence[Sequence[bytes]], readings: int) -> float:
    """Readings per second of ``wire.validate`` on the same bodies (one thread, this process)."""
    from wattledger.wire import validate

    now = time.time()
    started = time.perf_counter()
    for node_bodies in bodies:
        for body in node_bodies:
            validate(body, now)
    return readings / (time.perf_counter() - started)


@dataclass
class Server:
    """One contender: its ports (a replica each), what answers it counts as good, its parts."""

    name: str
    ports: list[int]
    good: int
    parts: dict[str, list[psutil.Process]]
    vm: bool = False
    checked: list[int] = field(default_factory=list)  # ports whose ledger must hold every reading
    db: str | None = None  # the PostgreSQL database of replicas (its sessions sampled)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=100, help="streams (agents)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--batch-seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20, help="batches per stream per repeat")
    parser.add_argument("--conns", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--profile", metavar="FILE",
                        help="record the (first) collector with py-spy (raw folded stacks) into FILE")
    parser.add_argument("--no-vm", action="store_true", help="skip VictoriaMetrics")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the collectors' store: one SQLite process, or replicas on one PostgreSQL")
    parser.add_argument("--replicas", type=int, default=1, help="collector replicas (with --db postgresql)")
    parser.add_argument("--scaling", action="store_true",
                        help="with --replicas N: also 1..N-1 replicas on the same PostgreSQL, same turns")
    parser.add_argument("--compare-with", type=Path, metavar="CHECKOUT",
                        help="also a SQLite collector (with --db postgresql: --replicas replicas on a "
                             "database of their own, and with --sqlite-too a SQLite collector) run from "
                             "another checkout (git worktree of an older commit), in the same turns: a "
                             "same-run A/B")
    parser.add_argument("--sqlite-too", action="store_true",
                        help="with --db postgresql: also the single SQLite collector, same turns")
    parser.add_argument("--cooling", choices=COOLING_MODELS, default="pue",
                        help="the site's cooling model (chiller: an outdoor sensor in the first stream; "
                             "metered: cooling and facility meters in every 10th stream)")
    parser.add_argument("--node-meters", action="store_true",
                        help="a node device (the BMC's wall power) in each stream")
    parser.add_argument("--sites", type=int, default=1,
                        help="streams spread over this many sites (stream n in site n mod SITES; with "
                             "2 replicas and an even --conns each site's streams reach one replica)")
    parser.add_argument("--start", type=int, metavar="UNIX_SECONDS",
                        help="the first reading's time (default: a day ago, a whole second)")
    args = parser.parse_args(argv)
    if args.replicas > 1 and args.db != "postgresql":
        raise SystemExit("--replicas needs --db postgresql (replicas share one PostgreSQL)")
    sizes = (args.repeats, args.nodes, args.gpus, args.batch_seconds, args.rounds, args.conns, args.replicas,
             args.sites)
    if min(sizes) < 1:
        raise SystemExit("--repeats, --nodes, --gpus, --batch-seconds, --rounds, --conns, --replicas and "
                         "--sites must be at least 1")
    if args.sites > args.nodes:
        raise SystemExit(f"--sites {args.sites} is more than --nodes {args.nodes}: a site without streams")

    vm_bin = shutil.which("victoria-metrics") or shutil.which("victoria-metrics-prod")
    if vm_bin is None and not args.no_vm:
        raise SystemExit("victoria-metrics is not installed (apt-get install victoria-metrics), "
                         "or pass --no-vm")
    d = workdir("wl-bench-ingest-")
    start = args.start if args.start is not None else int(time.time()) - 86400
    bill = WholeBill(args.cooling, args.node_meters, args.nodes, args.gpus, args.sites)
    loads = [Load(str(k), args, start + k * (args.rounds + 1) * args.batch_seconds, bill)
             for k in range(args.repeats)]
    tokens = {node: token for load in loads for node, token in load.tokens.items()}
    site = {"sites": bill.config()}
    procs: list[Proc] = []
    pg: Any = None
    servers: list[Server] = []
    try:
        if args.db == "sqlite" or args.sqlite_too:
            proc, port = start_collector(d, tokens, site)
            procs.append(proc)
            servers.append(Server("collector" if args.db == "sqlite" else "sqlite collector", [port], 200,
                                  {"collector": [psutil.Process(proc.pid)]}, checked=[port]))
        if args.db == "postgresql":
            pg = start_postgres()
            counts = range(1, args.replicas + 1) if args.scaling else [args.replicas]
            fast = {"metrics_refresh_seconds": 1.0, **site}
            compared = [] if args.compare_with is None else [args.replicas]
            for n, source in [(n, None) for n in counts] + [(n, args.compare_with) for n in compared]:
                db = pg.new_database(prefix=f"bench{n}")
                tag = "" if source is None else f" ({source.name})"
                started = [start_collector(d, tokens, fast, db=db, name=f"r{n}-{i}{'-old' if source else ''}",
                                           source=source.resolve() if source else None) for i in range(n)]
                procs += [proc for proc, _ in started]
                parts = {f"replica {i + 1}": [psutil.Process(proc.pid)]
                         for i, (proc, _) in enumerate(started)}
                ports = [port for _, port in started]
                servers.append(Server(f"{n} replica{'s' if n > 1 else ''}{tag} on PostgreSQL", ports, 200,
                                      parts, checked=ports, db=db))
        if args.compare_with is not None and (args.db == "sqlite" or args.sqlite_too):
            proc, port = start_collector(d, tokens, site, source=args.compare_with.resolve(), name="compared")
            procs.append(proc)
            name = "collector" if args.db == "sqlite" else "sqlite collector"
            servers.append(Server(f"{name} ({args.compare_with.name})", [port], 200,
                                  {"collector": [psutil.Process(proc.pid)]}, checked=[port]))
        if args.profile:
            procs.append(Proc(["py-spy", "record", "--pid", str(procs[0].pid), "--rate", "250",
                               "--format", "raw", "--threads", "--gil", "--output", args.profile],
                              d / "py-spy.log", stop_signal=signal.SIGINT))
        null, nport = start_null_server(d)
        procs.append(null)
        servers.append(Server("sender alone", [nport], 200, {"null server": [psutil.Process(null.pid)]}))
        if not args.no_vm:
            assert vm_bin is not None
            vport = free_port()
            vm = Proc([vm_bin, f"-storageDataPath={d}/vm", f"-httpListenAddr=127.0.0.1:{vport}",
                       "-retentionPeriod=100y", "-loggerLevel=ERROR"], d / "vm.log")
            procs.append(vm)
            wait_http(f"http://127.0.0.1:{vport}/health", vm)
            servers.append(Server("victoria-metrics", [vport], 204,
                                  {"victoria-metrics": [psutil.Process(vm.pid)]}, vm=True))
        rates: dict[str, list[float]] = {s.name: [] for s in servers}
        rates["parsing alone"] = []
        cpu: dict[str, dict[str, list[float]]] = {s.name: {} for s in servers}
        waits: dict[str, dict[str, list[float]]] = {}
        locks: dict[str, dict[str, list[float]]] = {}  # per lock wait and relation
        found_by: dict[str, dict[str, int]] = {}  # lock samples per way their relation was found
        wal: dict[str, list[float]] = {}  # WAL bytes per reading, per turn
        transactions: dict[str, list[tuple[float, float]]] = {}  # per turn: per second, readings each
        for k, load in enumerate(loads):
            turns = servers[k % len(servers):] + servers[:k % len(servers)]
            for server in turns:
                parts = dict(server.parts)
                if server.db is not None:
                    parts["postgresql"] = postgres_processes(pg)
                sampler = WaitSampler(server.db) if server.db is not None else None
                rate, used = blast(server.name, server.ports, load.vm if server.vm else load.collector,
                                   args.conns, load.readings, server.good, parts)
                if sampler is not None:
                    events, relations = sampler.stop()
                    for into, shares in ((waits, events), (locks, relations)):
                        for key, share in shares.items():
                            into.setdefault(server.name, {}).setdefault(key, []).append(share)
                    wal.setdefault(server.name, []).append(sampler.wal_bytes / load.readings)
                    elapsed, made = load.readings / rate, max(sampler.transactions, 1)
                    transactions.setdefault(server.name, []).append((made / elapsed, load.readings / made))
                    for how, n in sampler.found_by.items():
                        mine = found_by.setdefault(server.name, {})
                        mine[how] = mine.get(how, 0) + n
                rates[server.name].append(rate)
                for part, value in used.items():
                    cpu[server.name].setdefault(part, []).append(value)
            rates["parsing alone"].append(parse_alone(load.bodies, load.readings))
            print(f"repeat {k + 1}/{args.repeats}: " + ", ".join(
                f"{name} {values[-1] / 1e3:.0f}k/s" for name, values in rates.items() if values), flush=True)
        expected = sum(load.readings for load in loads)
        time.sleep(2.5)  # replicas: each shows the whole fleet within metrics_refresh_seconds
        for server in servers:
            for port in server.checked:
                committed = scrape_total(port, "wattledger_ingest_readings_total")
                if committed != expected:
                    raise SystemExit(f"{server.name} (:{port}) holds {committed:.0f} readings of "
                                     f"{expected} sent")
        spans = [(load.t0, load.seconds) for load in loads]
        due = bill.expected(spans)
        for server in servers:
            if server.checked:
                got = booked(server.checked[0], months(spans))
                if not got.close_to(due):
                    raise SystemExit(f"{server.name} booked {got}; the readings sent give {due}")
        meters = (" with node meters" if args.node_meters else "")
        where = f", {args.sites} sites" if args.sites > 1 else ""
        ledger = (f"  ledger ({args.cooling}{meters}{where}): {due}, booked so by every collector "
                  f"({', '.join(s.name for s in servers if s.checked)})")
    finally:
        for proc in reversed(procs):
            proc.stop()
        if pg is not None:
            pg.destroy()
    report(args, rates, cpu)
    print(ledger)
    for name, busy in waits.items():
        per_second = median([t for t, _ in transactions[name]])
        each = median([r for _, r in transactions[name]])
        print(f"  {name}: PostgreSQL sessions busy with {shares_line(busy, args.repeats)}"
              f"; WAL {median(wal[name]):.0f} bytes per reading; "
              f"{per_second:.0f} write transactions/s of {each:.0f} readings each")
        ways_of = found_by.get(name, {})
        ways = ", ".join(f"{way} {n / sum(ways_of.values()):.0%}"
                         for way, n in sorted(ways_of.items(), key=lambda i: -i[1]))
        print(f"  {name}: lock waits by relation: {shares_line(locks.get(name, {}), args.repeats)}"
              + (f" (relation found by: {ways})" if ways else ""))
    shutil.rmtree(d, ignore_errors=True)
    return 0


def report(args: argparse.Namespace, rates: dict[str, list[float]],
           cpu: dict[str, dict[str, list[float]]]) -> None:
    med = {name: median(values) for name, values in rates.items() if values}
    print(f"\ningest: {args.nodes} streams x {args.rounds} batches of {args.gpus} GPUs x "
          f"{args.batch_seconds} s, {args.conns} connections, {args.repeats} repeats "
          f"(median readings/s; {os.cpu_count()} cores)")
    width = max(len(name) for name in med)
    for name, value in med.items():
        parts = cpu.get(name, {})
        per_part = ", ".join(f"{part} {median(v) * 1e6:.1f}" for part, v in parts.items())
        total = sum(median(v) for v in parts.values()) * 1e6
        busy = f"   CPU us/reading: {per_part} (all {total:.1f})" if parts else ""
        print(f"  {name:<{width}} {value / 1e3:8.0f}k readings/s{busy}")
    collectors = [n for n in med if n.startswith(("collector", "sqlite collector")) or "replica" in n]
    if "victoria-metrics" in med:
        v = med["victoria-metrics"]
        for name in collectors:
            print(f"  {name} / VictoriaMetrics = {med[name] / v:.2f}x (target >= {COLLECTOR_TARGET:.1f}x)"
                  f"{'' if med[name] / v >= COLLECTOR_TARGET else '  MISSES'}")
    if args.compare_with is not None:
        replicas = f"{args.replicas} replica{'s' if args.replicas > 1 else ''}"
        for name, tag in (("collector", ""), ("sqlite collector", ""), (replicas, " on PostgreSQL")):
            this, other = f"{name}{tag}", f"{name} ({args.compare_with.name}){tag}"
            if this in med and other in med:
                print(f"  {this} / {other} = {med[this] / med[other]:.2f}x (same-run A/B)")
    # this checkout's replica counts (a compared checkout's name has its folder in brackets)
    scaling = sorted((n for n in med if n.endswith("on PostgreSQL") and "(" not in n),
                     key=lambda n: int(n.split()[0]))
    if len(scaling) > 1:
        one = med[scaling[0]]
        print("  scaling: " + ", ".join(f"{n.split()[0]} -> {med[n] / one:.2f}x" for n in scaling))
    top = max(value for name, value in med.items() if name not in ("sender alone", "parsing alone"))
    print(f"  sender alone / fastest server = {med['sender alone'] / top:.1f}x "
          f"(> 1: the load generator is not the bottleneck)")
    if collectors:
        ratio = med[collectors[0]] / med["parsing alone"]
        print(f"  {collectors[0]} / parsing alone = {ratio:.0%} (target >= {PARSE_TARGET:.0%})"
              f"{'' if ratio >= PARSE_TARGET else '  MISSES'}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
