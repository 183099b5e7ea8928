"""The PostgreSQL overlay's password path, for real: a PostgreSQL that asks for a password
(scram-sha-256), the Secret's file as the kubelet makes it (root, group fsGroup, the volume's
defaultMode), the init container's own command run with the pod's uid and groups and no
capabilities (setpriv), then libpq (psycopg) connecting with PGPASSFILE as the collector does.

It shows both halves of the reason for the init container: libpq refuses the Secret's file
itself (group-readable: "has group or world access", no password sent), and accepts the copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.binaries import on_ci

from .kustomize import render

PASSWORD = "correct-horse-battery-staple-7f3a"
CONNECT = """
import os, sys, psycopg
try:
    with psycopg.connect(sys.argv[1], connect_timeout=10) as conn:
        print(conn.execute("select current_user").fetchone()[0])
except psycopg.OperationalError as exc:
    print("refused:", exc)
"""


def overlay_pod() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    dep = next(o for o in render("postgresql") if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (collector,) = pod["containers"]
    return pod, init, collector


def as_pod_user(pod: dict[str, Any], argv: list[str],
                env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    context = pod["securityContext"]
    groups = sorted({context["runAsGroup"], context["fsGroup"]})
    return subprocess.run(["setpriv", f"--reuid={context['runAsUser']}", f"--regid={context['runAsGroup']}",
                           f"--groups={','.join(map(str, groups))}", "--inh-caps=-all", "--bounding-set=-all",
                           "--no-new-privs", *argv], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.integration
def test_the_password_reaches_libpq_only_through_the_init_containers_copy(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to make root-owned files and drop to the pod's uid")
    pytest.importorskip("psycopg")
    pgserver = pytest.importorskip("tests.pgserver")
    if pgserver.server_binaries() is None:
        if on_ci():
            pytest.fail("PostgreSQL server binaries missing under CI (scripts/ensure-system-packages)")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    pod, init, collector = overlay_pod()
    fs_group = pod["securityContext"]["fsGroup"]

    top = Path(tempfile.mkdtemp(prefix="wattledger-pgpass-"))
    top.chmod(0o755)
    hba = top / "pg_hba.conf"
    hba.write_text("host all postgres 127.0.0.1/32 trust\nhost all wattledger 127.0.0.1/32 scram-sha-256\n")
    hba.chmod(0o644)
    server = pgserver.PgServer(top / "pg", settings={"hba_file": str(hba)}).start()
    try:
        server.sql(f"CREATE ROLE wattledger LOGIN PASSWORD '{PASSWORD}'")
        server.sql("CREATE DATABASE wattledger OWNER wattledger")
        url = f"postgresql://wattledger@127.0.0.1:{server.port}/wattledger"

        # the two volumes as the kubelet makes them: the Secret's files root:<fsGroup> with the
        # volume's defaultMode; the emptyDir world-writable, group fsGroup, setgid
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
        (secret_volume,) = [volumes[n] for n in mounts if "secret" in volumes[n]]
        (empty_volume,) = [volumes[n] for n in mounts if "emptyDir" in volumes[n]]
        assert secret_volume["secret"]["secretName"] == "wattledger-postgres"
        secret_dir, empty_dir = top / "secret", top / "emptydir"
        secret_dir.mkdir()
        secret_dir.chmod(0o755)
        (secret_dir / "pgpass").write_text(f"127.0.0.1:{server.port}:wattledger:wattledger:{PASSWORD}\n")
        os.chown(secret_dir / "pgpass", 0, fs_group)
        (secret_dir / "pgpass").chmod(secret_volume["secret"]["defaultMode"])
        empty_dir.mkdir()
        os.chown(empty_dir, 0, fs_group)
        empty_dir.chmod(0o2777)

        def mapped(path: str) -> str:
            for name, real in ((secret_volume["name"], secret_dir), (empty_volume["name"], empty_dir)):
                if path.startswith(mounts[name]):
                    return str(real) + path[len(mounts[name]):]
            raise AssertionError(f"{path} is on no volume of the init container")

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(top)}
        command = [init["command"][0], *init["command"][1:-2], *map(mapped, init["command"][-2:])]
        copied = as_pod_user(pod, command, env)
        assert copied.returncode == 0, copied.stderr
        passfile = next(e["value"] for e in collector["env"] if e["name"] == "PGPASSFILE")
        copy = Path(mapped(passfile))
        assert copy.stat().st_uid == pod["securityContext"]["runAsUser"]
        assert copy.stat().st_mode & 0o777 == 0o600

        python = [sys.executable, "-c", CONNECT, url]
        with_copy = as_pod_user(pod, python, {**env, "PGPASSFILE": str(copy)})
        assert with_copy.stdout.strip() == "wattledger", with_copy.stdout + with_copy.stderr
        with_secret = as_pod_user(pod, python, {**env, "PGPASSFILE": str(secret_dir / "pgpass")})
        assert with_secret.stdout.startswith("refused:"), with_secret.stdout
        assert "group or world access" in with_secret.stderr, with_secret.stderr
    finally:
        server.destroy()
        shutil.rmtree(top, ignore_errors=True)
