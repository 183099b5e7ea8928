"""Front-end worker processes (``ingest_workers`` > 1): HTTP on every core, ONE ledger writer.

The collector's ingest is CPU-bound in Python, so one process serves at most one core. With
``ingest_workers`` = N > 1, the collector process (the *writer*) keeps the ledger, its lock,
the group-commit writer thread and the periodic work, and serves no client itself; N worker
processes accept on the same inherited listening socket (the kernel hands each connection to
one of them) and do the per-request work: HTTP, token, limits, gzip, parsing and the wire
rules. A valid batch goes to the writer as a compact frame (its metadata and its numpy
columns, no re-parsing) over a private socket pair, and the worker answers the agent only when
the writer's answer (committed, duplicate, or why not) comes back: the same guarantees as one
process. Every other request (/metrics, /v1/spend, /v1/nodes, /readyz, /docs, ...) is relayed
whole over the same socket to the writer's own ASGI application, so it shows the ledger's state.

Frames, both ways: ``!IBI`` (payload length, kind, request id) then the payload (pickle: both
ends are this program, and the socket pair is reachable by nobody else).

Workers end with the writer: SIGTERM to the writer stops them first (their in-flight batches
are still answered), ``PR_SET_PDEATHSIG`` stops them when the writer dies outright, and a
closed socket pair (the writer gone) makes a worker exit too.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wattledger.collector.ingest.intake import Answer, Refusal, ServerFault
from wattledger.wire import FLOAT_COLUMNS, Allocation, Batch, Columns, DeviceInfo, ValidBatch

log = logging.getLogger(__name__)

HEADER = struct.Struct("!IBI")
BATCH, HTTP, TALLY, ANSWER = 1, 2, 3, 4
COLUMNS = ("ts", *FLOAT_COLUMNS)
DEVICE_FIELDS = tuple(DeviceInfo.model_fields)


# ---------------------------------------------------------------------------- a batch as a frame


def pack_batch(valid: ValidBatch) -> bytes:
    """A checked batch, compactly: the ledger reads its metadata and its columns, never the JSON
    lists again (pickling the pydantic models costs as much as parsing the body anew)."""
    b, cols = valid.batch, valid.columns
    devices = [tuple(getattr(d, name) for name in DEVICE_FIELDS) for d in b.devices]
    values = np.stack([getattr(cols, name) for name in COLUMNS])
    allocations = [(a.devices, a.start, a.end, a.weight, a.owner) for a in b.allocations]
    return pickle.dumps((b.node, b.stream, b.seq, dict(b.labels), devices, cols.device, values,
                         cols.clock_events, cols.has_clock_events, allocations), protocol=5)


def unpack_batch(data: bytes) -> ValidBatch:
    """The writer's side of :func:`pack_batch`. The models are built without validation (the
    worker validated them); ``readings`` is left out: the ledger reads the columns only."""
    node, stream, seq, labels, devices, device, values, events, has_events, allocations = pickle.loads(data)
    batch = Batch.model_construct(
        node=node, stream=stream, seq=seq, labels=labels, devices=[_device_info(d) for d in devices],
        allocations=[Allocation.model_construct(devices=d, start=f, end=t, weight=w, owner=o)
                     for d, f, t, w, o in allocations])
    columns = Columns(device, clock_events=events, has_clock_events=has_events,
                      **{name: values[i] for i, name in enumerate(COLUMNS)})
    return ValidBatch(batch, columns)


@functools.lru_cache(maxsize=1 << 16)
def _device_info(d: tuple[Any, ...]) -> DeviceInfo:
    # an agent declares the same devices in every batch: build each (frozen) model once
    return DeviceInfo.model_construct(**dict(zip(DEVICE_FIELDS, d, strict=True)))


class Outbox:
    """Frames written to a stream once per turn of the event loop: many answers settled in
    one commit (or many pushes checked in one turn) cost one send, not one each."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._buffer = bytearray()

    def put(self, data: bytes) -> None:
        if not self._buffer:
            asyncio.get_running_loop().call_soon(self._flush)
        self._buffer += data

    def _flush(self) -> None:
        if not self._writer.is_closing():
            self._writer.write(bytes(self._buffer))
        self._buffer.clear()


def frame(kind: int, rid: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind, rid) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes] | None:
    """The next frame, or None when the other end is gone."""
    try:
        length, kind, rid = HEADER.unpack(await reader.readexactly(HEADER.size))
        return kind, rid, await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


# ---------------------------------------------------------------------------- the writer's side


@dataclass
class WriterSide:
    """What the writer process does with the frames of its workers."""

    commit: Callable[[ValidBatch], Awaitable[Answer]]  # queue for the ledger, answer once committed
    app: ASGIApp  # the collector's whole application, for every other request
    tally: Callable[[int, bool, float], None]  # count a worker's answer to a push (/metrics)


async def serve_worker(sock: socket.socket, side: WriterSide) -> None:
    """Answer one worker's frames until it closes its end."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    outbox = Outbox(writer)
    tasks: set[asyncio.Task[None]] = set()

    async def respond(kind: int, rid: int, payload: bytes) -> None:
        try:
            if kind == BATCH:
                answer: Any = await side.commit(unpack_batch(payload))
            else:
                answer = await relay(side.app, pickle.loads(payload))
        except Exception:  # a fault of the collector: the worker answers 500, as one process would
            log.exception("writer: a request relayed by a worker failed")
            answer = None
        outbox.put(frame(ANSWER, rid, pickle.dumps(answer, protocol=5)))

    try:
        while (got := await read_frame(reader)) is not None:
            kind, rid, payload = got
            if kind == TALLY:
                side.tally(*pickle.loads(payload))
                continue
            task = asyncio.create_task(respond(kind, rid, payload))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
    finally:
        writer.close()


async def relay(app: ASGIApp, request: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run one request a worker relayed through the writer's ASGI application."""
    scope: Scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                    "method": request["method"], "scheme": request["scheme"], "path": request["path"],
                    "raw_path": request["raw_path"], "query_string": request["query_string"],
                    "root_path": "", "headers": request["headers"], "client": request["client"],
                    "server": request["server"], "state": {}}
    done = asyncio.Event()
    sent_body = False
    status, headers, body = 500, [], bytearray()

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": request["body"], "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    done.set()
    return status, headers, bytes(body)


# ---------------------------------------------------------------------------- the worker's side


@dataclass(frozen=True)
class Committed:
    accepted: int
    duplicate: bool


class WriterLink:
    """A worker's end of the socket pair: requests out, answers matched back by id."""

    def __init__(self, sock: socket.socket, on_lost: Callable[[], None]) -> None:
        self._sock = sock
        self._on_lost = on_lost
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self._writer: asyncio.StreamWriter | None = None
        self._outbox: Outbox | None = None
        self._task: asyncio.Task[None] | None = None
        # the ingest path reads these of its writer (``BatchSink``)
        self.capacity = 0
        self.groups = 0

    async def open(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
        self._outbox = Outbox(self._writer)
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while (got := await read_frame(reader)) is not None:
            _, rid, payload = got
            future = self._waiting.pop(rid, None)
            if future is not None and not future.done():
                future.set_result(pickle.loads(payload))
        log.warning("worker %d: the collector's writer is gone; stopping", os.getpid())
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ServerFault("the collector's writer is gone"))
        self._waiting.clear()
        self._writer = self._outbox = None
        self._on_lost()

    @property
    def alive(self) -> bool:
        return self._writer is not None

    def full(self) -> bool:
        return False  # the writer's own queue answers 429 when it is full

    def queued(self) -> int:
        return 0

    def _send(self, kind: int, payload: bytes) -> asyncio.Future[Any]:
        if self._outbox is None:
            raise Refusal(503, "shutting down", {"reason": "the collector is stopping; send again later"},
                          {"Retry-After": "1"})
        self._next = rid = (self._next + 1) & 0xFFFFFFFF
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self._outbox.put(frame(kind, rid, payload))
        return future

    async def submit(self, valid: ValidBatch) -> Committed:
        """Like ``BatchWriter.submit``: returns once the writer committed the batch, else raises
        the writer's answer (the same status and JSON an agent gets from one process)."""
        answer: Answer | None = await self._send(BATCH, pack_batch(valid))
        if answer is None:
            raise ServerFault("the writer failed on this batch")
        if answer.status != 200:
            raise Refusal(answer.status, answer.payload.get("error", ""), answer.payload.get("detail"),
                          dict(answer.headers))
        return Committed(int(answer.payload["accepted"]), bool(answer.payload["duplicate"]))

    async def relay(self, request: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        result: tuple[int, list[tuple[bytes, bytes]], bytes] | None = await self._send(
            HTTP, pickle.dumps(request, protocol=5))
        return result

    def tally(self, status: int, duplicate: bool, seconds: float) -> None:
        if self._outbox is not None:
            self._outbox.put(frame(TALLY, 0, pickle.dumps((status, duplicate, seconds))))


_FAULT = (500, [(b"content-type", b"application/json")],
          b'{"error":"internal error","detail":{"reason":"a fault of the collector; see its log"}}')


class RelayApp:
    """The worker's ASGI app behind the batch fast path: every other request goes to the writer."""

    def __init__(self, link: WriterLink, max_body_bytes: int) -> None:
        self.link = link
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # the collector has no websocket endpoint
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _send_whole(send, (413, [(b"content-type", b"application/json")],
                                         b'{"error":"body too large","detail":null}'))
                return
            if not message.get("more_body", False):
                break
        request = {key: scope.get(key) for key in ("method", "scheme", "path", "raw_path", "query_string",
                                                   "headers", "client", "server")}
        request["body"] = bytes(body)
        try:
            result = await self.link.relay(request)
        except Refusal as refusal:
            answer = refusal.answer()
            result = (answer.status, [(b"content-type", b"application/json"), (b"retry-after", b"1")],
                      orjson.dumps(answer.payload))
        except ServerFault:
            result = None
        await _send_whole(send, result or _FAULT)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.link.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send_whole(send: Send, result: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
    status, headers, body = result
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- processes


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    channel: socket.socket  # the writer's end of the socket pair


class WorkerPool:
    """The writer's worker processes: started before the server, stopped before the ledger."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)

    @property
    def channels(self) -> list[socket.socket]:
        return [w.channel for w in self.workers]

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM each worker and wait (without blocking the writer's event loop, which still
        answers their in-flight batches) until all have ended."""
        for w in self.workers:
            if w.process.poll() is None:
                w.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(w.process.poll() is None for w in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        """End what is left at once (start-up failed, or a worker ignored SIGTERM)."""
        for w in self.workers:
            if w.process.poll() is None:
                w.process.kill()
            w.process.wait()
            w.channel.close()


def start_workers(count: int, listener: socket.socket, settings: Any, log_level: int) -> WorkerPool:
    """``count`` worker processes serving ``listener`` for the collector of ``settings``."""
    workers: list[Worker] = []
    blob = pickle.dumps(settings, protocol=5)
    try:
        for _ in range(count):
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "wattledger.collector.workers",
                     "--listen-fd", str(listener.fileno()), "--channel-fd", str(theirs.fileno()),
                     "--parent", str(os.getpid()),
                     "--log-level", str(log_level)],
                    pass_fds=(listener.fileno(), theirs.fileno()))
            finally:
                theirs.close()
            workers.append(Worker(process, mine))
            mine.sendall(frame(0, 0, blob))  # the settings, read before the worker serves
    except BaseException:
        WorkerPool(workers).kill()
        raise
    return WorkerPool(workers)


def worker_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a wattledger collector front-end worker (internal)")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--log-level", type=int, default=logging.INFO)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from wattledger.demo.guard import die_with_parent

    die_with_parent(args.parent)
    channel = socket.socket(fileno=args.channel_fd)
    listener = own_listener(socket.socket(fileno=args.listen_fd))
    settings = _read_settings(channel)
    import uvicorn

    from wattledger.collector.api.app import worker_app

    server: uvicorn.Server | None = None

    def lost() -> None:
        if server is not None:
            server.should_exit = True

    app = worker_app(settings, WriterLink(channel, lost))
    server = uvicorn.Server(uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=15,
        ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key, log_level=args.log_level,
        proxy_headers=False))
    from wattledger.collector.cli import tune_gc

    tune_gc()
    server.run(sockets=[listener])
    return 0


def own_listener(reserved: socket.socket) -> socket.socket:
    """This worker's listening socket, bound with SO_REUSEPORT to the address the writer
    reserved (same family, same port): the kernel spreads new connections over the workers."""
    sock = socket.socket(reserved.family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(reserved.getsockname())
    reserved.close()
    sock.set_inheritable(False)
    return sock


def _read_settings(channel: socket.socket) -> Any:
    def exactly(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = channel.recv(n - len(out))
            if not chunk:
                raise SystemExit(1)  # the writer is gone before we began
            out += chunk
        return bytes(out)

    length, _, _ = HEADER.unpack(exactly(HEADER.size))
    return pickle.loads(exactly(length))


if __name__ == "__main__":
    sys.exit(worker_main())
