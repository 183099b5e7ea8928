"""The snmp source against snmpsim (a real SNMP agent simulator, its own process on
127.0.0.1) serving PDU recordings written on the vendors' MIBs with numeric OIDs
(tests/agent/snmp_recordings: an APC AP8853 on PowerNet-MIB, a Raritan PX3 on PDU2-MIB, a
ServerTech PRO2 on Sentry4-MIB). snmpsim picks the recording by SNMPv2c community or SNMPv3
context name; values marked ``writecache`` are changed by the test with an SNMP SET, as a
meter moves: a counter that wraps, one that is reset."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.loopback import free_port
from wattledger.agent.sources.base import SourceError
from wattledger.agent.sources.remote import snmp_targets
from wattledger.agent.sources.snmp import SnmpSource

pytestmark = pytest.mark.timeout(180)

RECORDINGS = Path(__file__).parent / "snmp_recordings"
RARITAN_ENERGY = "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.8"
APC_ENERGY = "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1"


class Simulator:
    """snmpsim-command-responder; as root it must drop to nobody, which cannot read this
    interpreter's lazily imported modules, so they are imported before it does."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="wl-snmpsim-"))
        data, cache = self.root / "data", self.root / "cache"
        shutil.copytree(RECORDINGS, data)
        cache.mkdir()
        os.chmod(self.root, 0o755)
        os.chmod(cache, 0o777)
        args = [f"--data-dir={data}", f"--cache-dir={cache}", f"--agent-udpv4-endpoint=127.0.0.1:{self.port}",
                "--v3-user=monitor", "--v3-auth-key=auth-key-123", "--v3-auth-proto=SHA",
                "--v3-priv-key=priv-key-456", "--v3-priv-proto=AES"]
        if os.geteuid() == 0:
            args += ["--process-user=nobody", "--process-group=nogroup"]
        # SNMPv3's SHA and AES modules too, and one AES encryption on pysnmp's default_backend()
        # (which imports its OpenSSL module on first use): a checkout under a 0700 directory
        # (mktemp -d) is not nobody's to read, and the v3 request would go unanswered.
        boot = ("import dbm, dbm.dumb, encodings.latin_1, encodings.ascii, encodings.utf_8, sys; "
                "from pysnmp.proto.secmod.rfc3414.auth import hmacsha; "
                "from pysnmp.proto.secmod.rfc3826.priv import aes; "
                "from cryptography.hazmat.primitives.ciphers import algorithms, Cipher; "
                "from cryptography.hazmat.decrepit.ciphers.modes import CFB; "
                "from cryptography.hazmat.backends import default_backend; "
                "key = bytes(16); "
                "Cipher(algorithms.AES(key), CFB(key), default_backend()).encryptor().update(key); "
                "from snmpsim.commands.responder import main; sys.exit(main())")
        self.log = open(self.root / "snmpsim.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, "-c", boot, *args], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while "Listening at UDP/IPv4 endpoint" not in (self.root / "snmpsim.log").read_text():
            assert self.proc.poll() is None, (self.root / "snmpsim.log").read_text()[-2000:]
            assert time.monotonic() < end, "snmpsim did not start"
            time.sleep(0.1)

    def set(self, community: str, oid: str, value: int, kind: str = "Unsigned32") -> None:
        from pysnmp.hlapi.v3arch import asyncio as hlapi
        from pysnmp.proto import rfc1902

        async def go() -> None:
            engine = hlapi.SnmpEngine()
            target = await hlapi.UdpTransportTarget.create(("127.0.0.1", self.port), timeout=5, retries=2)
            typed = getattr(rfc1902, kind)(value)
            binding = hlapi.ObjectType(hlapi.ObjectIdentity(oid), typed)
            error, status, _, _ = await hlapi.set_cmd(engine, hlapi.CommunityData(community, mpModel=1),
                                                      target, hlapi.ContextData(), binding)
            engine.close_dispatcher()
            assert not error and not status, (error, status)

        asyncio.run(go())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = Simulator()
    yield s
    s.close()


def community(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.community"
    path.write_text(name + "\n")
    return str(path)


MADE: list[SnmpSource] = []


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    yield
    while MADE:
        MADE.pop().close()


def source(sim: Simulator, *entries: dict[str, Any]) -> SnmpSource:
    src = SnmpSource(snmp_targets([{"host": "127.0.0.1", "port": sim.port, "timeout": 5, **e}
                                   for e in entries]))
    MADE.append(src)
    return src


def read(src: SnmpSource) -> dict[str, Any]:
    for pdu in src.pdus:
        assert pdu.poller.poll_once(), pdu.poller.last_error
    return {r.device.id: r for r in src.sample(0.0).readings}


def test_apc_inlet_power_energy_and_probe(sim: Simulator, tmp_path: Path) -> None:
    src = source(sim, {"id": "pdu-r12-a", "vendor": "apc", "role": "it", "temperature_index": "1",
                       "community_file": community(tmp_path, "apc-ap8853")})
    got = read(src)
    pdu, probe = got["pdu-r12-a"], got["pdu-r12-a:temp"]
    assert pdu.power_w == pytest.approx(4830.0)  # 483 hundredths of a kW
    assert pdu.energy_j == pytest.approx(12345.6 * 3.6e6)  # 123456 tenths of a kWh
    assert (pdu.device.kind, pdu.device.role) == ("meter", "it")
    assert probe.temp_c == pytest.approx(24.5)
    assert (probe.device.kind, probe.device.role) == ("sensor", "inlet")
    # the energy meter is cleared from the PDU's web page: passed on as read (a reset)
    sim.set("apc-ap8853", APC_ENERGY, 7, "Integer32")
    try:
        assert read(src)["pdu-r12-a"].energy_j == pytest.approx(0.7 * 3.6e6)
    finally:
        sim.set("apc-ap8853", APC_ENERGY, 123456, "Integer32")


def test_raritan_scaled_by_its_decimal_digits_and_unfolded_across_the_32_bit_wrap(
        sim: Simulator, tmp_path: Path) -> None:
    src = source(sim, {"id": "pdu-r13", "vendor": "raritan", "role": "it", "temperature_index": "1.1",
                       "temperature_role": "outdoor", "community_file": community(tmp_path, "raritan-px3")})
    got = read(src)
    assert got["pdu-r13"].power_w == pytest.approx(3120.0)
    assert got["pdu-r13"].energy_j == pytest.approx(4294967000 * 3600.0)  # Wh
    assert got["pdu-r13:temp"].temp_c == pytest.approx(22.6)  # 226, one decimal digit
    assert got["pdu-r13:temp"].device.role == "outdoor"
    sim.set("raritan-px3", RARITAN_ENERGY, 200)  # ran past 2**32 Wh
    try:
        assert read(src)["pdu-r13"].energy_j == pytest.approx((2**32 + 200) * 3600.0)
    finally:
        sim.set("raritan-px3", RARITAN_ENERGY, 4294967000)


def test_servertech_cord_power_and_a_fahrenheit_probe(sim: Simulator, tmp_path: Path) -> None:
    src = source(sim, {"id": "pdu-r14", "vendor": "servertech", "role": "it", "temperature_index": "1.1",
                       "community_file": community(tmp_path, "servertech-pro2")})
    got = read(src)
    assert got["pdu-r14"].power_w == 2875.0
    assert got["pdu-r14"].energy_j == pytest.approx(9876.5 * 3.6e6)
    assert got["pdu-r14:temp"].temp_c == pytest.approx(25.0)  # 77.0 °F


def test_snmpv3_with_authentication_and_privacy(sim: Simulator, tmp_path: Path) -> None:
    auth, priv = tmp_path / "auth", tmp_path / "priv"
    auth.write_text("auth-key-123\n")
    priv.write_text("priv-key-456\n")
    entry = {"id": "pdu-v3", "vendor": "apc", "role": "facility", "user": "monitor", "auth_protocol": "sha",
             "auth_key_file": str(auth), "priv_protocol": "aes", "priv_key_file": str(priv),
             "context": "apc-ap8853"}
    assert read(source(sim, entry))["pdu-v3"].power_w == pytest.approx(4830.0)
    auth.write_text("a-wrong-key\n")
    src = source(sim, entry)
    assert not src.pdus[0].poller.poll_once()
    assert "Wrong SNMP PDU digest" in (src.pdus[0].poller.last_error or "")


def test_a_wrong_index_names_the_oid_and_a_silent_pdu_is_down(sim: Simulator, tmp_path: Path) -> None:
    src = source(sim, {"id": "pdu-x", "vendor": "apc", "role": "it", "index": "2",
                       "community_file": community(tmp_path, "apc-ap8853")},
                 {"id": "pdu-gone", "vendor": "apc", "role": "it", "port": free_port(), "timeout": 0.5,
                  "retries": 0, "community_file": community(tmp_path, "apc-ap8853")})
    assert not src.pdus[0].poller.poll_once()
    assert "1.3.6.1.4.1.318.1.1.26.4.3.1.5.2 is not on this PDU" in (src.pdus[0].poller.last_error or "")
    assert not src.pdus[1].poller.poll_once()
    assert "No SNMP response" in (src.pdus[1].poller.last_error or "")
    with pytest.raises(SourceError):
        src.sample(0.0)


def test_targets_are_checked_when_the_agent_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either community_file \\(SNMPv2c\\) or user \\(SNMPv3\\)"):
        snmp_targets([{"id": "p", "host": "h", "vendor": "apc", "role": "it"}])
    with pytest.raises(ValueError, match="vendor: 'eaton' is not one of apc, raritan, servertech"):
        snmp_targets([{"id": "p", "host": "h", "vendor": "eaton", "role": "it"}])
    with pytest.raises(ValueError, match="role: 'cooling-tower' is not one of facility, it, cooling"):
        snmp_targets([{"id": "p", "host": "h", "vendor": "apc", "role": "cooling-tower",
                       "community_file": community(tmp_path, "x")}])
