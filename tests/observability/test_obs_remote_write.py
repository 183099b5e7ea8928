"""End to end with a real Prometheus: it scrapes a stand-in dcgm-exporter (its real metric names,
labels and units, served on loopback) every second and remote-writes the DCGM series, as
docs/remote-write.md configures it, to a real collector. Then the exporter fails, Prometheus
writes its stale markers, and the ledger's energy of each GPU equals the rise of its energy
counter in Prometheus' own stored samples (asked of Prometheus' API): every sample arrived,
none counted twice, each interval booked from the counter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .dcgm_standin import DcgmStandIn, Gpu
from .support import WATTLEDGER, Processes, binary, eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
BLOCK = ROOT / "deploy" / "prometheus" / "remote-write.yml"
OPERATOR_PATCH = ROOT / "deploy" / "kubernetes" / "remote-write" / "prometheus-remotewrite.yaml"
TOKEN = "prometheus-remote-write-token-0123456789"
UUIDS = ("GPU-5d0c3c1e-8a3b-4c2d-9e1f-000000000000", "GPU-5d0c3c1e-8a3b-4c2d-9e1f-000000000001")


def shipped_block() -> dict[str, Any]:
    (block,) = yaml.safe_load(BLOCK.read_text())["remote_write"]
    assert isinstance(block, dict)
    return block


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def test_the_operators_patch_is_the_shipped_block() -> None:
    """The Prometheus Operator's remoteWrite entry says what prometheus.yml's block says."""
    block = shipped_block()
    (entry,) = yaml.safe_load(OPERATOR_PATCH.read_text())["spec"]["remoteWrite"]
    assert entry["url"].endswith("/api/v1/write") and entry["name"] == block["name"]
    assert entry["authorization"]["type"] == block["authorization"]["type"] == "Bearer"
    assert entry["writeRelabelConfigs"] == [{camel(k): v for k, v in rule.items()}
                                            for rule in block["write_relabel_configs"]]
    assert entry["queueConfig"] == {camel(k): v for k, v in block["queue_config"].items()}
    assert block["queue_config"]["max_shards"] == 1


def test_the_shipped_block_keeps_the_series_the_ledger_takes() -> None:
    import re

    from wattledger.collector.ingest.remotemap import READING_SERIES

    (rule,) = shipped_block()["write_relabel_configs"]
    keep = re.compile(f"^(?:{rule['regex']})$")  # Prometheus anchors relabel regexes
    dcgm = [name for name in READING_SERIES if name.startswith("DCGM_")]
    assert len(dcgm) == 5 and all(keep.match(name) for name in dcgm)
    assert not keep.match("DCGM_FI_DEV_SM_CLOCK") and not keep.match("up")


def families(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def samples(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
            **labels: str) -> float:
    return sum(v for (n, ls), v in metrics.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


@contextlib.contextmanager
def rig(tmp_path: Path, scrape_configs: list[dict[str, Any]],
        keep_also: str = "") -> Iterator[tuple[str, str]]:
    """A collector taking remote-write from a Prometheus that scrapes ``scrape_configs`` and
    writes with the shipped block (its URL, token file and deadlines the test's; ``keep_also``
    added to its regex); yields (collector URL, Prometheus URL)."""
    prometheus = binary("prometheus")
    procs = Processes(tmp_path)
    cport, pport = free_port(), free_port()
    collector = f"http://127.0.0.1:{cport}"
    config = {"listen": f"127.0.0.1:{cport}", "db": f"sqlite:///{tmp_path / 'ledger.db'}",
              "refresh_interval_seconds": 1, "metrics_refresh_seconds": 1,
              "sites": {"default": {"timezone": "UTC", "price_per_kwh": 0.12, "pue": 1.4}},
              "remote_write_tokens": {"gpu-prometheus": {"token": TOKEN, "site": "default",
                                                         "cluster": "k8s-a"}}}
    (tmp_path / "collector.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "remote-write.token").write_text(TOKEN + "\n")
    try:
        procs.start("collector", [WATTLEDGER, "collector", "--config", str(tmp_path / "collector.yaml")])
        procs.wait_http("collector", f"{collector}/readyz")
        block = shipped_block()
        token_file = str(tmp_path / "remote-write.token")
        block.update(url=f"{collector}/api/v1/write",
                     authorization={"type": "Bearer", "credentials_file": token_file})
        block["queue_config"].update(batch_send_deadline="1s", min_backoff="100ms", max_backoff="1s")
        if keep_also:
            block["write_relabel_configs"][0]["regex"] += f"|{keep_also}"
        prom_config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                       "scrape_configs": scrape_configs, "remote_write": [block]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        procs.start("prometheus", [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{pport}"])
        prom = f"http://127.0.0.1:{pport}"
        procs.wait_http("prometheus", f"{prom}/-/ready")
        yield collector, prom
    finally:
        procs.stop_all()


def stored_rise(prom: str, family: str, by: str, per_joule: float) -> dict[str, float]:
    """Each series' counter rise in Prometheus' own stored samples (raw, through its API), in J."""
    stored = httpx.get(f"{prom}/api/v1/query", timeout=10, params={"query": f"{family}[10m]"}).json()
    assert stored["status"] == "success"
    rise = {}
    for series in stored["data"]["result"]:
        values = [float(v) for _, v in series["values"]]
        assert values == sorted(values) and len(values) >= 8
        rise[series["metric"][by]] = (values[-1] - values[0]) / per_joule
    return rise


def wait_for_the_stale_markers(collector: str, at_least: int) -> None:
    """Prometheus sends a target's stale markers after every sample scraped before them (one
    ordered shard): once they have arrived, everything has."""
    eventually(lambda: samples(families(collector), "wattledger_remote_write_samples_total",
                               outcome="stale") >= at_least, 60, "the stale markers arrived")


@pytest.mark.integration
def test_prometheus_remote_write_books_the_counters_rise(tmp_path: Path) -> None:
    gpus = [Gpu(0, UUIDS[0], 420.0, 180.0, {"namespace": "nlp", "pod": "llama-ft-7", "container": "trainer"}),
            Gpu(1, UUIDS[1], 95.0, 20.0)]
    exporter = DcgmStandIn("gpu-node-07", gpus)
    with exporter.serving() as target:
        jobs = [{"job_name": "dcgm-exporter", "static_configs": [{"targets": [target]}]}]
        with rig(tmp_path, jobs) as (collector, prom):
            eventually(lambda: samples(families(collector), "wattledger_remote_write_samples_total",
                                       outcome="accepted") >= 5 * 2 * 8, 60,
                       "the collector got eight scrapes' samples from Prometheus")
            exporter.failing = True  # scrapes fail now: Prometheus marks all ten series stale
            wait_for_the_stale_markers(collector, 10)
            rise = stored_rise(prom, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "UUID", 1000.0)  # mJ
            metrics = families(collector)
            (node,) = httpx.get(f"{collector}/v1/nodes", timeout=10).json()["nodes"]
    assert set(rise) == set(UUIDS)
    for uuid in UUIDS:
        booked = samples(metrics, "wattledger_device_energy_joules_total", device=uuid)
        assert booked == pytest.approx(rise[uuid], rel=1e-9, abs=1e-6), uuid
    assert rise[UUIDS[0]] > rise[UUIDS[1]] > 0
    assert samples(metrics, "wattledger_unmeasured_seconds_total") == 0
    for outcome in ("late", "agent", "nan", "invalid", "duplicate", "ignored"):  # the relabel kept the five
        assert samples(metrics, "wattledger_remote_write_samples_total", outcome=outcome) == 0, outcome
    assert samples(metrics, "wattledger_remote_write_requests_total", prometheus="gpu-prometheus",
                   outcome="accepted") >= 1
    assert (node["node"], node["site"], node["cluster"]) == ("gpu-node-07", "default", "k8s-a")
    assert sorted(d["id"] for d in node["devices"]) == sorted(UUIDS)


#: the agent's GPU families the ledger takes, as a regex
AGENT_FAMILIES = "|".join(f"wattledger_gpu_{name}" for name in (
    "energy_joules_total", "power_watts", "temperature_celsius", "utilization_ratio", "memory_used_bytes",
    "power_limit_watts", "slowdown_temperature_celsius", "shutdown_temperature_celsius"))


@pytest.mark.integration
def test_an_agent_that_pushes_nowhere_is_booked_through_prometheus(tmp_path: Path) -> None:
    """A real agent (simulated GPUs, exporter only) scraped by a real Prometheus that
    remote-writes its GPU families: the ledger books its energy counter's rise, with the
    agent's node, model and power limit."""
    procs = Processes(tmp_path)
    aport = free_port()
    procs.start("agent", [WATTLEDGER, "agent", "--simulate", "2", "--node", "sim-01", "--interval", "0.5",
                          "--listen", f"127.0.0.1:{aport}", "--spool", str(tmp_path / "spool")])
    try:
        procs.wait_http("agent", f"http://127.0.0.1:{aport}/metrics")
        jobs = [{"job_name": "wattledger-agent", "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{aport}"]}]}]
        with rig(tmp_path, jobs, keep_also=AGENT_FAMILIES) as (collector, prom):
            eventually(lambda: samples(families(collector), "wattledger_remote_write_samples_total",
                                       outcome="accepted") >= 2 * 8 * 8, 60,
                       "the collector got eight scrapes' samples from Prometheus")
            procs.stop_all()  # the agent gone: Prometheus marks its series stale
            wait_for_the_stale_markers(collector, 2)
            rise = stored_rise(prom, "wattledger_gpu_energy_joules_total", "uuid", 1.0)
            metrics = families(collector)
            (node,) = httpx.get(f"{collector}/v1/nodes", timeout=10).json()["nodes"]
    finally:
        procs.stop_all()
    assert len(rise) == 2 and all(r > 0 for r in rise.values())
    for uuid, joules in rise.items():
        booked = samples(metrics, "wattledger_device_energy_joules_total", device=uuid)
        assert booked == pytest.approx(joules, rel=1e-9, abs=1e-6), uuid
    assert node["node"] == "sim-01" and len(node["devices"]) == 2
    for outcome in ("late", "agent", "invalid", "duplicate"):
        assert samples(metrics, "wattledger_remote_write_samples_total", outcome=outcome) == 0, outcome
    limits = {k: v for k, v in metrics.items() if k[0] == "wattledger_device_power_limit_watts"}
    assert len(limits) == 2 and all(v > 0 for v in limits.values())  # the agent's metadata families
