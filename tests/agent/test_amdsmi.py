"""The amdsmi source against a fake amdsmi with AMD SMI's behaviour: units, the two
generations (MI250X's two dies, MI300X), the energy counter and its wrap, absent readings,
throttle causes, lost GPUs, no library or driver."""

from __future__ import annotations

import types

import pytest

from agent.accelerator_kit import (
    EVERY_SERIES,
    TS,
    check_a_device_lost_before_discovery_is_down_then_found,
    check_a_lost_device_goes_down_and_the_others_go_on,
    check_no_library_is_one_line_and_the_host_keeps_running,
    gpu_series,
)
from agent.fake_amdsmi import (
    RESOLUTION_UJ,
    AmdSmiLibraryException,
    Gpu,
    import_without_rocm,
    make_amdsmi,
    mi250x,
    mi300x,
)
from wattledger.agent.sources.amdsmi import AmdSmiSource
from wattledger.agent.sources.base import SourceUnavailable


def opened(gpus: list[Gpu], **kwargs: object) -> AmdSmiSource:
    src = AmdSmiSource("n1", amdsmi=make_amdsmi(gpus, **kwargs))
    src.open()
    return src


def joules(count: int) -> float:
    return count * RESOLUTION_UJ / 1e6


@pytest.mark.parametrize("version", ["6.0", "6.2", "7.0"])
def test_mi300x_readings_in_base_units(version: str) -> None:
    gpu = mi300x()
    r = opened([gpu], version=version).sample(TS).readings[0]
    assert r.ts == TS
    d = r.device
    assert (d.id, d.kind, d.index, d.model) == (gpu.uuid, "gpu", 0, "AMD Instinct MI300X")
    assert (d.slowdown_c, d.shutdown_c, d.power_limit_w) == (100.0, 105.0, 750.0)  # µW -> W
    assert r.power_w == 612.0  # current_socket_power (socket_power in AMD SMI 7), W
    assert r.energy_j == pytest.approx(joules(1_234_567_890_123))  # steps of 15.3 µJ
    assert (r.temp_c, r.mem_temp_c) == (71.0, 64.0)  # junction, HBM
    assert (r.util, r.mem_util) == (0.97, 0.38)
    assert (r.mem_used_bytes, r.mem_total_bytes) == (float(150 << 30), float(192 << 30))
    assert r.sm_clock_hz is None


def test_an_mi250x_modules_power_is_split_between_its_two_dies() -> None:
    first, second = mi250x()
    src = opened([first, second])
    a, b = src.sample(TS).readings
    # the module's average_socket_power (MI200 has no current_socket_power), counter and cap,
    # measured on the first die; the second answers 0 W, a count of 0 and a cap of 0
    assert (a.power_w, b.power_w) == (201.0, 201.0)
    assert a.energy_j == b.energy_j == pytest.approx(joules(987_654_321_000) / 2)
    assert (a.device.power_limit_w, b.device.power_limit_w) == (280.0, 280.0)
    assert (a.temp_c, a.mem_temp_c, a.device.model) == (68.0, 61.0, "AMD Instinct MI250X")
    assert (b.temp_c, b.util) == (68.0, 0.88)  # each die's own sensors and engines
    assert a.device.id != b.device.id
    before = second.calls.copy()
    src.sample(TS + 1)
    assert {"power", "energy", "power_cap"}.isdisjoint(second.calls - before)  # its zeros are not asked


def test_mi250x_modules_pair_their_own_dies_and_a_gpu_of_its_own_stays_whole() -> None:
    gpus = [*mi250x(0), *mi250x(1), mi300x()]
    gpus[2].power_w, gpus[2].energy_count = 300, 2_000_000_000_000
    readings = opened(gpus).sample(TS).readings
    assert [r.power_w for r in readings] == [201.0, 201.0, 150.0, 150.0, 612.0]
    assert readings[3].energy_j == pytest.approx(joules(2_000_000_000_000) / 2)
    assert sum(r.power_w or 0 for r in readings) == 402 + 300 + 612  # what the firmware measured


def test_while_a_modules_first_die_is_lost_the_second_has_no_power() -> None:
    first, second = mi250x()
    src = opened([first, second])
    first.lost = True
    out = src.sample(TS)
    assert [d.id for d in out.down] == [first.uuid]
    (b,) = out.readings
    assert (b.power_w, b.energy_j, b.device.power_limit_w) == (None, None, None)
    assert b.temp_c == 68.0
    first.lost = False
    assert [r.power_w for r in src.sample(TS + 1).readings] == [201.0, 201.0]


def test_the_energy_comes_from_the_counter_not_from_the_power() -> None:
    gpu = mi300x()
    src = opened([gpu])
    first = src.sample(TS).readings[0]
    gpu.energy_count = (gpu.energy_count or 0) + 65_359_477  # 1000 J in 15.3 µJ steps
    gpu.power_w = 50  # an unrelated power reading: the counter is what counts
    second = src.sample(TS + 1).readings[0]
    assert (second.energy_j or 0) - (first.energy_j or 0) == pytest.approx(1000.0, abs=1e-3)
    assert second.power_w == 50.0


def test_a_32_bit_counter_is_unfolded_across_its_wrap() -> None:
    gpu = mi300x()
    gpu.energy_count = 2**32 - 1000
    src = opened([gpu])
    before = src.sample(TS).readings[0].energy_j or 0
    gpu.energy_count = 500  # ran past 2**32 and came round
    after = src.sample(TS + 1).readings[0].energy_j or 0
    assert after - before == pytest.approx(joules(1500))
    gpu.energy_count = 2500
    assert (src.sample(TS + 2).readings[0].energy_j or 0) - after == pytest.approx(joules(2000))


def test_a_drop_of_a_64_bit_counter_is_a_reset_passed_on_as_read() -> None:
    gpu = mi300x()
    src = opened([gpu])
    assert (src.sample(TS).readings[0].energy_j or 0) > 10_000
    gpu.energy_count = 1_000_000  # the driver was reloaded: the counter starts again
    assert src.sample(TS + 1).readings[0].energy_j == pytest.approx(joules(1_000_000))


def test_without_an_energy_counter_energy_is_absent_and_power_stays() -> None:
    gpu = mi300x()
    src = opened([gpu], vm_guest=True)  # "not supported on virtual machine guest"
    for i in range(2):
        r = src.sample(TS + i).readings[0]
        assert r.energy_j is None and r.power_w == 612.0  # the collector integrates the power
    assert gpu.calls["energy"] == 1  # NotSupported once: never asked again


def test_unsupported_readings_are_absent_not_zero_and_not_asked_again() -> None:
    gpu = mi300x()
    gpu.vram = None
    gpu.gfx = "N/A"  # the library's "no value"
    src = opened([gpu])
    for i in range(3):
        r = src.sample(TS + i).readings[0]
        assert r.mem_temp_c is None and r.util is None
        assert r.temp_c == 71.0 and r.mem_util == 0.38
    assert gpu.calls["temp VRAM CURRENT"] == 1
    assert gpu.calls["temp EDGE CURRENT"] == 0  # the junction is the GPU's temperature


def test_thresholds_not_set_are_absent() -> None:
    gpu = mi300x()
    gpu.critical, gpu.emergency = 0, None
    d = opened([gpu]).sample(TS).readings[0].device
    assert (d.slowdown_c, d.shutdown_c) == (None, None)


def test_a_temperature_in_millidegrees_is_read_as_degrees() -> None:
    gpu = mi300x()
    gpu.hotspot = 71_000  # what the documentation says the call returns
    assert opened([gpu]).sample(TS).readings[0].temp_c == 71.0


def test_mi300x_throttle_causes_become_the_contracts_clock_event_bits() -> None:
    gpu = mi300x()
    src = opened([gpu])
    assert src.sample(TS).readings[0].clock_events is None  # nothing to compare with yet
    expected = [((), 0), (("ppt_residency_acc",), 0x4), (("socket_thm_residency_acc",), 0x20),
                (("hbm_thm_residency_acc",), 0x20), (("prochot_residency_acc",), 0x40),
                (("vr_thm_residency_acc",), 0x8), (("ppt_residency_acc", "socket_thm_residency_acc"), 0x24)]
    for step, (causes, bits) in enumerate(expected, 1):
        gpu.tick(throttled=causes)
        assert src.sample(TS + step).readings[0].clock_events == bits, causes
    assert gpu.calls["violation_status"] == 0  # it sleeps 100 ms per call


def test_mi250x_has_no_throttle_causes_and_is_not_asked_again() -> None:
    first, _ = mi250x()
    src = opened([first])
    for i in range(3):
        assert src.sample(TS + i).readings[0].clock_events is None
    assert first.calls["metrics"] == 1


def test_each_gpu_is_queried_once_per_call_per_sample() -> None:
    gpu = mi300x()
    src = opened([gpu])
    src.sample(TS)
    before = gpu.calls.copy()
    src.sample(TS + 1)
    # one call per reading (the static facts were read at discovery), one metrics-table read
    assert dict(gpu.calls - before) == {
        "power": 1, "energy": 1, "temp": 2, "temp HOTSPOT CURRENT": 1, "temp VRAM CURRENT": 1,
        "activity": 1, "power_cap": 1, "memory_used": 1, "metrics": 1}


def test_a_lost_gpu_is_reported_down_and_the_others_go_on() -> None:
    gpus = [mi300x(0), mi300x(1), mi300x(2)]
    check_a_lost_device_goes_down_and_the_others_go_on(opened(gpus), gpus)


def test_a_gpu_lost_before_discovery_is_down_then_found() -> None:
    check_a_device_lost_before_discovery_is_down_then_found(opened, [mi300x(0), mi300x(1)],
                                                            "n1:amdsmi:gpu1")


def test_an_io_failure_after_the_gpu_answered_is_one_absent_reading() -> None:
    gpu = mi300x()
    amdsmi = make_amdsmi([gpu])
    real = amdsmi.amdsmi_get_gpu_activity
    failing = {"now": True}

    def activity(handle: object) -> object:
        if failing["now"]:
            raise AmdSmiLibraryException(42)  # UNEXPECTED_SIZE, one sysfs read
        return real(handle)

    amdsmi.amdsmi_get_gpu_activity = activity
    src = AmdSmiSource("n1", amdsmi=amdsmi)
    src.open()
    out = src.sample(TS)
    assert out.down == [] and out.readings[0].util is None and out.readings[0].power_w == 612.0
    failing["now"] = False
    assert src.sample(TS + 1).readings[0].util == 0.97  # asked again


def test_two_handles_of_one_uuid_keep_two_ids() -> None:
    a, b = mi300x(), mi300x()  # a partitioned GPU's handles may share the UUID
    ids = [r.device.id for r in opened([a, b]).sample(TS).readings]
    assert len(set(ids)) == 2 and ids[0] == a.uuid


def test_without_a_uuid_the_asic_serial_is_the_id() -> None:
    gpu = mi300x()
    gpu.uuid = None
    assert opened([gpu]).sample(TS).readings[0].device.id == f"AMD-{gpu.asic_serial}"


def test_a_product_name_without_the_vendor_gets_it() -> None:
    gpu = mi300x()
    gpu.market_name, gpu.product_name = "N/A", "Instinct MI210"
    assert opened([gpu]).sample(TS).readings[0].device.model == "AMD Instinct MI210"


def test_no_driver_is_a_clear_unavailable() -> None:
    src = AmdSmiSource("n1", amdsmi=make_amdsmi([mi300x()], driver="not_loaded"))
    with pytest.raises(SourceUnavailable, match=r"^no AMD GPU driver \(amdsmi\): amdsmi_init: "
                                                r"AMDSMI_STATUS_DRIVER_NOT_LOADED"):
        src.open()


def test_the_package_without_rocm_is_one_line_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    src = AmdSmiSource("n1", import_module=import_without_rocm)
    with pytest.raises(SourceUnavailable) as raised:
        src.open()
    assert str(raised.value) == ("no AMD GPU driver (amdsmi): libamd_smi.so: cannot open shared object "
                                 "file: No such file or directory")
    assert capsys.readouterr().out == ""


def test_the_package_not_installed_is_one_line() -> None:
    def absent(name: str) -> types.ModuleType:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    with pytest.raises(SourceUnavailable, match=r"^no AMD GPU driver \(amdsmi\): the Python package "
                                                r"'amdsmi' is not installed \(pip install "):
        AmdSmiSource("n1", import_module=absent).open()


def test_no_library_says_one_line_and_other_sources_keep_running(caplog: pytest.LogCaptureFixture) -> None:
    check_no_library_is_one_line_and_the_host_keeps_running(
        AmdSmiSource("n1", import_module=import_without_rocm), "no AMD GPU driver (amdsmi)", caplog)


def test_close_shuts_amd_smi_down() -> None:
    amdsmi = make_amdsmi([mi300x()])
    src = AmdSmiSource("n1", amdsmi=amdsmi)
    src.open()
    assert amdsmi.initialized()
    src.close()
    assert not amdsmi.initialized()


def test_the_series_each_generation_has() -> None:
    """What docs/agent.md's vendor table says: no SM clock from AMD; clock events on MI300 only;
    both dies of an MI250X with their share of the module's power, energy and limit."""
    first, second = mi250x()
    mi300 = mi300x()
    series = gpu_series(AmdSmiSource("n1", amdsmi=make_amdsmi([first, second, mi300])))
    clock_events = {s for s in EVERY_SERIES if s.startswith("clock_event_active")}
    assert series[mi300.uuid] == EVERY_SERIES - {"sm_clock_hertz"}
    assert series[first.uuid] == EVERY_SERIES - {"sm_clock_hertz"} - clock_events
    assert series[second.uuid] == series[first.uuid]


def test_bindings_of_another_release_are_one_line_not_a_traceback() -> None:
    amdsmi = make_amdsmi([mi300x()])
    del amdsmi.AmdSmiTemperatureType  # a name these bindings do not have
    src = AmdSmiSource("n1", amdsmi=amdsmi)
    with pytest.raises(SourceUnavailable, match=r"^no AMD GPU driver \(amdsmi\): AttributeError: "):
        src.open()
    assert not amdsmi.initialized()  # what was opened is shut down again
