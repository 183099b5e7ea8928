"""The bytes held by pushes in progress: counted as they arrive, bounded in all and per node,
and a push alone always passes (else a big one never could)."""

from __future__ import annotations

import pytest

from wattledger.collector.ingest.checks import PendingBytes, Refusal


def test_a_reservation_holds_nothing_until_bytes_arrive() -> None:
    pool = PendingBytes(1000, per_node=400)
    held = pool.reserve("n1")
    assert pool.used == 0 and held.held == 0
    held.ensure(300)
    held.ensure(200)  # never less than it holds
    assert pool.used == 300 and pool.by_node == {"n1": 300}
    held.release()
    assert pool.used == 0 and pool.by_node == {}


def test_one_node_cannot_take_more_than_its_share() -> None:
    pool = PendingBytes(1000, per_node=400)
    first, second = pool.reserve("n1"), pool.reserve("n1")
    first.ensure(300)
    with pytest.raises(Refusal) as refused:
        second.ensure(200)
    assert refused.value.status == 429 and "for this node" in refused.value.detail["reason"]
    other = pool.reserve("n2")
    other.ensure(400)  # another node still gets in
    assert pool.used == 700 and pool.by_node == {"n1": 300, "n2": 400}


def test_the_pool_in_all_is_bounded() -> None:
    pool = PendingBytes(1000, per_node=800)
    pool.reserve("n1").ensure(700)
    with pytest.raises(Refusal) as refused:
        pool.reserve("n2").ensure(400)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"


def test_a_push_alone_always_passes_however_big() -> None:
    pool = PendingBytes(1000, per_node=400)
    big = pool.reserve("n1")
    big.ensure(300)
    big.ensure(2000)  # alone in the pool and for its node: it grows past both bounds
    assert pool.used == 2000
    with pytest.raises(Refusal):
        pool.reserve("n2").ensure(1)
    big.release()
    pool.reserve("n2").ensure(1)


def test_unauthenticated_pushes_share_one_key_per_claimed_node() -> None:
    pool = PendingBytes(1000, per_node=400)
    pool.reserve(None).ensure(300)
    with pytest.raises(Refusal):
        pool.reserve(None).ensure(200)
