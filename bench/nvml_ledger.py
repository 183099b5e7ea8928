"""The whole path on real GPUs: ``wattledger agent`` reading NVML ships to a real collector.

Needs an NVIDIA GPU. Starts a collector on loopback with a fresh ledger and an agent without
``--simulate`` (so its nvml source reads the driver), runs them for ``--seconds`` (with an
optional PyTorch load on GPU 0), compares the agent's /metrics with ``nvidia-smi`` at the same
moment, stops the agent gracefully (it ships what it holds), and sets the ledger's IT energy
for each GPU against the hardware counter read directly (pynvml) before the agent started and
after it stopped: the ledger covers the agent's first to last sample, so it must come out a
little under the counter's increase, by at most about two sample intervals of power.

    python bench/nvml_ledger.py [--seconds 30] [--no-load]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchkit import WATTLEDGER, Proc, free_port, start_collector, wait_http, workdir
from nvml_sample import number, smi_query, start_load

NODE, TOKEN = "gpu-check", "gpu-check-token"


def counters() -> dict[str, float]:
    """Each GPU's energy counter in joules, by UUID, read straight from NVML."""
    import pynvml

    out = {}
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        uuid = pynvml.nvmlDeviceGetUUID(h)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        out[uuid] = pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0
    return out


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(metric name, uuid) -> value for the agent's per-GPU series (die temperature only)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if not line.startswith("wattledger_gpu_") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels, value = rest.rsplit("} ", 1)
        fields = dict(kv.split("=", 1) for kv in labels.split(",") if "=" in kv)
        if fields.get("sensor", '"gpu"') != '"gpu"':
            continue
        out[(name, fields.get("uuid", "").strip('"'))] = float(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--no-load", action="store_true")
    args = ap.parse_args()
    import pynvml

    pynvml.nvmlInit()
    d = workdir("wl-gpu-")
    (d / "token").write_text(TOKEN + "\n")
    collector, cport = start_collector(d, {NODE: TOKEN})
    agent_port = free_port()
    load = agent = None
    try:
        before = counters()
        t0 = time.time()
        agent = Proc([WATTLEDGER, "agent", "--node", NODE, "--interval", "1", "--listen",
                      f"127.0.0.1:{agent_port}", "--collector", f"http://127.0.0.1:{cport}",
                      "--token-file", str(d / "token"), "--spool", str(d / "spool"),
                      "--batch-seconds", "5"], d / "agent.log")
        wait_http(f"http://127.0.0.1:{agent_port}/metrics", agent)
        load = None if args.no_load else start_load(args.seconds * 0.6)
        time.sleep(args.seconds)
        ours, smi = scrape(agent_port), {s["uuid"]: s for s in smi_query()}
        rc = agent.stop(60)
        after, t1 = counters(), time.time()
        print(f"agent ran {t1 - t0:.1f} s against {len(before)} GPU(s), load"
              f" {'none' if load is None else 'bf16 matmul on GPU 0 for the first 60 %'}; stopped rc={rc}:"
              f" {(d / 'agent.log').read_text(errors='replace').strip().splitlines()[-1:]}")
        print("agent /metrics against nvidia-smi, at the end:")
        for uuid, s in smi.items():
            for metric, field, scale in (("wattledger_gpu_power_watts", "power.draw", 1.0),
                                         ("wattledger_gpu_temperature_celsius", "temperature.gpu", 1.0),
                                         ("wattledger_gpu_utilization_ratio", "utilization.gpu", 0.01)):
                theirs = number(s.get(field))
                print(f"   {uuid[:12]} {metric:<38} ours {ours.get((metric, uuid))}"
                      f"   nvidia-smi {field} {None if theirs is None else theirs * scale}")
        url = f"http://127.0.0.1:{cport}/v1/spend?group_by=device"
        rows = json.loads(urllib.request.urlopen(url, timeout=10).read())["rows"]
        print("ledger IT energy against the hardware counter's increase over the agent's life:")
        for uuid, e0 in before.items():
            booked = sum(r["it_energy_j"] for r in rows if r.get("device") == uuid)
            grew = after[uuid] - e0
            print(f"   {uuid[:12]} ledger {booked:,.1f} J, counter {grew:,.1f} J"
                  f" ({booked / grew if grew else float('nan'):.4f}x; the ledger's window is the first to"
                  f" last sample), cost {sum(r['it_cost'] for r in rows if r.get('device') == uuid):.6f}")
    finally:
        if load is not None:
            load.kill()
        if agent is not None:  # when something above failed before the agent was stopped
            agent.stop()
        collector.stop()
        shutil.rmtree(d, ignore_errors=True)  # the ledger, spool and logs of this run
    return 0


if __name__ == "__main__":
    sys.exit(main())
