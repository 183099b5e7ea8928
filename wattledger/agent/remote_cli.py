"""The agent's flags and YAML keys for the sources that read a device over the network
(``redfish``, ``ipmi``, ``snmp``, ``modbus``), and their checks: every flag also reads
``WATTLEDGER_<FLAG>`` and the YAML key, like the agent's other flags; the PDU and meter lists
are YAML only (``snmp_targets``, ``modbus_targets``). Credentials are only ever file paths.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from wattledger.agent.sources.remote import (
    EntryError,
    IpmiSettings,
    RedfishSettings,
    modbus_targets,
    snmp_targets,
)
from wattledger.config import (
    ConfigError,
    Option,
    YamlDoc,
    boolean,
    existing_file,
    http_url,
    positive_float,
    positive_int,
    text,
)


def _port(raw: object) -> int:
    value = positive_int(raw)
    if value > 65535:
        raise ValueError(f"port {value} is outside 1..65535")
    return value


def _auth(raw: object) -> str:
    value = str(raw).strip()
    if value not in ("session", "basic"):
        raise ValueError(f"{value!r} is not session or basic")
    return value


OPTIONS = [
    Option("--redfish-url", http_url, None, "the node's BMC for the redfish source (https://; http:// with a "
           "warning)", metavar="URL"),
    Option("--redfish-user", text, None, "BMC user (a read-only account is enough)", metavar="NAME"),
    Option("--redfish-password-file", existing_file, None, "file holding the BMC user's password",
           metavar="FILE"),
    Option("--redfish-ca-file", existing_file, None, "CA certificate(s) the BMC's TLS certificate is checked "
           "against (default: the system's trust store)", metavar="FILE"),
    Option("--redfish-chassis", text, None, "the Chassis id to read (default: the first with power readings)",
           metavar="ID"),
    Option("--redfish-auth", _auth, "session", "session (X-Auth-Token, re-login on expiry) or basic",
           metavar="MODE"),
    Option("--redfish-interval", positive_float, 10.0, "seconds between BMC reads", metavar="SECONDS"),
    Option("--redfish-timeout", positive_float, 5.0, "connect and read timeout of each BMC request",
           metavar="SECONDS"),
    Option("--ipmi-host", text, None, "BMC over IPMI LAN for the ipmi source (default: the local BMC through "
           "/dev/ipmi0)", metavar="HOST"),
    Option("--ipmi-port", _port, 623, "IPMI LAN port", metavar="PORT"),
    Option("--ipmi-user", text, None, "IPMI user (with --ipmi-host)", metavar="NAME"),
    Option("--ipmi-password-file", existing_file, None, "file holding the IPMI user's password",
           metavar="FILE"),
    Option("--ipmi-interval", positive_float, 10.0, "seconds between DCMI power readings", metavar="SECONDS"),
    Option("--ipmi-timeout", positive_float, 5.0, "timeout of each IPMI request", metavar="SECONDS"),
]
#: on/off flags (no value): each also reads WATTLEDGER_<FLAG> and the YAML key of its name
SWITCHES = {"redfish_insecure": "do not verify the BMC's TLS certificate (only if you must)"}
#: YAML-only keys
LISTS = ("snmp_targets", "modbus_targets")
KNOWN_KEYS = {opt.dest for opt in OPTIONS} | set(SWITCHES) | set(LISTS)


def configure(parser: argparse.ArgumentParser) -> None:
    for name, doc in SWITCHES.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, action="store_true", default=argparse.SUPPRESS,
                            help=f"{doc} [env WATTLEDGER_{name.upper()}]")


def resolve(s: dict[str, Any], args: argparse.Namespace, file_values: Mapping[str, Any],
            env: Mapping[str, str], names: Sequence[str]) -> None:
    """Add ``redfish``, ``ipmi``, ``snmp_targets``, ``modbus_targets`` to the settings ``s``
    (whose OPTIONS are already resolved), checking what the chosen sources need."""
    for name in SWITCHES:
        source, raw = f"WATTLEDGER_{name.upper()}", env.get(f"WATTLEDGER_{name.upper()}")
        if raw is None:
            source, raw = f"config key {name!r}", file_values.get(name)
        try:
            s[name] = bool(getattr(args, name, False)) or (raw is not None and boolean(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    s["redfish"] = _redfish(s, "redfish" in names)
    s["ipmi"] = _ipmi(s, "ipmi" in names)
    if "redfish" in names and "ipmi" in names:
        raise ConfigError("--sources: redfish and ipmi read the same BMC; choose one")
    for key, parse in (("snmp_targets", snmp_targets), ("modbus_targets", modbus_targets)):
        try:
            s[key] = parse(file_values.get(key))
        except ValueError as exc:
            # the line of the bad entry (else of the list's key), as every config error names
            entry = (str(exc.index),) if isinstance(exc, EntryError) else ()
            where = file_values.where(key, *entry) if isinstance(file_values, YamlDoc) else ""
            raise ConfigError(f"config key {key!r}: {exc}{where}") from None
        source = key.split("_")[0]
        if source in names and not s[key]:
            raise ConfigError(f"--sources {source} needs {key} in the --config file (its list of devices)")


def _redfish(s: dict[str, Any], used: bool) -> RedfishSettings | None:
    if s["redfish_url"] is None:
        if used:
            raise ConfigError("--sources redfish needs --redfish-url (the node's BMC)")
        return None
    if used and (s["redfish_user"] is None or s["redfish_password_file"] is None):
        raise ConfigError("--sources redfish needs --redfish-user and --redfish-password-file")
    if s["redfish_insecure"] and s["redfish_ca_file"] is not None:
        raise ConfigError("--redfish-insecure and --redfish-ca-file: give one of them")
    return RedfishSettings(url=s["redfish_url"], user=s["redfish_user"],
                           password_file=s["redfish_password_file"], ca_file=s["redfish_ca_file"],
                           insecure=s["redfish_insecure"], chassis=s["redfish_chassis"],
                           auth=s["redfish_auth"], interval=s["redfish_interval"],
                           timeout=s["redfish_timeout"])


def _ipmi(s: dict[str, Any], used: bool) -> IpmiSettings:
    if used and s["ipmi_host"] is not None and (s["ipmi_user"] is None or s["ipmi_password_file"] is None):
        raise ConfigError("--ipmi-host needs --ipmi-user and --ipmi-password-file")
    return IpmiSettings(host=s["ipmi_host"], port=s["ipmi_port"], user=s["ipmi_user"],
                        password_file=s["ipmi_password_file"], interval=s["ipmi_interval"],
                        timeout=s["ipmi_timeout"])
