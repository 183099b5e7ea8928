"""The processes allocation source: NVML's compute processes (the fake pynvml, v3 shape, MIG
instances) traced through a fake /proc tree to a pod UID, a Slurm job, a systemd unit or a
user; NVML's errors as NVML raises them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.fake_pynvml import Board, Mig, Process, make_nvml
from wattledger.agent.sources.base import SourceUnavailable
from wattledger.agent.sources.nvml import NvmlProcesses
from wattledger.agent.sources.processes import ProcessesSettings, ProcessesSource, cgroup_path

A = "GPU-aaaa0000-0000-0000-0000-000000000000"
B = "GPU-bbbb0000-0000-0000-0000-000000000000"
MIG = "MIG-cccc0000-0000-0000-0000-000000000000"
POD_UID = "5f0c7a2e-9b1d-4c3e-8a6f-0123456789ab"
USERS = {0: "root", 1000: "kim", 1001: "ana"}

V2_POD = f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID.replace('-', '_')}" \
         ".slice/cri-containerd-3f2a.scope\n"
V1_POD = (f"12:pids:/kubepods/besteffort/pod{POD_UID}/3f2a\n"
          f"11:memory:/kubepods/besteffort/pod{POD_UID}/3f2a\n1:name=systemd:/kubepods/besteffort/pod{POD_UID}/3f2a\n")
V2_SLURM = "0::/system.slice/slurmstepd.scope/job_48213/step_0/user/task_0\n"
V1_SLURM = "7:devices:/slurm/uid_1000/job_48214/step_batch\n1:name=systemd:/system.slice/slurmd.service\n"
V2_UNIT = "0::/system.slice/vllm-server.service\n"
V2_USER = "0::/user.slice/user-1001.slice/session-4.scope\n"


def proc_tree(root: Path, pid: int, cgroup: str, uid: int) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "status").write_text(f"Name:\tpython3\nPid:\t{pid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\n")


def source(boards: list[Board], proc: Path) -> ProcessesSource:
    src = ProcessesSource(ProcessesSettings(proc_root=proc), NvmlProcesses(make_nvml(boards)),
                          user_lookup=lambda uid: USERS[uid])
    src.open()
    return src


def test_pod_job_unit_and_user_from_each_cgroup_layout(tmp_path: Path) -> None:
    for pid, cgroup, uid in [(100, V2_POD, 0), (101, V1_POD, 0), (200, V2_SLURM, 1000), (201, V1_SLURM, 1000),
                             (300, V2_UNIT, 0), (400, V2_USER, 1001)]:
        proc_tree(tmp_path, pid, cgroup, uid)
    boards = [Board(uuid=A, processes=[Process(100), Process(200), Process(300)]),
              Board(uuid=B, processes=[Process(101), Process(201), Process(400, used_bytes=None)])]
    src = source(boards, tmp_path)
    held = {h.key: (h.device_ids, dict(h.owner), h.weight) for h in src.holdings(1.0, [])}
    assert held == {
        f"proc:pod:{POD_UID}": ((A, B), {"pod_uid": POD_UID}, 1.0),
        "proc:slurm:48213": ((A,), {"job": "48213", "user": "kim"}, 1.0),
        "proc:slurm:48214": ((B,), {"job": "48214", "user": "kim"}, 1.0),
        "proc:unit:vllm-server.service:root": ((A,), {"unit": "vllm-server.service", "user": "root"}, 1.0),
        "proc:user:ana": ((B,), {"user": "ana"}, 1.0),
    }


def test_a_process_in_a_mig_instance_holds_the_instance(tmp_path: Path) -> None:
    proc_tree(tmp_path, 10, V2_USER, 1001)
    proc_tree(tmp_path, 11, V2_SLURM, 1000)
    board = Board(uuid=A, mig=[Mig(MIG, gpu_instance=1, compute_instance=0), None],
                  processes=[Process(10, gpu_instance=1, compute_instance=0), Process(11, gpu_instance=9)])
    held = {h.key: h.device_ids for h in source([board], tmp_path).holdings(1.0, [])}
    assert held == {"proc:user:ana": (MIG,), "proc:slurm:48213": (A,)}  # an unknown instance: the board


def test_gone_processes_and_unknown_users(tmp_path: Path) -> None:
    proc_tree(tmp_path, 5, V2_USER, 4242)
    boards = [Board(uuid=A, processes=[Process(5), Process(6)])]  # 6 ended before /proc was read
    src = ProcessesSource(ProcessesSettings(proc_root=tmp_path), NvmlProcesses(make_nvml(boards)),
                          user_lookup=lambda uid: USERS[uid])
    src.open()
    (only,) = src.holdings(1.0, [])
    assert dict(only.owner) == {"user": "4242"}


def test_nvml_errors_leave_that_board_out(tmp_path: Path) -> None:
    proc_tree(tmp_path, 1, V2_UNIT, 0)
    proc_tree(tmp_path, 2, V2_USER, 1001)
    lost = Board(uuid=A, processes=[Process(1)])
    denied = Board(uuid=B, processes=[Process(2)], process_permission=False)
    ok = Board(uuid="GPU-ok", processes=[Process(2)])
    src = source([lost, denied, ok], tmp_path)
    lost.lost = True
    assert [h.device_ids for h in src.holdings(1.0, [])] == [("GPU-ok",)]
    src.close()


def test_no_driver_is_source_unavailable(tmp_path: Path) -> None:
    src = ProcessesSource(ProcessesSettings(proc_root=tmp_path),
                          NvmlProcesses(make_nvml([], driver="missing")))
    with pytest.raises(SourceUnavailable, match="no NVIDIA driver"):
        src.open()


def test_cgroup_v1_prefers_the_line_naming_the_job() -> None:
    assert cgroup_path(V1_SLURM) == "/slurm/uid_1000/job_48214/step_batch"
    assert cgroup_path("1:name=systemd:/system.slice/x.service\n2:cpu:/\n") == "/system.slice/x.service"
    assert cgroup_path("") == ""
