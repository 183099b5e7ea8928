"""The node's wall power from its BMC over DMTF Redfish (DMTF's ``redfish`` library).

What is read, per chassis (``Chassis/{id}``), in this order of preference:

- power: ``EnvironmentMetrics.PowerWatts.Reading`` (Chassis v1_15+), else the sum of
  ``PowerSubsystem/PowerSupplies/*/Metrics.InputPowerWatts.Reading`` (input, so PSU losses
  are in), else the deprecated ``Power.PowerControl[0].PowerConsumedWatts`` that older BMCs
  still serve;
- energy: ``EnvironmentMetrics.EnergyJoules.Reading``, else ``EnergykWh.Reading`` x 3.6e6
  (whole or tenth kWh steps on many BMCs: exact over hours, too coarse for a 10 s window;
  the agent says so once in its log);
- inlet temperature: ``ThermalSubsystem/ThermalMetrics.TemperatureSummaryCelsius.Intake``,
  else the ``Thermal.Temperatures[]`` member whose ``PhysicalContext`` is ``Intake``. Not
  ``EnvironmentMetrics.TemperatureCelsius``: the schema defines it as the temperature of the
  resource, and DMTF's own rackmount mockup sources it from the CPU sensor.

The BMC is read on the source's own thread (:class:`~wattledger.agent.sources.polling.Poller`)
every ``interval`` seconds with a session login (``X-Auth-Token``; logged in again when the
BMC answers 401 because the session expired), connect and read timeouts, no retries inside
the library and exponential backoff when it is down or refuses the login (BMCs lock accounts
after repeated failures). ``sample(ts)`` hands over the last reading at once, with the time
it was read; the sampler delivers each reading once. TLS certificates are verified against
``ca_file`` or the system's trust store unless ``insecure`` is set: note that the library
itself verifies nothing unless it is given a CA file, so one is always given.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import SourceError, SourceSample
from wattledger.agent.sources.polling import Poller, measured
from wattledger.agent.sources.remote import RedfishSettings, bmc_inlet_id, bmc_node_id, read_secret
from wattledger.contract import DEVICE_MODEL_MAX_LENGTH, Device

if TYPE_CHECKING:
    from redfish.rest.v1 import HttpClient

log = logging.getLogger(__name__)

ROOT = "/redfish/v1"
JOULES_PER_KWH = 3.6e6


class RedfishError(Exception):
    """The BMC answered, but not with what was asked for (one line)."""


class _Unauthorized(RedfishError):
    pass


@dataclass(frozen=True, slots=True)
class BmcReading:
    power_w: float | None
    energy_j: float | None
    inlet_c: float | None
    power_from: str  # which property the power came from (for the log and the tests)


@dataclass
class _Chassis:
    """The paths of one chassis' power and thermal resources, found once per login."""

    path: str
    model: str | None
    environment: str | None = None
    psu_metrics: list[str] = field(default_factory=list)
    power: str | None = None
    thermal_metrics: str | None = None
    thermal: str | None = None


def _default_ca_bundle() -> str:
    """The system's trust store (Debian/Ubuntu, RHEL, what OpenSSL was built with), else the
    certifi bundle that requests ships."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt",
                      "/etc/pki/tls/certs/ca-bundle.crt"):
        if candidate and Path(candidate).is_file():
            return candidate
    import certifi

    return str(certifi.where())


def _reading(obj: Any) -> float | None:
    """``{"Reading": 374}`` (a Redfish sensor excerpt) -> 374.0; absent or null -> None."""
    if isinstance(obj, dict):
        obj = obj.get("Reading")
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        return None
    return measured(float(obj), signed=True)


def _link(obj: dict[str, Any], name: str) -> str | None:
    ref = obj.get(name)
    if isinstance(ref, dict) and isinstance(ref.get("@odata.id"), str):
        return str(ref["@odata.id"])
    return None


def _members(collection: dict[str, Any]) -> list[str]:
    return [str(m["@odata.id"]) for m in collection.get("Members", [])
            if isinstance(m, dict) and isinstance(m.get("@odata.id"), str)]


def _why(exc: BaseException) -> str:
    """A requests/urllib3 failure in one short line."""
    import requests

    cause = exc.__cause__ or exc
    if isinstance(cause, requests.exceptions.SSLError):
        return "TLS verification failed (give --redfish-ca-file with the BMC's CA, or --redfish-insecure)"
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(cause, requests.exceptions.ReadTimeout):
        return "no answer in time (read timed out)"
    if isinstance(cause, requests.exceptions.ConnectionError):
        return "cannot connect"
    return " ".join(str(cause).split())[:200] or type(cause).__name__


class RedfishSource:
    name = "redfish"

    def __init__(self, node: str, settings: RedfishSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self._node = node
        self.settings = settings
        self._clock = clock
        self._client: HttpClient | None = None
        self._chassis: _Chassis | None = None
        self.node_device: Device | None = None
        self.inlet_device = Device(id=bmc_inlet_id(node), kind="sensor", index=0,
                                   model="BMC inlet temperature", role="inlet")
        self._power_from: str | None = None
        self._kwh_warned = False
        self.logins = 0
        self.poller = Poller(f"redfish {settings.url}", self._read, settings.interval, clock=clock,
                             on_stop=self._logout)

    # ------------------------------------------------------------------ Source

    def open(self) -> None:
        s = self.settings
        if s.user is None or s.password_file is None:
            raise SourceError("redfish: --redfish-user and --redfish-password-file are needed")
        read_secret(s.password_file, "--redfish-password-file")  # refuse an unreadable file now
        if s.url.startswith("http://"):
            log.warning("redfish %s: plain http: the BMC password and readings travel unencrypted", s.url)
        elif s.insecure:
            log.warning("redfish %s: --redfish-insecure: the BMC's certificate is NOT verified", s.url)
        self.poller.start()

    def sample(self, ts: float) -> SourceSample:
        latest = self.poller.latest()
        if latest is None or self.node_device is None:
            raise SourceError(self.poller.describe_failure())
        r = latest.value
        readings = []
        if r.power_w is not None or r.energy_j is not None:
            readings.append(DeviceReading(device=self.node_device, ts=latest.read_at,
                                          power_w=r.power_w, energy_j=r.energy_j))
        if r.inlet_c is not None:
            readings.append(DeviceReading(device=self.inlet_device, ts=latest.read_at, temp_c=r.inlet_c))
        return SourceSample(readings=readings)

    def close(self) -> None:
        self.poller.stop(timeout=2.0)  # a hung request ends at its own timeout (daemon thread)

    # ------------------------------------------------------------------ the poll thread

    def _connect(self) -> HttpClient:
        import redfish
        import urllib3

        s = self.settings
        cafile = None
        if s.url.startswith("https://") and not s.insecure:
            cafile = str(s.ca_file) if s.ca_file is not None else _default_ca_bundle()
        elif s.insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # said once at open
        assert s.password_file is not None and s.user is not None  # checked by open()
        password = read_secret(s.password_file, "--redfish-password-file")  # re-read: rotation
        try:
            client: HttpClient = redfish.redfish_client(
                base_url=s.url, username=s.user, password=password, cafile=cafile,
                timeout=(s.timeout, s.timeout), max_retry=0)
            client.login(auth=s.auth)
        except redfish.rest.v1.InvalidCredentialsError:
            raise RedfishError("login refused (HTTP 401): check --redfish-user and "
                               "--redfish-password-file") from None
        except redfish.rest.v1.RetriesExhaustedError as exc:
            raise RedfishError(_why(exc)) from None
        except redfish.rest.v1.ServerDownOrUnreachableError as exc:
            raise RedfishError(" ".join(str(exc).split())) from None
        except Exception as exc:  # the library's own parsing of a BMC's odd answer
            raise RedfishError(f"{s.auth} login failed: {type(exc).__name__}: {exc}") from None
        self.logins += 1
        return client

    def _get(self, path: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
        import redfish

        assert self._client is not None
        try:
            resp = self._client.get(path)
        except redfish.rest.v1.RetriesExhaustedError as exc:
            raise RedfishError(f"GET {path}: {_why(exc)}") from None
        if resp.status == 401:
            raise _Unauthorized(f"GET {path}: HTTP 401")
        if resp.status == 404 and missing_ok:
            return None
        if resp.status != 200:
            raise RedfishError(f"GET {path}: HTTP {resp.status}")
        body = resp.dict
        if not isinstance(body, dict):
            raise RedfishError(f"GET {path}: not a JSON object")
        return body

    def _read(self) -> BmcReading:
        if self._client is None:
            self._client = self._connect()
        try:
            return self._read_chassis()
        except _Unauthorized:
            # the session expired (or the BMC restarted): log in once more, then read again
            log.info("redfish %s: session expired; logging in again", self.settings.url)
            self._client = None
            self._client = self._connect()
            return self._read_chassis()
        except RedfishError:
            self._chassis = None  # a resource moved (firmware update): find the paths again
            raise

    def _discover(self) -> _Chassis:
        chassis_ids = _members(self._get(f"{ROOT}/Chassis") or {})
        wanted = self.settings.chassis
        if wanted is not None:
            chassis_ids = [p for p in chassis_ids if p.rstrip("/").rsplit("/", 1)[-1] == wanted]
            if not chassis_ids:
                raise RedfishError(f"no chassis {wanted!r} on this BMC (--redfish-chassis)")
        for path in chassis_ids:
            body = self._get(path) or {}
            links = {k: _link(body, k) for k in ("EnvironmentMetrics", "PowerSubsystem", "Power",
                                                 "ThermalSubsystem", "Thermal")}
            if not (links["EnvironmentMetrics"] or links["PowerSubsystem"] or links["Power"]):
                continue
            maker = " ".join(str(body.get(k) or "").strip() for k in ("Manufacturer", "Model")).strip()
            found = _Chassis(path=path, model=maker[:DEVICE_MODEL_MAX_LENGTH] or None,
                             environment=links["EnvironmentMetrics"], power=links["Power"],
                             thermal=links["Thermal"])
            if links["PowerSubsystem"]:
                found.psu_metrics = self._psu_metrics(links["PowerSubsystem"])
            if links["ThermalSubsystem"]:
                thermal = self._get(links["ThermalSubsystem"], missing_ok=True) or {}
                found.thermal_metrics = _link(thermal, "ThermalMetrics")
            return found
        raise RedfishError("no chassis with power readings on this BMC")

    def _psu_metrics(self, subsystem_path: str) -> list[str]:
        subsystem = self._get(subsystem_path, missing_ok=True) or {}
        supplies = _link(subsystem, "PowerSupplies")
        paths: list[str] = []
        for member in _members(self._get(supplies, missing_ok=True) or {} if supplies else {}):
            psu = self._get(member, missing_ok=True) or {}
            if (psu.get("Status") or {}).get("State") == "Absent":
                continue
            metrics = _link(psu, "Metrics")
            if metrics:
                paths.append(metrics)
        return paths

    def _read_chassis(self) -> BmcReading:
        if self._chassis is None:
            self._chassis = self._discover()
            self.node_device = Device(id=bmc_node_id(self._node), kind="node", index=0,
                                      model=self._chassis.model or "Redfish chassis")
        c = self._chassis
        power: float | None = None
        energy: float | None = None
        power_from = "none"
        env = self._get(c.environment, missing_ok=True) if c.environment else None
        if env is not None:
            power = _reading(env.get("PowerWatts"))
            power_from = "EnvironmentMetrics.PowerWatts" if power is not None else power_from
            energy = _reading(env.get("EnergyJoules"))
            if energy is None and (kwh := _reading(env.get("EnergykWh"))) is not None:
                energy = kwh * JOULES_PER_KWH
                if not self._kwh_warned:
                    self._kwh_warned = True
                    log.warning("redfish %s: energy only as EnergykWh (steps of up to 1 kWh = 3.6 MJ): "
                                "exact over hours, too coarse for a 10 s window", self.settings.url)
        if power is None and c.psu_metrics:
            inputs = [_reading((self._get(p, missing_ok=True) or {}).get("InputPowerWatts"))
                      for p in c.psu_metrics]
            present = [w for w in inputs if w is not None]
            if present:
                power, power_from = sum(present), f"PowerSupplies[{len(present)}].InputPowerWatts"
        if power is None and c.power:
            controls = (self._get(c.power, missing_ok=True) or {}).get("PowerControl") or []
            if controls and isinstance(controls[0], dict):
                power = _reading(controls[0].get("PowerConsumedWatts"))
                power_from = "Power.PowerControl[0].PowerConsumedWatts" if power is not None else power_from
        power, energy = measured(power), measured(energy)  # a negative "not available" sentinel, NaN
        if power_from != self._power_from:
            self._power_from = power_from
            log.info("redfish %s: chassis %s, power from %s%s", self.settings.url, c.path, power_from,
                     ", energy from the BMC's counter" if energy is not None else "")
        return BmcReading(power_w=power, energy_j=energy, inlet_c=self._inlet(c), power_from=power_from)

    def _inlet(self, c: _Chassis) -> float | None:
        if c.thermal_metrics:
            metrics = self._get(c.thermal_metrics, missing_ok=True) or {}
            summary = metrics.get("TemperatureSummaryCelsius") or {}
            inlet = _reading(summary.get("Intake")) if isinstance(summary, dict) else None
            if inlet is not None:
                return inlet
        if c.thermal:
            for t in (self._get(c.thermal, missing_ok=True) or {}).get("Temperatures") or []:
                if isinstance(t, dict) and t.get("PhysicalContext") == "Intake":
                    inlet = _reading(t.get("ReadingCelsius"))
                    if inlet is not None:
                        return inlet
        return None

    def _logout(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.logout()
