"""Harness of the end-to-end delivery tests: real `wattledger collector` and `wattledger agent
--simulate` processes on 127.0.0.1, a small asyncio proxy between them that can swallow
answers or refuse connections, and the simulator's ground truth.

Ground truth (energy): a simulated GPU's counter starts every run at the value its seeded
generator gives (``SimulatedGpu(...).counter_j`` before any sample) and grows by exactly the
energy it drew, so a run's true energy is ``last counter - start counter``. The ledger must
hold the sum over the runs; the collector is given ``max_gap_seconds`` below the gap between
two runs so that it bridges nothing across a restart (it cannot know what was drawn then).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.loopback import free_port, wait_group_gone
from wattledger.agent.sources.simulated import MODELS, SimulatedGpu

WL = [sys.executable, "-m", "wattledger.cli"]
STOPPED = re.compile(r"stopped: readings=(\d+) shipped=(\d+) spooled=(\d+)")


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0, every: float = 0.1) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if check():
                return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def scrape(url: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample (names as the text format writes them)."""
    text = httpx.get(url, timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in samples.items()
               if k.split("{", 1)[0] == name and all(w in k for w in want))


class Process:
    """One `wattledger` process in its own session, its output in a log file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*WL, *self.args], stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_ready(self, what: str, check: Callable[[], bool]) -> None:
        """Wait for ``check``; a process that exits meanwhile fails at once, with its log
        (not 60 s later as "timed out", which hid why every test of a module failed)."""
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args[0]} exited ({self.proc.returncode}) before {what}:\n"
                                     f"{self.text()[-2000:]}")
            return check()
        wait_until(what, ready, timeout=60)

    def signal(self, sig: int, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        rc = self.proc.wait(timeout)
        wait_group_gone(self.proc.pid)  # a collector's workers too: a restart binds the same port
        return rc

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


class Collector(Process):
    def __init__(self, workdir: Path, tokens: dict[str, str], **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"listen": f"127.0.0.1:{self.port}", "db": f"sqlite:///{workdir}/ledger.db",
                  "tokens": tokens, "max_gap_seconds": 0.5, **settings}
        (workdir / "collector.yaml").write_text(json.dumps(config))
        super().__init__(["collector", "--config", str(workdir / "collector.yaml")],
                         workdir / "collector.log")

    def start(self) -> None:
        super().start()
        self.wait_ready("the collector answered",
                        lambda: httpx.get(f"{self.url}/healthz", timeout=2).is_success)

    def metrics(self) -> dict[str, float]:
        return scrape(f"{self.url}/metrics")

    def node(self, name: str) -> dict[str, Any]:
        nodes = httpx.get(f"{self.url}/v1/nodes", timeout=10).json()["nodes"]
        found = [n for n in nodes if n["node"] == name]
        assert found, f"node {name} is not in the ledger"
        node: dict[str, Any] = found[0]
        return node

    def readings(self, node: str) -> int:
        return int(metric_sum(self.metrics(), "wattledger_ingest_readings_total", node=node))


class Agent(Process):
    def __init__(self, workdir: Path, node: str, collector_url: str, token: str, *, gpus: int = 2,
                 interval: float = 0.5, batch_seconds: float = 1.0, extra: tuple[str, ...] = ()) -> None:
        self.node = node
        self.gpus = gpus
        self.port = free_port()
        self.spool = workdir / f"spool-{node}"
        token_file = workdir / f"token-{node}"
        token_file.write_text(token + "\n")
        super().__init__(["agent", "--simulate", str(gpus), "--sources", "simulated", "--node", node,
                          "--interval", str(interval), "--batch-seconds", str(batch_seconds),
                          "--listen", f"127.0.0.1:{self.port}", "--collector", collector_url,
                          "--token-file", str(token_file), "--spool", str(self.spool), *extra],
                         workdir / f"agent-{node}.log")
        self.runs: list[str] = []  # "stopped" or "killed", per run

    def start(self) -> None:
        mark = len(self.text()) if self.log.exists() else 0
        super().start()
        self.wait_ready("the agent's first sample",
                        lambda: self.metric("wattledger_agent_readings_total") > 0)
        self._mark = mark

    def metrics(self) -> dict[str, float]:
        return scrape(f"http://127.0.0.1:{self.port}/metrics")

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(self.metrics(), name, **labels)

    def stop(self) -> tuple[int, int, int]:
        """SIGTERM: the agent ships for up to 10 s; its (readings, shipped, spooled) line."""
        assert self.signal(signal.SIGTERM) == 0, self.text()[-2000:]
        found = STOPPED.findall(self.text()[self._mark:])
        assert len(found) == 1, f"no 'stopped:' line in the agent's log:\n{self.text()[-2000:]}"
        readings, shipped, spooled = (int(x) for x in found[0])
        return readings, shipped, spooled

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def start_counters(self) -> dict[str, float]:
        """The energy counter of each simulated GPU at the first sample of any run."""
        gpus = [SimulatedGpu(self.node, i, MODELS["h100-sxm"], "training", 0) for i in range(self.gpus)]
        return {g.info.id: g.counter_j for g in gpus}


# ---------------------------------------------------------------------------- the spool, read by the test


def spool_contents(spool_dir: Path) -> tuple[int, dict[str, float]]:
    """(readings waiting, last energy counter per device id) of a dead agent's spool."""
    conn = sqlite3.connect(f"file:{spool_dir / 'spool.db'}?mode=ro", uri=True)
    try:
        last: dict[str, tuple[float, float]] = {}
        waiting = 0

        def note(dev_id: str, ts: float, energy: float | None) -> None:
            if energy is not None and (dev_id not in last or ts > last[dev_id][0]):
                last[dev_id] = (ts, energy)

        for (body,) in conn.execute("SELECT body FROM batches ORDER BY id"):
            doc = orjson.loads(gzip.decompress(body))
            ids = {d["index"]: d["id"] for d in doc["devices"]}
            r = doc["readings"]
            waiting += len(r["ts"])
            for i, (dev, ts) in enumerate(zip(r["device"], r["ts"], strict=True)):
                note(ids[dev], ts, r.get("energy_j", [None] * len(r["ts"]))[i])
        for (data,) in conn.execute("SELECT data FROM samples ORDER BY id"):
            sample = orjson.loads(data)
            for row in sample["rows"]:
                waiting += 1
                note(sample["dev"][row[0]]["id"], row[1], row[3])  # rows: dev#, ts, power_w, energy_j, …
        return waiting, {dev: e for dev, (_, e) in last.items()}
    finally:
        conn.close()


def sent_batches(bodies: list[bytes]) -> list[dict[str, Any]]:
    """The batches of request bodies (gzip'd JSON, as the agent sends them), in the order sent."""
    return [orjson.loads(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body) for body in bodies]


# ---------------------------------------------------------------------------- the proxy


class Proxy:
    """An HTTP/1.1 proxy for POSTs, in its own thread and event loop, which keeps every body it
    was sent (``bodies``; :func:`sent_batches` reads them) and the status the collector answered
each (``statuses``). ``mode``:
    ``forward``; ``swallow`` (forward, let the collector commit, then drop the answer and the
    connection: the lost-answer failure); ``refuse`` (close every connection unanswered);
    ``unavailable`` (answer 503 itself, as a replica whose database is down does)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = "forward"
        self.swallow_every = 1  # in swallow mode, drop every n-th answer
        self.swallowed = 0
        self.unavailable = 0  # 503s answered
        self.bodies: list[bytes] = []  # every request body the agents sent, as sent (gzip'd)
        self.statuses: list[int] = []  # the collector's answer to each body forwarded
        self._answers = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._server = server
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                if self.mode == "refuse":
                    return
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next((int(ln.split(":", 1)[1]) for ln in lines
                               if ln.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length)
                self.bodies.append(body)
                if self.mode == "unavailable":
                    self.unavailable += 1
                    error = b'{"error": "unavailable", "detail": "the proxy says so"}'
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                 b"Retry-After: 1\r\nConnection: close\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(error), error))
                    await writer.drain()
                    return
                kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith("connection:")]
                request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1") + body
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                up_writer.write(request)
                await up_writer.drain()
                answer = await up_reader.read()  # the collector closes after its answer
                self.statuses.append(int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0)
                up_writer.close()
                self._answers += 1
                if self.mode == "swallow" and self._answers % self.swallow_every == 0:
                    self.swallowed += 1
                    return  # committed upstream; the agent never hears of it
                writer.write(answer)
                await writer.drain()
                return  # the answer said "Connection: close"
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        finally:
            writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
