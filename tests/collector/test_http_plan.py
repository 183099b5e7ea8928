"""POST /v1/plan: a scenario in, the plan out, on the collector's own sites and ledger — against
the ASGI app on a real ledger (SQLite and PostgreSQL), and against the real `wattledger
collector` process over loopback, fed by real pushes, with `wattledger plan --config` reading
the same ledger beside it. A bad scenario is a 422 naming the field; the body is bounded."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import ledgerkit
import pytest
import yaml
from httpkit import TOKENS, client, make_app, settings, start_collector
from ledgerkit import book_readings, line_readings, open_ledger

from tests.plan.plankit import IDLE_W, MODEL, SLOPE_W, utilization_at
from wattledger.collector.api.app import create_app
from wattledger.collector.api.planning import MAX_PLAN_BODY_BYTES

T0 = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
NOW = T0 + 3 * 86400
SITE = {"timezone": "UTC", "currency": "USD", "pue": 1.4, "price_per_kwh": 0.1, "carbon_g_per_kwh": 300}
JSON = {"Content-Type": "application/json"}
EXPANSION = {"name": "expansion", "servers": 10, "gpus_per_server": 8, "model": MODEL, "utilization": 0.5,
             "power": {"idle_w": 100, "max_w": 500, "node_overhead_w": 1000},
             "capex_per_server": 12000, "depreciation_months": 24}


def scenario(*fleet: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"site": "default", "start": "2026-10", "months": 3, "cloud_price_per_gpu_hour": 2.0,
            "fleet": list(fleet or ({"name": "existing", "measured": True}, EXPANSION)), **changes}


def readings(days: float = 2.0, every_s: float = 30.0, gpus: int = 4) -> list[dict[str, Any]]:
    return line_readings(int(days * 86400 / every_s), idle_w=IDLE_W, slope_w=SLOPE_W,
                         utilization=utilization_at, every_s=every_s, t0=T0, gpus=gpus)


def check_profile(doc: dict[str, Any], gpus: int = 4) -> None:
    [profile] = doc["profiles"]
    assert profile["model"] == MODEL and profile["usable"], profile["problems"]
    assert profile["line"]["idle_w"] == pytest.approx(IDLE_W, rel=1e-9)
    assert profile["line"]["slope_w"] == pytest.approx(SLOPE_W, rel=1e-9)
    assert profile["coverage"]["gpus"] == gpus
    existing = doc["fleet"][0]
    assert existing["measured"] and existing["gpus"] == gpus and existing["servers"] == 1
    assert [row["month"] for row in doc["months"]] == ["2026-10", "2026-11", "2026-12"]
    assert len(doc["proposed_plan"]) == 3


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("negative servers", scenario({**EXPANSION, "servers": -1}), "fleet[0].servers"),
    ("unknown site", scenario(site="mars"), "site"),
    ("a month before the ledger's start", scenario(start="2026-08"), "start"),
    ("a model the ledger never saw",
     scenario({**EXPANSION, "model": "AMD Instinct MI300X", "power": "measured"}), "fleet[0].model"),
    ("not a scenario", {"fleet": "all of them"}, "site"),
    ("a list, not a mapping", [1, 2], "body"),
]


@pytest.mark.anyio
async def test_a_scenario_in_the_plan_out(backend: ledgerkit.Backend) -> None:
    ledger = open_ledger(ledgerkit.make_sites({"default": SITE}), now=NOW)
    book_readings(ledger, readings(), 5 * 400, model=MODEL, gpus=4)
    app = create_app(settings(sites={"default": SITE}), ledger=ledger, clock=lambda: NOW)
    async with client(app) as c:
        r = await c.post("/v1/plan", content=json.dumps(scenario()), headers=JSON)
        assert r.status_code == 200, r.text
        check_profile(r.json())
        zipped = await c.post("/v1/plan", content=gzip.compress(json.dumps(scenario()).encode()),
                              headers={**JSON, "Content-Encoding": "gzip"})
        assert zipped.status_code == 200 and zipped.json() == r.json()
        for _, raw, field in BAD:
            bad = await c.post("/v1/plan", content=json.dumps(raw), headers=JSON)
            assert bad.status_code == 422, (field, bad.text)
            doc = bad.json()
            assert set(doc) == {"error", "detail"} and doc["error"] == "invalid scenario"
            assert doc["detail"]["field"] == field and doc["detail"]["reason"], doc
            assert doc["detail"]["issues"][0] == {"field": field, "reason": doc["detail"]["reason"]}


@pytest.mark.parametrize(("content", "headers", "status"), [
    (b'{"site": "default", ', JSON, 400),
    (b"", JSON, 400),
    (b"site: default\n", {"Content-Type": "application/yaml"}, 415),
    (b"{}", {**JSON, "Content-Encoding": "br"}, 415),
    (b"not gzip", {**JSON, "Content-Encoding": "gzip"}, 400),
    (b'{"pad": "' + b"x" * MAX_PLAN_BODY_BYTES + b'"}', JSON, 413),
    (gzip.compress(b'{"pad": "' + b"x" * MAX_PLAN_BODY_BYTES + b'"}'), {**JSON, "Content-Encoding": "gzip"},
     413),
], ids=["broken JSON", "empty", "YAML", "unknown encoding", "broken gzip", "over the limit", "a gzip bomb"])
@pytest.mark.anyio
async def test_a_body_that_is_not_a_scenario_is_a_json_4xx(content: bytes, headers: dict[str, str],
                                                           status: int) -> None:
    app, _ = make_app()
    async with client(app) as c:
        r = await c.post("/v1/plan", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "detail"}


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_collector_process_plans_from_what_it_was_pushed(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    cfg = {"db": f"sqlite:///{db}", "tokens": TOKENS, "sites": {"default": SITE}}
    collector = start_collector(tmp_path, cfg)
    try:
        node = next(iter(TOKENS))
        auth = {"Authorization": f"Bearer {TOKENS[node]}", **JSON}
        rows = readings(days=1.5, every_s=60.0, gpus=2)
        per_batch = 3 * 240
        with httpx.Client(base_url=collector.url, timeout=30) as http:
            for seq, start in enumerate(range(0, len(rows), per_batch), start=1):
                chunk = rows[start:start + per_batch]
                doc = {"node": node, "stream": "plan-s1", "seq": seq, "labels": {"site": "default"},
                       "devices": ledgerkit.gpu_devices(2, MODEL),
                       "readings": {"device": [r["device"] for r in chunk], "ts": [r["ts"] for r in chunk],
                                    "power_w": [r["power_w"] for r in chunk],
                                    "util": [r["util"] for r in chunk]}}
                pushed = http.post("/v1/batches", content=json.dumps(doc), headers=auth)
                assert pushed.status_code == 200, pushed.text
            answer = http.post("/v1/plan", content=json.dumps(scenario()), headers=JSON)
            assert answer.status_code == 200, answer.text
            check_profile(answer.json(), gpus=2)
            negative = scenario({**EXPANSION, "servers": -3})
            bad = http.post("/v1/plan", content=json.dumps(negative), headers=JSON)
            assert bad.status_code == 422 and bad.json()["detail"]["field"] == "fleet[0].servers"
        # the command line, on the same ledger while the collector writes it: the same plan
        (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(scenario()))
        (tmp_path / "plan.yaml").write_text(yaml.safe_dump(cfg))
        cli = subprocess.run([str(Path(sys.executable).parent / "wattledger"), "plan", "--scenario",
                              str(tmp_path / "scenario.yaml"), "--config", str(tmp_path / "plan.yaml")],
                             capture_output=True, text=True, timeout=120)
        assert (cli.returncode, cli.stderr) == (0, "")
        from_cli = json.loads(cli.stdout)
        from_http = answer.json()
        assert from_cli["months"] == from_http["months"] and from_cli["profiles"] == from_http["profiles"]
    finally:
        assert collector.stop() == 0
