"""The node's wall power from a BMC without Redfish: DCMI over IPMI, with pyghmi.

pyghmi (OpenStack's pure-Python IPMI library, the one ironic and virtualbmc use) talks to
the local BMC in-band through ``/dev/ipmi0`` (root, no credentials, no network) or to a
remote one over IPMI 2.0 LAN (RMCP+ with RAKP login and AES). Why not ``ipmitool``: a fork
and exec per reading and text output to parse, whose wording changes between versions; and
``python-ipmi`` has no in-band interface of its own (it shells out to ipmitool for that).

Per poll: DCMI *Get Power Reading* (NetFn 0x2C, command 0x02, mode 1 "system power
statistics"): the current power in W, used only when the BMC says a measurement is active
(byte "power reading state", bit 6); DCMI *Get Temperature Reading* (command 0x10) of the
inlet entity (0x40, or the older 0x37) for the inlet temperature. DCMI has no energy
counter: the collector integrates the power (trapezoids over readings at most
``max_gap_seconds`` apart), so keep ``interval`` well below that.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import SourceError, SourceSample, SourceUnavailable
from wattledger.agent.sources.polling import Poller
from wattledger.agent.sources.remote import IpmiSettings, bmc_inlet_id, bmc_node_id, read_secret
from wattledger.contract import Device

log = logging.getLogger(__name__)

DCMI_NETFN, GROUP = 0x2C, 0xDC
GET_POWER_READING, GET_TEMPERATURE_READING = 0x02, 0x10
POWER_MEASUREMENT_ACTIVE = 0x40
INLET_ENTITIES = (0x40, 0x37)
LOCAL_DEVICE = Path("/dev/ipmi0")


class IpmiError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class DcmiReading:
    power_w: float | None
    inlet_c: float | None


def parse_power_reading(data: bytes) -> float | None:
    """DCMI 1.5 Get Power Reading response (completion code already stripped): group
    extension, current/min/max/average W (16-bit LE each), timestamp, period, state."""
    if len(data) < 18 or data[0] != GROUP:
        raise IpmiError(f"DCMI power reading: unexpected answer {bytes(data).hex()}")
    current = struct.unpack_from("<H", data, 1)[0]
    if not data[17] & POWER_MEASUREMENT_ACTIVE:
        return None  # the BMC is not measuring: no number rather than a made-up 0
    return float(current)


def parse_temperature_reading(data: bytes) -> float | None:
    """DCMI Get Temperature Reading: group, total instances, instances here, then for each
    one byte of temperature (bits 0-6, bit 7 = negative) and one of instance number."""
    if len(data) < 5 or data[0] != GROUP or data[2] == 0:
        return None
    raw = data[3]
    return float(-(raw & 0x7F) if raw & 0x80 else raw & 0x7F)


class IpmiSource:
    name = "ipmi"

    def __init__(self, node: str, settings: IpmiSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        where = settings.host or str(LOCAL_DEVICE)
        self.node_device = Device(id=bmc_node_id(node), kind="node", index=0, model="BMC (IPMI DCMI)")
        self.inlet_device = Device(id=bmc_inlet_id(node), kind="sensor", index=0,
                                   model="BMC inlet temperature", role="inlet")
        self._command: Any = None
        self._inlet_entity: int | None = INLET_ENTITIES[0]
        self.poller = Poller(f"ipmi {where}", self._read, settings.interval, clock=clock,
                             on_stop=self._logout)

    # ------------------------------------------------------------------ Source

    def open(self) -> None:
        s = self.settings
        if s.host is None:
            if not LOCAL_DEVICE.exists():
                raise SourceUnavailable(f"ipmi: no {LOCAL_DEVICE} (load the ipmi_si and ipmi_devintf "
                                        "modules, or give --ipmi-host for a BMC over the network)")
        elif s.user is None or s.password_file is None:
            raise SourceUnavailable("ipmi: --ipmi-host needs --ipmi-user and --ipmi-password-file")
        else:
            read_secret(s.password_file, "--ipmi-password-file")
        self.poller.start()

    def sample(self, ts: float) -> SourceSample:
        latest = self.poller.latest()
        if latest is None:
            raise SourceError(self.poller.describe_failure())
        r = latest.value
        readings = []
        if r.power_w is not None:
            readings.append(DeviceReading(device=self.node_device, ts=latest.read_at, power_w=r.power_w))
        if r.inlet_c is not None:
            readings.append(DeviceReading(device=self.inlet_device, ts=latest.read_at, temp_c=r.inlet_c))
        return SourceSample(readings=readings)

    def close(self) -> None:
        self.poller.stop(timeout=2.0)

    # ------------------------------------------------------------------ the poll thread

    def _connect(self) -> Any:
        from pyghmi import exceptions
        from pyghmi.ipmi import command

        s = self.settings
        try:
            if s.host is None:
                return command.Command()  # in-band: /dev/ipmi0
            assert s.password_file is not None
            return command.Command(bmc=s.host, port=s.port, userid=s.user,
                                   password=read_secret(s.password_file, "--ipmi-password-file"),
                                   keepalive=False)
        except exceptions.IpmiException as exc:
            raise IpmiError(f"login: {exc or 'no answer'}") from None
        except OSError as exc:
            raise IpmiError(f"{LOCAL_DEVICE}: {exc.strerror or exc}") from None

    def _raw(self, cmd: int, data: tuple[int, ...]) -> bytes | None:
        """The answer's data, or None for a completion code that means "not here"."""
        from pyghmi import exceptions

        try:
            rsp = self._command.raw_command(netfn=DCMI_NETFN, command=cmd, data=data,
                                            timeout=self.settings.timeout)
        except exceptions.IpmiException as exc:
            raise IpmiError(f"DCMI command 0x{cmd:02x}: {exc or 'no answer'}") from None
        if rsp.get("error"):
            if rsp.get("code") in (0xC1, 0xCB, 0xCC, 0xD4):  # invalid command/absent/invalid data/denied
                return None
            raise IpmiError(f"DCMI command 0x{cmd:02x}: {rsp['error']}")
        return bytes(rsp.get("data") or b"")

    def _read(self) -> DcmiReading:
        if self._command is None:
            self._command = self._connect()
        try:
            power_data = self._raw(GET_POWER_READING, (GROUP, 0x01, 0x00, 0x00))
            if power_data is None:
                raise IpmiError("this BMC has no DCMI power reading (completion code: invalid command)")
            return DcmiReading(power_w=parse_power_reading(power_data), inlet_c=self._inlet())
        except IpmiError:
            self._logout()  # a new session next time (the BMC may have dropped ours)
            raise

    def _inlet(self) -> float | None:
        for entity in INLET_ENTITIES if self._inlet_entity is None else (self._inlet_entity,):
            data = self._raw(GET_TEMPERATURE_READING, (GROUP, 0x01, entity, 0x00, 0x00))
            if data is not None and (temp := parse_temperature_reading(data)) is not None:
                self._inlet_entity = entity
                return temp
        self._inlet_entity = None  # look for either entity next time
        return None

    def _logout(self) -> None:
        command, self._command = self._command, None
        if command is not None and self.settings.host is not None:
            try:
                command.ipmi_session.logout()
            except Exception as exc:  # the session is gone anyway
                log.debug("ipmi logout: %s", exc)
