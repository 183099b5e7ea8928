"""What the benchmarks share: processes on loopback, pre-built batches, a light HTTP sender.

The load generator must never be what limits a figure, so requests are built before the clock
starts (whole HTTP requests as bytes) and sent by a small asyncio client over keep-alive
connections, reading only the status line and the body length of each answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

WATTLEDGER = str(Path(sys.executable).parent / "wattledger")
SITE: dict[str, Any] = {"timezone": "UTC", "currency": "USD", "pue": 1.5, "price_per_kwh": 0.12,
        "demand_charge_per_kw": 0, "carbon_g_per_kwh": 400}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


class Proc:
    """A child process in its own session, stopped (and its group killed) on ``stop``."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.args = list(args)
        self.stop_signal = stop_signal
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                          env={**os.environ, **(env or {})}, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, self.stop_signal)
                self.popen.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not proc.alive():
            raise SystemExit(f"{proc.args[0]} exited early; see {proc.log}:\n"
                             f"{proc.log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s (see {proc.log})")


def start_collector(d: Path, tokens: dict[str, str], extra: dict[str, Any] | None = None,
                    wrap: Sequence[str] = (), *, db: str | None = None, source: Path | None = None,
                    name: str = "collector") -> tuple[Proc, int]:
    """A real ``wattledger collector`` on loopback: a fresh SQLite ledger in ``d``, or ``db``;
    run from the checkout ``source`` (another commit, for a same-run A/B) when given."""
    port = free_port()
    cfg = {"listen": f"127.0.0.1:{port}", "db": db or f"sqlite:///{d}/{name}.db", "tokens": tokens,
           "sites": {"default": SITE}, **(extra or {})}
    (d / f"{name}.yaml").write_text(json.dumps(cfg))
    env = {"PYTHONPATH": str(source)} if source is not None else None
    command = [sys.executable, "-m", "wattledger.cli"] if source is not None else [WATTLEDGER]
    proc = Proc([*wrap, *command, "collector", "--config", str(d / f"{name}.yaml")], d / f"{name}.log",
                env=env)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, port


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def postgres_processes(server: Any) -> list[psutil.Process]:
    """The PostgreSQL server and its backends (a new backend per connection: found at each turn)."""
    pid = int((server.data / "postmaster.pid").read_text().split()[0])
    main = psutil.Process(pid)
    return [main, *main.children(recursive=True)]


def start_postgres() -> Any:
    """A throwaway PostgreSQL (tests/pgserver.py) with fsync on, as a production server runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.pgserver import PgServer

    return PgServer(durable=True).start()  # its own folder, open to the postgres user


NULL_SERVER = """
import asyncio, sys
async def serve(r, w):
    try:
        while True:
            head = await r.readuntil(b"\\r\\n\\r\\n")
            size = 0
            for line in head.split(b"\\r\\n"):
                if line[:15].lower() == b"content-length:":
                    size = int(line[15:])
            await r.readexactly(size)
            w.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def start_null_server(d: Path) -> tuple[Proc, int]:
    """An HTTP server that reads each request and answers 200 at once: the sender's ceiling."""
    port = free_port()
    proc = Proc([sys.executable, "-c", NULL_SERVER, str(port)], d / "null.log")
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the null server did not start")


# ---------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Extra:
    """A device of a batch besides its GPUs (the node's BMC, a facility meter, an outdoor sensor):
    a constant ``power_w`` with an energy counter that follows it, or none; ``temp_c`` or none."""

    device: dict[str, Any]
    power_w: float | None
    temp_c: float | None = None


def batch_body(node: str, stream: str, seq: int, gpus: int, seconds: int, t0: float,
               energy0: float = 1e6, device_prefix: str = "GPU", extras: Sequence[Extra] = (),
               site: str = "default") -> bytes:
    """One agent batch as the agent sends it: ``gpus`` devices x ``seconds`` 1-s readings, and
    the same seconds of each of ``extras`` after them."""
    dev: list[int] = []
    ts: list[float] = []
    power: list[float | None] = []
    energy: list[float | None] = []
    temp: list[float | None] = []
    util: list[float | None] = []
    mem: list[float | None] = []
    for g in range(gpus):
        for s in range(seconds):
            dev.append(g)
            ts.append(t0 + s)
            power.append(300.0 + 10 * g + s)
            energy.append(energy0 + (seq * seconds + s) * 400.0)
            temp.append(60.5)
            util.append(0.87)
            mem.append(70.0)
    for x, extra in enumerate(extras, start=gpus):
        watts = extra.power_w
        for s in range(seconds):
            dev.append(x)
            ts.append(t0 + s)
            power.append(watts)
            energy.append(None if watts is None else energy0 + (seq * seconds + s) * watts)
            temp.append(extra.temp_c)
            util.append(None)
            mem.append(None)
    return json.dumps({
        "node": node, "stream": stream, "seq": seq, "labels": {"site": site},
        "devices": [{"id": f"{device_prefix}-{node}-{g}", "kind": "gpu", "index": g,
                     "model": "NVIDIA H100 80GB HBM3", "power_limit_w": 700.0, "slowdown_c": 87.0,
                     "shutdown_c": 92.0} for g in range(gpus)] + [e.device for e in extras],
        "readings": {"device": dev, "ts": ts, "power_w": power, "energy_j": energy,
                     "temp_c": temp, "util": util, "mem_temp_c": mem}}).encode()


def post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\n{head}Content-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def collector_request(body: bytes, token: str) -> bytes:
    return post("/v1/batches", body, {"Authorization": f"Bearer {token}",
                                      "Content-Type": "application/json"})


# ---------------------------------------------------------------------------- the sender


@dataclass
class SendStats:
    codes: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    retries: int = 0

    def count(self, code: int) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, float]:
    """Status and Retry-After (seconds, default 1) of one answer; its body is skipped."""
    head = await reader.readuntil(b"\r\n\r\n")
    code = int(head[9:12])
    size, chunked, retry = 0, False, 1.0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            size = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"retry-after":
            retry = min(5.0, float(value))
    if chunked:
        while True:
            chunk = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(chunk + 2)
            if chunk == 0:
                break
    elif size:
        await reader.readexactly(size)
    return code, retry


async def send_in_order(port: int, requests: Sequence[bytes], stats: SendStats,
                        ok: tuple[int, ...] = (200, 204)) -> None:
    """Send requests one at a time on one keep-alive connection, re-sending after a 429 / 503."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            while True:
                started = time.perf_counter()
                writer.write(request)
                code, retry = await read_answer(reader)
                stats.latencies.append(time.perf_counter() - started)
                stats.count(code)
                if code in ok or code not in (429, 503):
                    break
                stats.retries += 1
                await asyncio.sleep(retry)
    finally:
        writer.close()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scrape_total(port: int, name: str) -> float:
    """The sum over every series of one family on /metrics (Prometheus text)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as answer:
        text = answer.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total
