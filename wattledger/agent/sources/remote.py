"""Settings of the sources that read a device over the network: the node's BMC (``redfish``,
``ipmi``), rack PDUs (``snmp``) and facility meters (``modbus``).

Plain dataclasses and their checks, no vendor library: the agent's command line builds them
whether or not the source runs. Secrets (passwords, SNMP communities and keys) are never
settings themselves, only the files that hold them; :func:`read_secret` reads such a file
when the source opens. A bad value is a ``ValueError`` whose message is one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from wattledger.agent.sources.base import SourceUnavailable

MeterRole = Literal["facility", "it", "cooling"]
SensorRole = Literal["outdoor", "inlet"]
METER_ROLES: tuple[str, ...] = get_args(MeterRole)
SENSOR_ROLES: tuple[str, ...] = get_args(SensorRole)
#: a meter's or sensor's id: the device id on the wire and the `meter`/`sensor` label
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}")


def read_secret(path: Path, what: str) -> str:
    """The one-line secret in ``path`` (trailing newline dropped); SourceUnavailable if not."""
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SourceUnavailable(f"{what}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SourceUnavailable(f"{what}: {str(path)!r} is not UTF-8 text") from None
    if not secret or "\n" in secret:
        raise SourceUnavailable(f"{what}: {str(path)!r} must hold one line (the secret)")
    return secret


# ---------------------------------------------------------------------------- the node's BMC


@dataclass(frozen=True)
class RedfishSettings:
    url: str  # https://bmc-01.example (http:// accepted with a warning)
    user: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None  # else the system's trust store
    insecure: bool = False  # no certificate verification: only when asked for
    chassis: str | None = None  # Chassis/{id}; default: the first with power readings
    auth: Literal["session", "basic"] = "session"  # basic: no session kept on the BMC
    interval: float = 10.0
    timeout: float = 5.0  # connect and read timeout of each request


@dataclass(frozen=True)
class IpmiSettings:
    host: str | None = None  # None: the local BMC through /dev/ipmi0 (in-band, root)
    port: int = 623
    user: str | None = None
    password_file: Path | None = None
    interval: float = 10.0
    timeout: float = 5.0


# ---------------------------------------------------------------------------- PDUs (SNMP)

SnmpVendor = Literal["apc", "raritan", "servertech"]
SNMP_VENDORS: tuple[str, ...] = get_args(SnmpVendor)
SNMP_AUTH = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
SNMP_PRIV = ("des", "aes", "aes192", "aes256")
#: the default row of each vendor's table: APC device 1, Raritan PDU 1 inlet 1, ServerTech
#: unit 1 (A) input cord 1
SNMP_DEFAULT_INDEX = {"apc": "1", "raritan": "1.1", "servertech": "1.1"}


@dataclass(frozen=True)
class SnmpTarget:
    id: str
    host: str
    vendor: SnmpVendor
    role: MeterRole
    port: int = 161
    community_file: Path | None = None  # SNMPv2c; or the v3 user below
    user: str | None = None
    auth_protocol: str = "sha"
    auth_key_file: Path | None = None
    priv_protocol: str = "aes"
    priv_key_file: Path | None = None
    context: str = ""  # SNMPv3 context name (most PDUs: the default, empty)
    index: str = ""  # the table row (vendor default when empty)
    temperature_index: str | None = None  # an environment probe of the PDU, when it has one
    temperature_role: SensorRole = "inlet"
    interval: float = 10.0
    timeout: float = 2.0
    retries: int = 1


# ---------------------------------------------------------------------------- meters (Modbus)

REGISTER_TYPES = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2,
                  "uint64": 4, "int64": 4, "float64": 4}
#: what a register's unit is in base units: power -> W, energy -> J, temperature -> °C
POWER_UNITS = {"W": 1.0, "kW": 1e3, "MW": 1e6}
ENERGY_UNITS = {"J": 1.0, "kJ": 1e3, "MJ": 1e6, "Wh": 3600.0, "kWh": 3.6e6, "MWh": 3.6e9}
TEMPERATURE_UNITS = {"C": 1.0}


@dataclass(frozen=True)
class ModbusRegister:
    address: int  # protocol address, 0-based (register 40001/30001 of a data sheet = address 0)
    type: str = "float32"
    table: Literal["holding", "input"] = "holding"
    word_order: Literal["big", "little"] = "big"  # big: the high word first (Modbus' usual)
    scale: float = 1.0  # multiplies the raw number before the unit
    unit: str = "W"
    factor: float = 1.0  # the unit in base units (filled in from `unit`)

    @property
    def count(self) -> int:
        return REGISTER_TYPES[self.type]


@dataclass(frozen=True)
class ModbusTarget:
    id: str
    host: str
    role: MeterRole | SensorRole  # a meter's (facility|it|cooling) or a probe's (outdoor|inlet)
    port: int = 502
    unit_id: int = 1  # the Modbus unit (slave, device) id
    power: ModbusRegister | None = None
    energy: ModbusRegister | None = None
    temperature: ModbusRegister | None = None
    model: str | None = None
    interval: float = 10.0
    timeout: float = 2.0

    @property
    def is_sensor(self) -> bool:
        return self.role in SENSOR_ROLES


# ---------------------------------------------------------------------------- parsing


def _mapping(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a mapping of keys to values")
    return {str(k).replace("-", "_"): v for k, v in raw.items()}


def _keys(entry: Mapping[str, Any], allowed: set[str], required: Sequence[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
    for key in required:
        if entry.get(key) in (None, ""):
            raise ValueError(f"{where}: {key!r} is required")


def _text(raw: object, where: str) -> str:
    if not isinstance(raw, str | int) or isinstance(raw, bool) or not str(raw).strip():
        raise ValueError(f"{where}: must be a non-empty string")
    return str(raw).strip()


def _one_of(raw: object, known: Sequence[str], where: str) -> str:
    value = str(raw).strip()
    if value not in known:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(known)}")
    return value


def _number(raw: object, where: str, *, positive: bool = False) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"{where}: {raw!r} is not a number")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {raw!r} is not a number") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{where}: {raw!r} must be a {'positive ' if positive else ''}finite number")
    return value


def _int(raw: object, where: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(f"{where}: {raw!r} is not a whole number")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{where}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ValueError(f"{where}: {value} is outside {low}..{high}")
    return value


def _file(raw: object, where: str) -> Path:
    path = Path(_text(raw, where)).expanduser()
    if not path.is_file():
        raise ValueError(f"{where}: {str(path)!r}: no such file")
    return path


def _device_id(raw: object, where: str) -> str:
    value = _text(raw, where)
    if not DEVICE_ID.fullmatch(value):
        raise ValueError(f"{where}: {value!r} is not a device id (letters, digits, . _ : / -; up to 100)")
    return value


def _index(raw: object, where: str) -> str:
    value = _text(raw, where)
    if not re.fullmatch(r"\d+(\.\d+)*", value):
        raise ValueError(f"{where}: {value!r} is not a table index such as 1 or 1.1")
    return value


def _unique_ids(ids: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what}: id {i!r} is given twice")
        seen.add(i)


class EntryError(ValueError):
    """A bad entry of a YAML list of targets; ``index`` is its 0-based position, so that the
    error can name the entry's line (the message counts entries from 1)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


SNMP_KEYS = {"id", "host", "port", "vendor", "role", "community_file", "user", "auth_protocol",
             "auth_key_file", "priv_protocol", "priv_key_file", "context", "index", "temperature_index",
             "temperature_role", "interval", "timeout", "retries"}


def _snmp_target(n: int, item: object) -> SnmpTarget:
    """Entry ``n`` (0-based) of the ``snmp_targets`` list."""
    where = f"entry {n + 1}"
    e = _mapping(item, where)
    _keys(e, SNMP_KEYS, ("id", "host", "vendor", "role"), where)
    where = f"entry {n + 1} ({e['id']})"
    vendor = cast(SnmpVendor, _one_of(e["vendor"], SNMP_VENDORS, f"{where} vendor"))
    role = cast(MeterRole, _one_of(e["role"], METER_ROLES, f"{where} role"))
    community = _file(e["community_file"], f"{where} community_file") if e.get("community_file") else None
    user = _text(e["user"], f"{where} user") if e.get("user") else None
    if (community is None) == (user is None):
        raise ValueError(f"{where}: give either community_file (SNMPv2c) or user (SNMPv3)")
    auth_key = _file(e["auth_key_file"], f"{where} auth_key_file") if e.get("auth_key_file") else None
    priv_key = _file(e["priv_key_file"], f"{where} priv_key_file") if e.get("priv_key_file") else None
    if user is not None and auth_key is None:
        raise ValueError(f"{where}: an SNMPv3 user needs auth_key_file (noAuthNoPriv is not offered)")
    return SnmpTarget(
        id=_device_id(e["id"], f"{where} id"),
        host=_text(e["host"], f"{where} host"),
        vendor=vendor,
        role=role,
        port=_int(e.get("port", 161), f"{where} port", 1, 65535),
        community_file=community,
        user=user,
        auth_protocol=_one_of(e.get("auth_protocol", "sha"), SNMP_AUTH, f"{where} auth_protocol"),
        auth_key_file=auth_key,
        priv_protocol=_one_of(e.get("priv_protocol", "aes"), SNMP_PRIV, f"{where} priv_protocol"),
        priv_key_file=priv_key,
        context=str(e.get("context") or ""),
        index=_index(e.get("index", SNMP_DEFAULT_INDEX[vendor]), f"{where} index"),
        temperature_index=(_index(e["temperature_index"], f"{where} temperature_index")
                           if e.get("temperature_index") is not None else None),
        temperature_role=cast(SensorRole, _one_of(e.get("temperature_role", "inlet"), SENSOR_ROLES,
                                                  f"{where} temperature_role")),
        interval=_number(e.get("interval", 10), f"{where} interval", positive=True),
        timeout=_number(e.get("timeout", 2), f"{where} timeout", positive=True),
        retries=_int(e.get("retries", 1), f"{where} retries", 0, 5),
    )


def snmp_targets(raw: object) -> tuple[SnmpTarget, ...]:
    """The ``snmp_targets`` list of the agent's YAML."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("must be a list of PDUs ({id, host, vendor, role, community_file, ...})")
    targets: list[SnmpTarget] = []
    for n, item in enumerate(raw):
        try:
            targets.append(_snmp_target(n, item))
        except ValueError as exc:  # its position, for the line of the YAML entry
            raise EntryError(n, str(exc)) from None
    _unique_ids([t.id for t in targets], "snmp_targets")
    return tuple(targets)


REGISTER_KEYS = {"address", "type", "table", "word_order", "scale", "unit"}
MODBUS_KEYS = {"id", "host", "port", "unit_id", "role", "power", "energy", "temperature", "model",
               "interval", "timeout"}


def _register(raw: object, units: Mapping[str, float], where: str) -> ModbusRegister:
    e = _mapping(raw, where)
    _keys(e, REGISTER_KEYS, ("address",), where)
    unit = _one_of(e.get("unit", next(iter(units))), list(units), f"{where} unit")
    return ModbusRegister(
        address=_int(e["address"], f"{where} address", 0, 65535),
        type=_one_of(e.get("type", "float32"), list(REGISTER_TYPES), f"{where} type"),
        table=cast(Literal["holding", "input"], _one_of(e.get("table", "holding"), ("holding", "input"),
                                                        f"{where} table")),
        word_order=cast(Literal["big", "little"], _one_of(e.get("word_order", "big"), ("big", "little"),
                                                          f"{where} word_order")),
        scale=_number(e.get("scale", 1), f"{where} scale"),
        unit=unit,
        factor=units[unit],
    )


def _modbus_target(n: int, item: object) -> ModbusTarget:
    """Entry ``n`` (0-based) of the ``modbus_targets`` list."""
    where = f"entry {n + 1}"
    e = _mapping(item, where)
    _keys(e, MODBUS_KEYS, ("id", "host", "role"), where)
    where = f"entry {n + 1} ({e['id']})"
    role = cast(MeterRole | SensorRole,
                _one_of(e["role"], (*METER_ROLES, *SENSOR_ROLES), f"{where} role"))
    power = _register(e["power"], POWER_UNITS, f"{where} power") if e.get("power") else None
    energy = (_register(e["energy"], ENERGY_UNITS, f"{where} energy")
              if e.get("energy") else None)
    temperature = (_register(e["temperature"], TEMPERATURE_UNITS, f"{where} temperature")
                   if e.get("temperature") else None)
    if role in SENSOR_ROLES:
        if temperature is None or power is not None or energy is not None:
            raise ValueError(f"{where}: a {role} sensor has a temperature register only")
    elif power is None and energy is None:
        raise ValueError(f"{where}: a meter needs a power or an energy register")
    elif temperature is not None:
        raise ValueError(f"{where}: give the temperature as its own entry (role outdoor or inlet)")
    return ModbusTarget(
        id=_device_id(e["id"], f"{where} id"),
        host=_text(e["host"], f"{where} host"),
        role=role,
        port=_int(e.get("port", 502), f"{where} port", 1, 65535),
        unit_id=_int(e.get("unit_id", 1), f"{where} unit_id", 0, 255),
        power=power, energy=energy, temperature=temperature,
        model=_text(e["model"], f"{where} model")[:128] if e.get("model") else None,
        interval=_number(e.get("interval", 10), f"{where} interval", positive=True),
        timeout=_number(e.get("timeout", 2), f"{where} timeout", positive=True),
    )


def modbus_targets(raw: object) -> tuple[ModbusTarget, ...]:
    """The ``modbus_targets`` list of the agent's YAML: one meter (or sensor) per entry, with
    its register map (see docs/agent.md for the Eastron SDM630 and Schneider PM5xxx maps)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("must be a list of meters ({id, host, role, power: {address, type, ...}, ...})")
    targets: list[ModbusTarget] = []
    for n, item in enumerate(raw):
        try:
            targets.append(_modbus_target(n, item))
        except ValueError as exc:  # its position, for the line of the YAML entry
            raise EntryError(n, str(exc)) from None
    _unique_ids([t.id for t in targets], "modbus_targets")
    return tuple(targets)


# ---------------------------------------------------------------------------- the agent's settings


def bmc_node_id(node: str) -> str:
    """The device id of the node's wall power as its BMC reports it (redfish or ipmi: the
    same meter, so the same id whichever protocol reads it)."""
    return f"{node}:bmc"


def bmc_inlet_id(node: str) -> str:
    return f"{node}:bmc:inlet"
