"""Deployment files: they parse, the Kubernetes objects pass their API schemas, the custom
resources have the shape the Prometheus Operator reads, the PrometheusRule matches the rules
file, the systemd units are hardened and pass systemd-analyze, the compose file hangs together."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from wattledger.collector.settings import settings_from

from .support import ROOT, WATTLEDGER, binary, load_rules

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
CRDS = {"ServiceMonitor", "PrometheusRule"}
K8S_VERSION = "1.30.0"


def k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                out.append((path.name, doc))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for _, o in k8s_objects() if o["kind"] == kind]


def test_every_yaml_file_parses() -> None:
    files = [p for p in DEPLOY.rglob("*.y*ml")] + list((ROOT / "dashboards" / "provisioning").rglob("*.yml"))
    assert len(files) > 10
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


@pytest.mark.parametrize("item", [o for o in k8s_objects() if o[1]["kind"] not in CRDS],
                         ids=lambda o: f"{o[1]['kind']}/{o[1]['metadata']['name']}")
def test_kubernetes_objects_pass_the_api_schema(item: tuple[str, dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    _, obj = item
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert set(kustomization["resources"]) == manifests
    # the example Secrets are what the workloads mount, by name
    secrets = {s["metadata"]["name"] for s in by_kind("Secret")}
    mounted = {v["secret"]["secretName"] for kind in ("DaemonSet", "Deployment") for w in by_kind(kind)
               for v in w["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    assert mounted == secrets


def test_agent_daemonset_runs_on_gpu_nodes_as_the_node() -> None:
    (ds,) = by_kind("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] and pod["tolerations"]
    (c,) = pod["containers"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "--node=$(NODE_NAME)" in c["args"]
    assert "--token-file=/etc/wattledger/tokens/$(NODE_NAME)" in c["args"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {s["metadata"]["name"] for s in by_kind("Secret") if "agent" in s["metadata"]["name"]}
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]


def test_collector_deployment_keeps_its_ledger_and_config() -> None:
    (dep,) = by_kind("Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {p["metadata"]["name"] for p in by_kind("PersistentVolumeClaim")}
    (cm,) = by_kind("ConfigMap")
    settings = settings_from(yaml.safe_load(cm["data"]["collector.yaml"]))
    assert settings.plan and settings.sites
    (svc,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "wattledger-collector"]
    assert svc["spec"]["ports"][0]["port"] == 9861


def test_example_collector_config_loads_with_the_collectors_own_loader() -> None:
    settings = settings_from(yaml.safe_load((DEPLOY / "config" / "collector.yaml").read_text()))
    assert set(settings.sites) == {p.site for p in settings.plan}


def test_service_monitors_have_the_operators_shape_and_the_rules_job_names() -> None:
    monitors = {m["metadata"]["name"]: m for m in by_kind("ServiceMonitor")}
    assert set(monitors) == {"wattledger-agent", "wattledger-collector"}
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    for name, m in monitors.items():
        assert m["apiVersion"] == "monitoring.coreos.com/v1"
        spec = m["spec"]
        # jobLabel names a Service label whose value becomes `job`: the rules select on it
        assert services[name]["metadata"]["labels"][spec["jobLabel"]] == name
        assert spec["selector"]["matchLabels"].items() <= services[name]["spec"]["selector"].items()
        port_names = {p["name"] for p in services[name]["spec"]["ports"]}
        for ep in spec["endpoints"]:
            assert ep["port"] in port_names and ep["path"] == "/metrics"
    assert 'job="wattledger-agent"' in (DEPLOY / "prometheus" / "rules" / "wattledger.rules.yml").read_text()


def test_prometheusrule_is_generated_from_the_rules_file() -> None:
    (rule,) = by_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == load_rules()["groups"]
    r = subprocess.run([sys.executable, str(K8S / "render_prometheusrule.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------- systemd

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "CapabilityBoundingSet=", "SystemCallFilter=@system-service")


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_are_hardened(unit: Path) -> None:
    text = unit.read_text()
    for line in HARDENING:
        assert f"\n{line}\n" in text, f"{unit.name}: {line}"
    assert "StateDirectory=" in text
    assert "DynamicUser=yes" in text or "User=wattledger" in text
    assert "ExecStart=/opt/wattledger/bin/wattledger " in text


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    analyze = binary("systemd-analyze")
    # the unit as installed, with ExecStart pointing at this checkout's wattledger
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/wattledger/bin/wattledger", WATTLEDGER))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if unit.name in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


# ---------------------------------------------------------------------------- prometheus, compose

@pytest.mark.parametrize("config", sorted((DEPLOY / "prometheus").glob("prometheus*.yml")),
                         ids=lambda p: p.name)
def test_prometheus_configs_load_with_the_projects_rules(config: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(config.read_text())
    cfg["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "wattledger.rules.yml")]
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    assert "wattledger-collector" in jobs
    for job in cfg["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(DEPLOY / "prometheus" / "targets" / Path(f).name) for f in sd["files"]]
    copy = tmp_path / config.name
    copy.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([binary("promtool"), "check", "config", str(copy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


COMPOSE = DEPLOY / "compose"


def test_compose_services_and_mounts_hang_together() -> None:
    compose = yaml.safe_load((COMPOSE / "compose.yml").read_text())
    assert {"collector", "prometheus", "alertmanager", "grafana"} <= set(compose["services"])
    created_by_operator = {"./tokens"}  # from tokens.example, holding real hashed tokens
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith(".") and source not in created_by_operator:
                assert (COMPOSE / source).resolve().exists(), f"{name}: {source} does not exist"
    grafana_mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"]
                          if v.startswith("."))
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/wattledger.yml").read_text())
    assert provider["providers"][0]["options"]["path"] in grafana_mounts.values()
    agent = yaml.safe_load((COMPOSE / "agent.compose.yml").read_text())["services"]["agent"]
    assert agent["runtime"] == "nvidia" and agent["command"][0] == "agent"


@pytest.mark.parametrize("file", ["compose.yml", "agent.compose.yml"])
def test_docker_compose_config(file: str, tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin here")
    env = {"PATH": "/usr/bin:/bin", "GRAFANA_ADMIN_PASSWORD": "x", "WATTLEDGER_NODE": "gpu-node-01",
           "WATTLEDGER_COLLECTOR": "http://collector:9861", "HOME": str(tmp_path)}
    r = subprocess.run([docker, "compose", "-f", file, "config", "--quiet"], capture_output=True, text=True,
                       cwd=COMPOSE, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------- grafana provisioning

GRAFANA_EXPANDER = re.compile(r"\$(|__\w+)\{([^}]+)\}")
GO_VARIABLE = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+))")


def grafana_value(raw: str, env: dict[str, str]) -> str:
    """A provisioning value as Grafana reads it (pkg/services/provisioning/values: interpolateValue).

    First Grafana's own expanders (pkg/setting/expanders.go): ``$__file{…}`` and the env one,
    whose regex hands everything between ``${`` and ``}`` to os.Getenv, so ``${A:-b}`` asks for
    a variable named ``A:-b``; then Go's os.ExpandEnv for what is left (``$A``). ``$$`` is a
    literal ``$``.
    """
    def expand(part: str) -> str:
        part = GRAFANA_EXPANDER.sub(lambda m: env.get(m.group(2), "") if m.group(1) == "" else m.group(0),
                                    part)
        return GO_VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), part)
    return "$".join(expand(part) for part in raw.split("$$"))


def compose_value(raw: str, env: dict[str, str]) -> str:
    """A compose file value as docker compose interpolates it (${A}, ${A:-default})."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), raw)


def datasource_urls(env: dict[str, str]) -> list[str]:
    path = ROOT / "dashboards" / "provisioning" / "datasources" / "wattledger.yml"
    return [grafana_value(ds["url"], env) for ds in yaml.safe_load(path.read_text())["datasources"]]


def test_grafana_gets_a_datasource_url_in_the_compose_setup() -> None:
    grafana = yaml.safe_load((COMPOSE / "compose.yml").read_text())["services"]["grafana"]
    env = {name: compose_value(str(value), {}) for name, value in grafana["environment"].items()}
    assert datasource_urls(env) == ["http://prometheus:9090"]
    exported = {name: compose_value(str(value), {"WATTLEDGER_PROMETHEUS_URL": "http://thanos:10902"})
                for name, value in grafana["environment"].items()}
    assert datasource_urls(exported) == ["http://thanos:10902"]


def test_grafana_gets_a_datasource_url_with_the_demo_docs_command() -> None:
    text = (ROOT / "docs" / "demo.md").read_text()
    (command,) = [block for block in re.findall(r"```sh\n(.*?)```", text, re.S) if "grafana/grafana" in block]
    env = dict(re.findall(r"-e (\w+)=(\S+)", command))
    assert datasource_urls(env) == ["http://127.0.0.1:9090"]


def test_the_grafana_reading_of_provisioning_values_is_grafanas() -> None:
    env = {"URL": "http://p:9090", "PORT": "9090"}
    assert grafana_value("${URL}", env) == "http://p:9090"
    assert grafana_value("http://localhost:$PORT", env) == "http://localhost:9090"
    assert grafana_value("${URL:-http://prometheus:9090}", env) == ""  # no shell defaults
    assert grafana_value("a$$b", env) == "a$b"
