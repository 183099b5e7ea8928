"""The demo's fleet and site: who runs what, where, at what price, against which plan.

One site (``dc-east``, New York time) buys power on a time-of-use tariff (a weekday day band
and an off-peak price), pays a demand charge on its highest quarter-hour, and holds a monthly
plan. Four servers of eight simulated GPUs each run different workloads; one of them runs hot
so that the thermal alerts have something to show. Everything here is data: the collector's
YAML and the agents' command lines are made from it by :mod:`wattledger.demo.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Job:
    """A Slurm job that holds all of a server's GPUs for the demo's month (its prolog files are
    written for the agent's ``slurm`` source; the backfill's batches carry it too)."""

    job: str
    account: str
    user: str
    partition: str = "h100"

    def owner(self) -> dict[str, str]:
        """The owner the slurm source gives it (docs/chargeback.md)."""
        return {"job": self.job, "account": self.account, "user": self.user, "partition": self.partition}


@dataclass(frozen=True)
class Server:
    node: str
    workload: str  # a workload name of the simulated source
    cluster: str
    gpus: int = 8
    seed: int = 0
    job: Job | None = None  # None: nobody holds its GPUs (team idle)
    #: the server's BMC (a node meter): the base draw beyond its GPUs, W; None: no node meter
    #: (its overhead is the site's node_overhead_ratio x its GPUs)
    node_meter_w: float | None = None

    @property
    def devices(self) -> int:
        """Its simulated devices: the GPUs, and its BMC if it has one."""
        return self.gpus + (self.node_meter_w is not None)

    def labels(self, site: str) -> dict[str, str]:
        return {"site": site, "cluster": self.cluster}


@dataclass(frozen=True)
class TariffBand:
    price_per_kwh: float
    days: tuple[str, ...] = ()  # empty: every day
    start: str | None = None  # "HH:MM" local time; None with `end`: all day
    end: str | None = None

    def as_config(self) -> dict[str, object]:
        out: dict[str, object] = {"price_per_kwh": self.price_per_kwh}
        if self.days:
            out["days"] = list(self.days)
        if self.start is not None and self.end is not None:
            out["from"] = self.start
            out["to"] = self.end
        return out


@dataclass(frozen=True)
class Site:
    name: str
    timezone: str
    currency: str
    pue: float
    tariff: tuple[TariffBand, ...]
    demand_charge_per_kw: float
    carbon_g_per_kwh: float
    #: the monthly plan (budget) for cost and IT energy
    plan_cost: float
    plan_it_energy_kwh: float
    #: the part of plan_cost budgeted for the demand charge (owed whole, not prorated)
    plan_demand_charge: float | None = None
    #: an air-cooled chiller (ASHRAE 90.1 curves) instead of a PUE: its COP and capacity; the
    #: outdoor temperature follows a day's swing (mean and half amplitude, °C; warmest at 15:00)
    chiller_cop: float | None = None
    chiller_capacity_kw: float = 40.0
    outdoor_mean_c: float = 22.0
    outdoor_swing_c: float = 8.0
    #: a server without a node meter: overhead = this x its GPUs' energy (estimated)
    node_overhead_ratio: float = 0.0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def month_start(self, now: float) -> float:
        """Unix time of 00:00 on the first of ``now``'s month, in the site's local time."""
        local = datetime.fromtimestamp(now, self.zone)
        return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass(frozen=True)
class Team:
    """A team of the collector's ``teams:`` (its jobs by Slurm account) and its monthly budget."""

    name: str
    account: str
    plan_cost: float


@dataclass(frozen=True)
class Scenario:
    site: Site
    servers: tuple[Server, ...]
    max_gap_seconds: float = 30.0
    teams: tuple[Team, ...] = ()


def default_scenario() -> Scenario:
    """The fleet ``wattledger demo`` runs."""
    site = Site(
        name="dc-east",
        timezone="America/New_York",
        currency="USD",
        pue=1.4,
        tariff=(
            TariffBand(0.21, days=("mon", "tue", "wed", "thu", "fri"), start="08:00", end="20:00"),
            TariffBand(0.09),
        ),
        demand_charge_per_kw=12.0,
        carbon_g_per_kwh=380.0,
        # a plan a little below what this fleet draws, so the forecast runs over it
        plan_cost=2000.0,
        plan_it_energy_kwh=9500.0,
        # the fleet's ~26 kW facility peak x $12/kW is ~$310: within it
        plan_demand_charge=350.0,
        # cooling by an air-cooled chiller on a day's swing of 14-30 °C: cooling costs more in
        # the afternoon than at night
        chiller_cop=3.2,
        node_overhead_ratio=0.25,
    )
    servers = (
        # three servers with a BMC (their wall power is their IT energy), one without (estimated)
        Server("demo-gpu-01", "training", "train-a", seed=1, job=Job("1001", "nlp", "ana"),
               node_meter_w=900.0),
        Server("demo-gpu-02", "hot", "train-a", seed=2, job=Job("1002", "nlp", "ana"), node_meter_w=900.0),
        Server("demo-gpu-03", "inference", "serve-a", seed=3, job=Job("1003", "vision", "kim"),
               node_meter_w=700.0),
        Server("demo-gpu-04", "idle", "dev", seed=4),  # nobody's: team idle
    )
    # two teams and a budget each; nlp's is tight (its forecast runs over it), vision's ample
    teams = (Team("nlp", "nlp", 1100.0), Team("vision", "vision", 600.0))
    return Scenario(site=site, servers=servers, teams=teams)
