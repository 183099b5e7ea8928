"""Slow and hostile clients against the real `wattledger collector` process on loopback: stalled
uploads do not starve other nodes and are answered 408 and closed, slow headers time out, big
headers are refused early (and cost no memory), broken HTTP framing is a JSON 400, and every
such answer closes the connection."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpkit import AUTH, TOKENS, Collector_, body, start_collector, trace
from rawhttp import RawAnswer, exchange, push_head, read_answer, send_all

from wattledger.collector.api.server import HttpLimits, http_limits
from wattledger.collector.settings import settings_from
from wattledger.config import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
KIB, MIB = 1 << 10, 1 << 20
#: short enough for a quick test, long enough that a loaded machine answers a good push first
BODY_TIMEOUT = 4.0
HEADER_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector_]:
    tmp = tmp_path_factory.mktemp("limits")
    c = start_collector(tmp, {
        "db": f"sqlite:///{tmp}/ledger.db", "tokens": TOKENS,
        # sixteen bodies of the largest size fill max_pending_bytes when reserved up front
        "max_body_bytes": MIB, "max_pending_bytes": 16 * MIB, "max_node_pending_bytes": 2 * MIB,
        "header_timeout_seconds": HEADER_TIMEOUT, "body_timeout_seconds": BODY_TIMEOUT})
    yield c
    c.stop()


def port_of(c: Collector_) -> int:
    return int(c.url.rsplit(":", 1)[1])


def good_push(c: Collector_, seq: int) -> httpx.Response:
    doc = trace(seq, time.time() - 600)[-1]
    return httpx.post(f"{c.url}/v1/batches", content=body(doc), headers=AUTH, timeout=30)


def metric(c: Collector_, name: str) -> float:
    """A sample of the collector's /metrics, named without the process's ``replica`` label."""
    text = re.sub(r',replica="[^"]*"', "", httpx.get(f"{c.url}/metrics", timeout=30).text)
    text = re.sub(r'\{replica="[^"]*"\}', "", text)
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, name
    return float(found[1])


def assert_json_error(answer: RawAnswer, status: int, error: str | None = None) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer
    doc = answer.json()
    assert set(doc) == {"error", "detail"}, doc
    if error is not None:
        assert doc["error"] == error, doc


def stalled_uploads(c: Collector_, count: int, token: str, sent: int) -> list[socket.socket]:
    """``count`` pushes that announce the largest body, send ``sent`` bytes of it and stall."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port_of(c)), timeout=30)
        sock.sendall(push_head(token, Content_Length=MIB) + b"\r\n" + b" " * sent)
        socks.append(sock)
    return socks


def not_answered_yet(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(30)
    return False


def test_stalled_uploads_do_not_starve_other_nodes_and_are_408_and_closed(collector: Collector_) -> None:
    stalled = stalled_uploads(collector, 16, TOKENS["gpu-node-02"], 1024)
    try:
        time.sleep(0.5)  # the collector has read what they sent
        # bytes are counted as they arrive: 16 KiB held, not the 16 MiB their headers announce
        assert metric(collector, "wattledger_ingest_pending_bytes") <= 16 * KIB
        ok = good_push(collector, 1)
        assert ok.status_code == 200, ok.text
        assert all(not_answered_yet(s) for s in stalled)  # still open while the good node pushed
        answers = [read_answer(s, timeout=BODY_TIMEOUT + 30) for s in stalled]
    finally:
        for s in stalled:
            s.close()
    for answer in answers:
        assert_json_error(answer, 408, "request timeout")
        assert answer.json()["detail"]["field"] == "body"
        assert answer.closed
    assert metric(collector, 'wattledger_ingest_batches_total{outcome="rejected_408"}') >= 16
    assert metric(collector, 'wattledger_collector_http_refusals_total{reason="body_timeout"}') >= 16
    assert metric(collector, "wattledger_ingest_pending_bytes") == 0


def test_one_node_cannot_hold_more_than_its_share(collector: Collector_) -> None:
    # 8 x 512 KiB of one node: its 2 MiB share holds four; the others are 429 at once
    stalled = stalled_uploads(collector, 8, TOKENS["gpu-node-02"], 512 * KIB)
    try:
        ok = good_push(collector, 2)  # another node still gets in
        answers = [read_answer(s, timeout=BODY_TIMEOUT + 30) for s in stalled]
    finally:
        for s in stalled:
            s.close()
    assert ok.status_code == 200, ok.text
    statuses = sorted(a.status for a in answers)
    assert 429 in statuses and 408 in statuses, statuses
    assert set(statuses) == {408, 429}
    for answer in answers:
        assert_json_error(answer, answer.status)
        if answer.status == 429:
            assert "for this node" in answer.json()["detail"]["reason"]
            assert answer.headers["retry-after"] == "1"


def test_headers_that_never_end_are_408_and_closed(collector: Collector_) -> None:
    for partial in (b"", b"POST /v1/batches HTTP/1.1\r\nHost: x\r\n", b"GET /hea"):
        started = time.monotonic()
        answer = exchange(port_of(collector), partial, timeout=HEADER_TIMEOUT + 30)
        assert time.monotonic() - started >= HEADER_TIMEOUT * 0.9  # not before the timeout
        assert_json_error(answer, 408, "request timeout")
        assert answer.json()["detail"]["field"] == "headers"
        assert answer.closed


def test_a_trickle_of_header_bytes_does_not_keep_the_connection(collector: Collector_) -> None:
    # the timeout is on the whole head, not between bytes: a slowloris is cut at the timeout
    with socket.create_connection(("127.0.0.1", port_of(collector)), timeout=30) as sock:
        sock.sendall(push_head())
        end = time.monotonic() + HEADER_TIMEOUT + 30
        try:
            while time.monotonic() < end:
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock)
    assert_json_error(answer, 408, "request timeout")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise AssertionError("no VmRSS")


def test_a_64_mib_header_is_refused_early_and_costs_no_memory(collector: Collector_) -> None:
    port = port_of(collector)
    # once first, so that what the first refusal loads is not counted
    assert exchange(port, push_head(X_Big="a" * (200 * KIB)) + b"\r\n\r\n").status == 431
    before = rss_bytes(collector.proc.pid)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sent = send_all(sock, push_head() + b"X-Big: " + b"a" * (64 * MIB) + b"\r\n\r\n")
        answer = read_answer(sock)
    grown = rss_bytes(collector.proc.pid) - before
    assert_json_error(answer, 431, "headers too large")
    assert answer.closed
    assert sent < 64 * MIB  # the collector closed the connection long before the end
    assert grown < 4 * MIB, f"RSS grew by {grown / MIB:.1f} MiB"


@pytest.mark.parametrize(("head", "field"), [
    (push_head(X_Long="a" * 9000), "headers"),  # one field over 8 KiB
    (push_head(**{f"X-Many-{i}": "b" * 1000 for i in range(70)}), "headers"),  # 70 KiB in all
])
def test_big_headers_are_431(collector: Collector_, head: bytes, field: str) -> None:
    answer = exchange(port_of(collector), head + b"\r\n")
    assert_json_error(answer, 431, "headers too large")
    assert answer.json()["detail"]["field"] == field
    assert answer.closed


def test_a_long_target_is_414(collector: Collector_) -> None:
    answer = exchange(port_of(collector), b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_json_error(answer, 414, "target too long")
    assert answer.closed


MALFORMED = {
    "bad chunk size": push_head(Transfer_Encoding="chunked") + b"\r\nzz\r\n{}\r\n0\r\n\r\n",
    "Content-Length -1": push_head(Content_Length=-1) + b"\r\n{}",
    "Content-Length abc": push_head(Content_Length="abc") + b"\r\n{}",
    "two Content-Lengths": push_head(Content_Length=2) + b"Content-Length: 3\r\n\r\n{}",
    "Content-Length 2, 2": push_head(Content_Length="2, 2") + b"\r\n{}",
    "Transfer-Encoding with Content-Length":
        push_head(Transfer_Encoding="chunked", Content_Length=2) + b"\r\n2\r\n{}\r\n0\r\n\r\n",
    "Transfer-Encoding gzip": push_head(Transfer_Encoding="gzip") + b"\r\n{}",
    "header without a colon": push_head() + b"Foo bar\r\n\r\n",
    "NUL in a header value": push_head() + b"X-Nul: a\x00b\r\n\r\n",
    "unknown method": b"BREW /v1/batches HTTP/1.1\r\nHost: x\r\n\r\n",
    "not HTTP at all": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
    "non-ASCII target": b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_are_json_400_and_closed(collector: Collector_, request_bytes: bytes) -> None:
    answer = exchange(port_of(collector), request_bytes)
    assert_json_error(answer, 400, "malformed request")
    assert answer.json()["detail"]["reason"]
    assert answer.closed


def test_a_trailing_slash_is_a_json_404_not_a_redirect(collector: Collector_) -> None:
    answer = exchange(port_of(collector), b"POST /v1/batches/ HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: 2\r\n\r\n{}", close_wait=0.2)
    assert_json_error(answer, 404)
    assert "location" not in answer.headers


def test_a_good_request_after_a_stray_crlf_on_a_kept_connection(collector: Collector_) -> None:
    # a stray CRLF between requests stops uvicorn's keep-alive timer: the header timer takes over
    with socket.create_connection(("127.0.0.1", port_of(collector)), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_answer(sock, close_wait=0.1)
        sock.sendall(b"\r\n")
        idle = read_answer(sock, timeout=HEADER_TIMEOUT + 30)
    assert first.status == 200 and json.loads(first.body) == {"status": "ok"}
    assert_json_error(idle, 408, "request timeout")
    assert idle.closed


@pytest.mark.parametrize(("key", "value", "message"), [
    ("header_timeout_seconds", 0, "must be greater than 0"),
    ("body_timeout_seconds", "never", "must be a number"),
    ("max_header_bytes", 1024, "must be at least 8192"),
    ("max_node_pending_bytes", 10, "must be at least 1024"),
])
def test_the_limits_are_checked_at_start(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config key {key}: {message}$"):
        settings_from({key: value})


def test_the_limits_reach_the_server() -> None:
    limits = http_limits(settings_from({"header_timeout_seconds": 3, "body_timeout_seconds": 7,
                                        "max_header_bytes": 20000}))
    assert limits == HttpLimits(header_timeout_seconds=3, body_timeout_seconds=7, max_header_bytes=20000)
    assert http_limits(settings_from({})) == HttpLimits(10.0, 30.0, 65536)  # the documented defaults
