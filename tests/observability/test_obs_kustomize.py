"""The Kubernetes install for GPU Operator clusters, as kustomize renders each overlay: every
object passes its API schema (built-ins strict, the Prometheus Operator's CRDs from their
published schemas), the agent sees every GPU without taking one, the SQLite collector is one
writer, the PostgreSQL replicas get their password as libpq wants it, every replica is scraped,
the optional team lookup is the only thing that gives the agent API rights, and the Grafana
ConfigMaps are the dashboards' JSON byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml

from wattledger.collector.settings import settings_from

from .kustomize import K8S, OVERLAYS, all_of, crd_schemas, one, render, validate
from .support import DASHBOARD_JSON, ROOT, load_rules

PLAIN = ("sqlite", "postgresql")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"ghcr.io/wattledger/wattledger:{VERSION}"  # what deploy/container/Dockerfile builds


def agent(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = one(objects, "DaemonSet", "wattledger-agent")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def collector(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    dep = one(objects, "Deployment", "wattledger-collector")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dep, pod, container


def flags(container: dict[str, Any], name: str) -> list[str]:
    return [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")]


Obj = dict[str, Any]


def volume_at(pod: Obj, container: Obj, path: str) -> tuple[Obj, Obj]:
    """(volumeMount, volume) of the mount that holds ``path`` in ``container``."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    found = [m for m in container.get("volumeMounts", [])
             if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert found, f"{path} is on no volume of {container['name']}"
    mount = max(found, key=lambda m: len(m["mountPath"]))
    return mount, volumes[mount["name"]]


# ---------------------------------------------------------------------------- schemas

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_passes_its_schema(overlay: str) -> None:
    objects = render(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"ServiceMonitor", "PrometheusRule", "DaemonSet", "Deployment"} <= kinds
    for obj in objects:
        try:
            validate(obj)
        except Exception as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {str(exc)[:1500]}")


def test_the_validation_refuses_what_the_api_server_would_drop_or_refuse() -> None:
    objects = render("sqlite")
    monitor = one(objects, "ServiceMonitor", "wattledger-agent")
    monitor["spec"]["endpoints"][0]["honorLabel"] = True  # honorLabels, misspelt
    rule = one(objects, "PrometheusRule")
    rule["spec"]["groups"][0]["interval"] = 30  # a duration is a string
    daemonset = one(objects, "DaemonSet")
    daemonset["spec"]["template"]["spec"]["runtimeClass"] = "nvidia"  # runtimeClassName
    named = one(objects, "ConfigMap", "wattledger-collector")
    named["metadata"]["label"] = {"a": "b"}
    for obj in (monitor, rule, daemonset, named):
        with pytest.raises(Exception, match=r"not allowed|is not of type|was unexpected"):
            validate(obj)


def test_the_crd_schemas_are_the_prometheus_operators() -> None:
    schemas = crd_schemas()
    assert set(schemas) == {("monitoring.coreos.com/v1", "ServiceMonitor"),
                            ("monitoring.coreos.com/v1", "PrometheusRule")}
    for schema in schemas.values():
        jsonschema.Draft7Validator.check_schema(schema)
        assert schema["properties"]["spec"]["additionalProperties"] is False


# ---------------------------------------------------------------------------- the agent

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_agent_runs_on_gpu_operator_nodes_and_takes_no_gpu(overlay: str) -> None:
    pod, c = agent(render(overlay))
    # the GPU Operator's labels and runtime class (the NVIDIA Container Toolkit's, made by it)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    # no extended resource: the device plugin would hand the agent a GPU the workloads then lack
    for part in ("requests", "limits"):
        assert set(c["resources"][part]) <= {"cpu", "memory"}, c["resources"][part]
    assert c["image"] == IMAGE
    # who holds each GPU: the kubernetes source on its socket's folder
    (sources,) = flags(c, "sources")
    assert "kubernetes" in sources.split(",") and "nvml" in sources.split(",")
    mount, volume = volume_at(pod, c, "/var/lib/kubelet/pod-resources/kubelet.sock")
    assert volume["hostPath"]["path"] == mount["mountPath"] == "/var/lib/kubelet/pod-resources"
    (spool,) = flags(c, "spool")
    mount, volume = volume_at(pod, c, spool)
    assert "hostPath" in volume and not mount.get("readOnly")
    # pushes go to the collector's Service, whatever the store behind it
    (url,) = flags(c, "collector")
    svc = one(render(overlay), "Service", "wattledger-collector")
    assert url == f"http://{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:{svc['spec']['ports'][0]['port']}"


@pytest.mark.parametrize("overlay", PLAIN)
def test_without_the_teams_component_the_agent_has_no_api_rights(overlay: str) -> None:
    objects = render(overlay)
    pod, c = agent(objects)
    assert pod["automountServiceAccountToken"] is False
    assert one(objects, "ServiceAccount", "wattledger-agent")["automountServiceAccountToken"] is False
    assert not flags(c, "kubernetes-team-label")
    assert not [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]


@pytest.mark.parametrize("overlay", PLAIN)
def test_the_teams_component_grants_reading_pods_and_namespaces_only(overlay: str) -> None:
    plain, teams = render(overlay), render(f"{overlay}+teams")
    pod, c = agent(teams)
    assert pod["automountServiceAccountToken"] is True
    account = one(teams, "ServiceAccount", "wattledger-agent")
    assert account["automountServiceAccountToken"] is True
    assert flags(c, "kubernetes-team-label") == ["team"]
    role = one(teams, "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get"]}]
    binding = one(teams, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    # and nothing else changes
    def key(o: dict[str, Any]) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]
    changed = {key(o) for o in teams} ^ {key(o) for o in plain}
    changed |= {key(o) for o in teams for p in plain if key(o) == key(p) and o != p}
    assert changed == {("ClusterRole", role["metadata"]["name"]),
                       ("ClusterRoleBinding", binding["metadata"]["name"]),
                       ("ServiceAccount", "wattledger-agent"), ("DaemonSet", "wattledger-agent")}


# ---------------------------------------------------------------------------- the collector

@pytest.mark.parametrize("overlay", PLAIN)
def test_the_collector_config_loads_and_leaves_the_store_to_the_overlay(overlay: str) -> None:
    objects = render(overlay)
    raw = yaml.safe_load(one(objects, "ConfigMap", "wattledger-collector")["data"]["collector.yaml"])
    assert "db" not in raw
    settings = settings_from(raw)
    assert settings.sites and settings.plan
    _, pod, c = collector(objects)
    assert c["image"] == IMAGE
    assert len(flags(c, "db")) == 1
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_sqlite_is_one_pod_on_its_volume() -> None:
    objects = render("sqlite")
    dep, pod, c = collector(objects)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    (db,) = flags(c, "db")
    assert db.startswith("sqlite:///")
    mount, volume = volume_at(pod, c, db.removeprefix("sqlite://"))
    claim = one(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and not mount.get("readOnly")
    assert not all_of(objects, "PodDisruptionBudget")


def test_postgresql_is_replicas_with_the_password_in_a_file_libpq_accepts() -> None:
    objects = render("postgresql")
    dep, pod, c = collector(objects)
    assert dep["spec"]["replicas"] >= 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not all_of(objects, "PersistentVolumeClaim")
    budget = one(objects, "PodDisruptionBudget")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (db,) = flags(c, "db")
    url = urlsplit(db)
    assert url.scheme == "postgresql" and url.username and url.password is None  # never in the URL
    query = parse_qs(url.query)
    assert query["sslmode"] == ["verify-full"]
    (ca,) = query["sslrootcert"]
    _, ca_volume = volume_at(pod, c, ca)
    assert ca_volume["secret"]["secretName"] == "wattledger-postgres"
    # PGPASSFILE: a file of the pod's own user, 0600 (libpq ignores one its group may read), in
    # a memory-backed folder, copied there from the Secret by an init container as that user
    env = {e["name"]: e for e in c["env"]}
    passfile = env["PGPASSFILE"]["value"]
    assert not [e for e in c["env"] if "PASSWORD" in e["name"] or "secretKeyRef" in e.get("valueFrom", {})]
    mount, volume = volume_at(pod, c, passfile)
    assert volume["emptyDir"]["medium"] == "Memory" and mount["readOnly"] is True
    (init,) = pod["initContainers"]
    assert init["image"] == c["image"]
    mode, source, target = init["command"][1:][1], init["command"][-2], init["command"][-1]
    assert init["command"][:2] == ["install", "-m"] and mode == "0600" and target == passfile
    _, secret = volume_at(pod, init, source)
    assert secret["secret"]["secretName"] == "wattledger-postgres"
    # the Secret's files are root:<fsGroup>, so the pod's user reads them through its group
    assert secret["secret"]["defaultMode"] & 0o040 and "fsGroup" in pod["securityContext"]
    assert "runAsUser" not in init.get("securityContext", {})  # the pod's user, who then owns the copy
    examples = {d["metadata"]["name"]: d
                for d in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())}
    assert set(examples["wattledger-postgres"]["stringData"]) == {"pgpass", "ca.crt"}
    line = examples["wattledger-postgres"]["stringData"]["pgpass"].strip()
    assert line.split(":")[:4] == [url.hostname, str(url.port), url.path.lstrip("/"), url.username]


@pytest.mark.parametrize("overlay", PLAIN)
def test_every_collector_pod_is_scraped_and_the_service_is_the_agents_balancer(overlay: str) -> None:
    objects = render(overlay)
    dep, _, c = collector(objects)
    svc = one(objects, "Service", "wattledger-collector")
    assert svc["spec"].get("clusterIP") != "None" and svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    monitor = one(objects, "ServiceMonitor", "wattledger-collector")
    # a ServiceMonitor scrapes each endpoint (pod) behind the Service, not the Service's address
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["port"] in {p["name"] for p in c["ports"]}


@pytest.mark.parametrize("overlay", PLAIN)
def test_the_prometheusrule_is_the_rules_file_and_selected_with_the_monitors(overlay: str) -> None:
    objects = render(overlay)
    rule = one(objects, "PrometheusRule")
    assert rule["spec"]["groups"] == load_rules()["groups"]
    # one Prometheus selects all three (kube-prometheus-stack: the `release` label)
    for monitor in all_of(objects, "ServiceMonitor"):
        assert monitor["metadata"]["labels"]["release"] == rule["metadata"]["labels"]["release"]


# ---------------------------------------------------------------------------- dashboards

@pytest.mark.parametrize("overlay", PLAIN)
def test_the_dashboards_are_configmaps_for_grafanas_sidecar(overlay: str) -> None:
    maps = [m for m in all_of(render(overlay), "ConfigMap")
            if m["metadata"]["labels"].get("grafana_dashboard")]
    files = sorted(DASHBOARD_JSON.glob("*.json"))
    assert len(maps) == len(files) >= 3
    by_file = {name: m for m in maps for name in m["data"]}
    for path in files:
        m = by_file[path.name]
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert m["metadata"]["annotations"]["grafana_folder"] == "wattledger"
        assert m["data"] == {path.name: path.read_text()}  # byte for byte
        json.loads(m["data"][path.name])
        # kubectl's client-side apply keeps the object in an annotation limited to 256 KiB
        assert len(json.dumps(m)) < 256 * 1024


def test_the_dashboard_configmaps_are_generated_from_the_json() -> None:
    r = subprocess.run([sys.executable, str(K8S / "render_dashboards.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
