"""The flags and YAML keys of the network sources (redfish, ipmi, snmp, modbus): one-line
errors for what a chosen source lacks, the YAML lists, the vendor libraries loaded only by
the source that uses them, and a real agent with ``--sources simulated,redfish`` serving the
BMC's wall power on /metrics next to its GPUs."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.redfish_bmc import FakeBmc
from tests.loopback import free_port
from wattledger.agent import cli
from wattledger.config import ConfigError, OneLineParser

VENDOR_LIBRARIES = ("redfish", "pysnmp", "pymodbus", "pyghmi", "requests")


def settings(*argv: str, env: dict[str, str] | None = None) -> cli.AgentSettings:
    parser = OneLineParser(prog="wattledger agent")
    cli.configure(parser)
    return cli.settings(parser.parse_args(list(argv)), env or {})


@pytest.fixture
def password(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text("s3cret-pw\n")
    return path


@pytest.mark.parametrize(("argv", "message"), [
    (["--sources", "redfish"], "--sources redfish needs --redfish-url"),
    (["--sources", "redfish", "--redfish-url", "https://bmc"],
     "needs --redfish-user and --redfish-password-file"),
    (["--sources", "ipmi", "--ipmi-host", "bmc"], "--ipmi-host needs --ipmi-user and --ipmi-password-file"),
    (["--sources", "redfish,ipmi", "--redfish-url", "https://bmc", "--redfish-user", "u",
      "--redfish-password-file", "{pw}"], "redfish and ipmi read the same BMC"),
    (["--sources", "snmp"], "--sources snmp needs snmp_targets in the --config file"),
    (["--sources", "modbus"], "--sources modbus needs modbus_targets"),
    (["--redfish-url", "ftp://bmc"], "not an http:// or https:// URL"),
    (["--redfish-auth", "digest"], "'digest' is not session or basic"),
    (["--redfish-insecure", "--redfish-ca-file", "{pw}", "--redfish-url", "https://bmc"],
     "--redfish-insecure and --redfish-ca-file: give one of them"),
])
def test_what_a_source_lacks_is_one_line(argv: list[str], message: str, password: Path) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", "\\(")):
        settings("--node", "n1", *(a.replace("{pw}", str(password)) for a in argv))


def test_redfish_settings_from_flags_env_and_yaml(tmp_path: Path, password: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"redfish_url: https://bmc-yaml\nredfish_user: monitor\n"
                   f"redfish_password_file: {password}\nredfish_insecure: true\nredfish_interval: 15\n")
    s = settings("--config", str(cfg), "--sources", "redfish")
    r = s.redfish
    assert r is not None
    assert (r.url, r.user, r.password_file, r.insecure, r.interval) == (
        "https://bmc-yaml", "monitor", password, True, 15.0)
    s = settings("--config", str(cfg), "--sources", "redfish", env={"WATTLEDGER_REDFISH_URL": "https://bmc-env"})
    assert s.redfish is not None and s.redfish.url == "https://bmc-env"
    assert settings("--redfish-insecure", "--node", "n").redfish_insecure is True


def test_pdus_and_meters_come_from_the_yaml(tmp_path: Path) -> None:
    community = tmp_path / "community"
    community.write_text("public-ro\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
sources: [snmp, modbus]
snmp_targets:
  - {{id: pdu-r12, host: 10.0.0.5, vendor: apc, role: it, community_file: {community}}}
modbus_targets:
  - id: main-feed
    host: 10.0.0.9
    role: facility
    power: {{address: 52, type: float32, table: input, unit: W}}
    energy: {{address: 72, type: float32, table: input, unit: kWh}}
""")
    s = settings("--config", str(cfg), "--node", "mgmt-01")
    (pdu,) = s.snmp_targets
    (meter,) = s.modbus_targets
    assert (pdu.id, pdu.vendor, pdu.index, pdu.role) == ("pdu-r12", "apc", "1", "it")
    assert (meter.id, meter.energy.factor, meter.power.table) == ("main-feed", 3.6e6, "input")
    cfg.write_text("snmp_targets: [{id: p, host: h, vendor: apc, role: it}]\n")
    with pytest.raises(ConfigError, match="config key 'snmp_targets': entry 1 \\(p\\): give either"):
        settings("--config", str(cfg))
    # issue 16, item 20: entries counted from 1, and the line of the bad entry
    cfg.write_text("modbus_targets:\n  - {id: m1, host: h, role: facility, energy: {address: 72}}\n"
                   "  - id: m2\n    host: h\n")
    with pytest.raises(ConfigError) as caught:
        settings("--config", str(cfg))
    assert str(caught.value) == ("config key 'modbus_targets': entry 2: 'role' is required "
                                 f"(in {str(cfg)!r}, line 3)")


def test_the_vendor_libraries_load_only_with_their_source() -> None:
    code = ("import sys; from wattledger.agent import cli; from wattledger.agent.sources import REGISTRY, "
            "SourceSettings; import wattledger.agent.facility_exposition; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {VENDOR_LIBRARIES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.fixture
def bmc() -> Iterator[FakeBmc]:
    server = FakeBmc("public-rackmount1")
    yield server
    server.close()


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {f.name: [(dict(s.labels), s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_real_agent_serves_the_bmc_wall_power_beside_its_gpus(bmc: FakeBmc, password: Path,
                                                                  tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "wattledger.cli", "agent", "--node", "gpu-node-01",
                             "--listen", f"127.0.0.1:{port}", "--simulate", "2",
                             "--sources", "simulated,redfish",
                             "--redfish-url", bmc.url, "--redfish-user", "monitor",
                             "--redfish-password-file", str(password), "--redfish-interval", "0.5",
                             "--label", "site=dc1"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "agent.log", "w"))  # noqa: SIM115
    try:
        end = time.monotonic() + 60
        while True:
            try:
                families = scrape(f"http://127.0.0.1:{port}/metrics")
                if families.get("wattledger_node_power_watts"):
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()[-2000:]
            assert time.monotonic() < end, (tmp_path / "agent.log").read_text()[-2000:]
            time.sleep(0.2)
        assert families["wattledger_node_power_watts"] == [({"node": "gpu-node-01", "site": "dc1"}, 374.0)]
        assert families["wattledger_node_inlet_temperature_celsius"] == [
            ({"node": "gpu-node-01", "site": "dc1"}, 24.8)]
        up = {lab["source"]: v for lab, v in families["wattledger_agent_source_up"]}
        assert up == {"simulated": 1.0, "redfish": 1.0}
        assert len(families["wattledger_gpu_power_watts"]) == 2
        log = (tmp_path / "agent.log").read_text()
        assert "plain http" in log
        assert "redfish.rest.v1" not in log  # the library's line per request is kept out
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert bmc.sessions == {}  # logged out on the way down


def test_meters_and_probes_on_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from wattledger.agent.exposition import AgentCollector
    from wattledger.agent.reading import DeviceReading
    from wattledger.agent.sampler import Snapshot
    from wattledger.contract import Device

    feed = Device(id="main-feed", kind="meter", index=0, model="Eastron SDM630", role="facility")
    pdu = Device(id="pdu-r12", kind="meter", index=1, role="it")
    roof = Device(id="roof-probe", kind="sensor", index=0, role="outdoor")
    snap = Snapshot(ts=1.0, readings=(DeviceReading(feed, 1.0, power_w=48250.0, energy_j=4.4e11),
                                      DeviceReading(roof, 1.0, temp_c=-5.2)), down=(pdu,))
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: snap, "mgmt-01", {"site": "dc1"}))
    families = {f.name: [(dict(s.labels), s.value) for s in f.samples]
                for f in text_string_to_metric_families(generate_latest(registry).decode())}
    base = {"node": "mgmt-01", "site": "dc1"}
    assert families["wattledger_meter_power_watts"] == [({**base, "meter": "main-feed", "role": "facility"},
                                                         48250.0)]
    assert families["wattledger_meter_energy_joules"] == [
        ({**base, "meter": "main-feed", "role": "facility"}, 4.4e11)]
    assert sorted(v for _, v in families["wattledger_meter_up"]) == [0.0, 1.0]
    assert families["wattledger_sensor_temperature_celsius"] == [
        ({**base, "sensor": "roof-probe", "role": "outdoor"}, -5.2)]
    assert "wattledger_node_power_watts" not in families  # no BMC on a management host
