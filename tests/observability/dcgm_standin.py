"""A stand-in for NVIDIA's dcgm-exporter, served over HTTP on loopback by a test: its real metric
names, HELP/TYPE lines, labels (``gpu``, ``UUID``, ``device``, ``modelName``, ``Hostname``,
``DCGM_FI_DRIVER_VERSION``, ``pci_bus_id``, and the Kubernetes ``namespace``/``pod``/``container``
of the pod holding a GPU) and units (energy in mJ since the driver loaded, power in W,
temperatures in °C, utilization in %), as its default counters CSV exposes them.

Each GPU draws a power that changes with time; its energy counter is the exact integral of that
power (whole millijoules, as DCGM reports it), so a ledger that books counter deltas and one that
books trapezoids of the power give different figures."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.loopback import free_port

FAMILIES = (  # name, type, help: dcgm-exporter's own words
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ)."),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
)


@dataclass
class Gpu:
    index: int
    uuid: str
    base_w: float
    swing_w: float
    pod: dict[str, str] = field(default_factory=dict)

    def power(self, t: float) -> float:
        return self.base_w + self.swing_w * math.sin(t / 3.0)

    def energy_j(self, since: float, t: float) -> float:
        """The integral of ``power`` from ``since`` to ``t``."""
        dt = t - since
        return self.base_w * dt - 3.0 * self.swing_w * (math.cos(t / 3.0) - math.cos(since / 3.0))


class DcgmStandIn:
    """dcgm-exporter's /metrics for the GPUs of one host; ``failing`` makes scrapes fail (500),
    so Prometheus marks every series stale."""

    def __init__(self, host: str, gpus: list[Gpu], e0_mj: float = 9.5e9) -> None:
        self.host = host
        self.gpus = gpus
        self.e0_mj = e0_mj
        self.started = time.time()
        self.failing = False
        self.port = 0

    def text(self, t: float) -> str:
        lines: list[str] = []
        for name, kind, help_text in FAMILIES:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for g in self.gpus:
                labels = {"gpu": str(g.index), "UUID": g.uuid,
                          "pci_bus_id": f"00000000:{0x18 + g.index:02X}:00.0", "device": f"nvidia{g.index}",
                          "modelName": "NVIDIA H100 80GB HBM3",
                          "Hostname": self.host, "DCGM_FI_DRIVER_VERSION": "550.54.15", **g.pod}
                value = {"DCGM_FI_DEV_SM_CLOCK": "1980",
                         "DCGM_FI_DEV_MEMORY_TEMP": "71", "DCGM_FI_DEV_GPU_TEMP": f"{60 + g.index}",
                         "DCGM_FI_DEV_POWER_USAGE": f"{g.power(t):.3f}",
                         "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION":
                             f"{math.floor(self.e0_mj + 1000.0 * g.energy_j(self.started, t))}",
                         "DCGM_FI_DEV_GPU_UTIL": "87"}[name]
                text = ",".join(f'{k}="{v}"' for k, v in labels.items())
                lines.append(f"{name}{{{text}}} {value}")
        return "\n".join(lines) + "\n"

    @contextmanager
    def serving(self) -> Iterator[str]:
        """Serve /metrics on 127.0.0.1; yields the scrape target (host:port)."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if owner.failing or self.path != "/metrics":
                    self.send_error(500 if owner.failing else 404)
                    return
                payload = owner.text(time.time()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.port = free_port()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        thread = threading.Thread(target=server.serve_forever, name="dcgm-standin", daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{self.port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
