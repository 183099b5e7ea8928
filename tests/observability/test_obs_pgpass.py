"""The PostgreSQL overlay's database path, for real: a PostgreSQL that asks for a password
(scram-sha-256) over TLS only, with a certificate of a test CA; the overlay's Secret as the
kubelet makes its files (root, group fsGroup, the volume's defaultMode); the init container's
own command run with the pod's uid and groups and no capabilities (setpriv); then libpq, and the
overlay's collector itself, connecting with PGPASSFILE and the overlay's URL (verify-full).

It shows both halves of the reason for the init container: libpq refuses the Secret's file
itself (group-readable: "has group or world access", no password sent), and logs in with the
copy; and the collector, started with the overlay's arguments as the pod's user, is ready.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import yaml

from .kustomize import render
from .support import WATTLEDGER, Processes, eventually, free_port

PASSWORD = "correct-horse-battery-staple-7f3a"
CONNECT = """
import sys, psycopg
try:
    with psycopg.connect(sys.argv[1], connect_timeout=10) as conn:
        print(conn.execute("select current_user").fetchone()[0])
except psycopg.OperationalError as exc:
    print("refused:", exc)
"""

Obj = dict[str, Any]


@dataclass
class Pod:
    """The overlay's collector pod, its volumes made on this machine as the kubelet makes them."""

    spec: Obj
    init: Obj
    collector: Obj
    volumes: dict[str, Path]  # volume name -> its folder here
    url: str                  # the overlay's --db, pointed at the test server
    top: Path

    def path(self, container: Obj, inside: str) -> str:
        """A path inside ``container`` as a path on this machine."""
        for mount in container["volumeMounts"]:
            where = mount["mountPath"]
            if mount["name"] in self.volumes and (inside == where or inside.startswith(where + "/")):
                return str(self.volumes[mount["name"]]) + inside[len(where):]
        raise AssertionError(f"{inside} is on no volume made for the test")

    def setpriv(self) -> list[str]:
        context = self.spec["securityContext"]
        groups = sorted({context["runAsGroup"], context["fsGroup"]})
        return ["setpriv", f"--reuid={context['runAsUser']}", f"--regid={context['runAsGroup']}",
                f"--groups={','.join(map(str, groups))}", "--inh-caps=-all", "--bounding-set=-all",
                "--no-new-privs"]

    def run(self, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.top), **env}
        return subprocess.run([*self.setpriv(), *argv], capture_output=True, text=True, timeout=120,
                              env=environment)

    def passfile(self) -> Path:
        return Path(self.path(self.collector, next(e["value"] for e in self.collector["env"]
                                                    if e["name"] == "PGPASSFILE")))


def kubelet_file(path: Path, text: str, gid: int, mode: int) -> None:
    path.write_text(text)
    os.chown(path, 0, gid)
    path.chmod(mode)


@pytest.fixture
def pod() -> Iterator[Pod]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to make root-owned files and drop to the pod's uid")
    pytest.importorskip("psycopg")
    trustme = pytest.importorskip("trustme")
    pgserver = pytest.importorskip("tests.pgserver")
    pgserver.require_server_binaries()
    dep = next(o for o in render("postgresql") if o["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    (init,), (collector,) = spec["initContainers"], spec["containers"]
    fs_group = spec["securityContext"]["fsGroup"]
    probe = [sys.executable, "-c", "import psycopg, wattledger"]
    reach = Pod(spec, init, collector, {}, "", Path("/")).run(probe)
    if reach.returncode != 0:  # e.g. a checkout under a 0700 folder (mktemp -d): not the pod uid's to read
        pytest.skip(f"uid {spec['securityContext']['runAsUser']} cannot run this checkout's interpreter: "
                    + (reach.stderr.strip().splitlines() or ["no output"])[-1])

    top = Path(tempfile.mkdtemp(prefix="wattledger-pgpass-"))
    top.chmod(0o755)
    ca = trustme.CA()
    tls = top / "server-tls"
    tls.mkdir()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tls / "server.pem"))
    shutil.chown(tls, pgserver.SUPERUSER)
    shutil.chown(tls / "server.pem", pgserver.SUPERUSER)
    (tls / "server.pem").chmod(0o600)
    hba = top / "pg_hba.conf"
    hba.write_text("host all postgres 127.0.0.1/32 trust\n"
                   "hostssl all wattledger 127.0.0.1/32 scram-sha-256\n")  # no password without TLS
    hba.chmod(0o644)
    server = pgserver.PgServer(top / "pg", settings={
        "hba_file": str(hba), "ssl": "on", "ssl_cert_file": str(tls / "server.pem"),
        "ssl_key_file": str(tls / "server.pem")}).start()
    try:
        server.sql(f"CREATE ROLE wattledger LOGIN PASSWORD '{PASSWORD}'")
        server.sql("CREATE DATABASE wattledger OWNER wattledger")
        (db,) = [a.split("=", 1)[1] for a in collector["args"] if a.startswith("--db=")]
        overlay_url = urlsplit(db)
        volumes: dict[str, Path] = {}
        for volume in spec["volumes"]:
            folder = top / "volumes" / volume["name"]
            folder.mkdir(parents=True)
            if "emptyDir" in volume:  # world-writable, group fsGroup, setgid
                os.chown(folder, 0, fs_group)
                folder.chmod(0o2777)
            else:
                folder.chmod(0o755)
            volumes[volume["name"]] = folder
        made = Pod(spec, init, collector, volumes, "", top)
        query = parse_qs(overlay_url.query)
        (ca_path,) = query["sslrootcert"]
        tls_query = urlencode({"sslmode": query["sslmode"][0], "sslrootcert": made.path(collector, ca_path)})
        made.url = urlunsplit(("postgresql", f"{overlay_url.username}@127.0.0.1:{server.port}",
                               overlay_url.path, tls_query, ""))
        secret = next(v for v in spec["volumes"]
                      if v.get("secret", {}).get("secretName") == "wattledger-postgres")
        mode = secret["secret"]["defaultMode"]
        secret_dir = volumes[secret["name"]]
        kubelet_file(secret_dir / "pgpass", f"127.0.0.1:{server.port}:{overlay_url.path.lstrip('/')}:"
                                            f"{overlay_url.username}:{PASSWORD}\n", fs_group, mode)
        kubelet_file(secret_dir / "ca.crt", ca.cert_pem.bytes().decode(), fs_group, mode)
        yield made
    finally:
        server.destroy()
        shutil.rmtree(top, ignore_errors=True)


def run_init_container(pod: Pod) -> Path:
    command = pod.init["command"]
    copied = pod.run([command[0], *command[1:-2], *(pod.path(pod.init, p) for p in command[-2:])])
    assert copied.returncode == 0, copied.stderr
    copy = pod.passfile()
    assert copy.stat().st_uid == pod.spec["securityContext"]["runAsUser"]
    assert copy.stat().st_mode & 0o777 == 0o600
    return copy


@pytest.mark.integration
def test_libpq_takes_the_password_only_from_the_init_containers_copy(pod: Pod) -> None:
    copy = run_init_container(pod)
    python = [sys.executable, "-c", CONNECT, pod.url]
    with_copy = pod.run(python, PGPASSFILE=str(copy))
    assert with_copy.stdout.strip() == "wattledger", with_copy.stdout + with_copy.stderr
    secret_file = pod.path(pod.init, pod.init["command"][-2])
    with_secret = pod.run(python, PGPASSFILE=secret_file)
    assert with_secret.stdout.startswith("refused:"), with_secret.stdout
    assert "group or world access" in with_secret.stderr, with_secret.stderr
    # and the server's certificate is checked: the wrong CA is refused
    other = pod.top / "other-ca.crt"
    pytest.importorskip("trustme").CA().cert_pem.write_to_path(str(other))
    other.chmod(0o644)
    wrong = pod.url.replace(pod.url.split("sslrootcert=")[1], str(other).replace("/", "%2F"))
    assert pod.run([sys.executable, "-c", CONNECT, wrong], PGPASSFILE=str(copy)).stdout.startswith("refused:")


@pytest.mark.integration
def test_the_overlays_collector_is_ready_on_postgresql_as_the_pods_user(pod: Pod, tmp_path: Path) -> None:
    from wattledger.collector import settings

    try:
        settings.db_url("postgresql://wattledger@db:5432/wattledger")
    except ValueError:
        pytest.skip("this tree's collector has no PostgreSQL store yet (issue 11)")
    copy = run_init_container(pod)
    config_map = next(o for o in render("postgresql") if o["kind"] == "ConfigMap"
                      and o["metadata"]["name"] == "wattledger-collector")
    port = free_port()
    config = {**yaml.safe_load(config_map["data"]["collector.yaml"]), "listen": f"127.0.0.1:{port}"}
    volumes = {v["name"]: v for v in pod.spec["volumes"]}
    mounts = {m["mountPath"]: m for m in pod.collector["volumeMounts"]}
    for path, mount in mounts.items():
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            kubelet_file(pod.volumes[mount["name"]] / Path(path).name, yaml.safe_dump(config), 0, 0o644)
        elif volume.get("secret", {}).get("secretName") == "wattledger-collector-tokens":
            kubelet_file(pod.volumes[mount["name"]] / "tokens", "gpu-node-01:sha256:" + "ab" * 32 + "\n",
                         pod.spec["securityContext"]["fsGroup"], volume["secret"]["defaultMode"])

    def inside(arg: str) -> str:
        name, _, value = arg.partition("=")
        if name in ("--config", "--tokens-file"):
            mount = mounts[value] if value in mounts else mounts[str(Path(value).parent)]
            return f"{name}={pod.volumes[mount['name']] / Path(value).name}"
        return f"--db={pod.url}" if name == "--db" else arg

    procs = Processes(tmp_path)
    try:
        procs.start("collector", ["env", f"PGPASSFILE={copy}", f"HOME={pod.top}", *pod.setpriv(), WATTLEDGER,
                                  *(inside(a) for a in pod.collector["args"])])
        url = f"http://127.0.0.1:{port}"
        procs.wait_http("collector", f"{url}/healthz", timeout=120)
        ready = eventually(lambda: (r := httpx.get(f"{url}/readyz", timeout=10)).status_code == 200 and r,
                           90, "the collector ready on PostgreSQL")
        assert ready.json()["checks"]["database"] is True
    finally:
        procs.stop_all()
