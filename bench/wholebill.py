"""The whole bill in the ingest benchmark (``--cooling``, ``--node-meters``): the site's cooling
model, the devices besides the GPUs that the streams carry, and what the ledger must hold
afterwards, worked out from the readings sent.

- ``pue`` (the default): the benchmark's site as it always was (``pue: 1.5``);
- ``chiller``: the ASHRAE 90.1-2010 air-cooled preset, sized to the fleet, the outdoor
  temperature from a ``sensor`` device that the first stream of each repeat carries (fixed_c,
  the same temperature, as its fallback: every minute's cooling is then one number);
- ``metered``: every ``METER_EVERY``-th stream carries a ``cooling`` and a ``facility`` meter,
  whose shares add up to ``METERED_COOLING`` / ``METERED_FACILITY`` x the fleet's IT power;
- ``node_meters``: each stream also carries its node's ``node`` device (a BMC's wall power),
  at ``NODE_METER_RATIO`` x its GPUs' power, which then is the node's IT power.

Every batch of a minute updates the site's minute row (``site_minutes``) and the site's totals
on any model; the chiller's and the meters' inputs are what the row adds.
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from benchkit import SITE, Extra

#: what batch_body's energy counters rise by, per GPU and second (its power column is not used)
GPU_W = 400.0
#: a node's BMC reads its GPUs' power x this (fans, NICs, storage, PSU losses)
NODE_METER_RATIO = 1.25
OUTDOOR_C = 30.0
SENSOR_ID = "weather:outdoor"
#: chiller sized so that the fleet's whole IT is ~80 % of its rated capacity
CHILLER_HEADROOM = 1.25
METER_EVERY = 10
METERED_COOLING, METERED_FACILITY = 0.35, 1.6
COOLING_MODELS = ("pue", "chiller", "metered")


@dataclass(frozen=True)
class Booked:
    """A site's energy as the ledger books it (J)."""

    it_j: float
    cooling_j: float
    other_j: float

    def close_to(self, other: Booked, rel: float = 1e-6) -> bool:
        pairs = ((self.it_j, other.it_j), (self.cooling_j, other.cooling_j), (self.other_j, other.other_j))
        return all(math.isclose(a, b, rel_tol=rel, abs_tol=1e-3) for a, b in pairs)

    def __str__(self) -> str:
        return (f"IT {self.it_j / 3.6e6:.6f} kWh, cooling {self.cooling_j / 3.6e6:.6f} kWh, "
                f"other {self.other_j / 3.6e6:.6f} kWh")


@dataclass(frozen=True)
class WholeBill:
    """The benchmark's sites: ``nodes`` streams of ``gpus`` GPUs spread over ``sites`` sites
    (stream n in site n mod sites), each site with the cooling model ``cooling``."""

    cooling: str
    node_meters: bool
    nodes: int
    gpus: int
    sites: int = 1

    @property
    def node_it_w(self) -> float:
        return self.gpus * GPU_W * (NODE_METER_RATIO if self.node_meters else 1.0)

    def site_of(self, n: int) -> str:
        """The site of stream ``n`` (the first is the benchmark's usual ``default``)."""
        return site_name(n % self.sites)

    def site_it_w(self, site: int) -> float:
        return len(range(site, self.nodes, self.sites)) * self.node_it_w

    def sensor(self, site: int) -> str:
        return SENSOR_ID if site == 0 else f"{SENSOR_ID}-{site}"

    def chiller(self, site: int = 0) -> dict[str, Any]:
        return {"model": "chiller", "curves": "ashrae-90.1-2010-air-cooled", "cop_ref": 2.8,
                "capacity_kw": self.site_it_w(site) / 1000 * CHILLER_HEADROOM, "aux_ratio": 0.05,
                "outdoor": {"sensor": self.sensor(site), "fixed_c": OUTDOOR_C}}

    def site_config(self, site: int) -> dict[str, Any]:
        if self.cooling == "pue":
            return dict(SITE)
        base = {k: v for k, v in SITE.items() if k != "pue"}
        return {**base, "cooling": self.chiller(site) if self.cooling == "chiller" else {"model": "metered"}}

    def config(self) -> dict[str, Any]:
        """The collector's ``sites``."""
        return {site_name(i): self.site_config(i) for i in range(self.sites)}

    def extras(self, n: int, node: str) -> list[Extra]:
        """The devices besides its GPUs that stream ``n`` (of node ``node``) carries: its BMC; the
        first stream of a chiller site its outdoor sensor; every METER_EVERY-th stream of a
        metered site a cooling and a facility meter, their share of the site's."""
        site, rank = n % self.sites, n // self.sites
        found: list[Extra] = []
        if self.node_meters:
            found.append(Extra({"id": f"bmc-{node}", "kind": "node", "index": 0}, self.node_it_w))
        if self.cooling == "chiller" and rank == 0:
            found.append(Extra({"id": self.sensor(site), "kind": "sensor", "index": 0, "role": "outdoor"},
                               None, OUTDOOR_C))
        if self.cooling == "metered" and rank % METER_EVERY == 0:
            streams = len(range(site, self.nodes, self.sites))
            share = self.site_it_w(site) / len(range(0, streams, METER_EVERY))
            found += [Extra({"id": f"chw-{node}", "kind": "meter", "index": 0, "role": "cooling"},
                            share * METERED_COOLING),
                      Extra({"id": f"feed-{node}", "kind": "meter", "index": 1, "role": "facility"},
                            share * METERED_FACILITY)]
        return found

    def expected(self, spans: Iterable[tuple[int, int]]) -> Booked:
        """What the sites' ledger holds after every stream sent readings each second from each
        span's start for its length in seconds (integer seconds: each 1-s interval lies in one
        minute); the chiller minute by minute and site by site, as the collector books it."""
        seconds: dict[int, int] = {}
        for start, length in spans:
            for t in range(start, start + length - 1):  # the first reading opens each device
                seconds[t // 60] = seconds.get(t // 60, 0) + 1
        it_j = sum(seconds.values()) * sum(self.site_it_w(i) for i in range(self.sites))
        if self.cooling == "pue":
            return Booked(it_j, it_j * (SITE["pue"] - 1), 0.0)
        if self.cooling == "metered":
            return Booked(it_j, it_j * METERED_COOLING, it_j * (METERED_FACILITY - 1 - METERED_COOLING))
        from wattledger.collector.accounting.cooling import ChillerCooling, chiller_cooling

        cooling_j = 0.0
        for i in range(self.sites):
            model = ChillerCooling.model_validate(self.chiller(i))
            cooling_j += sum(chiller_cooling(model, n * self.site_it_w(i) / 60 / 1000, OUTDOOR_C).cooling_kw
                             * 60e3 for n in seconds.values())
        return Booked(it_j, cooling_j, 0.0)


def site_name(site: int) -> str:
    return "default" if site == 0 else f"site-{site}"


def months(spans: Iterable[tuple[int, int]]) -> list[str]:
    """The UTC months (the benchmark's site is on UTC) that the spans' readings fall in."""
    return sorted({datetime.fromtimestamp(t, UTC).strftime("%Y-%m")
                   for start, length in spans for t in (start, start + length - 1)})


def booked(port: int, in_months: Sequence[str]) -> Booked:
    """The sites' IT, cooling and other energy on a collector's ``/v1/spend`` (what it booked,
    not the /metrics counters, which keep the highest value they showed)."""
    it = cooling = other = 0.0
    for month in in_months:  # every site's row
        url = f"http://127.0.0.1:{port}/v1/spend?group_by=site&month={month}"
        with urllib.request.urlopen(url, timeout=60) as answer:
            for row in json.load(answer)["rows"]:
                it += row["it_energy_kwh"] * 3.6e6
                cooling += row["cooling_energy_kwh"] * 3.6e6
                other += row["other_energy_kwh"] * 3.6e6
    return Booked(it, cooling, other)
