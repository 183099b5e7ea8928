"""The Alertmanager example: amtool accepts it, routes every alert of the rules by its labels
(thermal pages, cost opens tickets), and a real Alertmanager holds back a stale node's alerts."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .support import ALERTMANAGER_CONFIG, Processes, alerts, binary, eventually, free_port


def test_amtool_accepts_the_config() -> None:
    r = subprocess.run([binary("amtool"), "check-config", str(ALERTMANAGER_CONFIG)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def _receiver(labels: dict[str, str]) -> str:
    args = [binary("amtool"), "config", "routes", "test", "--config.file", str(ALERTMANAGER_CONFIG)]
    r = subprocess.run(args + [f"{k}={v}" for k, v in labels.items()], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


def test_every_alert_routes_by_its_kind() -> None:
    for rule in alerts():
        labels = {"alertname": rule["alert"], **rule["labels"]}
        got = _receiver(labels)
        if labels["severity"] == "page":
            want = "pager"
        elif labels["category"] == "cost" or labels["severity"] == "ticket":
            want = "tickets"
        else:
            want = "chat"
        assert got == want, f"{rule['alert']} goes to {got}, not {want}"
    assert {a["labels"]["severity"] for a in alerts() if a["labels"]["category"] == "thermal"} == {"page"}
    assert {a["labels"]["severity"] for a in alerts() if a["labels"]["category"] == "cost"} == {"ticket"}


def test_node_stale_inhibits_the_nodes_other_alerts() -> None:
    rules = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["inhibit_rules"]
    stale = [r for r in rules if r.get("source_matchers") == ['alertname="NodeStale"']]
    assert stale and stale[0]["equal"] == ["node"]
    assert stale[0]["target_matchers"] == ['alertname!="NodeStale"']


class Webhook:
    """A tiny Alertmanager webhook receiver: remembers (path, alertname, labels) it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, str]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                for a in body.get("alerts", []):
                    if a.get("status") == "firing":
                        hook.received.append((self.path, a["labels"]["alertname"], a["labels"]))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self, path: str) -> set[str]:
        return {name for p, name, _ in self.received if p == path}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def local_config(webhook_url: str) -> dict[str, Any]:
    """The example config with its receivers pointed at the test's webhook and its waits cut
    to a second, routes and inhibitions unchanged."""
    cfg: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url + "/" + hook["url"].rsplit("/", 1)[1]
    for route in [cfg["route"], *cfg["route"].get("routes", [])]:
        for key in ("group_wait", "group_interval"):
            if key in route or route is cfg["route"]:
                route[key] = "1s"
    return cfg


def start_alertmanager(procs: Processes, tmp: Path, webhook_url: str) -> str:
    am = binary("alertmanager", "prometheus-alertmanager")
    (tmp / "am.yml").write_text(yaml.safe_dump(local_config(webhook_url)))
    port = free_port()
    procs.start("alertmanager", [am, f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'am-data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="])
    url = f"http://127.0.0.1:{port}"
    procs.wait_http("alertmanager", f"{url}/-/ready", 30)
    return url


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.mark.integration
def test_a_real_alertmanager_pages_tickets_and_inhibits(tmp_path: Path, webhook: Webhook) -> None:
    procs = Processes(tmp_path)
    try:
        url = start_alertmanager(procs, tmp_path, webhook.url)
        fired = [
            {"alertname": "NodeStale", "severity": "warning", "category": "health", "node": "gpu-02"},
            # held back: its node is stale
            {"alertname": "GpuThermalSlowdownNear", "severity": "page", "category": "thermal",
             "node": "gpu-02", "uuid": "GPU-b0"},
            # delivered: another node
            {"alertname": "GpuThermalSlowdownNear", "severity": "page", "category": "thermal",
             "node": "gpu-01", "uuid": "GPU-a0"},
            {"alertname": "EnergyCostOverPlan", "severity": "ticket", "category": "cost", "site": "dc1"},
        ]
        r = httpx.post(f"{url}/api/v2/alerts", json=[{"labels": labels} for labels in fired], timeout=10)
        assert r.status_code == 200, r.text
        eventually(lambda: webhook.names("/page") and webhook.names("/ticket") and webhook.names("/chat"),
                   30, "every receiver got its alerts")
        assert webhook.names("/page") == {"GpuThermalSlowdownNear"}
        assert webhook.names("/ticket") == {"EnergyCostOverPlan"}
        assert webhook.names("/chat") == {"NodeStale"}
        paged_nodes = {labels["node"] for p, _, labels in webhook.received if p == "/page"}
        assert paged_nodes == {"gpu-01"}, "the stale node's thermal alert was not held back"
    finally:
        procs.stop_all()
