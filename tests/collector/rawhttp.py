"""Raw HTTP/1.1 over a socket, for the tests that send what no HTTP client library would: broken
framing, headers that never end, bodies that stall."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

PUSH_HEAD = (b"POST /v1/batches HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n")


def push_head(token: str | None = "tok-one", **headers: str | int) -> bytes:
    """The head of a push (without the blank line that ends it): token and extra headers."""
    lines = [PUSH_HEAD]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}\r\n".encode())
    lines += [f"{name.replace('_', '-')}: {value}\r\n".encode() for name, value in headers.items()]
    return b"".join(lines)


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    closed: bool  # the server closed the connection after the answer

    def json(self) -> Any:
        return json.loads(self.body)


def send_all(sock: socket.socket, data: bytes, piece: int = 65536) -> int:
    """Send ``data``, stopping quietly when the server closes its side; the bytes sent."""
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + piece])
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def read_answer(sock: socket.socket, *, timeout: float = 30.0, close_wait: float = 5.0) -> RawAnswer:
    """One answer from ``sock``; ``closed`` when the server closes within ``close_wait`` after it."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = _recv(sock)
        if not chunk:
            break
        rest += chunk
    body, extra = rest[:length], rest[length:]
    closed = False
    if not extra:
        sock.settimeout(close_wait)
        end = time.monotonic() + close_wait
        with contextlib.suppress(TimeoutError):
            while time.monotonic() < end:
                if not _recv(sock):
                    closed = True
                    break
    return RawAnswer(int(status_line.split()[1]), headers, body, closed)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def exchange(port: int, data: bytes, **kw: float) -> RawAnswer:
    """Connect, send ``data``, read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        send_all(sock, data)
        return read_answer(sock, **kw)
