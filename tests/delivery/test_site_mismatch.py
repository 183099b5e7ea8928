"""A node labelled with a site the collector does not have (yet): the collector answers
``422 {"error": "unknown site"}``. That is a configuration mismatch, as a wrong token is, so
the agent keeps the batches and retries instead of parking its whole backlog as dead letters,
and every reading lands once the collector knows the site."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from tests.delivery.conftest import FakeCollector, Scripted, make_devices, make_sample
from wattledger.agent.delivery import Delivery
from wattledger.agent.shipper import Answer, Outcome, _unknown_site

DEVICES = make_devices(2)
UNKNOWN_SITE = {"error": "unknown site", "detail": {
    "field": "labels.site", "reason": "site 'mars' is not configured on this collector"}}


def test_only_the_unknown_site_answer_is_recognised() -> None:
    assert _unknown_site(Answer(422, None, b'{"error": "unknown site", "detail": {}}'))
    assert not _unknown_site(Answer(422, None, b'{"error": "invalid batch", "detail": {}}'))
    assert not _unknown_site(Answer(422, None, b"<html>unknown site</html>"))
    assert not _unknown_site(Answer(422, None, b'["unknown site"]'))


def test_unknown_site_keeps_the_batches_until_the_collector_knows_it(
        tmp_path: Path, collector: FakeCollector, caplog: pytest.LogCaptureFixture) -> None:
    collector.script.extend(Scripted(422, body=UNKNOWN_SITE) for _ in range(3))
    delivery = Delivery(spool_dir=tmp_path / "spool", collector_url=collector.url, node="node-a",
                        labels={"site": "mars"}, token="tok-a", batch_seconds=0.05, backoff_base=0.02,
                        backoff_cap=0.1, rng=random.Random(3))
    for k in range(3):
        delivery.record(make_sample(DEVICES, k))
        delivery._cut()
    with caplog.at_level(logging.ERROR, logger="wattledger.agent.shipper"):
        delivery.start()
        assert collector.wait_for(6), collector.answers
        stats = delivery.stop(timeout=5)
    assert collector.answers[:3] == [422, 422, 422] and stats.spooled_readings == 0
    assert len(collector.readings) == 6  # every reading, once
    assert delivery.shipper.outcomes[Outcome.DEAD_LETTER] == 0
    assert delivery.shipper.outcomes[Outcome.RETRY] == 3
    delivery.spool.open()
    assert delivery.spool.dead_letters() == []
    said = [r.getMessage() for r in caplog.records if "does not know this node's site" in r.getMessage()]
    assert len(said) == 3 and "fix --label site" in said[0]
