"""DESIGN.md held against the real processes: one `wattledger collector` and one
`wattledger agent --simulate 2 --collector ...` on 127.0.0.1, started once for the module.

Checks the contract's metric names and labels on both /metrics pages, docs/metrics.md against
what is actually exposed, every HTTP answer of POST /v1/batches (with the JSON error shape and
an unchanged ledger), the read endpoints, and the agent's stop line against the collector's
count. (429 + Retry-After under a flood is held by
tests/collector/test_process_http.py::test_a_flood_of_agents_gets_429_then_everything_exactly_once.)"""

from __future__ import annotations

import gzip
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from contractkit import (
    ROOT,
    Family,
    Process,
    documented_metrics,
    free_port,
    scrape,
    start,
    value,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

AGENT_LABELS = {"site": "default", "cluster": "train-a", "rack": "r12"}
GPU_LABELS = {"node", "gpu", "uuid", "model"}
DEVICE_LABELS = {"site", "cluster", "node", "device"}

#: DESIGN.md "Metric names", agent: name -> labels beyond node, gpu, uuid, model (GPU series)
#: or beyond node (host and self-health series); None = a GPU series
AGENT_GPU = {
    "wattledger_gpu_power_watts": set(),
    "wattledger_gpu_energy_joules_total": set(),
    "wattledger_gpu_temperature_celsius": {"sensor"},
    "wattledger_gpu_slowdown_temperature_celsius": set(),
    "wattledger_gpu_shutdown_temperature_celsius": set(),
    "wattledger_gpu_utilization_ratio": set(),
    "wattledger_gpu_memory_used_bytes": set(),
    "wattledger_gpu_power_limit_watts": set(),
    "wattledger_gpu_clock_event_active": {"reason"},
}
AGENT_NODE = {
    "wattledger_host_cpu_utilization_ratio": set(),
    "wattledger_agent_source_up": {"source"},
    "wattledger_agent_readings_total": set(),
    "wattledger_agent_spool_batches": set(),
    "wattledger_agent_dropped_readings_total": set(),
    "wattledger_agent_shipped_batches_total": {"outcome"},
}
#: DESIGN.md "Metric names", collector: name -> its exact label names
COLLECTOR = {
    "wattledger_device_energy_joules_total": DEVICE_LABELS,
    "wattledger_cooling_energy_joules_total": {"site"},
    "wattledger_energy_cost_total": {"site", "currency", "part"},
    "wattledger_demand_charge": {"site", "currency"},
    "wattledger_carbon_grams_total": {"site"},
    "wattledger_it_power_watts": {"site", "cluster", "node"},
    "wattledger_device_temperature_celsius": DEVICE_LABELS | {"sensor"},
    "wattledger_device_slowdown_margin_celsius": DEVICE_LABELS,
    "wattledger_month_cost": {"site", "currency"},
    "wattledger_plan_cost": {"site", "currency"},
    "wattledger_plan_cost_to_date": {"site", "currency"},
    "wattledger_forecast_cost": {"site", "currency"},
    "wattledger_node_last_seen_timestamp_seconds": {"site", "cluster", "node"},
    "wattledger_unmeasured_seconds_total": DEVICE_LABELS,
    "wattledger_counter_resets_total": DEVICE_LABELS,
    "wattledger_ingest_batches_total": {"outcome", "replica"},  # per process: its replica's
    "wattledger_ingest_readings_total": {"node"},
}
#: words that would say a name is not in base units
NOT_BASE_UNITS = re.compile(
    r"_(kwh|kilowatt|milli|mj|kw|kj|percent|minutes|hours|ms|mib|gib|fahrenheit)(_|$)")


@dataclass
class Fleet:
    collector: Process
    agent: Process
    tmp: Path

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(self.collector.url + "/v1/batches", content=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("contract")
    month = datetime.now(UTC).strftime("%Y-%m")
    (tmp / "collector.yaml").write_text(json.dumps({
        "db": f"sqlite:///{tmp}/ledger.db",
        "tokens": {"node-a": "tok-a", "node-b": "tok-b"},
        "max_body_bytes": 1 << 20,
        "sites": {"default": {"timezone": "UTC", "currency": "USD", "pue": 1.5, "price_per_kwh": 0.12,
                              "demand_charge_per_kw": 10, "carbon_g_per_kwh": 400}},
        "plan": [{"site": "default", "month": month, "cost": 50000, "it_energy_kwh": 300000}],
    }))
    (tmp / "token").write_text("tok-a\n")
    cport, aport = free_port(), free_port()
    collector = start("collector", ["collector", "--config", str(tmp / "collector.yaml"),
                                    "--listen", f"127.0.0.1:{cport}"],
                      tmp / "collector.log", f"http://127.0.0.1:{cport}", "/readyz")
    labels = [arg for key, val in AGENT_LABELS.items() for arg in ("--label", f"{key}={val}")]
    try:
        agent = start("agent", ["agent", "--node", "node-a", "--listen", f"127.0.0.1:{aport}",
                                "--simulate", "2", "--interval", "0.5", "--batch-seconds", "1",
                                "--collector", collector.url, "--token-file", str(tmp / "token"),
                                "--spool", str(tmp / "spool"), *labels],
                      tmp / "agent.log", f"http://127.0.0.1:{aport}", "/metrics")
    except BaseException:
        collector.stop()
        raise
    fleet = Fleet(collector, agent, tmp)
    try:
        wait_for(lambda: value(scrape(collector.url), "wattledger_ingest_readings_total", node="node-a") >= 4,
                 "the agent's first batch in the ledger")
        yield fleet
    finally:
        agent.stop()
        collector.stop()


# ---------------------------------------------------------------------------- metric names


def test_agent_exposes_the_contract_metrics_with_their_labels(fleet: Fleet) -> None:
    families = scrape(fleet.agent.url)
    for name, extra in AGENT_GPU.items():
        assert name in families, f"agent does not expose {name}"
        assert families[name].labels == GPU_LABELS | set(AGENT_LABELS) | extra, name
    for name, extra in AGENT_NODE.items():
        assert name in families, f"agent does not expose {name}"
        assert families[name].labels == {"node"} | set(AGENT_LABELS) | extra, name
    for fam in families.values():
        assert "node" in fam.labels and set(AGENT_LABELS) <= fam.labels, f"{fam.name}: {sorted(fam.labels)}"
    sensors = {lab["sensor"] for _, lab, _ in families["wattledger_gpu_temperature_celsius"].samples}
    assert sensors == {"gpu", "memory"}
    sources = {lab["source"]: v for _, lab, v in families["wattledger_agent_source_up"].samples}
    assert sources == {"simulated": 1.0, "host": 1.0}


def test_collector_exposes_the_contract_metrics_with_their_labels(fleet: Fleet) -> None:
    wait_for(lambda: value(scrape(fleet.collector.url), "wattledger_energy_cost_total") > 0, "a cost")
    families = scrape(fleet.collector.url)
    for name, labels in COLLECTOR.items():
        assert name in families, f"collector does not expose {name}"
        assert families[name].labels == labels, f"{name}: {sorted(families[name].labels)}"
    parts = {lab["part"] for _, lab, _ in families["wattledger_energy_cost_total"].samples}
    assert parts == {"it", "cooling"}
    device = families["wattledger_device_energy_joules_total"].samples[0][1]
    assert (device["cluster"], device["node"]) == ("train-a", "node-a")
    assert device["device"].startswith("GPU-")
    assert value(families, "wattledger_plan_cost", site="default", currency="USD") == 50000


def test_names_follow_the_conventions(fleet: Fleet) -> None:
    for url in (fleet.agent.url, fleet.collector.url):
        for fam in scrape(url).values():
            assert (fam.type == "counter") == fam.name.endswith("_total"), f"{fam.name} is a {fam.type}"
            assert not NOT_BASE_UNITS.search(fam.name), f"{fam.name} is not in base units"


def test_docs_metrics_lists_exactly_what_is_exposed(fleet: Fleet) -> None:
    docs = documented_metrics(ROOT / "docs" / "metrics.md")
    assert set(docs) == {"agent", "collector"}
    for section, url in (("agent", fleet.agent.url), ("collector", fleet.collector.url)):
        exposed: dict[str, Family] = scrape(url)
        rows = docs[section]
        undocumented = sorted(set(exposed) - set(rows))
        assert not undocumented, f"{section} exposes metrics docs/metrics.md does not list: {undocumented}"
        missing = sorted(name for name, row in rows.items() if row.always and name not in exposed)
        assert not missing, f"docs/metrics.md says the {section} always exposes {missing}; it does not"
        for name, fam in exposed.items():
            row = rows[name]
            assert row.type == fam.type, f"docs/metrics.md: {name} is a {fam.type}, not a {row.type}"
            want = row.labels | (set(AGENT_LABELS) if row.agent_labels else set())
            assert fam.labels == want, f"docs/metrics.md: {name} has labels {sorted(fam.labels)}"


# ---------------------------------------------------------------------------- POST /v1/batches


def batch(*, stream: str | None = None, seq: int = 1, **readings: list[Any]) -> dict[str, Any]:
    now = time.time()
    cols: dict[str, list[Any]] = {"device": [0, 0], "ts": [now - 2, now - 1], "power_w": [500.0, 510.0],
                                  "energy_j": [1000.0, 1505.0], "temp_c": [60.0, 61.0], "util": [0.5, 0.6]}
    cols.update(readings)
    return {"node": "node-b", "stream": stream or str(uuid.uuid4()), "seq": seq,
            "labels": {"site": "default", "cluster": "infer-b"},
            "devices": [{"id": "GPU-contract-0", "kind": "gpu", "index": 0, "model": "NVIDIA H100 80GB HBM3",
                         "power_limit_w": 700.0, "slowdown_c": 87.0, "shutdown_c": 92.0}],
            "readings": cols}


JSON = {"Content-Type": "application/json", "Authorization": "Bearer tok-b"}


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def node_b(fleet: Fleet) -> tuple[float, float]:
    families = scrape(fleet.collector.url)
    return (value(families, "wattledger_ingest_readings_total", node="node-b"),
            value(families, "wattledger_device_energy_joules_total", node="node-b"))


REFUSALS: list[tuple[str, Any, dict[str, str], int]] = [
    ("broken JSON", b'{"node": ', JSON, 400),
    ("broken gzip", b"not gzip at all", {**JSON, "Content-Encoding": "gzip"}, 400),
    ("no token", batch(), {"Content-Type": "application/json"}, 401),
    ("unknown token", batch(), {**JSON, "Authorization": "Bearer nope"}, 401),
    ("not a bearer", batch(), {**JSON, "Authorization": "Basic dG9rLWI="}, 401),
    ("token of another node", batch(), {**JSON, "Authorization": "Bearer tok-a"}, 403),
    ("over the limit", b" " * (2 << 20), JSON, 413),
    ("over the limit after gzip", gzip.compress(b" " * (4 << 20)), {**JSON, "Content-Encoding": "gzip"}, 413),
    ("text/plain", batch(), {**JSON, "Content-Type": "text/plain"}, 415),
    ("unknown encoding", batch(), {**JSON, "Content-Encoding": "br"}, 415),
    ("unequal lengths", batch(power_w=[500.0]), JSON, 422),
    ("NaN", batch(power_w=[float("nan"), 1.0]), JSON, 422),
    ("infinity", batch(energy_j=[float("inf"), 1.0]), JSON, 422),
    ("negative power", batch(power_w=[-1.0, 1.0]), JSON, 422),
    ("negative energy", batch(energy_j=[-5.0, 1.0]), JSON, 422),
    ("util above 1", batch(util=[0.5, 1.01]), JSON, 422),
    ("unknown device index", batch(device=[0, 1]), JSON, 422),
    # timestamps made when the test runs (the list is made at collection, minutes earlier)
    ("more than 5 min ahead", lambda: batch(ts=[time.time() + 400, time.time() + 401]), JSON, 422),
    ("not in time order", lambda: batch(ts=[time.time() - 1, time.time() - 2]), JSON, 422),
]


@pytest.mark.parametrize(("case", "payload", "headers", "status"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refused_batch_gets_its_code_a_json_error_and_changes_nothing(
        fleet: Fleet, case: str, payload: Any, headers: dict[str, str], status: int) -> None:
    before = node_b(fleet)
    payload = payload() if callable(payload) else payload
    answer = fleet.post(payload if isinstance(payload, bytes) else body(payload), headers)
    assert answer.status_code == status, f"{case}: {answer.status_code} {answer.text}"
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()
    assert set(error) == {"error", "detail"} and isinstance(error["error"], str) and error["error"], error
    assert node_b(fleet) == before


def test_a_batch_is_counted_once_however_often_it_is_sent(fleet: Fleet) -> None:
    before = node_b(fleet)[0]
    good = batch()
    first = fleet.post(body(good), JSON)
    assert first.status_code == 200 and first.json() == {"accepted": 2, "duplicate": False}
    again = fleet.post(gzip.compress(body(good)), {**JSON, "Content-Encoding": "gzip"})
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicate": True}
    assert node_b(fleet)[0] == before + 2


# ---------------------------------------------------------------------------- read endpoints


def test_read_endpoints_answer(fleet: Fleet) -> None:
    url = fleet.collector.url
    for group in ("site", "cluster", "node", "device"):
        answer = httpx.get(f"{url}/v1/spend", params={"group_by": group}, timeout=10)
        assert answer.status_code == 200 and answer.json()["rows"], (group, answer.text)
        assert all(group in row for row in answer.json()["rows"]), group
    csv = httpx.get(f"{url}/v1/spend", params={"format": "csv", "group_by": "node"}, timeout=10)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    header, *rows = csv.text.strip().splitlines()
    assert "node" in header.split(",") and any("node-a" in row for row in rows)
    bad = httpx.get(f"{url}/v1/spend", params={"group_by": "rack"}, timeout=10)
    assert bad.status_code == 422 and set(bad.json()) == {"error", "detail"}
    nodes = httpx.get(f"{url}/v1/nodes", timeout=10).json()["nodes"]
    node_a = next(n for n in nodes if n["node"] == "node-a")
    assert len(node_a["devices"]) == 2 and node_a["last_seen"] > 0
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    assert "swagger" in httpx.get(f"{url}/docs", timeout=10).text.lower()
    assert "/v1/batches" in httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    missing = httpx.get(f"{url}/no/such/page", timeout=10)
    assert missing.status_code == 404 and set(missing.json()) == {"error", "detail"}


# ---------------------------------------------------------------------------- the agent's stop


def test_agent_stop_line_matches_the_ledger(fleet: Fleet) -> None:
    """Last in the module: SIGTERM ships what is spooled, logs one stop line and exits 0, and
    its readings= is exactly what the collector committed for the node (it never ran before)."""
    log = fleet.agent.log_text()
    assert "SIMULATED GPUs: 2 x h100-sxm" in log  # --simulate is said, never silent
    assert fleet.agent.stop(signal.SIGTERM) == 0
    lines = [line for line in fleet.agent.log_text().splitlines() if "stopped: " in line]
    assert len(lines) == 1, lines
    found = re.search(r"stopped: readings=(\d+) shipped=(\d+) spooled=(\d+)$", lines[0])
    assert found, lines[0]
    readings, shipped, spooled = map(int, found.groups())
    committed = value(scrape(fleet.collector.url), "wattledger_ingest_readings_total", node="node-a")
    assert readings > 0 and (readings, shipped, spooled) == (committed, readings, 0)


def test_collector_exposes_its_own_cpu_and_memory(fleet: Fleet) -> None:
    text = httpx.get(fleet.collector.url + "/metrics", timeout=10).text
    # per process: with its replica label (docs/metrics.md)
    assert "\nprocess_resident_memory_bytes{replica=" in text
    assert "\nprocess_cpu_seconds_total{replica=" in text
