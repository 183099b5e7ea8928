"""Rack PDUs over SNMP (pysnmp 7): inlet power and energy of APC, Raritan and ServerTech
PDUs as ``meter`` devices, and the PDU's temperature probe as a ``sensor``, for an agent on
a management host.

Numeric OIDs, so no vendor MIB file is needed (their MIBs are not in the registries); each
object below is named as in its MIB, with its scaling:

- APC PowerNet-MIB, ``rPDU2DeviceStatusTable`` (row = the device index, 1):
  ``rPDU2DeviceStatusPower`` .1.3.6.1.4.1.318.1.1.26.4.3.1.5 (hundredths of kW),
  ``rPDU2DeviceStatusEnergy`` .9 (tenths of kWh, resettable by the user);
  ``rPDU2SensorTempHumidityStatusTempC`` .1.3.6.1.4.1.318.1.1.26.10.2.2.1.8 (tenths of °C).
- Raritan PDU2-MIB, ``measurementsInletSensorValue`` .1.3.6.1.4.1.13742.6.5.2.3.1.4
  .{pdu}.{inlet}.{type} with type activePower (5, W) and activeEnergy (8, Wh), each divided
  by 10 ** ``inletSensorDecimalDigits`` (.1.3.6.1.4.1.13742.6.3.3.4.1.7, same index); an
  Unsigned32, so the energy is unfolded across its 32-bit wrap; external sensors
  ``measurementsExternalSensorValue`` .1.3.6.1.4.1.13742.6.5.5.3.1.4.{pdu}.{sensor} with
  ``externalSensorDecimalDigits`` .1.3.6.1.4.1.13742.6.3.6.3.1.17.
- ServerTech Sentry4-MIB, ``st4InputCordActivePower`` .1.3.6.1.4.1.1718.4.1.3.3.1.3
  .{unit}.{cord} (W), ``st4InputCordEnergy`` .10 (tenths of kWh); ``st4TempSensorValue``
  .1.3.6.1.4.1.1718.4.1.9.3.1.1.{unit}.{sensor} (tenths of a degree) in the scale of
  ``st4TempSensorScale`` .1.3.6.1.4.1.1718.4.1.9.1.10.0 (0 Celsius, 1 Fahrenheit); a
  power or energy of -1 is "not available".

Every target is read on its own thread, where pysnmp's asyncio loop runs (pysnmp 7 is
async-only), every ``interval`` seconds with its own timeout and retries. A counter that is
reset (APC's can be cleared from its web page) is reported as read: the collector counts
the reset as it counts a GPU driver reload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import SourceError, SourceSample
from wattledger.agent.sources.polling import Poller, WrapUnfolder, measured
from wattledger.agent.sources.remote import SnmpTarget, read_secret
from wattledger.contract import Device

log = logging.getLogger(__name__)

APC_POWER = "1.3.6.1.4.1.318.1.1.26.4.3.1.5"
APC_ENERGY = "1.3.6.1.4.1.318.1.1.26.4.3.1.9"
APC_TEMP_C = "1.3.6.1.4.1.318.1.1.26.10.2.2.1.8"
RARITAN_INLET_VALUE = "1.3.6.1.4.1.13742.6.5.2.3.1.4"
RARITAN_INLET_DIGITS = "1.3.6.1.4.1.13742.6.3.3.4.1.7"
RARITAN_EXTERNAL_VALUE = "1.3.6.1.4.1.13742.6.5.5.3.1.4"
RARITAN_EXTERNAL_DIGITS = "1.3.6.1.4.1.13742.6.3.6.3.1.17"
RARITAN_ACTIVE_POWER, RARITAN_ACTIVE_ENERGY = 5, 8
ST4_POWER = "1.3.6.1.4.1.1718.4.1.3.3.1.3"
ST4_ENERGY = "1.3.6.1.4.1.1718.4.1.3.3.1.10"
ST4_TEMP = "1.3.6.1.4.1.1718.4.1.9.3.1.1"
ST4_TEMP_SCALE = "1.3.6.1.4.1.1718.4.1.9.1.10.0"

J_PER_TENTH_KWH = 360_000.0


class SnmpError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class PduReading:
    power_w: float | None
    energy_j: float | None
    temp_c: float | None


def _oids(t: SnmpTarget) -> list[str]:
    """What to GET for one target, in one request."""
    i, ti = t.index, t.temperature_index
    if t.vendor == "apc":
        oids = [f"{APC_POWER}.{i}", f"{APC_ENERGY}.{i}"]
        return oids + ([f"{APC_TEMP_C}.{ti}"] if ti else [])
    if t.vendor == "raritan":
        oids = [f"{base}.{i}.{kind}" for kind in (RARITAN_ACTIVE_POWER, RARITAN_ACTIVE_ENERGY)
                for base in (RARITAN_INLET_VALUE, RARITAN_INLET_DIGITS)]
        return oids + ([f"{RARITAN_EXTERNAL_VALUE}.{ti}", f"{RARITAN_EXTERNAL_DIGITS}.{ti}"] if ti else [])
    oids = [f"{ST4_POWER}.{i}", f"{ST4_ENERGY}.{i}"]
    return oids + ([f"{ST4_TEMP}.{ti}", ST4_TEMP_SCALE] if ti else [])


def decode(t: SnmpTarget, values: list[float | None], unfold: WrapUnfolder) -> PduReading:
    """Raw numbers of :func:`_oids`, in order, to W, J and °C."""
    temp: float | None = None
    if t.vendor == "apc":
        power, energy = measured(values[0]), measured(values[1])
        if len(values) > 2 and values[2] is not None:
            temp = values[2] / 10
        return PduReading(None if power is None else power * 10.0,
                          None if energy is None else energy * J_PER_TENTH_KWH, temp)
    if t.vendor == "raritan":
        p_raw, p_digits, e_raw, e_digits = values[:4]
        power = None if p_raw is None else p_raw / 10 ** (p_digits or 0)
        energy = None if e_raw is None else unfold(e_raw) / 10 ** (e_digits or 0) * 3600.0
        if len(values) > 4 and values[4] is not None:
            temp = values[4] / 10 ** (values[5] or 0)
        return PduReading(power, energy, temp)
    power, energy = measured(values[0]), measured(values[1])
    if len(values) > 2 and values[2] is not None:
        temp = values[2] / 10
        if values[3] == 1:  # the PDU is set to Fahrenheit
            temp = (temp - 32) * 5 / 9
    return PduReading(power, None if energy is None else energy * J_PER_TENTH_KWH, temp)


class _Pdu:
    def __init__(self, target: SnmpTarget, index: int, clock: Callable[[], float]) -> None:
        self.target = target
        self.device = Device(id=target.id, kind="meter", index=index,
                             model=f"{target.vendor} PDU {target.host}", role=target.role)
        self.temp_device = (Device(id=f"{target.id}:temp", kind="sensor", index=index,
                                   model=f"{target.vendor} PDU {target.host} probe",
                                   role=target.temperature_role)
                            if target.temperature_index else None)
        self._unfold = WrapUnfolder(32)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: Any = None
        self._auth: Any = None
        self.poller = Poller(f"snmp {target.id} ({target.host}:{target.port})", self._read,
                             target.interval, clock=clock, on_stop=self._close)

    def credentials(self) -> Any:
        """pysnmp's auth data from the secret files (read on the poll thread, at each start)."""
        from pysnmp.hlapi.v3arch import asyncio as hlapi

        t = self.target
        if t.community_file is not None:
            return hlapi.CommunityData(read_secret(t.community_file, f"{t.id} community_file"), mpModel=1)
        auth = {"md5": hlapi.usmHMACMD5AuthProtocol, "sha": hlapi.usmHMACSHAAuthProtocol,
                "sha224": hlapi.usmHMAC128SHA224AuthProtocol, "sha256": hlapi.usmHMAC192SHA256AuthProtocol,
                "sha384": hlapi.usmHMAC256SHA384AuthProtocol, "sha512": hlapi.usmHMAC384SHA512AuthProtocol}
        priv = {"des": hlapi.usmDESPrivProtocol, "aes": hlapi.usmAesCfb128Protocol,
                "aes192": hlapi.usmAesCfb192Protocol, "aes256": hlapi.usmAesCfb256Protocol}
        assert t.auth_key_file is not None  # checked with the settings
        priv_key = read_secret(t.priv_key_file, f"{t.id} priv_key_file") if t.priv_key_file else None
        return hlapi.UsmUserData(t.user, authKey=read_secret(t.auth_key_file, f"{t.id} auth_key_file"),
                                 privKey=priv_key, authProtocol=auth[t.auth_protocol],
                                 privProtocol=priv[t.priv_protocol] if priv_key else hlapi.usmNoPrivProtocol)

    async def _get(self, oids: list[str]) -> list[float | None]:
        from pysnmp.hlapi.v3arch import asyncio as hlapi
        from pysnmp.proto import rfc1905

        t = self.target
        if self._engine is None:
            self._engine = hlapi.SnmpEngine()
        target = await hlapi.UdpTransportTarget.create((t.host, t.port), timeout=t.timeout, retries=t.retries)
        error, status, index, binds = await hlapi.get_cmd(
            self._engine, self._auth, target, hlapi.ContextData(contextName=t.context),
            *(hlapi.ObjectType(hlapi.ObjectIdentity(oid)) for oid in oids), lookupMib=False)
        if error:
            raise SnmpError(str(error))
        if status:
            raise SnmpError(f"{status.prettyPrint()} at {oids[int(index) - 1] if index else '?'}")
        out: list[float | None] = []
        for oid, (_, value) in zip(oids, binds, strict=True):
            if isinstance(value, rfc1905.NoSuchObject | rfc1905.NoSuchInstance | rfc1905.EndOfMibView):
                if oid.startswith((RARITAN_INLET_DIGITS, RARITAN_EXTERNAL_DIGITS)) or oid == ST4_TEMP_SCALE:
                    out.append(None)  # no such setting: the default (0 digits, Celsius)
                    continue
                raise SnmpError(f"{oid} is not on this PDU (vendor {t.vendor}, index {t.index}?)")
            out.append(float(int(value)))
        return out

    def _read(self) -> PduReading:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        if self._auth is None:
            self._auth = self.credentials()
        values = self._loop.run_until_complete(self._get(_oids(self.target)))
        return decode(self.target, values, self._unfold)

    def _close(self) -> None:
        loop, self._loop = self._loop, None
        engine, self._engine = self._engine, None
        if loop is None:
            return
        if engine is not None:
            engine.close_dispatcher()
        pending = asyncio.all_tasks(loop)
        for task in pending:  # the dispatcher's timer
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


class SnmpSource:
    name = "snmp"

    def __init__(self, targets: tuple[SnmpTarget, ...], clock: Callable[[], float] = time.time) -> None:
        self.pdus = [_Pdu(t, i, clock) for i, t in enumerate(targets)]

    def open(self) -> None:
        if not self.pdus:
            raise SourceError("snmp: no snmp_targets in the configuration")
        for pdu in self.pdus:
            t = pdu.target
            for path, what in ((t.community_file, "community_file"), (t.auth_key_file, "auth_key_file"),
                               (t.priv_key_file, "priv_key_file")):
                if path is not None:
                    read_secret(path, f"{t.id} {what}")  # refuse an unreadable file now
            pdu.poller.start()

    def sample(self, ts: float) -> SourceSample:
        readings: list[DeviceReading] = []
        down: list[Device] = []
        for pdu in self.pdus:
            latest = pdu.poller.latest()
            if latest is None:
                down.extend(d for d in (pdu.device, pdu.temp_device) if d is not None)
                continue
            r = latest.value
            readings.append(DeviceReading(device=pdu.device, ts=latest.read_at, power_w=r.power_w,
                                          energy_j=r.energy_j))
            if pdu.temp_device is not None and r.temp_c is not None:
                readings.append(DeviceReading(device=pdu.temp_device, ts=latest.read_at, temp_c=r.temp_c))
        if not readings:
            raise SourceError("; ".join(p.poller.describe_failure() for p in self.pdus))
        return SourceSample(readings=readings, down=down)

    def close(self) -> None:
        for pdu in self.pdus:
            pdu.poller.stop(timeout=2.0)
