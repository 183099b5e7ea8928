"""Who holds which GPU on a host with neither Kubernetes nor Slurm prolog files: the processes
NVML sees on each board, traced to their owner through ``/proc/<pid>/cgroup``.

For each compute process (:class:`~wattledger.agent.sources.nvml.NvmlProcesses`: on its MIG
device where it runs in one), the owner is, in this order:

- a Kubernetes pod: a ``kubepods`` cgroup (``…/kubepods-burstable-pod<uid>.slice/…`` with the
  systemd driver, ``/kubepods/burstable/pod<uid>/…`` with cgroupfs) -> ``pod_uid`` (the
  kubelet's PodResources answer has no UID: the kubernetes source names pods, this one
  cannot);
- a Slurm job: ``job_<id>`` in the path (``…/slurmstepd.scope/job_<id>/step_<id>/…`` with
  cgroup v2, ``/slurm/uid_<uid>/job_<id>/…`` with v1) -> ``job``, and ``user``;
- a systemd unit: the last ``*.service`` of the path -> ``unit``, and ``user``;
- else the process's user (its real uid -> name; the number where the name is unknown).

One holding per owner, over every device its processes are on, weight 1: owners sharing a
board (MPS, several users' processes) split it evenly. NVML reports host pids, so the agent
needs the host's pid namespace (``hostPID`` in a pod) and ``/proc``; a process that ends
between NVML's list and the read of its cgroup is left out. The list is taken at every sample
(one NVML call per board).
"""

from __future__ import annotations

import logging
import pwd
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wattledger.agent.sources.base import Holding
from wattledger.agent.sources.nvml import NvmlProcesses
from wattledger.contract import LABEL_VALUE_MAX_LENGTH, Device

log = logging.getLogger(__name__)

_POD = re.compile(r"kubepods\S*?[/-]pod(?P<uid>[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}"
                  r"[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})")
_JOB = re.compile(r"/job_(?P<job>\d+)(?:/|$)")
_UNIT = re.compile(r"(?:^|/)(?P<unit>[^/]+\.service)(?:/|$)")


@dataclass(frozen=True, slots=True)
class Owner:
    key: str
    owner: dict[str, str]


def cgroup_path(text: str) -> str:
    """The process's cgroup path: the unified (v2) one, else the v1 line that names a pod or a
    job, else systemd's own (``name=systemd``), else the first."""
    paths: list[tuple[str, str]] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths.append((parts[1], parts[2]))
    for controllers, path in paths:
        if controllers == "":
            return path
    for _, path in paths:
        if "kubepods" in path or "/job_" in path:
            return path
    for controllers, path in paths:
        if controllers == "name=systemd":
            return path
    return paths[0][1] if paths else ""


def user_name(uid: int, lookup: Callable[[int], str] | None = None) -> str:
    try:
        return (lookup or (lambda u: pwd.getpwuid(u).pw_name))(uid)
    except KeyError:  # no such user on this host (a container's own uid)
        return str(uid)


def owner_of(cgroup: str, uid: int | None, lookup: Callable[[int], str] | None = None) -> Owner:
    user = None if uid is None else user_name(uid, lookup)[:LABEL_VALUE_MAX_LENGTH]
    with_user = {"user": user} if user is not None else {}
    if (m := _POD.search(cgroup)) is not None:
        uid_text = m.group("uid").replace("_", "-").lower()
        return Owner(f"proc:pod:{uid_text}", {"pod_uid": uid_text})
    if (m := _JOB.search(cgroup)) is not None:
        return Owner(f"proc:slurm:{m.group('job')}", {"job": m.group("job"), **with_user})
    units = _UNIT.findall(cgroup)
    if units:
        unit = units[-1][:LABEL_VALUE_MAX_LENGTH]
        return Owner(f"proc:unit:{unit}:{user}", {"unit": unit, **with_user})
    return Owner(f"proc:user:{user}", dict(with_user))


@dataclass(frozen=True, slots=True)
class ProcessesSettings:
    proc_root: Path = Path("/proc")


class ProcessesSource:
    """An allocation source: NVML's process list and each process's cgroup and user."""

    name = "processes"

    def __init__(self, settings: ProcessesSettings, lister: NvmlProcesses | None = None,
                 user_lookup: Callable[[int], str] | None = None) -> None:
        self.settings = settings
        self._lister = lister or NvmlProcesses()
        self._user_lookup = user_lookup

    def open(self) -> None:
        self._lister.open()

    def close(self) -> None:
        self._lister.close()

    def holdings(self, ts: float, devices: Sequence[Device]) -> list[Holding]:
        owners: dict[str, tuple[Owner, set[str]]] = {}
        for p in self._lister.processes(ts):
            found = self._owner(p.pid)
            if found is None:
                continue
            owners.setdefault(found.key, (found, set()))[1].add(p.device_id)
        return [Holding(key=key, device_ids=tuple(sorted(ids)), owner=o.owner)
                for key, (o, ids) in sorted(owners.items())]

    def _owner(self, pid: int) -> Owner | None:
        base = self.settings.proc_root / str(pid)
        try:
            cgroup = (base / "cgroup").read_text(encoding="utf-8", errors="replace")
            status = (base / "status").read_text(encoding="utf-8", errors="replace")
        except OSError:  # ended meanwhile, or another pid namespace: not ours to name
            return None
        uid = None
        for line in status.splitlines():
            if line.startswith("Uid:"):
                fields = line.split()
                uid = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
                break
        return owner_of(cgroup_path(cgroup), uid, self._user_lookup)
