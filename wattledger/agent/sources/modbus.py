"""Facility power meters (and temperature probes) over Modbus TCP, with pymodbus.

Each target of ``modbus_targets`` is one meter (a utility feed, a UPS output, a chiller
plant's panel: ``role`` facility, it or cooling) or one temperature probe (``role`` outdoor
or inlet), read on its own thread every ``interval`` seconds with the register map of its
configuration: for power, energy and temperature each an address, a type (uint16 … float64),
the word order, a scale and a unit, so any meter whose data sheet lists its registers can be
read (docs/agent.md has the maps of the Eastron SDM630 and the Schneider PM5xxx). Values
arrive in base units: power in W, energy in J (the meter's own cumulative counter; a uint32
counter is unfolded across its wrap), temperature in °C.

A meter that does not answer is reported down (its last reading goes stale after three
polls); the others go on. The source is down only when no meter answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import SourceError, SourceSample
from wattledger.agent.sources.polling import Poller, WrapUnfolder, measured
from wattledger.agent.sources.remote import ModbusRegister, ModbusTarget
from wattledger.contract import Device

if TYPE_CHECKING:
    from pymodbus.client import ModbusTcpClient

log = logging.getLogger(__name__)

#: Modbus exception codes an operator can act on
EXCEPTIONS = {1: "illegal function (wrong table: holding or input?)",
              2: "illegal data address (the register map does not fit this meter)",
              3: "illegal data value", 4: "device failure", 6: "device busy",
              10: "gateway path unavailable", 11: "gateway target did not respond (unit_id?)"}


class ModbusError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class MeterReading:
    power_w: float | None
    energy_j: float | None
    temp_c: float | None


class _Meter:
    """One target: its client and poll thread (used only on that thread) and its device."""

    def __init__(self, target: ModbusTarget, index: int, clock: Callable[[], float]) -> None:
        self.target = target
        self.device = Device(id=target.id, kind="sensor" if target.is_sensor else "meter", index=index,
                             model=target.model or f"Modbus meter {target.host}", role=target.role)
        self._client: ModbusTcpClient | None = None
        energy = target.energy
        self._unfold = WrapUnfolder(32) if energy is not None and energy.type == "uint32" else None
        self.poller = Poller(f"modbus {target.id} ({target.host}:{target.port})", self._read,
                             target.interval, clock=clock, on_stop=self._close)

    def _connect(self) -> ModbusTcpClient:
        from pymodbus.client import ModbusTcpClient

        t = self.target
        client = ModbusTcpClient(t.host, port=t.port, timeout=t.timeout, retries=0)
        if not client.connect():  # type: ignore[no-untyped-call]
            client.close()  # type: ignore[no-untyped-call]
            raise ModbusError(f"cannot connect to {t.host}:{t.port}")
        return client

    def _value(self, client: ModbusTcpClient, reg: ModbusRegister) -> float:
        from pymodbus.exceptions import ModbusException

        read = client.read_input_registers if reg.table == "input" else client.read_holding_registers
        try:
            answer = read(reg.address, count=reg.count, device_id=self.target.unit_id)
        except ModbusException as exc:
            raise ModbusError(f"register {reg.address}: {' '.join(str(exc).split())}") from None
        if answer.isError():
            code = getattr(answer, "exception_code", 0)
            raise ModbusError(f"{reg.table} register {reg.address}: exception {code}: "
                              f"{EXCEPTIONS.get(code, 'error')}")
        raw = client.convert_from_registers(answer.registers, client.DATATYPE[reg.type.upper()],
                                            word_order=reg.word_order)
        if not isinstance(raw, int | float):
            raise ModbusError(f"register {reg.address}: not a number")
        return float(raw)

    def _read(self) -> MeterReading:
        if self._client is None:
            self._client = self._connect()
        t = self.target
        try:
            values = {name: None if reg is None else self._value(self._client, reg) * reg.scale
                      for name, reg in (("power", t.power), ("energy", t.energy),
                                        ("temperature", t.temperature))}
        except Exception:
            self._close()  # a fresh connection next time (a meter that rebooted)
            raise
        power, energy, temp = values["power"], values["energy"], values["temperature"]
        if energy is not None and self._unfold is not None:
            energy = self._unfold(energy)
        return MeterReading(
            power_w=measured(None if power is None or t.power is None else power * t.power.factor),
            energy_j=measured(None if energy is None or t.energy is None else energy * t.energy.factor),
            temp_c=measured(None if temp is None or t.temperature is None else temp * t.temperature.factor,
                            signed=True),
        )

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]


class ModbusSource:
    name = "modbus"

    def __init__(self, targets: tuple[ModbusTarget, ...], clock: Callable[[], float] = time.time) -> None:
        counts = {"meter": 0, "sensor": 0}
        self.meters: list[_Meter] = []
        for t in targets:
            kind = "sensor" if t.is_sensor else "meter"
            self.meters.append(_Meter(t, counts[kind], clock))
            counts[kind] += 1

    def open(self) -> None:
        if not self.meters:
            raise SourceError("modbus: no modbus_targets in the configuration")
        for m in self.meters:
            m.poller.start()

    def sample(self, ts: float) -> SourceSample:
        readings: list[DeviceReading] = []
        down: list[Device] = []
        for m in self.meters:
            latest = m.poller.latest()
            if latest is None:
                down.append(m.device)
                continue
            r = latest.value
            readings.append(DeviceReading(device=m.device, ts=latest.read_at, power_w=r.power_w,
                                          energy_j=r.energy_j, temp_c=r.temp_c))
        if not readings:
            raise SourceError("; ".join(m.poller.describe_failure() for m in self.meters))
        return SourceSample(readings=readings, down=down)

    def close(self) -> None:
        for m in self.meters:
            m.poller.stop(timeout=2.0)
