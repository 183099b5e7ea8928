"""The nvml source against a fake pynvml with NVML's behaviour: units, absent fields, lost GPUs,
no driver."""

from __future__ import annotations

import logging

import pytest

from agent.fake_pynvml import Board, make_nvml
from wattledger.agent.sampler import Sampler
from wattledger.agent.sources.base import SourceSample, SourceUnavailable
from wattledger.agent.sources.nvml import NvmlSource

TS = 1_764_000_000.0


def h100(i: int = 0) -> Board:
    return Board(uuid=f"GPU-h100-{i}")


def a100_no_mem_temp() -> Board:
    return Board(name="NVIDIA A100-SXM4-40GB", uuid="GPU-a100", mem_temp=None, limit_mw=400_000,
                 slowdown=None)


def v100_old_driver() -> Board:
    # a driver without the field API, and (as on pre-Volta boards) no energy counter
    return Board(name="Tesla V100-SXM2-16GB", uuid="GPU-v100", field_api=False, energy_mj=None)


def opened(boards: list[Board]) -> NvmlSource:
    src = NvmlSource("n1", nvml=make_nvml(boards))
    src.open()
    return src


def test_units_are_converted_to_base_units() -> None:
    r = opened([h100()]).sample(TS).readings[0]
    assert r.ts == TS
    assert r.device.id == "GPU-h100-0" and r.device.kind == "gpu" and r.device.index == 0
    assert r.device.model == "NVIDIA H100 80GB HBM3"
    assert (r.device.slowdown_c, r.device.shutdown_c, r.device.power_limit_w) == (87.0, 92.0, 700.0)
    assert r.power_w == pytest.approx(512.3)
    assert r.energy_j == pytest.approx(123_456.789)
    assert (r.temp_c, r.mem_temp_c) == (61.0, 70.0)
    assert (r.util, r.mem_util) == (0.93, 0.41)
    assert r.sm_clock_hz == 1980e6
    assert r.clock_events == 0x20
    assert (r.mem_used_bytes, r.mem_total_bytes) == (float(60 << 30), float(80 << 30))


def test_energy_counter_keeps_64_bits() -> None:
    board = h100()
    board.energy_mj = 2**33 + 7  # past the 32-bit wrap that broke some wrappers (about 1.19 kWh)
    r = opened([board]).sample(TS).readings[0]
    assert r.energy_j == pytest.approx((2**33 + 7) / 1000)


def test_unsupported_fields_are_absent_not_zero_and_not_asked_again() -> None:
    a100 = a100_no_mem_temp()
    src = opened([a100])
    first = src.sample(TS).readings[0]
    assert first.mem_temp_c is None
    assert first.device.slowdown_c is None
    assert first.temp_c == 61.0 and first.power_w == pytest.approx(512.3)
    second = src.sample(TS + 1).readings[0]
    assert a100.calls["field 82"] == 1  # NotSupported once: never asked again
    assert a100.calls["field 83"] == 2 and second.energy_j is not None  # the other field goes on


def test_energy_and_memory_temperature_come_from_one_field_call() -> None:
    board = h100()
    src = opened([board])
    for i in range(3):
        r = src.sample(TS + i).readings[0]
        assert r.energy_j == pytest.approx(123_456.789) and r.mem_temp_c == 70.0
    assert board.calls["field_values"] == 3 and board.calls["energy"] == 0


def test_driver_without_field_api_reads_the_energy_counter_directly() -> None:
    board = Board(uuid="GPU-old", field_api=False)
    src = opened([board])
    r = src.sample(TS).readings[0]
    assert r.energy_j == pytest.approx(123_456.789) and r.mem_temp_c is None
    src.sample(TS + 1)
    assert board.calls["field_values"] == 1 and board.calls["energy"] == 2


def test_board_without_the_energy_field_reads_the_counter_directly() -> None:
    board = Board(uuid="GPU-no-field-83", energy_field=False)
    src = opened([board])
    for i in range(2):
        r = src.sample(TS + i).readings[0]
        assert r.energy_j == pytest.approx(123_456.789) and r.mem_temp_c == 70.0
    assert board.calls["field 83"] == 1  # NotSupported once, then the direct call each sample
    assert board.calls["energy"] == 2 and board.calls["field 82"] == 2


def test_memory_used_leaves_out_the_drivers_reservation_as_nvidia_smi_does() -> None:
    board = h100()
    r = opened([board]).sample(TS).readings[0]
    assert r.mem_used_bytes == float(board.mem_used)  # v2, not used + reserved


def test_driver_without_memory_info_v2_falls_back_to_v1() -> None:
    board = Board(uuid="GPU-v1", memory_v2=False)
    src = opened([board])
    r = src.sample(TS).readings[0]
    assert r.mem_used_bytes == float(board.mem_used + board.mem_reserved)  # v1 counts the reservation
    assert r.mem_total_bytes == float(board.mem_total)
    src.sample(TS + 1)
    assert board.calls["memory_v2"] == 1 and board.calls["memory"] == 2


def test_old_driver_without_field_api_and_board_without_energy_counter() -> None:
    v100 = v100_old_driver()
    src = opened([h100(), v100])
    readings = src.sample(TS).readings
    assert [r.device.id for r in readings] == ["GPU-h100-0", "GPU-v100"]
    old = readings[1]
    assert old.energy_j is None and old.mem_temp_c is None
    assert old.power_w == pytest.approx(512.3) and old.util == 0.93
    assert readings[0].energy_j is not None and readings[0].mem_temp_c == 70.0
    src.sample(TS + 1)
    assert v100.calls["energy"] == 1 and v100.calls["field_values"] == 1


def test_each_gpu_is_queried_once_per_sample() -> None:
    board = h100()
    src = opened([board])
    before = board.calls.copy()
    src.sample(TS)
    per_sample = board.calls - before
    # one call per reading, no repeats (static facts were read at discovery)
    assert max(per_sample.values()) == 1
    assert "uuid" not in per_sample and "threshold" not in per_sample


def test_lost_gpu_is_reported_down_and_the_others_go_on() -> None:
    boards = [h100(0), h100(1), h100(2)]
    src = opened(boards)
    boards[1].lost = True
    out: SourceSample = src.sample(TS)
    assert [r.device.id for r in out.readings] == ["GPU-h100-0", "GPU-h100-2"]
    assert [d.id for d in out.down] == ["GPU-h100-1"]
    boards[1].lost = False  # back after a reset
    assert len(src.sample(TS + 1).readings) == 3


def test_gpu_lost_before_discovery_is_down_then_found() -> None:
    boards = [h100(0), h100(1)]
    boards[1].lost = True
    src = opened(boards)
    out = src.sample(TS)
    assert [r.device.id for r in out.readings] == ["GPU-h100-0"]
    assert [(d.id, d.index) for d in out.down] == [("n1:gpu1", 1)]
    boards[1].lost = False
    assert [r.device.id for r in src.sample(TS + 1).readings] == ["GPU-h100-0", "GPU-h100-1"]


@pytest.mark.parametrize("driver", ["missing", "not_loaded"])
def test_no_driver_is_a_clear_unavailable(driver: str) -> None:
    src = NvmlSource("n1", nvml=make_nvml([h100()], driver=driver))
    with pytest.raises(SourceUnavailable, match="no NVIDIA driver"):
        src.open()


class _Steady:
    name = "host"

    def open(self) -> None: ...

    def close(self) -> None: ...

    def sample(self, ts: float) -> SourceSample:
        return SourceSample()


def test_no_driver_says_one_line_and_other_sources_keep_running(caplog: pytest.LogCaptureFixture) -> None:
    nvml = NvmlSource("n1", nvml=make_nvml([h100()], driver="missing"))
    sampler = Sampler([nvml, _Steady()], clock=lambda: TS)
    with caplog.at_level(logging.WARNING):
        sampler.open()
        sampler.sample(TS)
        sampler.sample(TS + 1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no NVIDIA driver (NVML)" in lines[0] and "keep running" in lines[0]
    assert sampler.snapshot.source_up == {"nvml": False, "host": True}


def test_close_shuts_nvml_down() -> None:
    nvml = make_nvml([h100()])
    src = NvmlSource("n1", nvml=nvml)
    src.open()
    assert nvml.initialized()
    src.close()
    assert not nvml.initialized()


def test_temperature_falls_back_to_the_versioned_call() -> None:
    nvml = make_nvml([h100()])

    def gone(handle: object, sensor: int) -> int:
        raise nvml.NVMLError(13)  # FunctionNotFound, as when a driver drops the deprecated call

    nvml.nvmlDeviceGetTemperature = gone
    nvml.nvmlDeviceGetTemperatureV = lambda handle, sensor: 64
    src = NvmlSource("n1", nvml=nvml)
    src.open()
    assert src.sample(TS).readings[0].temp_c == 64.0
    assert src.sample(TS + 1).readings[0].temp_c == 64.0
