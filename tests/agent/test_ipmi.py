"""The ipmi source against a BMC over IPMI 2.0 LAN on 127.0.0.1: pyghmi's own BMC server
(tests/agent/ipmi_bmc.py, in its own process) answering DCMI Get Power Reading and Get
Temperature Reading as DCMI 1.5 lays them out; the real RMCP+ login (RAKP, HMAC-SHA1,
AES), a wrong password, a BMC without DCMI, one that is not measuring, one that is gone."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.loopback import free_port
from wattledger.agent.sources import ipmi
from wattledger.agent.sources.base import SourceError, SourceUnavailable
from wattledger.agent.sources.ipmi import IpmiSource, parse_power_reading
from wattledger.agent.sources.remote import IpmiSettings

pytestmark = pytest.mark.timeout(120)


class Bmc:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.state = tmp / "state.json"
        self.set(power_w=512, inlet_c=23)
        self.password = tmp / "bmc-password"
        self.password.write_text("ipmi-pw-7\n")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "ipmi_bmc.py"), "--port", str(self.port),
             "--user", "monitor", "--password-file", str(self.password), "--state", str(self.state)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "listening"

    def set(self, **state: Any) -> None:
        self.state.write_text(json.dumps(state))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[Bmc]:
    server = Bmc(tmp_path)
    yield server
    server.close()


def source(bmc: Bmc, password: Path | None = None) -> IpmiSource:
    return IpmiSource("gpu-node-02", IpmiSettings(host="127.0.0.1", port=bmc.port, user="monitor",
                                                  password_file=password or bmc.password, timeout=5))


def read(src: IpmiSource) -> dict[str, Any]:
    assert src.poller.poll_once(), src.poller.last_error
    return {r.device.id: r for r in src.sample(0.0).readings}


def test_dcmi_power_and_inlet_over_lan(bmc: Bmc) -> None:
    src = source(bmc)
    got = read(src)
    node, inlet = got["gpu-node-02:bmc"], got["gpu-node-02:bmc:inlet"]
    assert (node.power_w, node.energy_j, node.device.kind) == (512.0, None, "node")
    assert (inlet.temp_c, inlet.device.kind, inlet.device.role) == (23.0, "sensor", "inlet")
    bmc.set(power_w=1874, inlet_c=-3)
    got = read(src)
    assert got["gpu-node-02:bmc"].power_w == 1874.0 and got["gpu-node-02:bmc:inlet"].temp_c == -3.0
    src._logout()


def test_a_bmc_that_is_not_measuring_reports_no_power(bmc: Bmc) -> None:
    bmc.set(power_w=0, inlet_c=22, measuring=False)
    got = read(source(bmc))
    assert "gpu-node-02:bmc" not in got  # absent, never 0
    assert got["gpu-node-02:bmc:inlet"].temp_c == 22.0


def test_a_bmc_without_dcmi_says_so(bmc: Bmc) -> None:
    bmc.set(power_w=400, dcmi=False)
    src = source(bmc)
    assert not src.poller.poll_once()
    with pytest.raises(SourceError, match="no DCMI power reading"):
        src.sample(0.0)


def test_a_wrong_password_is_refused(bmc: Bmc, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    src = source(bmc, wrong)
    assert not src.poller.poll_once()
    assert "Incorrect password" in (src.poller.last_error or "")


def test_a_bmc_that_is_gone_is_a_down_source(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("x\n")
    src = IpmiSource("n", IpmiSettings(host="127.0.0.1", port=free_port(), user="u", password_file=password))
    assert not src.poller.poll_once()
    assert src.poller.last_error and src.poller.last_error.startswith("login")


def test_in_band_needs_the_ipmi_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipmi, "LOCAL_DEVICE", tmp_path / "ipmi0")
    with pytest.raises(SourceUnavailable, match="ipmi_devintf"):
        IpmiSource("n", IpmiSettings()).open()
    with pytest.raises(SourceUnavailable, match="--ipmi-user and --ipmi-password-file"):
        IpmiSource("n", IpmiSettings(host="bmc")).open()


def test_the_power_reading_layout() -> None:
    # DCMI 1.5 Get Power Reading response: 0xdc, 350 W now, min 120, max 610, avg 330,
    # timestamp, 1 s statistics period, state 0x40 (measurement active)
    data = bytes.fromhex("dc" "5e01" "7800" "6202" "4a01") + (1_764_000_000).to_bytes(4, "little") \
        + (1000).to_bytes(4, "little") + b"\x40"
    assert parse_power_reading(data) == 350.0
    assert parse_power_reading(data[:-1] + b"\x00") is None
