"""The redfish source against DMTF's public mockups (tests/agent/redfish_mockups), served over
HTTPS with session login on 127.0.0.1 by tests/agent/redfish_bmc.py, and as-is by the
reference tool ``sushy-static``: the three power paths, energy, the inlet temperature,
session login and expiry, TLS with a test CA, a BMC that refuses the login.

Reads are driven one at a time with ``poller.poll_once()`` on the test's thread, so each
test knows exactly which requests were made; the poll thread itself, and a BMC that hangs,
are in test_redfish_hang.py."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from agent.redfish_bmc import FakeBmc
from tests.loopback import free_port
from wattledger.agent.sources.base import SourceError
from wattledger.agent.sources.redfish import RedfishSource
from wattledger.agent.sources.remote import RedfishSettings

ENV = "/redfish/v1/Chassis/1U/EnvironmentMetrics"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> dict[str, Path]:
    password = tmp_path / "bmc-password"
    password.write_text("s3cret-pw\n")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return {"password": password, "ca": ca_file}


def serve(mockup: str, ca: trustme.CA, **kw: object) -> FakeBmc:
    context = ca.issue_cert("127.0.0.1").configure_cert  # a server certificate of the test CA
    import ssl

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context(tls)
    return FakeBmc(mockup, tls=tls, **kw)  # type: ignore[arg-type]


@pytest.fixture
def bmc(ca: trustme.CA) -> Iterator[FakeBmc]:
    server = serve("public-rackmount1", ca)
    yield server
    server.close()


def source_for(bmc: FakeBmc, files: dict[str, Path], **kw: object) -> RedfishSource:
    settings = RedfishSettings(url=bmc.url, user="monitor", password_file=files["password"],
                               ca_file=files["ca"], timeout=5.0, **kw)  # type: ignore[arg-type]
    return RedfishSource("gpu-node-01", settings)


def read(source: RedfishSource) -> dict[str, dict[str, float | None]]:
    """One poll, then what sample() hands over, by device id."""
    assert source.poller.poll_once(), source.poller.last_error
    out = {}
    for r in source.sample(0.0).readings:
        out[r.device.id] = {"power_w": r.power_w, "energy_j": r.energy_j, "temp_c": r.temp_c}
    return out


def test_environment_metrics_power_and_thermal_metrics_inlet(bmc: FakeBmc, files: dict[str, Path]) -> None:
    source = source_for(bmc, files)
    got = read(source)
    # public-rackmount1: EnvironmentMetrics.PowerWatts.Reading 374, ThermalMetrics Intake 24.8
    assert got["gpu-node-01:bmc"] == {"power_w": 374.0, "energy_j": None, "temp_c": None}
    assert got["gpu-node-01:bmc:inlet"] == {"power_w": None, "energy_j": None, "temp_c": 24.8}
    assert source.node_device is not None
    assert (source.node_device.kind, source.node_device.model) == ("node", "Contoso 3500RX")
    assert (source.inlet_device.kind, source.inlet_device.role) == ("sensor", "inlet")
    # not the CPU temperature that the mockup's EnvironmentMetrics.TemperatureCelsius carries (39)
    assert got["gpu-node-01:bmc:inlet"]["temp_c"] != 39

    bmc.set(ENV, "/PowerWatts/Reading", 612.5)
    bmc.set(ENV, "/EnergyJoules", {"Reading": 1.25e9,
                                   "DataSourceUri": "/redfish/v1/Chassis/1U/Sensors/TotalEnergy"})
    got = read(source)
    assert got["gpu-node-01:bmc"] == {"power_w": 612.5, "energy_j": 1.25e9, "temp_c": None}
    assert bmc.logins == 1  # one session for every read


def test_energy_in_kwh_is_reported_and_called_coarse(bmc: FakeBmc, files: dict[str, Path],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    bmc.set(ENV, "/EnergykWh", {"Reading": 325.7})
    with caplog.at_level(logging.WARNING):
        got = read(RedfishSource("n1", RedfishSettings(url=bmc.url, user="monitor",
                                                       password_file=files["password"], ca_file=files["ca"])))
    assert got["n1:bmc"]["energy_j"] == pytest.approx(325.7 * 3.6e6)
    assert "too coarse for a 10 s window" in caplog.text


def test_without_environment_power_the_power_supplies_are_summed(ca: trustme.CA,
                                                                 files: dict[str, Path]) -> None:
    bmc = serve("public-tower", ca)
    try:
        bmc.set("/redfish/v1/Chassis/Tower/EnvironmentMetrics", "/PowerWatts", None)
        source = source_for(bmc, files)
        got = read(source)
        # public-tower: PSU Bay1 and Bay2 Metrics.InputPowerWatts, 487.4 W each
        assert got["gpu-node-01:bmc"]["power_w"] == pytest.approx(2 * 487.4)
        bmc.set("/redfish/v1/Chassis/Tower/PowerSubsystem/PowerSupplies/Bay2/Metrics",
                "/InputPowerWatts/Reading", 301.0)
        assert read(source)["gpu-node-01:bmc"]["power_w"] == pytest.approx(487.4 + 301.0)
        assert source.poller.latest() is not None
        latest = source.poller.latest()
        assert latest is not None and latest.value.power_from == "PowerSupplies[2].InputPowerWatts"
        assert got["gpu-node-01:bmc:inlet"]["temp_c"] == 24.8
    finally:
        bmc.close()


def test_an_older_bmc_is_read_from_the_deprecated_power_resource(ca: trustme.CA,
                                                                 files: dict[str, Path]) -> None:
    bmc = serve("public-catfish", ca)  # Chassis/1 has only Power and Thermal
    try:
        source = source_for(bmc, files)
        got = read(source)
        assert got["gpu-node-01:bmc"]["power_w"] == 224.0  # PowerControl[0].PowerConsumedWatts
        assert got["gpu-node-01:bmc:inlet"]["temp_c"] == 25.0  # Thermal, PhysicalContext Intake
        latest = source.poller.latest()
        assert latest is not None and latest.value.power_from == "Power.PowerControl[0].PowerConsumedWatts"
    finally:
        bmc.close()


def test_a_rackmount_without_environment_metrics_falls_back_to_its_power_supply(
        bmc: FakeBmc, files: dict[str, Path]) -> None:
    bmc.remove(ENV)
    got = read(source_for(bmc, files))
    # public-rackmount1: Bay1 has Metrics (937.4 W), Bay2 is Absent
    assert got["gpu-node-01:bmc"]["power_w"] == 937.4


def test_an_expired_session_is_logged_in_again_and_logged_out_at_the_end(
        bmc: FakeBmc, files: dict[str, Path]) -> None:
    source = source_for(bmc, files)
    read(source)
    assert bmc.logins == 1 and len(bmc.sessions) == 1
    bmc.expire_sessions()
    got = read(source)
    assert got["gpu-node-01:bmc"]["power_w"] == 374.0
    assert bmc.unauthorized == 1 and bmc.logins == 2
    source._logout()  # what the poll thread does when the source closes
    assert bmc.sessions == {} and bmc.requests[-1][0] == "DELETE"


def test_a_refused_login_is_a_down_source_with_the_reason(bmc: FakeBmc, tmp_path: Path,
                                                          files: dict[str, Path]) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    source = RedfishSource("n1", RedfishSettings(url=bmc.url, user="monitor", password_file=wrong,
                                                 ca_file=files["ca"]))
    assert not source.poller.poll_once()
    assert bmc.refused_logins == 1
    with pytest.raises(SourceError, match="login refused"):
        source.sample(0.0)
    # the next tries back off (a BMC locks the account after a few failures)
    assert source.poller._delay() == 2 * source.settings.interval


def test_tls_is_verified_by_default(bmc: FakeBmc, files: dict[str, Path]) -> None:
    # no --redfish-ca-file: the system's trust store, which does not know the test CA
    source = RedfishSource("n1", RedfishSettings(url=bmc.url, user="monitor",
                                                 password_file=files["password"]))
    assert not source.poller.poll_once()
    assert "TLS verification failed" in (source.poller.last_error or "")
    assert bmc.logins == 0  # the password was never sent


def test_a_wrong_ca_is_refused(bmc: FakeBmc, files: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    source = RedfishSource("n1", RedfishSettings(url=bmc.url, user="monitor",
                                                 password_file=files["password"], ca_file=other))
    assert not source.poller.poll_once()
    assert "TLS verification failed" in (source.poller.last_error or "") and bmc.logins == 0


def test_insecure_skips_verification_only_when_asked(bmc: FakeBmc, files: dict[str, Path]) -> None:
    source = RedfishSource("n1", RedfishSettings(url=bmc.url, user="monitor",
                                                 password_file=files["password"], insecure=True))
    assert read(source)["n1:bmc"]["power_w"] == 374.0


def test_plain_http_works_with_a_warning(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    bmc = FakeBmc("public-rackmount1")
    try:
        source = RedfishSource("n1", RedfishSettings(url=bmc.url, user="monitor",
                                                     password_file=files["password"], interval=3600))
        with caplog.at_level(logging.WARNING):
            source.open()
        assert "plain http" in caplog.text
        source.close()
        assert read(source)["n1:bmc"]["power_w"] == 374.0
    finally:
        bmc.close()


def test_credentials_are_needed_and_read_from_the_file(bmc: FakeBmc, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="--redfish-user and --redfish-password-file"):
        RedfishSource("n1", RedfishSettings(url=bmc.url)).open()
    with pytest.raises(SourceError, match="cannot read"):
        RedfishSource("n1", RedfishSettings(url=bmc.url, user="u", password_file=tmp_path / "nope")).open()


def test_basic_auth_keeps_no_session_on_the_bmc(bmc: FakeBmc, files: dict[str, Path]) -> None:
    source = source_for(bmc, files, auth="basic")
    assert read(source)["gpu-node-01:bmc"]["power_w"] == 374.0
    assert bmc.logins == 0 and bmc.sessions == {}


def test_sushy_static_serves_the_same_mockup(ca: trustme.CA, files: dict[str, Path], tmp_path: Path) -> None:
    """The reference tool serving DMTF's folder as it is, over TLS. It has no sessions (its
    POST answers 204 without a token or Location, which the library cannot log in with),
    so this reads it with HTTP Basic, which it ignores."""
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    port = free_port()
    mockup = Path(__file__).parent / "redfish_mockups" / "public-rackmount1"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "sushy-static"), "-i", "127.0.0.1",
                             "-p", str(port), "-m", str(mockup), "-c", str(tmp_path / "cert.pem"),
                             "-k", str(tmp_path / "key.pem")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        source = RedfishSource("n1", RedfishSettings(url=f"https://127.0.0.1:{port}", user="monitor",
                                                     password_file=files["password"], ca_file=files["ca"],
                                                     auth="basic"))
        for _ in range(100):  # until it listens (a loaded machine starts it slowly)
            if source.poller.poll_once():
                break
            proc.poll()
            assert proc.returncode is None, "sushy-static exited"
            import time

            time.sleep(0.1)
        got = {r.device.id: r for r in source.sample(0.0).readings}
        assert got["n1:bmc"].power_w == 374.0 and got["n1:bmc:inlet"].temp_c == 24.8
    finally:
        proc.terminate()
        proc.wait(timeout=30)
