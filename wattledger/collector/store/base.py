"""The store's interface: what the ingest transaction, the read model and the periodic work ask
of the database, whichever it is (``store/sqlite.py``: the embedded default, one writer
process; ``store/postgres.py``: any number of collector replicas on one PostgreSQL).

No SQL and no driver outside ``store/``: the callers speak in the records below.

Ingest, one transaction per group of batches (``Store.ingest()``, a context manager that
commits on a clean exit and rolls back on an exception):

1. ``hold``: the group's streams (created at low = first seq - 1 when new) and devices (those
   that exist), read and locked, in one round trip;
2. ``create_devices``: the group's new devices, given their slots;
3. ``write``: everything the group changes, as sums to add (usage, quarter-hours, site totals,
   node readings, device counters) and the newest state of what the group moved on (stream
   low-water marks, each device's last reading, metadata).

Tables: docs/collector.md, "The store". Every sum in the ledger only ever grows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from wattledger.collector.accounting.pricing import SiteSums
from wattledger.collector.store.devicetable import DeviceTable
from wattledger.collector.teams import UNSHARED
from wattledger.wire import DeviceInfo

Row = tuple[Any, ...]
#: quarter-hours a process keeps in memory: this month and the last (demand, trailing 24 h)
KEEP_QUARTERS_SECONDS = 70 * 86400.0
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
#: the levels of the site's own figures (usage rows)
Level = Literal["site", "cluster", "node", "device"]
GroupBy = Literal["site", "cluster", "node", "device", "team", "job", "namespace", "account", "user"]
#: the groupings of chargeback (docs/chargeback.md): by team, or by an owner key of the allocations
CHARGEBACK_GROUPS = ("team", "job", "namespace", "account", "user")
#: spend rows' keys per level: the columns a level's rows are summed by
SPEND_KEYS: dict[str, tuple[str, ...]] = {
    "site": ("site",),
    "cluster": ("site", "cluster"),
    "node": ("site", "cluster", "node"),
    "device": ("site", "cluster", "node", "device", "kind", "index", "model"),
}


class StoreError(RuntimeError):
    """The store cannot be opened, or is of a newer schema than this collector knows."""


class StoreUnavailable(StoreError):
    """The database does not answer now (down, restarting, unreachable): answered 503, and the
    agent sends the batch again."""


@dataclass
class StreamState:
    """Committed seqs of a stream: all up to ``low``, plus ``above`` (sent out of order)."""

    node: str
    low: int
    above: set[int] = field(default_factory=set)

    def committed(self, seq: int) -> bool:
        return seq <= self.low or seq in self.above


@dataclass
class NodeState:
    site: str
    cluster: str
    labels: dict[str, str]
    last_seen: float
    readings: int
    #: batches refused because another live stream of the node held their devices (409)
    conflicts: int = 0
    conflict_at: float | None = None


@dataclass(frozen=True)
class HeldDevices:
    """The devices asked for, in that order, as committed (and locked for this transaction)."""

    slots: Ints  # -1: no such device yet
    last_ts: Floats  # NaN: no reading committed
    last_power_w: Floats
    last_energy_j: Floats
    owner: list[str | None]  # the stream whose batches the device's readings come from
    owner_seen: Floats  # when that stream last had a batch of the device committed (NaN: never)
    power_limit_w: Floats  # as stored (NaN: none): what remote-write's readings are held to


@dataclass(frozen=True)
class DeviceChanges:
    """What the group does to its devices; every array is aligned with ``slots``."""

    slots: Ints
    infos: Sequence[DeviceInfo]  # metadata as the group's latest batch declares it
    owner: Sequence[str | None]  # None: no agent's stream feeds it (remote-write alone)
    owner_seen: Floats  # NaN: never
    energy_j: Floats  # increments
    unmeasured_s: Floats
    resets: Ints
    anomalies: Ints
    late: Ints
    #: the devices with a new last reading (a subset of ``slots``) and that reading's columns:
    #: ts, power_w, energy_j and the LATEST columns, plus clock_events / has_clock_events
    updated: Ints
    newest: Mapping[str, Any]
    #: True: leave the device's stored metadata as it is (remote-write, of a device an agent feeds)
    keep_info: npt.NDArray[np.bool_] | None = None
    #: True: update only the fields the info gives (remote-write: a request may lack the series
    #: of a limit or threshold that an earlier one had)
    merge_info: npt.NDArray[np.bool_] | None = None


@dataclass(frozen=True)
class NodeChange:
    node: str
    site: str
    cluster: str
    labels: Mapping[str, str]
    seen: float
    readings: int  # to add
    #: True: a node already known keeps its site, cluster and labels (remote-write says less)
    keep_labels: bool = False


@dataclass(frozen=True)
class NodeConflicts:
    node: str
    refused: int  # batches to add to its conflicts
    at: float
    stream: str  # the stream refused


@dataclass(frozen=True)
class HolderInfo:
    """One allocation on one node as the group's latest batch gives it (docs/chargeback.md);
    ``owner`` '' (start 0) is the node's idle holder."""

    node: str
    owner: str  # the owner's keys as canonical JSON
    start: float
    site: str
    cluster: str
    team: str  # decided when the holder is made; kept after
    ended: float | None  # None: still held
    devices: str  # the device ids held, as JSON


#: (node, minute, holder, energy_j): a holder's GPU energy in a node-minute (holder -1: the
#: node's non-GPU IT energy in it)
MinuteRow = tuple[str, int, int, float]
#: the holder of a node-minute's non-GPU IT energy
NON_GPU_HOLDER = -1
#: (site, minute, holder, it_j, cooling_j, the holder's team, its node): a holder's IT energy in a
#: chiller's or metered site's minute and the cooling booked to it (``site_holder_minutes``)
ShareRow = tuple[str, int, int, float, float, str, str]


@dataclass(frozen=True)
class TeamData:
    """A site's teams as the store holds them: one month's sums, that month's quarter-hours, the
    cost of the trailing window, and all-time sums (the /metrics counters)."""

    #: (team, gpu_j, it_j, cooling_j, it_cost, cooling_cost, carbon_g, gpu_s, idle_gpu_s, waste_j,
    #: waste_cost) in the month
    months: list[Row]
    #: (start_minute, team, facility_j, cost) of the month's quarter-hours
    quarters: list[Row]
    day_cost: dict[str, float]
    #: (team, it_j, energy cost, carbon_g, gpu_s, idle_gpu_s), all time, as shown (never lower
    #: than shown before: ``team_totals``)
    totals: list[Row]


@dataclass
class Changes:
    """Everything one group changes in the ledger (sums are increments)."""

    streams: list[tuple[str, str, int]] = field(default_factory=list)  # (stream, node, new low)
    seqs_added: list[tuple[str, int]] = field(default_factory=list)
    seqs_dropped: list[tuple[str, int]] = field(default_factory=list)
    nodes: list[NodeChange] = field(default_factory=list)
    conflicts: list[NodeConflicts] = field(default_factory=list)
    devices: DeviceChanges | None = None
    #: (month text, slot, site, cluster, it_j, cooling_j, it_cost, cooling_cost, carbon_g, unmeasured_s)
    usage: list[Row] = field(default_factory=list)
    #: (site, cluster, start_minute, month text, it_j, facility_j, cost)
    quarters: list[Row] = field(default_factory=list)
    #: (site, month id, it_j, cooling_j, it_cost, cooling_cost, carbon_g[, other_j, other_cost,
    #: fallback_s]): site totals and months
    site_months: list[Row] = field(default_factory=list)
    #: the plan's statistics: (site, model, day, part, bin, *accounting.profiles.VALUE_COLUMNS)
    plan_days: list[Row] = field(default_factory=list)
    #: (holder, month text, gpu_j, it_j, cooling_j, it_cost, cooling_cost, carbon_g, gpu_s, idle_gpu_s,
    #: waste_j, waste_cost): increments
    holder_months: list[Row] = field(default_factory=list)
    #: (site, start_minute, month text, team, facility_j, cost): increments
    team_quarters: list[Row] = field(default_factory=list)
    #: (site, month text, team, gpu_j, it_j, cooling_j, it_cost, cooling_cost, carbon_g, gpu_s,
    #: idle_gpu_s, waste_j, waste_cost): ``holder_months`` summed by team (increments)
    team_months: list[Row] = field(default_factory=list)

    #: the derived values of the minutes ``add_node_minutes`` / ``add_site_minutes`` returned:
    #: (node, minute, overhead_j, estimated 0/1, disagree_s) and
    #: (site, minute, cooling_j, other_j, outdoor_c or None, fallback_s)
    node_minutes: list[Row] = field(default_factory=list)
    site_minutes: list[Row] = field(default_factory=list)
    #: (device id, ts, temp_c): the new readings of the sensors a chiller site reads, kept
    #: (``outdoor_readings``) for the minutes whose IT comes later
    outdoor_readings: list[Row] = field(default_factory=list)
    #: sums to add: (month text, site, cluster, node, *NODE_USAGE_VALUES) and
    #: (node, site, cluster, overhead_est_j, overhead_meas_j, disagree_s)
    node_usage: list[Row] = field(default_factory=list)
    node_totals: list[Row] = field(default_factory=list)
    #: a chiller's or metered site's shares (ingest/sharing.py): (site, minute, holder, it_j,
    #: cooling_j) increments (one row per key), the site-minutes to share out again, and those
    #: shared out
    site_holder_minutes: list[Row] = field(default_factory=list)
    unshared: list[tuple[str, int]] = field(default_factory=list)
    shared: list[tuple[str, int]] = field(default_factory=list)



def team_total_rows(team_months: Sequence[Row]) -> list[Row]:
    """``Changes.team_months`` as increments of the team totals: (site, team, it_j, energy cost,
    carbon_g, gpu_s, idle_gpu_s), one row per (site, team), sorted. The transient team of cooling
    not yet shared out (``UNSHARED``) has none: its figures go up and down, a counter must not."""
    sums: dict[tuple[str, str], list[float]] = {}
    for site, _, team, _, it_j, _, it_cost, cooling_cost, carbon_g, gpu_s, idle_s, _, _ in team_months:
        if team == UNSHARED:
            continue
        acc = sums.setdefault((site, team), [0.0] * 5)
        for i, value in enumerate((it_j, it_cost + cooling_cost, carbon_g, gpu_s, idle_s)):
            acc[i] += value
    return [(site, team, *values) for (site, team), values in sorted(sums.items())]


#: node_usage's sums, in their order
NODE_USAGE_VALUES = ("overhead_j", "overhead_est_j", "overhead_cost", "cooling_j", "cooling_cost", "other_j",
                     "other_cost", "carbon_g", "disagree_s")
#: what ``add_node_minutes`` adds (after node, minute, site, cluster) and then returns, with the
#: derived values as last booked
NODE_MINUTE_INPUTS = ("parts_j", "gpu_j", "meter_j", "meter_s")
NODE_MINUTE_DERIVED = ("overhead_j", "estimated", "disagree_s")
SITE_MINUTE_INPUTS = ("it_j", "cooling_meter_j", "facility_meter_j", "facility_meter_s")
SITE_MINUTE_DERIVED = ("cooling_j", "other_j", "outdoor_c", "fallback_s")


class IngestUnit(Protocol):
    """One ingest transaction (see the module's docstring)."""

    def hold(self, streams: Mapping[str, tuple[str, int]], devices: Sequence[tuple[str, str]]
             ) -> tuple[dict[str, StreamState], HeldDevices]: ...
    def create_devices(self, keys: Sequence[tuple[str, DeviceInfo]]) -> Ints: ...
    def holders(self, infos: Sequence[HolderInfo]) -> list[tuple[int, str]]:
        """Each holder's id and team (made with its ``team`` when new; its end and devices
        updated), in the order given."""
        ...
    def add_minutes(self, rows: Sequence[MinuteRow]) -> list[tuple[str, int, int, float, str]]:
        """Add the increments (locking their node-minutes) and return every row of the
        node-minutes they touch, as it stands after the addition, with its holder's team ('' for
        the non-GPU row)."""
    def add_node_minutes(self, rows: Sequence[Row]) -> list[Row]:
        """Add (node, minute, site, cluster, *NODE_MINUTE_INPUTS) to the minutes' rows (created
        at 0) and lock them; per row, in order, the new inputs and the derived values as booked
        (NODE_MINUTE_INPUTS + NODE_MINUTE_DERIVED). ``write`` then stores the new derived ones."""
        ...
    def add_site_minutes(self, rows: Sequence[Row]) -> list[Row]:
        """The same for (site, minute, *SITE_MINUTE_INPUTS): SITE_MINUTE_INPUTS + SITE_MINUTE_DERIVED."""
        ...
    def sensors(self, devices: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Committed (last ts, temp_c) of the sensor devices with these ids (any node)."""
        ...
    def hold_outdoor(self, writes: Sequence[str], reads: Sequence[str]) -> None:
        """Serialize the group with the others on the outdoor sensors (device ids) whose readings
        it carries (``writes``) or whose readings its chiller sites' minutes take (``reads``):
        a group that writes a sensor's readings waits for those that read it and the reverse,
        so a minute is never booked on readings that another, uncommitted group is adding (nor
        missed by that group's re-booking). First in the transaction (the lock order)."""
        ...
    def outdoor_history(self, asks: Sequence[tuple[str, float]]) -> dict[str, list[tuple[float, float]]]:
        """Per sensor device id: (ts, temp_c) of the last kept reading at or before each asked
        (device, time), however old: distinct, ascending."""
        ...
    def booked_site_minutes(self, spans: Sequence[tuple[str, int, int]]) -> list[tuple[str, int]]:
        """The (site, minute) of the site-minute rows that exist with ``low <= minute <= high``,
        for each (site, low, high), in key order (what a late outdoor sensor reading re-books).
        They are not locked here: the caller gives them to ``add_site_minutes`` (adding 0) with
        the group's own, so all of a group's site-minute rows are locked in ONE statement in key
        order (two statements could each lock part and deadlock with another transaction)."""
        ...
    def unshared(self, limit: int) -> list[tuple[str, int, float]]:
        """Up to ``limit`` site-minutes to share out again, in (site, minute) order, with their
        shared energy (cooling + other facility J), locked (PostgreSQL: those another
        transaction holds are skipped: they are taken next time)."""
        ...
    def holder_shares(self, keys: Sequence[tuple[str, int]]) -> list[ShareRow]:
        """Every ``site_holder_minutes`` row of these site-minutes, with its holder's team and node."""
        ...
    def write(self, changes: Changes) -> None: ...


@dataclass
class NodeTotals:
    """A node's all-time sums beyond its devices' (/metrics counters)."""

    site: str
    cluster: str
    overhead_est_j: float
    overhead_meas_j: float
    disagree_s: float


@dataclass
class MinuteSums:
    """Per site, its minutes in a window (ascending): (minute, it_j, cooling_j, other_j,
    outdoor_c or None), what the PUE, cooling-power and outdoor gauges show."""

    rows: dict[str, list[tuple[int, float, float, float, float | None]]] = field(default_factory=dict)


@dataclass
class FleetData:
    """What /metrics and /v1/nodes show, as the store held it at one instant."""

    site_totals: dict[str, SiteSums]  # all-time sums (counters)
    month_sums: dict[str, SiteSums]  # per site: the month asked for (with its peak quarter-hour)
    day_cost: dict[str, float]  # per site: energy cost of the quarter-hours in the window asked for
    nodes: dict[str, NodeState]
    devices: DeviceTable  # a copy: read it without any lock
    node_totals: dict[str, NodeTotals] = field(default_factory=dict)
    minutes: MinuteSums = field(default_factory=MinuteSums)


@dataclass(frozen=True)
class Upkeep:
    """What the periodic work did (None from ``upkeep``: another replica does it now)."""

    rolled_up: int  # quarter-hour rows summed into hours
    nodes: dict[str, float]  # every node's last-seen time (the caller judges staleness)


class PlanReads(Protocol):
    """What the plan's read model asks of a ledger (a store, or ``store/reader.py``'s read-only
    connection; all in ``sql.PlanQueries``): one site's ``plan_days`` sums and bins, its GPUs and
    metered nodes counted per model and day, its distinct GPUs and servers over some days, its
    IT joules per month (devices and node overhead), and its site minutes' meters and outdoor
    temperature over a span of minutes."""

    def plan_rows(self, site: str) -> list[Row]: ...
    def plan_counts(self, site: str) -> list[Row]: ...
    def plan_fleet(self, site: str, first_day: str, last_day: str) -> list[Row]: ...
    def usage_months(self, site: str) -> list[Row]: ...
    def overhead_months(self, site: str) -> list[Row]: ...
    def site_minute_sums(self, site: str, since_minute: int, until_minute: int) -> Row: ...


class Store(PlanReads, Protocol):
    """A ledger store: ``SqliteStore`` or ``PostgresStore`` (and the plan's reads)."""

    #: "sqlite" or "postgresql"
    backend: str
    #: other processes write to this store too: what a process holds in memory may be behind
    shared: bool

    @property
    def schema_version(self) -> int: ...

    def ingest(self) -> AbstractContextManager[IngestUnit]: ...

    def fleet(self, months: Mapping[str, int], since_minute: float, until_minute: float) -> FleetData: ...
    def month_sums(self, site: str, month: int) -> SiteSums: ...
    def minutes(self, since_minute: int, until_minute: int) -> MinuteSums: ...
    def day_cost(self, site: str, since_minute: float, until_minute: float) -> float: ...
    def spend_sums(self, site: str, month: str, group_by: Level) -> list[Row]: ...
    def cluster_day_cost(self, site: str, since_minute: float, until_minute: float) -> dict[str, float]: ...
    def team_data(self, site: str, month: str, since_minute: float, until_minute: float) -> TeamData: ...
    def holders_of_month(self, site: str, month: str) -> list[Row]: ...
    def jobs(self, site: str, since: float, until: float) -> list[Row]: ...
    def stream(self, stream: str) -> StreamState | None: ...
    def node_names(self) -> list[str]: ...

    def upkeep(self, rollup_before_minute: int | None, forget_before_minute: float) -> Upkeep | None: ...
    def ping(self) -> None: ...
    def size_bytes(self) -> int: ...
    def close(self) -> None: ...
