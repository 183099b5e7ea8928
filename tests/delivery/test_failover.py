"""An agent with several collectors (issue 11): the order and backoff of the failover policy
(pure, on a test clock), the settings that name the collectors, and the shipper failing over
between fake collectors on 127.0.0.1 with every reading landing once."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.delivery.conftest import FakeCollector, Scripted
from tests.delivery.test_shipper import expected, make_delivery, run_until, spool_batches
from wattledger.agent import cli as agent_cli
from wattledger.agent.delivery import Delivery
from wattledger.agent.failover import Failover, display_url
from wattledger.agent.shipper import Outcome
from wattledger.config import ConfigError, OneLineParser


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def steps(n: int, retry_after: float | None) -> float:
    """A backoff without jitter: n seconds after the n-th failure, or the Retry-After."""
    return retry_after if retry_after is not None else float(n)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def failover(clock: Clock, n: int = 3) -> Failover:
    return Failover([f"http://c{i}:9861" for i in range(n)], steps, clock)


# ---------------------------------------------------------------------------- the policy


def test_sticky_while_the_collector_answers(clock: Clock) -> None:
    f = failover(clock)
    for _ in range(5):
        assert f.pick() == 0
        f.succeeded(0)
    assert f.failovers == 0 and f.collectors[0].up is True and f.collectors[1].up is None


def test_a_failure_moves_on_at_once_and_stays_with_the_next_one(clock: Clock) -> None:
    f = failover(clock)
    assert f.pick() == 0
    assert f.failed(0, up=False) == 0.0  # another collector is ready: no wait
    assert f.pick() == 1 and f.failovers == 1
    f.succeeded(1)
    clock.now += 3600  # the first one is long ready again: the shipper stays where it is
    assert f.pick() == 1 and f.failovers == 1
    assert [c.up for c in f.collectors] == [False, True, None]


def test_every_collector_failing_waits_for_the_first_ready(clock: Clock) -> None:
    f = failover(clock)
    waits = []
    for i in range(3):  # each fails once, 0.1 s apart
        assert f.pick() == i
        waits.append(f.failed(i, up=False))
        clock.now += 0.1
    # each collector's first failure: 1 s of its own backoff; the first is ready 0.7 s from now
    assert waits[:2] == [0.0, 0.0] and waits[2] == pytest.approx(0.8)
    assert f.wait() == pytest.approx(0.7)
    assert f.pick() == 0  # none ready (a stop's last try at once): the one ready soonest
    clock.now += 0.7
    assert f.pick() == 0
    assert f.failed(0, up=False) == pytest.approx(0.1)  # its second failure: 2 s; 1 is ready in 0.1 s
    clock.now += 0.1
    assert f.pick() == 1
    assert f.failed(1, up=False) == pytest.approx(0.1)  # 2 is ready in 0.1 s
    clock.now += 0.1
    assert f.pick() == 2
    f.succeeded(2)
    assert f.pick() == 2 and [c.failures for c in f.collectors] == [2, 2, 0]
    assert f.failovers == 5  # 0>1>2>0>1>2


def test_each_collector_backs_off_on_its_own(clock: Clock) -> None:
    f = failover(clock, 2)
    for n in (1, 2, 3):  # collector 0 fails three times while 1 is busy elsewhere
        f.current = 0
        f.failed(0, up=False)
        assert f.collectors[0].not_before == clock.now + n
    f.failed(1, up=False)
    assert f.collectors[1].not_before == clock.now + 1  # its first failure
    f.succeeded(0)
    assert f.collectors[0].failures == 0 and f.collectors[0].not_before == 0.0


def test_429_honours_retry_after_there_and_tries_the_next(clock: Clock) -> None:
    f = failover(clock, 2)
    assert f.pick() == 0
    assert f.failed(0, up=True, retry_after=30.0) == 0.0
    assert f.collectors[0].up is True and f.collectors[0].not_before == clock.now + 30
    assert f.pick() == 1
    assert f.failed(1, up=True, retry_after=5.0) == 5.0  # both busy: the sooner one
    clock.now += 5.0
    assert f.pick() == 1


def test_one_collector_is_the_plain_backoff(clock: Clock) -> None:
    f = failover(clock, 1)
    assert [f.failed(f.pick(), up=False) for _ in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert f.failovers == 0


def test_display_url_drops_credentials() -> None:
    assert display_url("https://user:secret@collector.example:9861/base/") == \
        "https://collector.example:9861/base"
    assert display_url("http://[::1]:9861") == "http://[::1]:9861"
    with pytest.raises(ValueError):
        Failover([], steps)


# ---------------------------------------------------------------------------- the settings


def agent_settings(tmp_path: Path, *argv: str, env: dict[str, str] | None = None,
                   config: object = None) -> list[str]:
    token = tmp_path / "token"
    token.write_text("tok\n")
    parser = OneLineParser(prog="wattledger agent")
    agent_cli.configure(parser)
    extra: list[str] = []
    if config is not None:
        (tmp_path / "agent.yaml").write_text(yaml.safe_dump({"collector": config}))
        extra = ["--config", str(tmp_path / "agent.yaml")]
    args: argparse.Namespace = parser.parse_args(["--node", "n", "--token-file", str(token), *extra, *argv])
    return list(agent_cli.settings(args, env or {}).collector)


def test_collectors_repeated_comma_list_env_and_yaml(tmp_path: Path) -> None:
    two = ["http://a:9861", "http://b:9861"]
    assert agent_settings(tmp_path, "--collector", "http://a:9861/", "--collector", "http://b:9861") == two
    assert agent_settings(tmp_path, "--collector", "http://a:9861, http://b:9861") == two
    assert agent_settings(tmp_path, "--collector", "http://a:9861,http://b:9861", "--collector",
                          "https://c:9861") == [*two, "https://c:9861"]
    assert agent_settings(tmp_path, env={"WATTLEDGER_COLLECTOR": "http://a:9861,http://b:9861"}) == two
    assert agent_settings(tmp_path, config=two) == two
    assert agent_settings(tmp_path, config="http://a:9861,http://b:9861") == two
    assert agent_settings(tmp_path, config="http://a:9861") == two[:1]


@pytest.mark.parametrize(("argv", "message"), [
    (["--collector", "http://a:9861,ftp://b"], "'ftp://b' is not an http"),
    (["--collector", "http://a:9861,http://a:9861/"], "'http://a:9861' is given twice"),
    (["--collector", ","], "holds no URL"),
])
def test_bad_collector_lists_are_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        agent_settings(tmp_path, *argv)
    assert "\n" not in str(err.value) and str(err.value).startswith("--collector: ")


def test_a_label_named_collector_is_refused(tmp_path: Path) -> None:
    """The agent's collector families carry a ``collector`` label of their own."""
    with pytest.raises(ConfigError, match="'collector' is set by the agent"):
        agent_settings(tmp_path, "--collector", "http://a:9861", "--label", "collector=x")


def test_delivery_refuses_the_same_collector_twice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="given twice"):
        Delivery(spool_dir=tmp_path / "s", collector_url=["http://a:1", "http://u:p@a:1/"], token=None,
                 node="n", labels={})
    with pytest.raises(ConfigError, match="no collector"):
        Delivery(spool_dir=tmp_path / "s", collector_url=[], token=None, node="n", labels={})


# ---------------------------------------------------------------------------- the shipper


@pytest.fixture
def second() -> Iterator[FakeCollector]:
    fake = FakeCollector()
    yield fake
    fake.close()


def replicas(a: FakeCollector, b: FakeCollector) -> None:
    """Make ``b`` a replica of ``a`` on one database: one set of committed (stream, seq), one
    list of readings, one lock (the collector side of issue 11, faked)."""
    b.committed, b.readings, b.lock = a.committed, a.readings, a.lock


def dead_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def collector_metrics(delivery: Delivery) -> dict[tuple[str, str], float]:
    """(family, collector) -> value of the collector families; ("failovers", "") the counter."""
    out: dict[tuple[str, str], float] = {}
    prefix = "wattledger_agent_collector_"
    for family in delivery.collect():
        for s in family.samples:
            if family.name.startswith(prefix):
                out[(family.name.removeprefix(prefix), s.labels.get("collector", ""))] = s.value
    return out


def test_503_fails_over_at_once_and_sticks_to_the_one_that_answers(
        tmp_path: Path, collector: FakeCollector, second: FakeCollector) -> None:
    collector.script.append(Scripted(503, {"Retry-After": "30"}))
    delivery = make_delivery(tmp_path, [collector.url, second.url])
    n = spool_batches(delivery, range(3))
    delivery.start()
    assert second.wait_for(n)
    stats = delivery.stop(timeout=5)
    assert collector.answers == [503] and second.answers == [200, 200, 200]
    assert second.readings == expected(range(3)) and stats.spooled_readings == 0
    assert delivery.shipper.recent_delays == [(Outcome.RETRY, 0.0)]  # no wait: the next was ready
    m = collector_metrics(delivery)
    assert m[("up", collector.url)] == 0 and m[("up", second.url)] == 1
    assert m[("active", collector.url)] == 0 and m[("active", second.url)] == 1
    assert m[("failovers", "")] == 1


def test_nothing_listening_then_a_collector(tmp_path: Path, collector: FakeCollector) -> None:
    down = dead_port()
    delivery = make_delivery(tmp_path, f"{down},{collector.url}".split(","))
    n = spool_batches(delivery, range(2))
    run_until(delivery, collector, n)
    assert collector.readings == expected(range(2))
    assert delivery.shipper.outcomes[Outcome.RETRY] == 1 and delivery.shipper.outcomes[Outcome.OK] == 2
    m = collector_metrics(delivery)
    assert m[("up", down)] == 0 and m[("active", collector.url)] == 1


def test_429_is_a_healthy_busy_collector_the_next_one_takes_the_batch(
        tmp_path: Path, collector: FakeCollector, second: FakeCollector) -> None:
    collector.script.append(Scripted(429, {"Retry-After": "30"}, {"error": "overloaded"}))
    delivery = make_delivery(tmp_path, [collector.url, second.url])
    n = spool_batches(delivery, range(2))
    run_until(delivery, second, n)
    assert collector.answers == [429] and second.readings == expected(range(2))
    assert delivery.shipper.failover.collectors[0].up is True  # busy, not down
    assert collector_metrics(delivery)[("up", collector.url)] == 1


def test_a_lost_answer_is_re_sent_to_the_replica_and_counted_once(
        tmp_path: Path, collector: FakeCollector, second: FakeCollector) -> None:
    replicas(collector, second)
    collector.script.append(Scripted(0, commit=True))  # committed, then the connection drops
    delivery = make_delivery(tmp_path, [collector.url, second.url])
    n = spool_batches(delivery, range(3))
    run_until(delivery, second, n)
    assert collector.answers == [0] and second.answers == [200, 200, 200]
    assert collector.readings == expected(range(3))  # the one ledger: each reading once
    assert delivery.shipper.outcomes[Outcome.DUPLICATE] == 1 and delivery.shipper.shipped_readings == n


def test_every_collector_down_then_back(tmp_path: Path, collector: FakeCollector,
                                        second: FakeCollector) -> None:
    replicas(collector, second)
    collector.script.extend([Scripted(503), Scripted(503)])
    second.script.extend([Scripted(502), Scripted(502)])
    delivery = make_delivery(tmp_path, [collector.url, second.url])
    n = spool_batches(delivery, range(2))
    run_until(delivery, collector, n)
    # in turn, each after its own backoff, until one answers; then it sticks
    assert collector.answers[:2] == [503, 503] and second.answers[:2] == [502, 502]
    assert collector.readings == expected(range(2))
    assert delivery.shipper.outcomes[Outcome.RETRY] == 4
    assert delivery.shipper.failover.failovers >= 2  # (which first after a backoff: the jitter says)


def test_a_wrong_token_on_one_replica_does_not_hold_the_stream(
        tmp_path: Path, collector: FakeCollector, second: FakeCollector) -> None:
    collector.tokens["node-a"] = "not-this-one"
    delivery = make_delivery(tmp_path, [collector.url, second.url])
    n = spool_batches(delivery, range(2))
    run_until(delivery, second, n)
    assert collector.answers == [401] and second.readings == expected(range(2))
    assert delivery.shipper.outcomes[Outcome.AUTH_ERROR] == 1
    assert collector.claimed == ["node-a"] and second.claimed == ["node-a"] * 2
