"""The shipper's retry policy, against a fake collector on 127.0.0.1: what each answer does
to the batch (retried, kept, parked, acknowledged), and that every reading lands once."""

from __future__ import annotations

import random
import socket
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.delivery.conftest import FakeCollector, Scripted, make_devices, make_sample
from wattledger.agent.delivery import Delivery
from wattledger.agent.shipper import Backoff, Outcome, classify, parse_retry_after
from wattledger.config import ConfigError

DEVICES = make_devices(4)


def make_delivery(tmp_path: Path, url: str, **kw: object) -> Delivery:
    options: dict[str, object] = {"token": "tok-a", "batch_seconds": 0.05, "backoff_base": 0.02,
                                  "backoff_cap": 0.1, "rng": random.Random(7)}
    options.update(kw)
    return Delivery(spool_dir=tmp_path / "spool", collector_url=url, node="node-a", labels={"site": "s1"},
                    **options)  # type: ignore[arg-type]


def spool_batches(delivery: Delivery, samples: range) -> int:
    """Record ``samples`` as one batch each (cut right away); returns readings taken."""
    for k in samples:
        delivery.record(make_sample(DEVICES, k))
        delivery._cut()
    return len(samples) * len(DEVICES)


def expected(samples: range) -> list[tuple[str, float]]:
    return [(d.id, r.ts) for k in samples for d, r in zip(DEVICES, make_sample(DEVICES, k), strict=True)]


def run_until(delivery: Delivery, collector: FakeCollector, readings: int) -> None:
    delivery.start()
    assert collector.wait_for(readings), f"only {len(collector.readings)} of {readings} readings arrived"
    stats = delivery.stop(timeout=5)
    assert stats.spooled_readings == 0


# ---------------------------------------------------------------------------- pure policy


@pytest.mark.parametrize(("status", "outcome"), [
    (500, Outcome.RETRY), (502, Outcome.RETRY), (503, Outcome.RETRY), (429, Outcome.RETRY),
    (408, Outcome.RETRY), (404, Outcome.RETRY), (301, Outcome.RETRY),
    (409, Outcome.RETRY),  # two agents for one node: kept until this one takes the node over
    (401, Outcome.AUTH_ERROR), (403, Outcome.AUTH_ERROR),
    (400, Outcome.DEAD_LETTER), (413, Outcome.DEAD_LETTER), (415, Outcome.DEAD_LETTER),
    (422, Outcome.DEAD_LETTER),
])
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_retry_after_seconds_and_dates() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0, abs=1.0)
    assert parse_retry_after("86400", now) == 600.0  # capped
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    assert parse_retry_after("-3", now) == 0.0


def test_backoff_grows_to_the_cap_with_jitter_and_honours_retry_after() -> None:
    backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(1))
    delays = [backoff.delay(n) for n in range(1, 12)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert max(delays[6:]) > 4.0 and delays[0] <= 0.5  # grows, then stays under the cap
    assert len(set(delays)) == len(delays)  # jittered
    assert 30.0 <= backoff.delay(1, retry_after=30.0) <= 36.0


# ---------------------------------------------------------------------------- the retry matrix


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_until_accepted(tmp_path: Path, collector: FakeCollector,
                                                  status: int) -> None:
    collector.script.extend([Scripted(status), Scripted(status), Scripted(status)])
    delivery = make_delivery(tmp_path, collector.url)
    n = spool_batches(delivery, range(3))
    run_until(delivery, collector, n)
    assert collector.answers[:4] == [status, status, status, 200]
    assert collector.readings == expected(range(3))
    assert delivery.shipper.outcomes[Outcome.RETRY] == 3 and delivery.shipper.outcomes[Outcome.OK] == 3


def test_every_push_says_which_node_it_is_from(tmp_path: Path, collector: FakeCollector) -> None:
    """X-Wattledger-Node on every push, refused ones included: the collector counts 401/403
    by the node they claim to be (docs/metrics.md, wattledger_ingest_auth_failures_total)."""
    collector.script.extend([Scripted(401), Scripted(503)])
    delivery = make_delivery(tmp_path, collector.url)
    n = spool_batches(delivery, range(2))
    run_until(delivery, collector, n)
    assert collector.answers == [401, 503, 200, 200]
    assert collector.claimed == ["node-a"] * 4


def test_429_waits_at_least_retry_after(tmp_path: Path, collector: FakeCollector) -> None:
    collector.script.append(Scripted(429, {"Retry-After": "1"}, {"error": "overloaded"}))
    delivery = make_delivery(tmp_path, collector.url)
    n = spool_batches(delivery, range(2))
    run_until(delivery, collector, n)
    assert collector.answers == [429, 200, 200]
    assert delivery.shipper.recent_delays[0][0] is Outcome.RETRY
    assert delivery.shipper.recent_delays[0][1] >= 1.0  # not the 0.02 s of the backoff
    assert collector.readings == expected(range(2))


def test_409_keeps_the_batch_and_sends_it_again(tmp_path: Path, collector: FakeCollector) -> None:
    """Two agents for one node: the collector refuses the newer one's batches (409) until the
    older one has been silent long enough; they stay spooled, none is dead-lettered."""
    refusal = {"error": "duplicate agent", "detail": {"field": "stream", "reason": "another live stream"}}
    collector.script.extend([Scripted(409, {"Retry-After": "1"}, refusal), Scripted(409, {}, refusal)])
    delivery = make_delivery(tmp_path, collector.url)
    n = spool_batches(delivery, range(2))
    run_until(delivery, collector, n)
    assert collector.answers == [409, 409, 200, 200]
    assert collector.readings == expected(range(2))  # in order, nothing parked
    assert delivery.shipper.recent_delays[0][0] is Outcome.RETRY
    assert delivery.shipper.recent_delays[0][1] >= 1.0  # the collector's Retry-After
    delivery.spool.open()
    assert delivery.spool.dead_letters() == []


@pytest.mark.parametrize("status", [400, 413])
def test_a_refused_batch_is_dead_lettered_and_the_stream_goes_on(tmp_path: Path, collector: FakeCollector,
                                                                 status: int) -> None:
    collector.script.append(Scripted(status, body={"error": "refused by the test"}))
    delivery = make_delivery(tmp_path, collector.url)
    spool_batches(delivery, range(3))
    delivery.start()
    assert collector.wait_for(8)
    assert collector.readings == expected(range(1, 3))  # batch 1 parked, 2 and 3 delivered
    assert delivery.stop(timeout=5).spooled_readings == 0
    delivery.spool.open()  # (stop closed it) the parked batch is still there
    parked = delivery.spool.dead_letters()
    assert [(seq, readings, st) for _, seq, readings, st, _ in parked] == [(1, 4, status)]
    assert "refused by the test" in parked[0][4]
    families = {m.name: m for m in delivery.collect()}
    outcome = {s.labels["outcome"]: s.value for s in families["wattledger_agent_shipped_batches"].samples}
    assert outcome["dead_letter"] == 1 and outcome["ok"] == 2
    assert families["wattledger_agent_dead_letter_batches"].samples[0].value == 1


def test_401_keeps_the_batch_until_the_token_file_is_fixed(tmp_path: Path, collector: FakeCollector) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token\n")
    delivery = make_delivery(tmp_path, collector.url, token=None, token_file=token_file)
    n = spool_batches(delivery, range(2))
    delivery.start()
    deadline = time.monotonic() + 10
    while delivery.shipper.outcomes[Outcome.AUTH_ERROR] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert delivery.shipper.outcomes[Outcome.AUTH_ERROR] >= 3
    assert collector.readings == [] and delivery.spool.counts().readings == n  # nothing lost
    token_file.write_text("tok-a\n")
    assert collector.wait_for(n)
    stats = delivery.stop(timeout=5)
    assert collector.readings == expected(range(2)) and stats.spooled_readings == 0
    assert delivery.spool.counts().dead_letters == 0


def test_401_keeps_the_batch_until_the_collector_knows_the_token(tmp_path: Path,
                                                                 collector: FakeCollector) -> None:
    collector.tokens["node-a"] = "rotated"
    delivery = make_delivery(tmp_path, collector.url)
    n = spool_batches(delivery, range(2))
    delivery.start()
    deadline = time.monotonic() + 10
    while delivery.shipper.outcomes[Outcome.AUTH_ERROR] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    with collector.lock:
        collector.tokens["node-a"] = "tok-a"
    assert collector.wait_for(n)
    delivery.stop(timeout=5)
    assert collector.readings == expected(range(2))


def test_an_answer_lost_after_the_commit_is_not_counted_twice(tmp_path: Path,
                                                              collector: FakeCollector) -> None:
    collector.script.append(Scripted(0, commit=True))  # committed, then the connection drops
    delivery = make_delivery(tmp_path, collector.url)
    n = spool_batches(delivery, range(3))
    run_until(delivery, collector, n)
    assert collector.answers[:2] == [0, 200]
    assert collector.readings == expected(range(3))
    assert delivery.shipper.outcomes[Outcome.DUPLICATE] == 1


def test_a_collector_that_is_not_there_yet(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    delivery = make_delivery(tmp_path, f"http://127.0.0.1:{port}")
    n = spool_batches(delivery, range(2))
    delivery.start()
    deadline = time.monotonic() + 10
    while delivery.shipper.outcomes[Outcome.RETRY] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = delivery.stop(timeout=0.5)
    assert stats == type(stats)(shipped_readings=0, spooled_readings=n)

    collector = FakeCollector()  # the collector comes up (elsewhere); the next start ships it all
    try:
        again = make_delivery(tmp_path, collector.url)
        run_until(again, collector, n)
        assert collector.readings == expected(range(2))
        assert again.shipper.shipped_readings == n
    finally:
        collector.close()


def test_stop_cuts_and_ships_the_open_batch(tmp_path: Path, collector: FakeCollector) -> None:
    delivery = make_delivery(tmp_path, collector.url, batch_seconds=3600.0)
    delivery.start()
    for k in range(5):
        delivery.record(make_sample(DEVICES, k))
    stats = delivery.stop(timeout=5)  # the open batch is cut and shipped by stop
    assert stats.shipped_readings == 20 and stats.spooled_readings == 0
    assert collector.readings == expected(range(5))
    assert list(collector.committed) == [(delivery.spool.stream, 1)]


def test_bad_configuration_is_one_line(tmp_path: Path, collector: FakeCollector) -> None:
    with pytest.raises(ConfigError, match="node name"):
        Delivery(spool_dir=tmp_path / "s", collector_url=collector.url, token=None, node="bad node!",
                 labels={})
    with pytest.raises(ConfigError, match="--collector"):
        Delivery(spool_dir=tmp_path / "s", collector_url="ftp://x", token=None, node="n", labels={})
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="--spool"):
        Delivery(spool_dir=tmp_path / "file", collector_url=collector.url, token=None, node="n", labels={})


def test_a_batch_is_cut_every_batch_seconds(tmp_path: Path, collector: FakeCollector) -> None:
    now = [0.0]
    delivery = make_delivery(tmp_path, collector.url, batch_seconds=10.0, clock=lambda: now[0])
    for k, t in enumerate([0.0, 4.0, 9.9, 10.0, 15.0, 24.9]):
        now[0] = t
        delivery.record(make_sample(DEVICES, k))
    counts = delivery.spool.counts()
    # cut at t=10 (samples at 0, 4, 9.9, 10); the next batch opened at 15 is not due yet
    assert (counts.batches, counts.readings, counts.open_readings) == (1, 16, 8)
    now[0] = 25.0
    delivery._cut_if_due()  # what the shipper does while idle: no sample needed
    assert delivery.spool.counts().batches == 2
    delivery.stop(timeout=0)


def test_self_health_metrics(tmp_path: Path, collector: FakeCollector) -> None:
    delivery = make_delivery(tmp_path, collector.url)
    spool_batches(delivery, range(3))
    families = {m.name: m for m in delivery.collect()}
    assert families["wattledger_agent_spool_batches"].samples[0].value == 3
    assert families["wattledger_agent_spool_readings"].samples[0].value == 12
    assert families["wattledger_agent_spool_bytes"].samples[0].value > 0
    assert families["wattledger_agent_spool_oldest_timestamp_seconds"].samples[0].value == 1_700_000_000.0
    assert families["wattledger_agent_dropped_readings"].type == "counter"
    assert families["wattledger_agent_spool_corruptions"].type == "counter"
    assert families["wattledger_agent_spool_batches"].samples[0].labels == {"node": "node-a", "site": "s1"}
    outcomes = {s.labels["outcome"] for s in families["wattledger_agent_shipped_batches"].samples}
    assert outcomes == {"ok", "duplicate", "retry", "auth_error", "dead_letter"}
    run_until(delivery, collector, 12)
    assert delivery.shipper.shipped_readings == 12


def test_a_failing_spool_disk_does_not_end_delivery(tmp_path: Path, collector: FakeCollector,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from wattledger.agent import shipper as shipper_module

    monkeypatch.setattr(shipper_module, "ERROR_PAUSE", 0.01)
    delivery = make_delivery(tmp_path, collector.url)
    n = spool_batches(delivery, range(2))
    real_next = delivery.spool.next_batch
    failures = [sqlite3.OperationalError("disk I/O error")] * 2

    def flaky_next() -> object:
        if failures:
            raise failures.pop()
        return real_next()

    monkeypatch.setattr(delivery.spool, "next_batch", flaky_next)
    run_until(delivery, collector, n)
    assert collector.readings == expected(range(2)) and not failures
