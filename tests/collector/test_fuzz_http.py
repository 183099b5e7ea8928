"""Property test of the hostile requests of issue 16, items 2-7, over real sockets against the
collector's own server (uvicorn with the collector's protocol, in a thread) on the real ledger.

Each example is one request put together from a framing (good or broken: Content-Length
-1/abc/twice, Transfer-Encoding with Content-Length, a bad chunk size, a header without a
colon, headers too large, a target too long, headers or a body that stall), a credential
(good, absent, present and wrong, another node's), a body (a good batch, or one whose numbers
are booleans or strings, whose integers pass what the store holds, with a key given twice),
gzip or not, the path (with or without a trailing slash), and whether the ledger fails while
the push is in it (item 7: a fault of the collector). For every one:

- the answer is always JSON of the contract's shapes, and never a 5xx but the 500 of a push
  the failing ledger had to commit;
- its status is the one its parts call for (400/408/414/431 from the server, 401 for any
  present and wrong credential although ``allow_unauthenticated`` is on, 404 for the slash,
  422 for the hostile numbers, 500 for the ledger's fault), and the connection is closed where
  it must be;
- a refusal changes nothing in the ledger, and no pending byte stays reserved;
- every push that reached the application is counted once in
  ``wattledger_ingest_batches_total`` and once in the answer-time histogram, and every request
  the server refused itself once in ``wattledger_collector_http_refusals_total``.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from httpkit import NOW, TOKENS, batch, changed
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from rawhttp import RawAnswer, read_answer, send_all

from wattledger.collector.api.app import create_app, open_ledger
from wattledger.collector.api.runtime import LedgerService
from wattledger.collector.api.server import HttpLimits, uvicorn_config
from wattledger.collector.ingest.writer import IngestResultLike
from wattledger.collector.settings import settings_from
from wattledger.collector.store.base import GroupBy
from wattledger.wire import BatchError, ValidBatch

pytestmark = pytest.mark.timeout(600)
HEADER_TIMEOUT, BODY_TIMEOUT = 1.0, 0.5
MAX_HEADER_BYTES = 16 * 1024


class FailingLedger:
    """The real ledger, whose ``ingest`` raises while ``failing`` is set: a fault of the
    collector (a bug, a full disk) in the middle of a push."""

    def __init__(self, real: LedgerService) -> None:
        self.real = real
        self.failing = False

    def ingest(self, batches: Sequence[ValidBatch]) -> Sequence[IngestResultLike | BatchError]:
        if self.failing:
            raise OSError(28, "No space left on device")
        return self.real.ingest(batches)

    def collector(self) -> Collector:
        return self.real.collector()

    def spend(self, *, site: str | None, month: str | None, group_by: GroupBy) -> list[dict[str, Any]]:
        return self.real.spend(site=site, month=month, group_by=group_by)

    def nodes(self) -> list[dict[str, Any]]:
        return self.real.nodes()

    def node_names(self) -> list[str]:
        return self.real.node_names()

    def ping(self) -> None:
        self.real.ping()

    def refresh(self) -> None:
        self.real.refresh()

    def close(self) -> None:
        self.real.close()


@dataclass
class Served:
    port: int
    ledger: FailingLedger


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    db = tmp_path_factory.mktemp("fuzzhttp") / "ledger.db"
    s = settings_from({"db": f"sqlite:///{db}", "tokens": TOKENS, "refresh_interval_seconds": 60,
                       "allow_unauthenticated": True, "max_body_bytes": 65536})
    ledger = FailingLedger(open_ledger(s, clock=lambda: NOW))
    app = create_app(s, ledger=ledger, clock=lambda: NOW)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    limits = HttpLimits(HEADER_TIMEOUT, BODY_TIMEOUT, MAX_HEADER_BYTES)
    server = uvicorn.Server(uvicorn_config(app, limits, on_refusal=app.state.service_stats.refused))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < end and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    yield Served(sock.getsockname()[1], ledger)
    server.should_exit = True
    thread.join(30)
    ledger.close()


# ---------------------------------------------------------------------------- the parts

#: broken framings: what the server answers itself, and the reason it counts
FRAMINGS: dict[str, tuple[int, str]] = {
    "cl-negative": (400, "malformed"), "cl-letters": (400, "malformed"), "cl-twice": (400, "malformed"),
    "te-and-cl": (400, "malformed"), "bad-chunk": (400, "malformed"), "no-colon": (400, "malformed"),
    "big-headers": (431, "headers_too_large"), "long-target": (414, "target_too_long"),
    "stalled-head": (408, "header_timeout"),
}
GOOD_FRAMINGS = ("content-length", "chunked", "stalled-body")
#: Authorization values that are present and wrong: 401 although allow_unauthenticated is on
WRONG_CREDENTIALS = ("Basic dG9rLW9uZQ==", "garbage", "", "Bearer ", "Bearer not-a-token", "tok-one")


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    return changed(doc, {path: value})


def _text(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _node_twice(seq: int) -> bytes:
    # the last "node" would win in a lenient parser: a batch of gpu-node-02 under gpu-node-01's name
    text = _text(batch(seq=seq)).decode()
    return ("{" + '"node": "gpu-node-02", ' + text[1:]).encode()


#: item 2: numbers that are not numbers, integers past what the store holds, a key twice;
#: each is refused as invalid (422; a key given twice may be called malformed JSON: 400)
HOSTILE_BODIES: dict[str, Any] = {
    "seq true": lambda seq: _text(_set(batch(seq=seq), "seq", True)),
    "seq as a string": lambda seq: _text(_set(batch(seq=seq), "seq", str(seq))),
    "slowdown_c true": lambda seq: _text(_set(batch(seq=seq), "devices.0.slowdown_c", True)),
    "power_w a string": lambda seq: _text(_set(batch(seq=seq), "readings.power_w.0", "300")),
    "power_w false": lambda seq: _text(_set(batch(seq=seq), "readings.power_w.1", False)),
    "index 2^63": lambda seq: _text(_set(batch(seq=seq), "devices.0.index", 2**63)),
    "index 2^40": lambda seq: _text(_set(batch(seq=seq), "devices.0.index", 2**40)),
    "clock_events 2^70": lambda seq: _text(_set(batch(seq=seq), "readings.clock_events", [2**70] * 4)),
    "seq 2^64": lambda seq: _text(_set(batch(seq=seq), "seq", 2**64)),
    "power_w 1e300": lambda seq: _text(_set(batch(seq=seq), "readings.power_w.2", 1e300)),
    "node twice": _node_twice,
}


@dataclass(frozen=True)
class Push:
    framing: str
    credential: str  # "good", "absent", "other-node", or a WRONG_CREDENTIALS value
    body: str  # "good" or a HOSTILE_BODIES key
    gzip: bool
    slash: bool
    seq: int
    chunks: int
    fault: bool = False  # the ledger fails while it holds this push

    def expected(self) -> tuple[set[int], bool]:
        """(the statuses this push may get, whether the connection must be closed after it)."""
        if self.framing in FRAMINGS:
            return {FRAMINGS[self.framing][0]}, True
        if self.slash:  # answered from its headers; a stalled body then has its connection closed
            return {404}, self.framing == "stalled-body"
        if self.credential in WRONG_CREDENTIALS:
            return {401}, True
        if self.framing == "stalled-body":
            return {408}, True
        if self.body != "good":
            refused = {422, 400} if self.body == "node twice" else {422}
            return refused | ({403} if self.credential == "other-node" else set()), False
        if self.credential == "other-node":
            return {403}, False
        return ({500} if self.fault else {200}), False

    def reaches_the_application(self) -> bool:
        """Whether the push's headers were good: its handler then runs, and counts it (a bad
        chunk is found after the headers: the handler sees a disconnect, counted as the 400)."""
        return (self.framing not in FRAMINGS or self.framing == "bad-chunk") and not self.slash

    def request(self) -> bytes:
        if self.framing == "stalled-head":
            return b"POST /v1/batches HTTP/1.1\r\nHost: collector\r\nContent-Type: appl"
        raw = _text(batch(seq=self.seq)) if self.body == "good" else HOSTILE_BODIES[self.body](self.seq)
        lines = [f"POST /v1/batches{'/' if self.slash else ''} HTTP/1.1", "Host: collector",
                 "Content-Type: application/json", "X-Wattledger-Node: gpu-node-01"]
        if self.credential == "good":
            lines.append(f"Authorization: Bearer {TOKENS['gpu-node-01']}")
        elif self.credential == "other-node":
            lines.append(f"Authorization: Bearer {TOKENS['gpu-node-02']}")
        elif self.credential != "absent":
            lines.append(f"Authorization: {self.credential}")
        if self.gzip:
            raw = gzip.compress(raw)
            lines.append("Content-Encoding: gzip")
        framing, payload = self.framing, raw
        if framing == "long-target":
            lines[0] = f"POST /v1/batches?{'q' * 9000} HTTP/1.1"
        if framing == "big-headers":
            lines += [f"X-Filler-{i}: {'f' * 4000}" for i in range(MAX_HEADER_BYTES // 4000 + 1)]
        if framing == "no-colon":
            lines.append("X-Broken header")
        if framing in ("chunked", "bad-chunk", "te-and-cl"):
            lines.append("Transfer-Encoding: chunked")
            size = -(-len(raw) // self.chunks)
            pieces = [raw[i:i + size] for i in range(0, len(raw), size)]
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
            if framing == "bad-chunk":
                payload = b"zz\r\n" + payload
        if framing in ("content-length", "te-and-cl", "long-target", "big-headers", "no-colon"):
            lines.append(f"Content-Length: {len(raw)}")
        if framing == "stalled-body":
            lines.append(f"Content-Length: {len(raw) + 100}")  # a hundred bytes never come
        if framing == "cl-negative":
            lines.append("Content-Length: -1")
        if framing == "cl-letters":
            lines.append("Content-Length: abc")
        if framing == "cl-twice":
            lines += [f"Content-Length: {len(raw)}", f"Content-Length: {len(raw) + 1}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


@st.composite
def pushes(draw: st.DrawFn) -> Push:
    framing = draw(st.sampled_from([*GOOD_FRAMINGS * 3, *FRAMINGS]))
    credential = draw(st.sampled_from(["good", "good", "absent", "other-node", *WRONG_CREDENTIALS]))
    body = draw(st.sampled_from(["good", "good", *HOSTILE_BODIES]))
    return Push(framing, credential, body, draw(st.booleans()), draw(st.integers(0, 9)) == 0,
                draw(st.integers(1, 10**9)), draw(st.integers(1, 3)), draw(st.integers(0, 5)) == 0)


# ---------------------------------------------------------------------------- the observations


@dataclass(frozen=True)
class Books:
    pushes: float  # every outcome of wattledger_ingest_batches_total
    timed: float  # /v1/batches answers in the latency histogram
    refused: dict[str, float]  # wattledger_collector_http_refusals_total by reason
    pending: float
    ledger: Any


def books(served: Served) -> Books:
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n")
        text = read_answer(sock).body.decode()
    pushes = timed = pending = 0.0
    refused: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "wattledger_ingest_batches_total":
                pushes += s.value
            elif s.name == "wattledger_collector_request_duration_seconds_count" \
                    and s.labels["handler"] == "/v1/batches":
                timed = s.value
            elif s.name == "wattledger_collector_http_refusals_total":
                refused[s.labels["reason"]] = s.value
            elif s.name == "wattledger_ingest_pending_bytes":
                pending = s.value
    real = served.ledger.real
    state = real.nodes(), real.spend(site=None, month="2025-11", group_by="device")
    return Books(pushes, timed, refused, pending, state)


def send(served: Served, push: Push) -> RawAnswer:
    served.ledger.failing = push.fault
    try:
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
            send_all(sock, push.request())
            # a body that stalls after its answer (a 404) has its connection closed at the body timeout
            wait = BODY_TIMEOUT + 5 if push.framing == "stalled-body" else 0.3
            return read_answer(sock, timeout=30, close_wait=wait)
    finally:
        served.ledger.failing = False


def every_hostile_body(test: Callable[..., None]) -> Callable[..., None]:
    """Each of item 2's bodies once for sure, whatever the draws."""
    for name in HOSTILE_BODIES:
        test = example(push=Push("content-length", "good", name, gzip=False, slash=False, seq=1,
                                 chunks=1))(test)
    # item 7: a good push the ledger fails to commit, plain and gzip'd, sent whole and chunked
    for framing, zipped in (("content-length", False), ("chunked", True)):
        test = example(push=Push(framing, "good", "good", gzip=zipped, slash=False, seq=7, chunks=2,
                                 fault=True))(test)
    return test


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(push=pushes())
@every_hostile_body
def test_hostile_requests_get_their_json_answer_and_change_nothing(served: Served, push: Push) -> None:
    before = books(served)
    answer = send(served, push)
    event(f"{push.framing}: {answer.status}")
    statuses, must_close = push.expected()
    assert answer.status < 500 or (answer.status == 500 and push.fault), (push, answer)
    assert answer.status in statuses, (push, answer)
    assert answer.headers["content-type"] == "application/json", (push, answer)
    doc = answer.json()
    if answer.status == 200:
        assert set(doc) == {"accepted", "duplicate"}
    else:
        assert set(doc) == {"error", "detail"} and doc["error"], (push, doc)
    if must_close:
        assert answer.closed, (push, answer)
    after = books(served)
    if answer.status != 200:
        assert after.ledger == before.ledger, push
    assert after.pending == 0, push  # every reservation released
    counted = 1.0 if push.reaches_the_application() else 0.0
    assert after.pushes - before.pushes == counted, push
    assert after.timed - before.timed == counted, push
    refusals = {reason: after.refused[reason] - before.refused.get(reason, 0.0) for reason in after.refused}
    reason = FRAMINGS.get(push.framing, (0, "body_timeout" if push.framing == "stalled-body" else ""))[1]
    if push.framing == "stalled-body" and answer.status not in (404, 408):
        reason = ""  # refused from its headers, and the connection closed: the body was never waited for
    assert refusals == {r: (1.0 if r == reason else 0.0) for r in refusals}, (push, refusals)
