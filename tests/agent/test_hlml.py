"""The hlml source against a fake pyhlml with HLML's behaviour: units, Gaudi 2 and Gaudi 3, the
2022 and the current bindings, the energy counter and its wrap, absent readings, throttle
reasons, lost devices, no library or driver."""

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
from agent.fake_pyhlml import Aip, HLMLError, gaudi2, gaudi3, make_pyhlml
from wattledger.agent.sources.base import SourceUnavailable
from wattledger.agent.sources.hlml import HlmlSource


def opened(aips: list[Aip], **kwargs: str) -> HlmlSource:
    src = HlmlSource("n1", pyhlml=make_pyhlml(aips, **kwargs))
    src.open()
    return src


def test_gaudi2_readings_in_base_units() -> None:
    aip = gaudi2()
    r = opened([aip]).sample(TS).readings[0]
    d = r.device
    assert (d.id, d.kind, d.index, d.model) == (aip.uuid, "gpu", 0, "Intel Gaudi HL-225")
    assert (d.slowdown_c, d.shutdown_c) == (100.0, 105.0)
    assert d.power_limit_w == 550.0  # the limit in force, mW -> W (not the 600 W default)
    assert r.power_w == 421.0
    assert r.energy_j == pytest.approx(73_456_789.012)  # mJ -> J
    assert (r.temp_c, r.mem_temp_c) == (48.0, 44.0)  # the chip (ON_AIP), HBM
    assert r.util == 0.91 and r.mem_util is None  # HLML's "memory" rate is not documented
    assert (r.mem_used_bytes, r.mem_total_bytes) == (float(80 << 30), float(96 << 30))
    assert r.clock_events == 0


def test_gaudi3_beside_gaudi2() -> None:
    g2, g3 = gaudi2(0), gaudi3(1)
    a, b = opened([g2, g3]).sample(TS).readings
    assert (a.device.model, b.device.model) == ("Intel Gaudi HL-225", "Intel Gaudi HL-325L")
    assert (b.power_w, b.device.power_limit_w, b.device.slowdown_c) == (812.0, 900.0, 95.0)
    assert b.mem_total_bytes == float(128 << 30) and b.device.index == 1


def test_the_2022_bindings_have_no_hbm_sensor_and_only_the_default_limit() -> None:
    aip = gaudi2()
    src = opened([aip], bindings="2022")
    for i in range(2):
        r = src.sample(TS + i).readings[0]
        assert r.mem_temp_c is None and r.temp_c == 48.0
        assert r.device.power_limit_w == 600.0  # the default: these bindings cannot read another
        assert r.util == 0.91
    assert aip.calls["temp 3"] == 0  # a sensor those bindings cannot name is not asked for


def test_the_2022_bindings_codes_are_read_as_what_they_name() -> None:
    aip = gaudi2()
    pyhlml = make_pyhlml([aip], bindings="2022")

    def lost(device: object) -> int:
        raise HLMLError(11)  # AIP_IS_LOST in the 2022 table

    pyhlml.hlmlDeviceGetPowerUsage = lost
    src = HlmlSource("n1", pyhlml=pyhlml)
    src.open()
    assert [d.id for d in src.sample(TS).down] == [aip.uuid]


def test_the_energy_comes_from_the_counter_not_from_the_power() -> None:
    aip = gaudi2()
    src = opened([aip])
    first = src.sample(TS).readings[0]
    aip.energy_mj = (aip.energy_mj or 0) + 600_000  # 600 J
    aip.power_mw = 100_000
    second = src.sample(TS + 1).readings[0]
    assert (second.energy_j or 0) - (first.energy_j or 0) == pytest.approx(600.0)
    assert second.power_w == 100.0


def test_a_32_bit_counter_is_unfolded_across_its_wrap() -> None:
    aip = gaudi2()
    aip.energy_mj = 2**32 - 400_000
    src = opened([aip])
    before = src.sample(TS).readings[0].energy_j or 0
    aip.energy_mj = 200_000  # 600 J later, past 2**32 mJ
    assert (src.sample(TS + 1).readings[0].energy_j or 0) - before == pytest.approx(600.0)


def test_a_drop_of_a_64_bit_counter_is_a_reset_passed_on_as_read() -> None:
    aip = gaudi2()
    src = opened([aip])
    src.sample(TS)
    aip.energy_mj = 5_000  # the driver was reloaded
    assert src.sample(TS + 1).readings[0].energy_j == pytest.approx(5.0)


def test_unsupported_readings_are_absent_not_zero_and_not_asked_again() -> None:
    aip = gaudi2()
    aip.energy_mj, aip.temp_hbm, aip.throttle, aip.slowdown = None, None, None, None
    src = opened([aip])
    for i in range(3):
        r = src.sample(TS + i).readings[0]
        assert (r.energy_j, r.mem_temp_c, r.clock_events, r.device.slowdown_c) == (None, None, None, None)
        assert r.power_w == 421.0 and r.temp_c == 48.0  # without a counter the collector integrates power
    assert (aip.calls["energy"], aip.calls["temp 3"], aip.calls["throttle"]) == (1, 1, 1)


def test_throttle_reasons_become_the_contracts_clock_event_bits() -> None:
    aip = gaudi2()
    src = opened([aip])
    for reasons, bits in [(0, 0), (1, 0x4), (2, 0x20), (3, 0x24), (1 << 7, 0)]:
        aip.throttle = reasons
        assert src.sample(TS + reasons).readings[0].clock_events == bits, reasons


def test_each_device_is_queried_once_per_call_per_sample() -> None:
    aip = gaudi2()
    src = opened([aip])
    before = aip.calls.copy()
    src.sample(TS)
    assert dict(aip.calls - before) == {
        "power": 1, "energy": 1, "temp 0": 1, "temp 3": 1, "utilization": 1, "memory": 1,
        "power_limit": 1, "throttle": 1}


def test_a_lost_device_is_reported_down_and_the_others_go_on() -> None:
    aips = [gaudi2(0), gaudi2(1), gaudi2(2)]
    check_a_lost_device_goes_down_and_the_others_go_on(opened(aips), aips)


def test_a_device_lost_before_discovery_is_down_then_found() -> None:
    check_a_device_lost_before_discovery_is_down_then_found(opened, [gaudi2(0), gaudi3(1)],
                                                            "n1:hlml:gpu1")


def test_without_a_uuid_the_serial_is_the_id() -> None:
    aip = gaudi2()
    aip.uuid = None
    assert opened([aip]).sample(TS).readings[0].device.id == aip.serial


def test_without_libhlml_one_line_and_nothing_printed(capsys: pytest.CaptureFixture[str]) -> None:
    src = HlmlSource("n1", pyhlml=make_pyhlml([gaudi2()], driver="missing"))
    with pytest.raises(SourceUnavailable) as raised:
        src.open()
    assert str(raised.value) == ("no Intel Gaudi driver (hlml): Failed to load libhlml: hlmlInit: "
                                 "HLML_ERROR_UNINITIALIZED")
    assert capsys.readouterr().out == ""


def test_driver_not_loaded_is_a_clear_unavailable() -> None:
    src = HlmlSource("n1", pyhlml=make_pyhlml([gaudi2()], driver="not_loaded"))
    with pytest.raises(SourceUnavailable, match=r"^no Intel Gaudi driver \(hlml\): hlmlInit: "
                                                r"HLML_ERROR_DRIVER_NOT_LOADED$"):
        src.open()


def test_the_bindings_not_installed_is_one_line() -> None:
    def absent(name: str) -> types.ModuleType:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    with pytest.raises(SourceUnavailable, match=r"^no Intel Gaudi driver \(hlml\): the Python package "
                                                r"'pyhlml' is not installed \(pip install "):
        HlmlSource("n1", import_module=absent).open()


def test_no_library_says_one_line_and_other_sources_keep_running(caplog: pytest.LogCaptureFixture) -> None:
    check_no_library_is_one_line_and_the_host_keeps_running(
        HlmlSource("n1", pyhlml=make_pyhlml([gaudi2()], driver="missing")), "no Intel Gaudi driver (hlml)",
        caplog)


def test_close_shuts_hlml_down() -> None:
    pyhlml = make_pyhlml([gaudi2()])
    src = HlmlSource("n1", pyhlml=pyhlml)
    src.open()
    assert pyhlml.initialized()
    src.close()
    assert not pyhlml.initialized()


@pytest.mark.parametrize("bindings", ["1.24", "2022"])
def test_the_series_a_gaudi_has(bindings: str) -> None:
    """What docs/agent.md's vendor table says: no memory utilization or SM clock from HLML; no
    HBM temperature through the 2022 bindings."""
    aip = gaudi3()
    series = gpu_series(HlmlSource("n1", pyhlml=make_pyhlml([aip], bindings=bindings)))
    missing = {"memory_utilization_ratio", "sm_clock_hertz"} | (set() if bindings == "1.24" else
                                                                 {"temperature_celsius{memory}"})
    assert series[aip.uuid] == EVERY_SERIES - missing
