"""The real `wattledger collector` process over real sockets: the body limit stops an upload
early, a refused push keeps or closes the connection as it should, and TLS is one setting."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpkit import AUTH, TOKENS, start_collector, trace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
MIB = 1 << 20


def config(tmp_path: Path, **more: Any) -> dict[str, Any]:
    return {"db": f"sqlite:///{tmp_path}/ledger.db", "tokens": TOKENS, "max_body_bytes": MIB, **more}


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data[9:12]), data


def test_chunked_upload_over_the_limit_is_stopped_early(tmp_path: Path) -> None:
    c = start_collector(tmp_path, config(tmp_path))
    port = int(c.url.rsplit(":", 1)[1])
    sent, total = 0, 64 * MIB
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-one\r\n"
                         b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b" " * 65536
            framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            sock.settimeout(0.05)
            status = 0
            while sent < total:
                try:
                    sock.sendall(framed)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    break  # the server closed its side: it stopped reading
                sent += len(chunk)
                try:
                    status, _ = read_status(sock)
                    break
                except TimeoutError:
                    continue
            sock.settimeout(10)
            if not status:
                status, _ = read_status(sock)
    finally:
        c.stop()
    assert status == 413
    assert sent < 8 * MIB  # the server answered long before the 64 MiB were sent


def test_content_length_over_the_limit_is_answered_without_the_body(tmp_path: Path) -> None:
    c = start_collector(tmp_path, config(tmp_path))
    port = int(c.url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-one\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
            status, head = read_status(sock)  # no byte of the body was sent
    finally:
        c.stop()
    assert status == 413
    assert b"connection: close" in head.lower()


def test_a_refused_batch_keeps_the_connection_for_the_next(tmp_path: Path) -> None:
    c = start_collector(tmp_path, config(tmp_path))
    good, bad = trace(1, time.time() - 60)[0], {"node": "gpu-node-01"}
    try:
        with httpx.Client(base_url=c.url, timeout=10) as client:
            refused = client.post("/v1/batches", content=json.dumps(bad), headers=AUTH)
            accepted = client.post("/v1/batches", content=json.dumps(good), headers=AUTH)
            nodes = client.get("/v1/nodes").json()["nodes"]
    finally:
        c.stop()
    assert refused.status_code == 422 and accepted.status_code == 200
    assert [n["node"] for n in nodes] == ["gpu-node-01"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_is_one_setting_away(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    cfg = config(tmp_path, tls_cert=str(cert), tls_key=str(key))
    c = start_collector(tmp_path, cfg, ready=lambda r: True, scheme="https")
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=c.url, verify=trusted, timeout=10) as client:
            ready = client.get("/readyz")
            pushed = client.post("/v1/batches", content=json.dumps(trace(1, time.time() - 60)[0]),
                                 headers=AUTH)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets nowhere
            httpx.get(c.url.replace("https://", "http://") + "/healthz", timeout=5)
    finally:
        c.stop()
    assert ready.status_code == 200
    assert pushed.json() == {"accepted": 4, "duplicate": False}


def test_a_flood_of_agents_gets_429_then_everything_exactly_once(tmp_path: Path) -> None:
    # a small queue and byte budget: a fleet reconnecting at once must be pushed back, not buffered
    tokens = {f"n{k}": f"tok-n{k}" for k in range(40)}
    c = start_collector(tmp_path, {**config(tmp_path), "tokens": tokens, "max_queue_batches": 2,
                                   "max_pending_bytes": 64 * 1024})
    docs = {k: trace(3, time.time() - 600, node=f"n{k}", stream=f"s{k}") for k in range(40)}
    codes: dict[int, int] = {}

    async def agent(k: int) -> None:
        headers = {**AUTH, "Authorization": f"Bearer tok-n{k}"}
        async with httpx.AsyncClient(base_url=c.url, timeout=30) as client:
            for doc in docs[k]:
                while True:
                    r = await client.post("/v1/batches", content=json.dumps(doc), headers=headers)
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    if r.status_code != 429:
                        break
                    assert r.headers["retry-after"] == "1"
                    await asyncio.sleep(0.05)  # sooner than asked: the flood keeps pressing

    async def fleet() -> None:
        await asyncio.gather(*(agent(k) for k in range(40)))

    try:
        asyncio.run(asyncio.wait_for(fleet(), 90))
        metrics = httpx.get(f"{c.url}/metrics", timeout=10).text
    finally:
        c.stop()
    assert set(codes) <= {200, 429} and codes[200] == 40 * 3
    assert codes.get(429, 0) > 0  # 40 pushes at once against a queue of 2
    readings = sum(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("wattledger_ingest_readings_total{"))
    assert readings == 40 * 3 * 4
    overloaded = [line for line in metrics.splitlines() if 'outcome="overloaded"' in line]
    assert float(overloaded[0].split()[-1]) == codes.get(429, 0)
