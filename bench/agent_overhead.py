"""What the agent costs beside the GPUs it watches.

Runs ``wattledger agent --simulate 8 --interval 1`` for a minute (after a warm-up) in two
modes — exporter only, and delivering to a collector stub that answers every batch 200 —
and, in the same run as the baseline, an idle Python interpreter. Prints each one's CPU
share of one core and resident memory, and the agent's figures against the budget
(< 0.5 % of one core, < 50 MB RSS).

    .venv/bin/python bench/agent_overhead.py [--seconds 60] [--gpus 8 | --nvml]
        [--collector URL --token-file F]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

WATTLEDGER = str(Path(sys.executable).parent / "wattledger")
CPU_BUDGET_PCT, RSS_BUDGET_MB = 0.5, 50.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stub_collector() -> tuple[ThreadingHTTPServer, str]:
    """Answers every batch ``200 accepted`` (after reading and un-gzipping it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
            n = len(json.loads(body)["readings"]["ts"])
            out = json.dumps({"accepted": n, "duplicate": False}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"agent exited early ({proc.returncode})")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def measure(
    procs: dict[str, subprocess.Popen[bytes]], warmup: float, seconds: float
) -> dict[str, tuple[float, float, float]]:
    """CPU share (% of one core) over ``seconds`` after ``warmup``, and RSS and USS (MB) at the
    end (USS leaves out shared pages, such as a driver library's, that RSS counts in full)."""
    ps = {name: psutil.Process(p.pid) for name, p in procs.items()}
    time.sleep(warmup)
    c0 = {name: cpu_seconds(p) for name, p in ps.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return {name: (100 * (cpu_seconds(p) - c0[name]) / elapsed, p.memory_info().rss / 2**20,
                   p.memory_full_info().uss / 2**20) for name, p in ps.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--nvml", action="store_true",
                    help="read this machine's real GPUs through NVML instead of simulating --gpus")
    ap.add_argument("--collector", help="a real collector's URL (default: an in-process stub)")
    ap.add_argument("--token-file", help="token for --collector")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wl-bench-"))
    server = None
    if args.collector:
        url, token_file = args.collector, args.token_file
    else:
        server, url = stub_collector()
        token_file = str(work / "token")
        Path(token_file).write_text("bench-token\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
    gpus = [] if args.nvml else ["--simulate", str(args.gpus)]
    common = ["agent", *gpus, "--interval", "1", "--node", "bench-1", "--log-level", "warning"]
    exporter_port, shipping_port = free_port(), free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {
        "idle python (baseline)": subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10**6)"]),
        "agent, exporter only": subprocess.Popen(
            [WATTLEDGER, *common, "--listen", f"127.0.0.1:{exporter_port}"], env=env),
        "agent, delivering": subprocess.Popen(
            [WATTLEDGER, *common, "--listen", f"127.0.0.1:{shipping_port}", "--collector", url,
             "--token-file", token_file, "--spool", str(work / "spool"), "--batch-seconds", "10"], env=env),
    }
    try:
        wait_http(f"http://127.0.0.1:{exporter_port}/metrics", procs["agent, exporter only"])
        wait_http(f"http://127.0.0.1:{shipping_port}/metrics", procs["agent, delivering"])
        print(f"measuring {args.seconds:.0f} s after {args.warmup:.0f} s warm-up;"
              f" {'real GPUs (NVML)' if args.nvml else f'{args.gpus} simulated GPUs'}"
              f" at 1 s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        results = measure(procs, args.warmup, args.seconds)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(20)
        if server is not None:
            server.shutdown()
    print(f"{'process':<26} {'CPU % of one core':>18} {'RSS MB':>8} {'USS MB':>8}")
    for name, (cpu, rss, uss) in results.items():
        print(f"{name:<26} {cpu:>18.3f} {rss:>8.1f} {uss:>8.1f}")
    worst_cpu = max(results["agent, exporter only"][0], results["agent, delivering"][0])
    worst_rss = max(results["agent, exporter only"][1], results["agent, delivering"][1])
    base_rss = results["idle python (baseline)"][1]
    verdict = worst_cpu < CPU_BUDGET_PCT and worst_rss < RSS_BUDGET_MB
    print(f"agent: at most {worst_cpu:.3f} % CPU and {worst_rss:.1f} MB RSS"
          f" ({worst_rss - base_rss:.1f} MB above an idle interpreter);"
          f" budget < {CPU_BUDGET_PCT} % and < {RSS_BUDGET_MB:.0f} MB:"
          f" {'within' if verdict else 'OVER'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
