"""Deployment files: they parse, the Kubernetes install (the sqlite overlay as kustomize renders
it; every overlay is validated in test_obs_kustomize.py) hangs together, the PrometheusRule
matches the rules file, the systemd units are hardened and pass systemd-analyze, the compose
file hangs together."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from wattledger.collector.settings import settings_from

from .kustomize import K8S, render
from .support import ROOT, WATTLEDGER, binary, load_rules

DEPLOY = ROOT / "deploy"
EXAMPLE_SECRETS = K8S / "secrets.example.yaml"


def k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    """(where, object): the sqlite overlay as rendered, and the example Secrets."""
    out = [("overlays/sqlite", o) for o in render("sqlite")]
    out += [(EXAMPLE_SECRETS.name, doc) for doc in yaml.safe_load_all(EXAMPLE_SECRETS.read_text()) if doc]
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for _, o in k8s_objects() if o["kind"] == kind]


def test_every_yaml_file_parses() -> None:
    files = [p for p in DEPLOY.rglob("*.y*ml")] + list((ROOT / "dashboards" / "provisioning").rglob("*.yml"))
    assert len(files) > 10
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_kustomization_lists_every_manifest() -> None:
    base = K8S / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    # the example Secrets are what the workloads mount, by name
    secrets = {s["metadata"]["name"] for s in by_kind("Secret")}
    mounted = {v["secret"]["secretName"] for kind in ("DaemonSet", "Deployment") for w in by_kind(kind)
               for v in w["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    assert mounted == secrets - {"wattledger-postgres"}  # that one: the postgresql overlay's


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
    (cm,) = [c for c in by_kind("ConfigMap") if c["metadata"]["name"] == "wattledger-collector"]
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


# ---------------------------------------------------------------------------- the agent pod's rights

#: Linux capabilities a container gets from containerd / CRI-O unless the pod drops them
RUNTIME_DEFAULT_CAPS = {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                        "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                        "AUDIT_WRITE"}
#: The user the image runs as when the pod does not say (deploy/container/Dockerfile's USER)
IMAGE_USER = (65532, 65532)


@dataclass(frozen=True)
class HostFile:
    """A file or folder on the node as the agent meets it: owner, group, mode."""

    what: str
    uid: int
    gid: int
    mode: int


#: What the node has, whatever the manifest says:
#: - a hostPath of type DirectoryOrCreate that is missing is made by the kubelet 0755 root:root,
#:   and fsGroup is never applied to hostPath volumes;
#: - RAPL's energy_uj is 0400 root:root since Linux 5.10 (CVE-2020-8694, "Platypus");
#: - the kubelet's pod-resources socket is made under its umask 022: srwxr-xr-x root:root, and
#:   connect() on a unix socket needs write permission on it;
#: - a Secret volume's files are root:root with the volume's defaultMode (group fsGroup if set).
SPOOL_DIR = HostFile("the spool hostPath", 0, 0, 0o755)
RAPL_COUNTER = HostFile("/sys/class/powercap/intel-rapl:0/energy_uj", 0, 0, 0o400)
POD_RESOURCES = HostFile("/var/lib/kubelet/pod-resources/kubelet.sock", 0, 0, 0o755)


@dataclass(frozen=True)
class Identity:
    uid: int
    groups: frozenset[int]
    caps: frozenset[str]

    def may(self, f: HostFile, want: str) -> bool:
        """POSIX discretionary access: r, w or x on ``f`` (the kernel's generic_permission)."""
        if "DAC_OVERRIDE" in self.caps and (want != "x" or f.mode & 0o111):
            return True
        if "DAC_READ_SEARCH" in self.caps and want == "r":
            return True
        shift = 6 if self.uid == f.uid else 3 if f.gid in self.groups else 0
        return bool((f.mode >> shift) & {"r": 4, "w": 2, "x": 1}[want])


def agent_pod() -> tuple[dict[str, Any], dict[str, Any]]:
    (ds,) = by_kind("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def agent_identity() -> Identity:
    pod, c = agent_pod()
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    uid = csc.get("runAsUser", psc.get("runAsUser", IMAGE_USER[0]))
    gid = csc.get("runAsGroup", psc.get("runAsGroup", IMAGE_USER[1]))
    groups = {gid, *psc.get("supplementalGroups", [])} | ({psc["fsGroup"]} if "fsGroup" in psc else set())
    caps = csc.get("capabilities", {})
    kept = set() if "ALL" in caps.get("drop", []) else RUNTIME_DEFAULT_CAPS - set(caps.get("drop", []))
    return Identity(uid, frozenset(groups), frozenset(kept | set(caps.get("add", []))))


def mounts() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath -> (volumeMount, volume) of the agent container."""
    pod, c = agent_pod()
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in c["volumeMounts"]}


def flag(name: str) -> str | None:
    _, c = agent_pod()
    return next((a.split("=", 1)[1] for a in c["args"] if a.startswith(f"--{name}=")), None)


def mount_of(path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The mount a path inside the container lies on (the longest mountPath that holds it)."""
    found = [(m, mount, vol) for m, (mount, vol) in mounts().items()
             if path == m or path.startswith(m.rstrip("/") + "/")]
    assert found, f"{path} is on the container's read-only root filesystem"
    return max(found, key=lambda f: len(f[0]))


def test_the_agent_can_write_its_spool_on_the_node() -> None:
    spool = flag("spool")
    assert spool, "the DaemonSet gives the agent a --spool"
    _, mount, volume = mount_of(spool)
    assert "hostPath" in volume, "the spool must outlive the pod: a hostPath"
    assert volume["hostPath"]["type"] in ("DirectoryOrCreate", "Directory")
    assert not mount.get("readOnly")
    me = agent_identity()
    # the agent makes its spool folder and its SQLite files (database, WAL, lock) in there
    assert me.may(SPOOL_DIR, "w") and me.may(SPOOL_DIR, "x"), (
        f"uid {me.uid} (groups {sorted(me.groups)}, capabilities {sorted(me.caps)}) cannot write "
        f"{SPOOL_DIR.what}, {SPOOL_DIR.mode:04o} root:root: the agent would crash-loop")


def test_the_agent_reads_the_hosts_rapl_counters() -> None:
    sysfs = flag("sysfs-root")
    # the container's own /sys hides /sys/devices/virtual/powercap (a masked path of the runtimes)
    assert sysfs and sysfs != "/sys", "--sysfs-root points at the host's sysfs mounted in the pod"
    path, mount, volume = mount_of(sysfs)
    assert path == sysfs and volume.get("hostPath", {}).get("path") == "/sys"
    assert mount.get("readOnly") is True
    me = agent_identity()
    assert me.may(RAPL_COUNTER, "r"), f"uid {me.uid} cannot read {RAPL_COUNTER.what} (0400 root)"


def test_the_agent_can_reach_the_kubelets_pod_resources_socket() -> None:
    socket = "/var/lib/kubelet/pod-resources/kubelet.sock"  # the kubernetes source's default
    path, mount, volume = mount_of(socket)
    # the folder is mounted, not the socket: a restarted kubelet makes a new socket file
    assert path == "/var/lib/kubelet/pod-resources"
    assert volume["hostPath"] == {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"}
    assert mount.get("readOnly") is True  # connect() needs no write access to the mount
    me = agent_identity()
    assert me.may(POD_RESOURCES, "w"), f"uid {me.uid} cannot connect to {POD_RESOURCES.what}"


def test_the_agent_reads_its_token() -> None:
    token = flag("token-file")
    assert token
    _, _, volume = mount_of(token.replace("$(NODE_NAME)", "gpu-node-01"))
    pod, _ = agent_pod()
    group = pod.get("securityContext", {}).get("fsGroup", 0)
    secret = HostFile("the token Secret's file", 0, group, volume["secret"]["defaultMode"])
    assert agent_identity().may(secret, "r")


def test_the_agent_has_no_privileges_beyond_its_files() -> None:
    pod, c = agent_pod()
    csc = c["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False and csc["readOnlyRootFilesystem"] is True
    assert csc.get("privileged", False) is False
    assert agent_identity().caps == frozenset(), "every capability dropped, none added"
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    writable = {path for path, (m, _) in mounts().items() if not m.get("readOnly")}
    assert writable == {"/var/lib/wattledger-agent", "/tmp"}
    host_paths = {v["hostPath"]["path"] for _, v in mounts().values() if "hostPath" in v}
    assert host_paths == {"/var/lib/wattledger-agent", "/sys", "/var/lib/kubelet/pod-resources"}


def test_the_agent_has_a_priority_class_of_its_own() -> None:
    pod, _ = agent_pod()
    name = pod["priorityClassName"]
    # system-node-critical / system-cluster-critical: refused outside kube-system where a
    # ResourceQuota limits them (the upstream default advice, and GKE)
    assert not name.startswith("system-")
    (pc,) = [p for p in by_kind("PriorityClass") if p["metadata"]["name"] == name]
    assert 0 < pc["value"] <= 1_000_000_000 and pc["globalDefault"] is False
    assert "namespace" not in pc["metadata"]  # cluster-scoped


PROBE = """
import os, socket, sys
spool, rapl, sock = sys.argv[1:4]
answers = []
try:
    os.mkdir(os.path.join(spool, "spool")); open(os.path.join(spool, "spool", "spool.db"), "w").close()
    answers.append("spool")
except OSError:
    pass
try:
    open(rapl).read(); answers.append("rapl")
except OSError:
    pass
try:
    s = socket.socket(socket.AF_UNIX); s.connect(sock); s.close(); answers.append("socket")
except OSError:
    pass
print(",".join(answers))
"""


@pytest.mark.parametrize("who", ["manifest", "image user"])
def test_the_permission_model_is_the_kernels(who: str) -> None:
    """The files above made for real with their owners and modes, then opened by a process with
    the identity's uid, groups and no capabilities at all (setpriv): the kernel must answer as
    Identity.may does, so the manifest tests are about the real thing."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to make root-owned files and drop to a uid")
    me = agent_identity() if who == "manifest" else Identity(*IMAGE_USER[:1], frozenset({IMAGE_USER[1]}),
                                                             frozenset())
    assert not me.caps
    top = Path(tempfile.mkdtemp(prefix="wattledger-perm-"))
    listener = socket.socket(socket.AF_UNIX)
    try:
        top.chmod(0o755)
        spool, rapl, sock = top / "spool-host", top / "energy_uj", top / "kubelet.sock"
        spool.mkdir()
        rapl.write_text("123456\n")
        listener.bind(str(sock))
        listener.listen(1)
        for f, path in ((SPOOL_DIR, spool), (RAPL_COUNTER, rapl), (POD_RESOURCES, sock)):
            os.chown(path, f.uid, f.gid)
            path.chmod(f.mode)
        groups = ",".join(str(g) for g in sorted(me.groups))
        done = subprocess.run([setpriv, f"--reuid={me.uid}", f"--regid={min(me.groups)}",
                               f"--groups={groups}", "--inh-caps=-all", "--bounding-set=-all",
                               "--no-new-privs", sys.executable, "-c", PROBE,
                               str(spool), str(rapl), str(sock)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        kernel = set(filter(None, done.stdout.strip().split(",")))
        model = {name for name, f, want in (("spool", SPOOL_DIR, "w"), ("rapl", RAPL_COUNTER, "r"),
                                            ("socket", POD_RESOURCES, "w")) if me.may(f, want)}
        assert kernel == model
        if who == "manifest":
            assert kernel == {"spool", "rapl", "socket"}
    finally:
        listener.close()
        shutil.rmtree(top)
