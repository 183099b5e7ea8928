"""MIG in the nvml source: a board in MIG mode reports its MIG devices as partition devices
(id = MIG UUID, parent = the board, share = compute slices / the board's slices), with no
power of their own; the board's readings are unchanged; boards without MIG answer
NotSupported and report none."""

from __future__ import annotations

import pytest

from agent.fake_pynvml import Board, Mig, make_nvml
from wattledger.agent.sources.nvml import MIG_RECHECK_SECONDS, NvmlSource

TS = 1_764_000_000.0
BOARD = "GPU-b0a4d000-0000-0000-0000-000000000000"


def h100_mig(slots: list[Mig | None]) -> Board:
    return Board(uuid=BOARD, mig=slots)


def partitions(board: Board, ts: float = TS) -> tuple[list[object], object]:
    src = NvmlSource("n1", nvml=make_nvml([board]))
    src.open()
    sample = src.sample(ts)
    gpu = [r for r in sample.readings if r.device.kind == "gpu"]
    return [r for r in sample.readings if r.device.kind == "partition"], gpu[0]


def test_mig_devices_are_partitions_of_their_board_by_compute_slices() -> None:
    slots: list[Mig | None] = [None] * 7
    slots[0] = Mig("MIG-aaaa0000-0000-0000-0000-000000000000", gpu_instance=1, gpu_slices=3, compute_slices=3,
                   sms=60, memory_mb=40192)
    slots[3] = Mig("MIG-bbbb0000-0000-0000-0000-000000000000", gpu_instance=2, gpu_slices=2, compute_slices=2,
                   sms=32, memory_mb=20096)
    slots[5] = Mig("MIG-cccc0000-0000-0000-0000-000000000000", gpu_instance=3, sms=16)
    parts, board = partitions(h100_mig(slots))
    assert [r.device.id for r in parts] == [s.uuid for s in slots if s is not None]
    assert [r.device.share for r in parts] == pytest.approx([3 / 7, 2 / 7, 1 / 7])
    assert {r.device.parent for r in parts} == {BOARD}
    assert [r.device.index for r in parts] == [0, 3, 5]
    assert parts[0].device.model == "MIG 3g (3c, 60 SMs, 40192 MiB)"
    assert all(r.power_w is None and r.energy_j is None for r in parts)
    # the board itself: the measured device, its counter as without MIG
    assert board.device.id == BOARD and board.energy_j == pytest.approx(123_456.789)


def test_two_compute_instances_of_one_gpu_instance_share_its_slices() -> None:
    slots: list[Mig | None] = [None] * 7
    slots[0] = Mig("MIG-1c000000-0000-0000-0000-000000000000", gpu_instance=1, compute_instance=0,
                   gpu_slices=3, compute_slices=1)
    slots[1] = Mig("MIG-2c000000-0000-0000-0000-000000000000", gpu_instance=1, compute_instance=1,
                   gpu_slices=3, compute_slices=2)
    parts, _ = partitions(h100_mig(slots))
    assert sum(r.device.share for r in parts) == pytest.approx(3 / 7)


def test_no_mig_no_partitions() -> None:
    plain = Board(uuid=BOARD)  # MIG NotSupported (an L40S, a V100)
    parts, board = partitions(plain)
    assert parts == [] and board.device.id == BOARD
    assert plain.calls["mig_mode"] == 1
    off = h100_mig([Mig("MIG-x", gpu_instance=1)])
    off.mig_enabled = False  # MIG capable, mode disabled
    assert partitions(off)[0] == []


def test_mig_layout_is_looked_at_again_after_a_while() -> None:
    slots: list[Mig | None] = [None] * 7
    board = h100_mig(slots)
    src = NvmlSource("n1", nvml=make_nvml([board]))
    src.open()
    assert [r for r in src.sample(TS).readings if r.device.kind == "partition"] == []
    slots[0] = Mig("MIG-new00000-0000-0000-0000-000000000000", gpu_instance=1, parent=board)
    assert [r for r in src.sample(TS + 1).readings if r.device.kind == "partition"] == []  # not yet
    later = src.sample(TS + MIG_RECHECK_SECONDS + 1).readings
    assert [r.device.id for r in later if r.device.kind == "partition"] == [slots[0].uuid]
    assert board.calls["mig_mode"] == 2


def test_a_lost_mig_board_is_down_with_its_partitions() -> None:
    board = h100_mig([Mig("MIG-1", gpu_instance=1)])
    src = NvmlSource("n1", nvml=make_nvml([board]))
    src.open()
    board.lost = True
    sample = src.sample(TS + 100)
    assert sample.readings == [] and [d.id for d in sample.down] == [BOARD]
