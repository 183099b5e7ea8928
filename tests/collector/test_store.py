"""The store: schema versions, SQLite settings, and what survives a kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ledgerkit import device_totals, make_sites, open_ledger

from wattledger.collector.store.sqlite import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, sqlite_path

HERE = Path(__file__).parent


def test_a_new_store_is_migrated_and_durable(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/l.db")
    assert store.schema_version == SCHEMA_VERSION
    assert store.query("PRAGMA journal_mode") == [("wal",)]
    assert store.query("PRAGMA synchronous") == [(2,)]  # FULL
    tables = {name for (name,) in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"streams", "stream_seqs", "nodes", "devices", "usage", "quarters"} <= tables
    store.close()
    Store(f"sqlite:///{tmp_path}/l.db").close()  # opening again migrates nothing


def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / "l.db")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    newer, known = SCHEMA_VERSION + 1, SCHEMA_VERSION
    with pytest.raises(StoreError, match=rf"version {newer}; this collector knows up to {known} \(upgrade"):
        Store(f"sqlite:///{tmp_path}/l.db")


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://x/y", "unsupported db URL"),
    ("sqlite:///", "names no file"),
    ("sqlite:////no/such/folder/l.db", "folder /no/such/folder does not exist"),
])
def test_bad_urls_are_one_line(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Store(url)


def test_urls() -> None:
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    assert sqlite_path("sqlite:////var/lib/l.db") == "/var/lib/l.db"


def test_a_file_that_is_no_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "l.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open the ledger"):
        Store(f"sqlite:///{tmp_path}/l.db")


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from ledgerkit import make_batch, make_sites, open_ledger
    led = open_ledger(make_sites(), db=f"sqlite:///{sys.argv[1]}")
    seq = 0
    while True:
        seq += 1
        t = 1_764_000_000.0 + 10 * seq
        led.ingest([make_batch(seq=seq, ts=[t, t + 5], power_w=[100.0, 100.0],
                               energy_j=[1000.0 * seq, 1000.0 * seq + 500.0])])
        print(seq, flush=True)  # the agent's 200: only now is the batch acknowledged
""")


@pytest.mark.integration
def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(HERE)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = 0
    deadline = time.monotonic() + 60
    while acknowledged < 40 and time.monotonic() < deadline:
        acknowledged = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert acknowledged >= 40

    led = open_ledger(make_sites(), db=f"sqlite:///{db}")
    committed = led.streams["s1"].low
    assert committed >= acknowledged  # one more may have committed before its answer was printed
    # each batch: 500 J within it, and 500 J from the previous batch's last reading to its first
    assert device_totals(led)["energy_j"] == 1000.0 * committed - 500.0
    assert led.node_states["n1"].readings == 2 * committed
    led.close()


def test_schema_1_is_migrated_with_its_totals(tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / "l.db")
    for statement in MIGRATIONS[0]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO usage VALUES ('2026-11', 0, 'default', '', 3.6e6, 1.8e6, 0.1, 0.05, 600, 0)")
    raw.execute("INSERT INTO usage VALUES ('2026-12', 0, 'default', '', 3.6e6, 1.8e6, 0.2, 0.1, 600, 0)")
    raw.commit()
    raw.close()
    store = Store(f"sqlite:///{tmp_path}/l.db")
    assert store.schema_version == SCHEMA_VERSION >= 2
    ((site, cooling_j, it_cost, cooling_cost, carbon_g),) = store.query("SELECT * FROM site_totals")
    assert (site, cooling_j, carbon_g) == ("default", 3.6e6, 1200.0)
    assert (it_cost, cooling_cost) == pytest.approx((0.3, 0.15))
    store.close()
