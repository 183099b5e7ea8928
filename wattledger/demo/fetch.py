"""Fill a :class:`Snapshot` from the collector's and Prometheus' HTTP APIs.

``GET /v1/nodes`` gives each node's devices with their latest readings (power, temperature,
slowdown threshold, utilization); ``GET /v1/spend?group_by=site`` the month so far against
plan; Prometheus' ``/api/v1/alerts`` the alerts pending or firing. The parsing functions take
the decoded JSON, so they are tested on the real shapes without a server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from wattledger.demo.scenario import Scenario
from wattledger.demo.snapshot import AlertRow, GpuHeat, ServerRow, SiteRow, hottest_of

log = logging.getLogger(__name__)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def servers_from_nodes(nodes: Sequence[Mapping[str, Any]], scenario: Scenario) -> list[ServerRow]:
    """One row per server of the scenario (in its order), then any other node the collector knows."""
    by_node = {str(n.get("node")): n for n in nodes}
    planned = {s.node: s for s in scenario.servers}
    order = [s.node for s in scenario.servers] + sorted(set(by_node) - set(planned))
    rows = []
    for name in order:
        node = by_node.get(name, {})
        server = planned.get(name)
        gpus = [d for d in node.get("devices", []) if d.get("kind") == "gpu"]
        powers, utils, heats, seen = [], [], [], []
        for d in gpus:
            latest = d.get("latest") or {}
            if (p := _float(latest.get("power_w"))) is not None:
                powers.append(p)
            if (u := _float(latest.get("util"))) is not None:
                utils.append(u)
            if (ts := _float(latest.get("ts"))) is not None:
                seen.append(ts)
            if (t := _float(latest.get("temp_c"))) is not None:
                heats.append(GpuHeat(name, str(d.get("index", d.get("id"))), t, _float(d.get("slowdown_c"))))
        rows.append(ServerRow(
            node=name,
            cluster=node.get("cluster") or (server.cluster if server else None),
            workload=server.workload if server else None,
            gpus=len(gpus) or (server.gpus if server else 0),
            power_w=sum(powers) if powers else None,
            util=sum(utils) / len(utils) if utils else None,
            hottest=hottest_of(heats),
            last_seen=max(seen) if seen else None,
            stale=bool(node.get("stale", False)),
        ))
    return rows


def sites_from_spend(rows: Sequence[Mapping[str, Any]]) -> list[SiteRow]:
    out = []
    for row in rows:
        carbon_kg = _float(row.get("carbon_kg"))
        out.append(SiteRow(
            site=str(row.get("site")),
            currency=str(row.get("currency", "")),
            it_energy_j=_float(row.get("it_energy_j")) or 0.0,
            cost=_float(row.get("total_cost")) or 0.0,
            plan_cost=_float(row.get("plan_cost")),
            plan_to_date=_float(row.get("plan_to_date")),
            forecast=_float(row.get("forecast_cost")),
            demand_charge=_float(row.get("demand_charge")),
            energy_cost=_float(row.get("energy_cost")),
            plan_energy_to_date=_float(row.get("plan_energy_to_date")),
            plan_demand_charge=_float(row.get("plan_demand_charge")),
            carbon_g=None if carbon_kg is None else carbon_kg * 1000.0,
        ))
    return out


def alerts_from_prometheus(payload: Mapping[str, Any]) -> list[AlertRow]:
    """Pending and firing alerts of ``/api/v1/alerts``, firing first."""
    alerts = (payload.get("data") or {}).get("alerts") or []
    out = []
    for a in alerts:
        labels = a.get("labels") or {}
        annotations = a.get("annotations") or {}
        subject_parts = [labels[k] for k in ("site", "node") if labels.get(k)]
        if labels.get("gpu"):
            subject_parts.append(f"GPU {labels['gpu']}")
        out.append(AlertRow(
            name=str(labels.get("alertname", "?")),
            state=str(a.get("state", "?")),
            severity=labels.get("severity"),
            subject=" ".join(subject_parts) or labels.get("job", "-"),
            summary=annotations.get("summary"),
        ))
    out.sort(key=lambda r: (r.state != "firing", r.name, r.subject))
    return out


def unwrap(body: Any, key: str) -> list[dict[str, Any]]:
    """The rows of an answer: ``{"nodes": [...]}`` of /v1/nodes, ``{"rows": [...]}`` of /v1/spend."""
    rows = body.get(key) if isinstance(body, dict) else body
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


class Fetcher:
    """Reads the collector (and Prometheus) with short timeouts; a failure is a note, not an error."""

    def __init__(self, collector_url: str, prometheus_url: str | None, scenario: Scenario,
                 timeout: float = 3.0) -> None:
        self._collector = collector_url
        self._prometheus = prometheus_url
        self._scenario = scenario
        self._client = httpx.Client(timeout=timeout)

    def nodes(self) -> list[dict[str, Any]]:
        answer = self._client.get(f"{self._collector}/v1/nodes")
        answer.raise_for_status()
        return unwrap(answer.json(), "nodes")

    def collector_figures(self) -> tuple[list[ServerRow], list[SiteRow], str | None]:
        try:
            nodes = self.nodes()
            spend = self._client.get(f"{self._collector}/v1/spend", params={"group_by": "site"})
            spend.raise_for_status()
            body = spend.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("collector read failed: %s", exc)
            return servers_from_nodes([], self._scenario), [], f"collector not answering ({exc})"
        return servers_from_nodes(nodes, self._scenario), sites_from_spend(unwrap(body, "rows")), None

    def alerts(self) -> tuple[list[AlertRow] | None, str | None]:
        if self._prometheus is None:
            return None, None
        try:
            answer = self._client.get(f"{self._prometheus}/api/v1/alerts")
            answer.raise_for_status()
            return alerts_from_prometheus(answer.json()), None
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("prometheus read failed: %s", exc)
            return None, "Prometheus is starting (or not answering)"

    def close(self) -> None:
        self._client.close()
