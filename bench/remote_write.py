"""Remote-write intake: how many of dcgm-exporter's samples one collector books per second.

A real ``wattledger collector`` on loopback (SQLite, fsync as configured by default) is sent
Prometheus remote-write 1.0 requests as a Prometheus with ``max_shards: 1`` sends them: one
request in flight per connection, each request one scrape round of ``--nodes`` nodes x
``--gpus`` GPUs x dcgm-exporter's five series (one sample each, 15 s apart from round to
round), snappy-compressed protobuf built before the clock starts. ``--conns`` > 1 is several
Prometheus servers (or shards) at once, each with its own nodes. Then the same bodies are
decoded and mapped in this process (snappy, protobuf, ``remotemap.map_request``): that part
alone. Figures are medians over ``--repeats`` (each repeat on fresh nodes).

    .venv/bin/python bench/remote_write.py [--repeats 3] [--nodes 100] [--gpus 8] [--rounds 10] [--conns 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import cpu_seconds, start_collector, workdir

from wattledger.collector.ingest.prompb.remote_pb2 import WriteRequest
from wattledger.collector.ingest.remotemap import Source, map_request
from wattledger.collector.ingest.remotewrite import decode

TOKEN = "bench-remote-write-token"
SERIES = (("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1.0), ("DCGM_FI_DEV_POWER_USAGE", 0.0),
          ("DCGM_FI_DEV_GPU_TEMP", 0.0), ("DCGM_FI_DEV_MEMORY_TEMP", 0.0), ("DCGM_FI_DEV_GPU_UTIL", 0.0))
SERIES_PER_GPU = len(SERIES)


def request(prefix: str, nodes: int, gpus: int, t: float) -> bytes:
    """One scrape round of ``nodes`` x ``gpus`` GPUs at ``t``, as Prometheus sends it."""
    import cramjam

    message = WriteRequest()
    for n in range(nodes):
        for g in range(gpus):
            for name, counter in SERIES:
                ts = message.timeseries.add()
                labels = {"__name__": name, "gpu": str(g), "UUID": f"GPU-{prefix}-{n:05d}-{g:02d}",
                          "Hostname": f"{prefix}-{n:05d}", "modelName": "NVIDIA H100 80GB HBM3",
                          "instance": f"10.0.{n // 256}.{n % 256}:9400", "job": "dcgm-exporter"}
                for key in sorted(labels):
                    ts.labels.add(name=key, value=labels[key])
                value = 1e9 + 700_000.0 * (t - 1.7e9) if counter else 61.0
                ts.samples.add(value=value, timestamp=round(t * 1000))
    return bytes(cramjam.snappy.compress_raw(message.SerializeToString()))


def send(url: str, bodies: list[bytes], failures: list[str]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-protobuf",
               "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"}
    with httpx.Client(timeout=60) as client:
        for content in bodies:
            r = client.post(url, content=content, headers=headers)
            if r.status_code != 200 or r.json()["samples"]["accepted"] == 0:
                failures.append(f"{r.status_code} {r.text[:200]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=100, help="nodes per request (per connection)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10, help="requests per connection and repeat")
    parser.add_argument("--conns", type=int, default=1, help="Prometheus servers sending at once")
    args = parser.parse_args()
    d = workdir("wl-bench-rw-")
    tokens = {"remote_write_tokens": {"bench": {"token": TOKEN, "site": "default"}}}
    proc, port = start_collector(d, {}, tokens)
    url = f"http://127.0.0.1:{port}/api/v1/write"
    collector = [psutil.Process(proc.pid)]
    per_request = args.nodes * args.gpus * SERIES_PER_GPU
    rates, cpu_per_k, latencies, alone = [], [], [], []
    try:
        t0 = time.time() - 86400
        for repeat in range(args.repeats):
            work = [[request(f"r{repeat}c{c}", args.nodes, args.gpus, t0 + 15 * k)
                     for k in range(args.rounds)] for c in range(args.conns)]
            failures: list[str] = []
            cpu0, start = cpu_seconds(collector), time.perf_counter()
            threads = [threading.Thread(target=send, args=(url, bodies, failures)) for bodies in work]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - start
            cpu = cpu_seconds(collector) - cpu0
            if failures:
                raise SystemExit(f"refused: {failures[:3]}")
            samples = per_request * args.rounds * args.conns
            rates.append(samples / wall)
            cpu_per_k.append(1000 * cpu / samples)
            latencies.append(wall / args.rounds)
            body = work[0][0]
            start = time.perf_counter()
            mapped = map_request(decode(body, 1 << 30).timeseries, Source("bench", "default"), ["default"],
                                 time.time())
            alone.append(per_request / (time.perf_counter() - start))
            assert sum(len(b.columns) for b in mapped.batches) == args.nodes * args.gpus
    finally:
        proc.stop()
    print(f"requests: {args.nodes} nodes x {args.gpus} GPUs x {SERIES_PER_GPU} series = {per_request} "
          f"samples ({len(work[0][0]) / 1024:.0f} KiB snappy), {args.rounds} rounds x {args.conns} "
          f"connection(s), {args.repeats} repeats")
    print(f"collector          {statistics.median(rates):>10,.0f} samples/s  "
          f"({statistics.median(cpu_per_k) * 1000:.1f} ms CPU per 1000 samples; "
          f"{statistics.median(latencies) * 1000:.0f} ms per request and connection)")
    print(f"decode+map alone   {statistics.median(alone):>10,.0f} samples/s  (snappy, protobuf, mapping; "
          "this process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
