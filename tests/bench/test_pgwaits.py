"""bench/pgwaits.py names the relation PostgreSQL's lock waiters wait on, on a real server.

One transaction holds a row of each of two tables; three sessions then wait for it in the
three ways the collector's transactions do: an upsert (``INSERT ... ON CONFLICT DO UPDATE``)
of the held row, which waits for the holder's transaction id in the unique check with no tuple
lock (its statement names the table); an ``UPDATE``, which takes the row's tuple lock first
and waits for the transaction id (the tuple lock names the table); and a second ``UPDATE`` of
the same row, which queues on that tuple lock (``Lock:tuple``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from pgwaits import WaitSampler, lock_key, shares_line, written_table

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_written_table_of_the_collectors_statements() -> None:
    upsert = ("INSERT INTO site_minutes (site, minute) SELECT * FROM unnest(%s) AS r(site, minute) "
              "ON CONFLICT (site, minute) DO UPDATE SET it_j = site_minutes.it_j + excluded.it_j")
    assert written_table(upsert) == "site_minutes"
    update = "UPDATE site_minutes SET cooling_j = u.cooling_j FROM unnest(%s) AS u"
    assert written_table(update) == "site_minutes"
    assert written_table('DELETE FROM "stream_seqs" WHERE stream = %s') == "stream_seqs"
    locking = "SELECT d.node FROM devices d JOIN unnest(%s) AS k(node) ON d.node = k.node FOR UPDATE OF d"
    assert written_table(locking) == "devices"
    assert written_table("SELECT 1") is None
    assert lock_key("Lock:tuple", "usage", None) == ("Lock:tuple on usage", "tuple lock")
    assert lock_key("Lock:transactionid", None, upsert) == ("Lock:transactionid on site_minutes", "statement")
    assert lock_key("Lock:transactionid", None, None) == ("Lock:transactionid on ?", "unknown")


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "the sessions never came to wait"
        time.sleep(0.02)


def test_lock_waits_by_relation_on_a_real_server(pg_server: Any) -> None:
    import psycopg

    url = pg_server.new_database(prefix="pgwaits")
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("CREATE TABLE minutes (k int PRIMARY KEY, v int)")
        setup.execute("CREATE TABLE totals (k int PRIMARY KEY, v int)")
        setup.execute("INSERT INTO minutes VALUES (1, 0)")
        setup.execute("INSERT INTO totals VALUES (1, 0)")
    holder = psycopg.connect(url)
    holder.execute("UPDATE minutes SET v = v + 1 WHERE k = 1")
    holder.execute("UPDATE totals SET v = v + 1 WHERE k = 1")
    waiters = ["INSERT INTO minutes VALUES (1, 1) ON CONFLICT (k) DO UPDATE SET v = minutes.v + 1",
               "UPDATE totals SET v = v + 1 WHERE k = 1"]
    waiters.append(waiters[1])  # the second UPDATE of the row: behind the first one's tuple lock

    def wait(statement: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    threads = []
    with psycopg.connect(url, autocommit=True) as watch:
        for statement in waiters:  # one at a time, so that the two UPDATEs queue in this order
            threads.append(threading.Thread(target=wait, args=(statement,), daemon=True))
            threads[-1].start()
            wait_until(lambda: watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'").fetchone() == (len(threads),))
        sampler = WaitSampler(url)
        time.sleep(0.3)
        events, locks = sampler.stop()
    holder.commit()
    holder.close()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert set(locks) == {"Lock:transactionid on minutes", "Lock:transactionid on totals",
                          "Lock:tuple on totals"}
    # every busy session is one of the three waiters: a third of the samples each
    for key in locks:
        assert locks[key] == pytest.approx(1 / 3, abs=0.05)
    assert events["Lock:transactionid"] == pytest.approx(2 / 3, abs=0.05)
    assert set(sampler.found_by) == {"statement", "tuple lock"}
    assert sampler.found_by["tuple lock"] == pytest.approx(2 * sampler.found_by["statement"], rel=0.1)
    line = shares_line({k: [v] for k, v in locks.items()}, 1)
    assert line.count("Lock:") == 3 and line.endswith("%") and "Lock:tuple on totals 3" in line
