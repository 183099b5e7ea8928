"""The modbus source against pymodbus' own Modbus TCP server on 127.0.0.1, holding the input
registers of an Eastron SDM630 (its published map: 30053 "Total system power", W, at
address 0x0034; 30073 "Total Import kWh" at 0x0048; IEEE 754 float32, high word first).
The test writes the registers as the meter's data sheet says they are laid out (struct, not
the client's converter), so the source's decoding is checked, not assumed."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from tests.loopback import free_port
from wattledger.agent.sources.base import SourceError
from wattledger.agent.sources.modbus import ModbusSource
from wattledger.agent.sources.remote import modbus_targets

INPUT, HOLDING = 4, 3  # Modbus function codes of the two register tables

#: the SDM630's map as an operator writes it in the agent's YAML
SDM630 = {"id": "main-feed", "host": "127.0.0.1", "role": "facility", "unit_id": 1, "model": "Eastron SDM630",
          "power": {"address": 52, "type": "float32", "table": "input", "unit": "W"},
          "energy": {"address": 72, "type": "float32", "table": "input", "unit": "kWh"}}


class Meter:
    """pymodbus' server on its own loop and thread, unit 1 with 1000 input and holding registers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.server: ModbusTcpServer | None = None
        ready = threading.Event()

        async def main() -> None:
            blocks = ([SimData(address=0, count=1, values=False, datatype=DataType.BITS)],
                      [SimData(address=0, count=1, values=False, datatype=DataType.BITS)],
                      [SimData(address=0, count=1000, values=0, datatype=DataType.REGISTERS)],
                      [SimData(address=0, count=1000, values=0, datatype=DataType.REGISTERS)])
            self.server = ModbusTcpServer(SimDevice(id=1, simdata=blocks), address=("127.0.0.1", self.port))
            ready.set()
            await self.server.serve_forever()

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True)
        self.thread.start()
        assert ready.wait(30)
        end = time.monotonic() + 30
        while True:  # serve_forever binds the port a moment after it starts
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < end, "the Modbus server did not listen"
                time.sleep(0.05)

    def write(self, table: int, address: int, words: list[int]) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.async_setValues(1, table, address, words),
                                         self.loop).result(30)

    def close(self) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(30)
        self.thread.join(30)


def float32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


@pytest.fixture
def meter() -> Iterator[Meter]:
    m = Meter()
    yield m
    m.close()


def source(meter: Meter, *entries: dict[str, Any]) -> ModbusSource:
    return ModbusSource(modbus_targets([{**e, "port": meter.port} for e in entries]))


def read(src: ModbusSource) -> dict[str, Any]:
    for m in src.meters:
        assert m.poller.poll_once(), m.poller.last_error
    return {r.device.id: r for r in src.sample(0.0).readings}


def test_an_sdm630_reads_as_watts_and_joules(meter: Meter) -> None:
    meter.write(INPUT, 52, float32(48_250.0))  # 48.25 kW
    meter.write(INPUT, 72, float32(123_456.5))  # kWh since installed
    src = source(meter, SDM630)
    got = read(src)["main-feed"]
    assert got.power_w == pytest.approx(48_250.0)
    assert got.energy_j == pytest.approx(123_456.5 * 3.6e6)
    assert got.temp_c is None
    assert (got.device.kind, got.device.role, got.device.model) == ("meter", "facility", "Eastron SDM630")
    meter.write(INPUT, 52, float32(50_000.0))
    assert read(src)["main-feed"].power_w == pytest.approx(50_000.0)


def test_types_word_order_scale_and_a_32_bit_wrap(meter: Meter) -> None:
    """A uint32 Wh counter, low word first (as some meters lay it out), a kW int16 power with a
    scale of 0.1, and an outdoor probe in tenths of a degree."""
    entry = {"id": "chiller-panel", "host": "127.0.0.1", "role": "cooling",
             "power": {"address": 10, "type": "int16", "table": "holding", "scale": 0.1, "unit": "kW"},
             "energy": {"address": 20, "type": "uint32", "table": "holding", "word_order": "little",
                        "unit": "Wh"}}
    probe = {"id": "roof-probe", "host": "127.0.0.1", "role": "outdoor",
             "temperature": {"address": 30, "type": "int16", "table": "holding", "scale": 0.1, "unit": "C"}}
    meter.write(HOLDING, 10, [1234])  # 123.4 kW
    top = 0xFFFF_FF00
    meter.write(HOLDING, 20, [top & 0xFFFF, top >> 16])
    meter.write(HOLDING, 30, [struct.unpack(">H", struct.pack(">h", -52))[0]])  # -5.2 °C
    src = source(meter, entry, probe)
    got = read(src)
    assert got["chiller-panel"].power_w == pytest.approx(123_400.0)
    assert got["chiller-panel"].energy_j == pytest.approx(top * 3600.0)
    assert got["roof-probe"].temp_c == pytest.approx(-5.2)
    assert (got["roof-probe"].device.kind, got["roof-probe"].device.role) == ("sensor", "outdoor")
    assert got["roof-probe"].power_w is None

    meter.write(HOLDING, 20, [0x0100, 0])  # wrapped past 2**32: 256 Wh into the next turn
    assert read(src)["chiller-panel"].energy_j == pytest.approx((2**32 + 0x100) * 3600.0)


def test_a_register_the_meter_lacks_names_the_map(meter: Meter) -> None:
    src = source(meter, {**SDM630, "power": {"address": 5000, "type": "float32", "table": "input"}})
    m = src.meters[0]
    assert not m.poller.poll_once()
    assert "exception 2: illegal data address" in (m.poller.last_error or "")
    with pytest.raises(SourceError, match="illegal data address"):
        src.sample(0.0)


def test_one_meter_down_is_reported_down_and_the_other_goes_on(meter: Meter) -> None:
    meter.write(INPUT, 52, float32(1000.0))
    dead = {**SDM630, "id": "old-feed", "port": free_port()}  # nobody listens there
    src = ModbusSource(modbus_targets([{**SDM630, "port": meter.port}, dead]))
    assert src.meters[0].poller.poll_once()
    assert not src.meters[1].poller.poll_once()
    assert "cannot connect" in (src.meters[1].poller.last_error or "")
    snap = src.sample(0.0)
    assert [r.device.id for r in snap.readings] == ["main-feed"]
    assert [d.id for d in snap.down] == ["old-feed"]


def test_the_register_map_is_checked_when_the_agent_starts() -> None:
    with pytest.raises(ValueError, match="entry 1 \\(m1\\) power type: 'float' is not one of"):
        modbus_targets([{"id": "m1", "host": "h", "role": "it", "power": {"address": 1, "type": "float"}}])
    with pytest.raises(ValueError, match="a meter needs a power or an energy register"):
        modbus_targets([{"id": "m1", "host": "h", "role": "it"}])
    with pytest.raises(ValueError, match="unknown key 'adress'"):
        modbus_targets([{"id": "m1", "host": "h", "role": "it", "power": {"adress": 1}}])
    with pytest.raises(ValueError, match="id 'm1' is given twice"):
        modbus_targets([{"id": "m1", "host": "h", "role": "it", "power": {"address": 1}}] * 2)


def test_nan_and_exported_power_are_absent_never_sent(meter: Meter) -> None:
    """A meter's NaN ("not available") or a negative (exported) power would have the
    collector refuse the whole batch: the reading is left out instead."""
    meter.write(INPUT, 72, float32(10.0))
    src = source(meter, SDM630)
    meter.write(INPUT, 52, float32(float("nan")))
    got = read(src)["main-feed"]
    assert got.power_w is None and got.energy_j == pytest.approx(3.6e7)
    meter.write(INPUT, 52, float32(-1500.0))
    assert read(src)["main-feed"].power_w is None
