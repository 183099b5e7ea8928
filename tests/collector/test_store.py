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
from ledgerkit import (
    Backend,
    at,
    committed_low,
    device_totals,
    make_batch,
    make_sites,
    node_state,
    open_ledger,
)
from prometheus_client.parser import text_string_to_metric_families

from wattledger.collector.service import Ledger
from wattledger.collector.store import redacted
from wattledger.collector.store.base import StoreError
from wattledger.collector.store.devicetable import DEVICE_COLUMNS
from wattledger.collector.store.sqlite import MIGRATIONS, SCHEMA_VERSION, sqlite_path
from wattledger.collector.store.sqlite import SqliteStore as Store

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
    ("mysql://x/y", "unsupported db URL"),
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
    committed = committed_low(led, "s1")
    assert committed >= acknowledged  # one more may have committed before its answer was printed
    # each batch: 500 J within it, and 500 J from the previous batch's last reading to its first
    assert device_totals(led)["energy_j"] == 1000.0 * committed - 500.0
    assert node_state(led, "n1").readings == 2 * committed
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
    ((site, cooling_j, it_cost, cooling_cost, carbon_g),) = store.query(
        "SELECT site, cooling_j, it_cost, cooling_cost, carbon_g FROM site_totals")
    assert (site, cooling_j, carbon_g) == ("default", 3.6e6, 1200.0)
    assert (it_cost, cooling_cost) == pytest.approx((0.3, 0.15))
    # schema 10: what /metrics shows starts at what was booked
    assert store.query("SELECT shown_cooling_j, shown_it_cost, shown_carbon_g FROM site_totals") == [
        (cooling_j, it_cost, carbon_g)]
    store.close()


#: a ledger file made by the release before store schema 5 (wattledger at d74eeb5, schema 4): two
#: nodes of two GPUs over a month boundary in Berlin, with a tariff band and clock events; the
#: figures that release gave for it are in the .json beside it
SCHEMA4 = HERE / "data" / "ledger-schema4.db"


def figures(led: Ledger) -> dict[str, object]:
    text = led.collector().render().decode()  # type: ignore[attr-defined]
    months = ("2026-11", "2026-12")
    return {"spend": {m: led.spend(site="default", month=m, group_by="device") for m in months},
            "nodes": led.nodes(),
            "metrics": {f"{s.name}{sorted(s.labels.items())}": s.value
                        for fam in text_string_to_metric_families(text) for s in fam.samples
                        if not s.name.startswith(("wattledger_plan", "wattledger_forecast"))}}


@pytest.mark.unattributed  # its usage was booked before chargeback: no team holds it
def test_a_ledger_of_the_last_release_is_upgraded_and_reads_the_same(tmp_path: Path) -> None:
    import json
    import shutil

    want = json.loads((HERE / "data" / "ledger-schema4.json").read_text())
    shutil.copy(SCHEMA4, tmp_path / "l.db")
    sites = make_sites({"default": {"timezone": "Europe/Berlin", "currency": "EUR", "pue": 1.4,
                                    "demand_charge_per_kw": 9.0, "carbon_g_per_kwh": 380,
                                    "tariff": [{"price_per_kwh": 0.3, "from": "08:00", "to": "20:00"},
                                               {"price_per_kwh": 0.15}]}})
    led = open_ledger(sites, db=f"sqlite:///{tmp_path}/l.db", now=want["now"])
    assert led.store.schema_version == SCHEMA_VERSION  # 7, with the plan statistics (plan_days) since 6
    assert led.store.plan_rows("default") == []  # which start empty: kept from the upgrade on
    got = figures(led)
    for node in got["nodes"]:  # type: ignore[attr-defined]
        # new in schema 5: the two-agents figures, at zero for an upgraded ledger
        assert node.pop("duplicate_agent") is False and node.pop("duplicate_agent_batches_total") == 0
    new = {k for k in got["metrics"] if k.startswith(("wattledger_node_duplicate_agent",  # type: ignore[union-attr]
                                                      "wattledger_ingest_conflicts",
                                                      # new in schema 7 (chargeback): nothing booked yet
                                                      "wattledger_idle_energy_joules"))}
    assert new and all(got["metrics"][k] == 0 for k in new)  # type: ignore[index]
    for k in new:
        del got["metrics"][k]  # type: ignore[attr-defined]
    # new in schema 9: the whole node and cooling. A node's IT energy is its devices' (no node
    # meter, no overhead ratio), its overhead and disagreement 0, the bill's parts add up
    metrics: dict[str, float] = got["metrics"]  # type: ignore[assignment]
    for k in [k for k in metrics if k.startswith("wattledger_node_energy_joules_total")]:
        node = k.split("('node', '")[1].split("'")[0]
        devices = [v for d, v in metrics.items() if d.startswith("wattledger_device_energy_joules_total")
                   and f"('node', '{node}')" in d]
        assert metrics.pop(k) == pytest.approx(sum(devices))
    whole = {k for k in metrics if k.startswith(("wattledger_node_overhead",
                                                 "wattledger_meter_disagreement",
                                                 "wattledger_cooling_fallback", "wattledger_site_pue",
                                                 "wattledger_cooling_power", "wattledger_outdoor",
                                                 "wattledger_other_facility"))}
    assert whole and all(metrics[k] == 0 for k in whole if "pue" not in k and "cooling_power" not in k)
    for k in whole:
        del metrics[k]
    # new since: this month's bill by part (a gauge of what the ledger holds): it adds up to the
    # month's energy cost
    bill = {k: metrics.pop(k) for k in [k for k in metrics if k.startswith("wattledger_month_energy_cost")]}
    this_month = led.spend(site="default", month=None, group_by="site")[0]
    assert bill and sum(bill.values()) == pytest.approx(this_month["energy_cost"], rel=1e-9)
    for rows in got["spend"].values():  # type: ignore[attr-defined]
        for row in rows:
            parts = {k: row.pop(k) for k in (
                "gpu_energy_kwh", "gpu_cost", "cpu_energy_kwh", "cpu_cost", "overhead_energy_kwh",
                "overhead_cost", "overhead_estimated_kwh", "other_energy_kwh", "other_cost",
                "meter_disagreement_seconds")}
            assert parts["gpu_energy_kwh"] + parts["cpu_energy_kwh"] == pytest.approx(row["it_energy_kwh"])
            assert parts["overhead_energy_kwh"] == parts["other_energy_kwh"] == 0
    assert got == {k: want[k] for k in ("spend", "nodes", "metrics")}
    # and it goes on: the next batch of node-0 continues each device's interval, once
    t = at("2026-12-01 00:02", "Europe/Berlin")
    before = device_totals(led, 0)["energy_j"]
    gpus = [{"id": f"GPU-{g}", "kind": "gpu", "index": g, "power_limit_w": 700.0} for g in range(2)]
    resent = make_batch(node="node-0", stream="stream-0", seq=6, devices=gpus, ts=[t], power_w=[300.0])
    assert led.ingest([resent])[0].duplicate
    led.ingest([make_batch(node="node-0", stream="stream-0", seq=7, devices=gpus, device=[0, 1], ts=[t, t],
                           power_w=[300.0, 350.0], energy_j=[1e6 + 720 * 300, 1e6 + 720 * 350])])
    assert device_totals(led, 0)["energy_j"] == pytest.approx(before + (1e6 + 720 * 300) - (1e6 + 710 * 300))
    led.close()


def test_urls_in_messages_hide_their_password() -> None:
    assert redacted("postgresql://wl:s3cret@db:5432/ledger") == "postgresql://wl:***@db:5432/ledger"
    assert redacted("postgresql://wl@db/ledger") == "postgresql://wl@db/ledger"
    assert redacted("sqlite:////var/lib/l.db") == "sqlite:////var/lib/l.db"


def test_the_devices_table_holds_every_column_the_store_writes(backend: Backend) -> None:
    """DEVICE_COLUMNS (the wire table's latest columns among them) are the ``devices`` table's
    columns on both backends: a column added to contract.READING_COLUMNS as ``latest`` needs a
    migration of each."""
    store = open_ledger().store
    if backend.name == "sqlite":
        names = {row[1] for row in store.query("PRAGMA table_info(devices)")}
    else:
        names = {row[0] for row in store.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'devices'")}
    assert set(DEVICE_COLUMNS) <= names
