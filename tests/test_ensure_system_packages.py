"""scripts/ensure-system-packages on a machine without the binaries: it asks apt for the right
Debian 12 packages, keeps their services from starting while apt runs, and never fails the
build. Run with a PATH of its own (the real binaries hidden) and a stub apt-get that records
what it was asked and whether a policy-rc.d denied service starts at that moment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure-system-packages"
#: what the script itself runs, besides the stubs
TOOLS = ("bash", "env", "id", "awk", "mktemp", "tail", "rm", "chmod", "printf", "cat")
PG_BIN = "15/bin/initdb"  # where Debian puts a major version's server binaries

STUB_APT = """#!/bin/bash
echo "$*" >> "$RECORD"
if [ "$1" = install ]; then
  if [ -x "$POLICY_RC_D" ]; then "$POLICY_RC_D" prometheus start; echo "policy=$?" >> "$RECORD"
  else echo "policy=none" >> "$RECORD"; fi
  [ -n "${APT_FAILS:-}" ] && { echo "E: Unable to locate package $3" >&2; exit 100; }
fi
exit 0
"""
STUB_ID = '#!/bin/bash\n[ "$1" = -u ] && echo 0 || exec /usr/bin/id "$@"\n'


def sandbox(tmp_path: Path, present: tuple[str, ...] = (),
            postgres: bool = False) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found and tool != "id":
            (bin_dir / tool).symlink_to(found)
    for name, text in (("apt-get", STUB_APT), ("id", STUB_ID)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for name in present:  # a binary that is "installed"
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    pg_root = tmp_path / "postgresql"
    if postgres:  # the server binaries "installed"
        (pg_root / PG_BIN).parent.mkdir(parents=True)
        (pg_root / PG_BIN).write_text("#!/bin/sh\n")
    record = tmp_path / "apt.log"
    env = {"PATH": str(bin_dir), "RECORD": str(record), "POLICY_RC_D": str(tmp_path / "policy-rc.d"),
           "PG_ROOT": str(pg_root),
           "INIT_D": str(tmp_path / "init.d"), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    return env, record


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("bash") or "/bin/bash", str(SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_installs_the_three_debian_packages_with_services_held_back(tmp_path: Path) -> None:
    env, record = sandbox(tmp_path)
    done = run(env)
    assert done.returncode == 0, done.stderr
    calls = record.read_text().splitlines()
    assert calls[0].startswith("update")
    assert calls[1] == ("install -y -q --no-install-recommends "
                        "prometheus prometheus-alertmanager victoria-metrics postgresql")
    assert calls[2] == "policy=101", "services could start during the install"
    assert not (tmp_path / "policy-rc.d").exists(), "its own policy-rc.d is left behind"


def test_asks_only_for_what_is_missing_and_nothing_when_all_is_there(tmp_path: Path) -> None:
    env, record = sandbox(tmp_path, present=("prometheus", "promtool", "victoria-metrics-prod"),
                          postgres=True)
    assert run(env).returncode == 0
    install = record.read_text().splitlines()[1]
    assert install == "install -y -q --no-install-recommends prometheus-alertmanager"
    record.unlink()
    (tmp_path / "bin" / "amtool").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "amtool").chmod(0o755)
    (tmp_path / "bin" / "prometheus-alertmanager").symlink_to(tmp_path / "bin" / "amtool")
    assert run(env).returncode == 0
    assert not record.exists(), "apt-get was run with everything installed"


def test_an_apt_failure_is_said_and_does_not_fail_the_build(tmp_path: Path) -> None:
    env, _ = sandbox(tmp_path)
    done = run({**env, "APT_FAILS": "1"})
    assert done.returncode == 0
    assert "apt-get failed" in done.stderr and "Unable to locate package" in done.stderr
    assert not (tmp_path / "policy-rc.d").exists()
