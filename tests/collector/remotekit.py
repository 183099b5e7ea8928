"""Helpers of the remote-write tests: WriteRequest bodies as Prometheus sends them (protobuf from
the package's own prompb module, snappy-compressed by cramjam), dcgm-exporter's series, and an
app with a real ledger on the test's backend."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import cramjam
import httpx
from httpkit import NOW, client, settings
from ledgerkit import open_ledger

from wattledger.collector.api.app import create_app
from wattledger.collector.ingest.prompb.remote_pb2 import WriteRequest
from wattledger.collector.service import Ledger

#: Prometheus' stale marker, a NaN with this payload
STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
TOKEN = "rw-token-1"
WRITE = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-protobuf",
         "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"}
REMOTE = {"prom-a": {"token": TOKEN, "site": "default", "cluster": "k8s-a"}}
UUIDS = ("GPU-1c9a5f3e-0000-4000-8000-000000000000", "GPU-1c9a5f3e-0000-4000-8000-000000000001")

Series = tuple[Mapping[str, str], Sequence[tuple[float, int]]]  # labels, (value, timestamp ms)


def dcgm(name: str, samples: Sequence[tuple[float, float]], *, gpu: int = 0, host: str = "gpu-node-01",
         **labels: str) -> Series:
    """A dcgm-exporter series as Prometheus writes it: ``samples`` are (value, unix seconds)."""
    base = {"__name__": name, "gpu": str(gpu), "UUID": UUIDS[gpu], "device": f"nvidia{gpu}",
            "modelName": "NVIDIA H100 80GB HBM3", "Hostname": host, "DCGM_FI_DRIVER_VERSION": "550.54.15",
            "instance": "10.0.0.7:9400", "job": "dcgm-exporter", **labels}
    return base, [(v, round(t * 1000)) for v, t in samples]


def message(series: Iterable[Series]) -> WriteRequest:
    request = WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name in sorted(labels):  # Prometheus sends labels sorted by name
            ts.labels.add(name=name, value=labels[name])
        for value, ms in samples:
            ts.samples.add(value=value, timestamp=ms)
    return request


def body(series: Iterable[Series]) -> bytes:
    """A snappy-compressed WriteRequest of these series."""
    return snappy(message(series).SerializeToString())


def snappy(raw: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(raw))


@contextlib.asynccontextmanager
async def remote_app(ledger: Ledger | None = None,
                     **over: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Ledger]]:
    """A collector app with a real ledger (the test's backend) and ``remote_write_tokens``."""
    led = ledger if ledger is not None else open_ledger(now=NOW)
    app = create_app(settings(remote_write_tokens=REMOTE, **over), ledger=led, clock=lambda: led.clock())
    async with client(app) as c:
        yield c, led


async def post(c: httpx.AsyncClient, content: bytes,
               headers: Mapping[str, str] | None = None) -> httpx.Response:
    return await c.post("/api/v1/write", content=content, headers=dict(WRITE if headers is None else headers))


def slot_of(ledger: Ledger, uuid: str = UUIDS[0], node: str = "gpu-node-01") -> int:
    """The slot of one device in the ledger's fleet view."""
    d = ledger.view().devices
    slots = [s for s, key in enumerate(zip(d.node, d.device, strict=True)) if key == (node, uuid)]
    assert slots, f"no device {uuid} of {node}"
    return slots[0]


def energy_of(ledger: Ledger, uuid: str = UUIDS[0], node: str = "gpu-node-01") -> float:
    """The IT energy the ledger booked for one device (J)."""
    return float(ledger.view().devices.floats["energy_j"][slot_of(ledger, uuid, node)])


def counter_of(ledger: Ledger, name: str, uuid: str = UUIDS[0], node: str = "gpu-node-01") -> int:
    return int(ledger.view().devices.counts[name][slot_of(ledger, uuid, node)])
