"""The ledger's schema, as versioned migrations for each backend (docs/collector.md, "The store").

SQLite keeps its version in ``PRAGMA user_version``; PostgreSQL in the one-row table
``wattledger_schema``, and migrates under an advisory lock so that replicas starting together
migrate once. A migration takes the schema from version i to i + 1 in one transaction; a store
of a newer version than this collector knows is refused (upgrade wattledger first).

Tables (all money and energy in base units; see docs/accounting.md):
- ``streams``/``stream_seqs``: dedupe state. A stream's committed seqs are every seq up to
  ``low_seq`` plus the few above it in ``stream_seqs`` (normally none: agents send in order).
- ``nodes``: labels, site, cluster, last seen, readings committed; batches refused because
  another live stream held the node's devices (``conflicts``, ``conflict_at``).
- ``devices``: one row per (node, device id), numbered by ``slot``: metadata, the last
  committed reading (the accounting state an interval continues from), all-time counters, and
  its owner stream.
- ``usage``: the ledger proper, per (month, device, site, cluster): IT and cooling energy,
  their cost, carbon and unmeasured time.
- ``quarters``: per (site, cluster, local quarter-hour): IT and facility energy and cost, for
  demand charges and the trailing-24 h cost rate of forecasts.
- ``site_totals``: per site, the all-time sums behind the /metrics counters, as booked and as
  shown (``shown_*``: never lower, since schema 10/6; ``node_totals`` the same per node).
- ``hours`` and ``month_peaks``: where the roll-up puts old quarter-hours — summed per UTC hour,
  and the month's highest quarter-hour (the demand charge's peak) kept first.
- ``plan_days``: the plan's statistics per (site, GPU model, local day, part, bin), added at
  ingest (``accounting/profiles.py``; docs/planning.md, "The ledger's statistics").
- ``holders``, ``holder_minutes``, ``holder_months``, ``team_quarters``, ``team_totals``: who
  held the GPUs (docs/chargeback.md). A holder is one allocation on one node (a job, a pod's container)
  or a node's ``idle`` (owner ''); ``holder_minutes`` is each holder's GPU energy per
  node-minute (holder -1: the node's non-GPU IT energy of that minute), from which a change to
  a minute re-books its holders' shares; ``holder_months`` its sums per billing month (teams
  are these summed by ``holders.team``); ``team_quarters`` each team's facility energy and cost
  per site quarter-hour (its demand-charge share, its trailing-24 h cost rate); ``team_totals``
  the all-time sums behind the team counters, as booked and as shown (never lower).
- ``outdoor_readings``: the readings (ts, °C) of the sensors a chiller site takes its outdoor
  temperature from, per sensor device id, so that a minute whose IT comes after newer
  readings takes the one at or before its end (docs/accounting.md §4b); dropped with the
  rolled-up minutes.
- ``site_holder_minutes``, ``unshared_minutes`` (since schema 12/8): on a ``chiller`` or
  ``metered`` site, each holder's IT energy in each site-minute and the cooling (and other
  facility) energy booked to it so far; and the site-minutes whose shared energy changed since
  it was last shared out in proportion to the holders' IT (``ingest/sharing.py``).
"""

from __future__ import annotations

from wattledger.collector.store import sql


def _chargeback(identity: str, fill: str) -> tuple[str, ...]:
    """Version 7, chargeback (docs/chargeback.md), for either backend: ``identity`` is the holder
    id's column type, ``fill`` the tables' storage clause."""
    return (
        # chargeback (docs/chargeback.md): holders, their GPU energy per node-minute, their sums
        # per month, and each team's quarter-hours
        f"""CREATE TABLE holders (
             id {identity},
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             node TEXT NOT NULL,
             owner TEXT NOT NULL,
             start DOUBLE PRECISION NOT NULL,
             team TEXT NOT NULL,
             ended DOUBLE PRECISION,
             devices TEXT NOT NULL,
             UNIQUE (node, owner, start)){fill}""",
        "CREATE INDEX holders_by_site ON holders (site, team)",
        f"""CREATE TABLE holder_minutes (
             node TEXT NOT NULL,
             minute BIGINT NOT NULL,
             holder BIGINT NOT NULL,
             energy_j DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (node, minute, holder)){fill}""",
        f"""CREATE TABLE holder_months (
             holder BIGINT NOT NULL,
             month TEXT NOT NULL,
             gpu_j DOUBLE PRECISION NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             cooling_j DOUBLE PRECISION NOT NULL,
             it_cost DOUBLE PRECISION NOT NULL,
             cooling_cost DOUBLE PRECISION NOT NULL,
             carbon_g DOUBLE PRECISION NOT NULL,
             gpu_s DOUBLE PRECISION NOT NULL,
             idle_gpu_s DOUBLE PRECISION NOT NULL,
             waste_j DOUBLE PRECISION NOT NULL,
             waste_cost DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (holder, month)){fill}""",
        "CREATE INDEX holder_months_by_month ON holder_months (month)",
        f"""CREATE TABLE team_quarters (
             site TEXT NOT NULL,
             start_minute BIGINT NOT NULL,
             month TEXT NOT NULL,
             team TEXT NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             cost DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, start_minute, team)){fill}""",
        "CREATE INDEX team_quarters_by_month ON team_quarters (site, month)",
        # the all-time sums behind the team counters of /metrics, as shown: what was booked, and
        # the highest it has been (a minute re-shared by a later batch can lower a team's booked
        # share a little; a counter never goes down)
        f"""CREATE TABLE team_totals (
             site TEXT NOT NULL,
             team TEXT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             cost DOUBLE PRECISION NOT NULL,
             carbon_g DOUBLE PRECISION NOT NULL,
             gpu_s DOUBLE PRECISION NOT NULL,
             idle_gpu_s DOUBLE PRECISION NOT NULL,
             shown_it_j DOUBLE PRECISION NOT NULL,
             shown_cost DOUBLE PRECISION NOT NULL,
             shown_carbon_g DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, team)){fill}""",
    )


#: version 9 (SQLite) / 5 (PostgreSQL): the whole node and the site's cooling, minute by minute
#: (docs/accounting.md "The whole node" and "Cooling"; docs/collector.md "The store"). A minute's
#: row holds its additive inputs and the derived values as booked so far (recomputed from the new
#: inputs when a batch adds to them, the difference booked): ``node_minutes`` per node, parts and
#: node meter, overhead; ``site_minutes`` per site, IT, cooling and facility meters, cooling and
#: other facility energy, outdoor temperature. ``node_usage``: what the node and site minutes
#: added per (month, node) beyond the devices' ``usage`` (node '' = the site's own: metered
#: cooling, other facility load); ``node_totals``: the all-time counters of /metrics.
def _whole_node(real: str, table_options: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE node_minutes (
             node TEXT NOT NULL,
             minute BIGINT NOT NULL,
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             parts_j {real} NOT NULL,
             gpu_j {real} NOT NULL,
             meter_j {real} NOT NULL,
             meter_s {real} NOT NULL,
             overhead_j {real} NOT NULL,
             estimated INTEGER NOT NULL,
             disagree_s {real} NOT NULL,
             PRIMARY KEY (node, minute)){table_options}""",
        "CREATE INDEX node_minutes_by_site ON node_minutes (site, minute)",
        f"""CREATE TABLE site_minutes (
             site TEXT NOT NULL,
             minute BIGINT NOT NULL,
             it_j {real} NOT NULL,
             cooling_meter_j {real} NOT NULL,
             facility_meter_j {real} NOT NULL,
             facility_meter_s {real} NOT NULL,
             cooling_j {real} NOT NULL,
             other_j {real} NOT NULL,
             outdoor_c {real},
             fallback_s {real} NOT NULL,
             PRIMARY KEY (site, minute)){table_options}""",
        f"""CREATE TABLE node_usage (
             month TEXT NOT NULL,
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             node TEXT NOT NULL,
             overhead_j {real} NOT NULL,
             overhead_est_j {real} NOT NULL,
             overhead_cost {real} NOT NULL,
             cooling_j {real} NOT NULL,
             cooling_cost {real} NOT NULL,
             other_j {real} NOT NULL,
             other_cost {real} NOT NULL,
             carbon_g {real} NOT NULL,
             disagree_s {real} NOT NULL,
             PRIMARY KEY (month, site, cluster, node)){table_options}""",
        f"""CREATE TABLE node_totals (
             node TEXT PRIMARY KEY,
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             overhead_est_j {real} NOT NULL,
             overhead_meas_j {real} NOT NULL,
             disagree_s {real} NOT NULL){table_options}""",
        f"ALTER TABLE site_totals ADD COLUMN other_j {real} NOT NULL DEFAULT 0",
        f"ALTER TABLE site_totals ADD COLUMN other_cost {real} NOT NULL DEFAULT 0",
        f"ALTER TABLE site_totals ADD COLUMN fallback_s {real} NOT NULL DEFAULT 0",
    )


#: version 10 (SQLite) / 6 (PostgreSQL): the site and node counters as shown (never lower),
#: beside the booked ones (docs/metrics.md, "Counters never go down"); they start at what was booked
def _shown_totals(greatest: str) -> tuple[str, ...]:
    statements: list[str] = []
    for table, values in (("site_totals", sql.SITE_TOTAL_VALUES), ("node_totals", sql.NODE_TOTAL_VALUES)):
        statements += [f"ALTER TABLE {table} ADD COLUMN shown_{c} DOUBLE PRECISION NOT NULL DEFAULT 0"
                       for c in values]
        raised = ", ".join(f"shown_{c} = {greatest}({c}, 0)" for c in values)
        statements.append(f"UPDATE {table} SET {raised}")
    return tuple(statements)


def _outdoor_readings(real: str) -> tuple[str, ...]:
    """The readings of the sensors a chiller site reads its outdoor temperature from, for the
    minutes whose IT comes after them (docs/accounting.md §4b)."""
    return (
        f"""CREATE TABLE outdoor_readings (
             device TEXT NOT NULL,
             ts {real} NOT NULL,
             temp_c {real} NOT NULL,
             PRIMARY KEY (device, ts))""",
    )


#: version 12 (SQLite) / 8 (PostgreSQL): the exact team split of a chiller's or a metered site's
#: cooling (docs/chargeback.md, "Cooling"): per (site, minute, holder) its IT energy and the
#: cooling booked to it, and the site-minutes to share out again
def _shared_cooling(fill: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE site_holder_minutes (
             site TEXT NOT NULL,
             minute BIGINT NOT NULL,
             holder BIGINT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             cooling_j DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, minute, holder)){fill}""",
        """CREATE TABLE unshared_minutes (
             site TEXT NOT NULL,
             minute BIGINT NOT NULL,
             PRIMARY KEY (site, minute))""",
    )


def _plan_days(table_options: str) -> str:
    """The plan's statistics (both backends; accounting/profiles.py): per (site, GPU model, local
    day, part, bin) the 'all' row's sums, the 'util' and 'power' histograms' bins, one 'gpu' row
    per GPU (and, since PLAN_METER_COLUMNS, one 'node' row per metered node)."""
    return ("""CREATE TABLE plan_days (
             site TEXT NOT NULL,
             model TEXT NOT NULL,
             day TEXT NOT NULL,
             part TEXT NOT NULL,
             bin BIGINT NOT NULL,
             n BIGINT NOT NULL,
             sum_u DOUBLE PRECISION NOT NULL,
             sum_p DOUBLE PRECISION NOT NULL,
             sum_uu DOUBLE PRECISION NOT NULL,
             sum_up DOUBLE PRECISION NOT NULL,
             sum_pp DOUBLE PRECISION NOT NULL,
             idle_n BIGINT NOT NULL,
             idle_sum_p DOUBLE PRECISION NOT NULL,
             gpu_s DOUBLE PRECISION NOT NULL,
             gpu_j DOUBLE PRECISION NOT NULL,
             idle_s DOUBLE PRECISION NOT NULL,
             idle_j DOUBLE PRECISION NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             first_ts DOUBLE PRECISION,
             last_ts DOUBLE PRECISION,
             PRIMARY KEY (site, model, day, part, bin))"""
            + table_options)


#: the plan's node overhead per model (accounting/nodemeters.py): over the node meters' intervals
#: that every part of their node covers, the meters' seconds and energy and the parts' and GPUs'
#: energy and GPU-seconds in them
PLAN_METER_COLUMNS = tuple(
    f"ALTER TABLE plan_days ADD COLUMN {name} DOUBLE PRECISION NOT NULL DEFAULT 0"
    for name in ("meter_s", "meter_j", "meter_parts_j", "meter_gpu_j", "meter_gpu_s"))


#: each migration takes the schema from version i to i + 1
SQLITE_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE streams (
             stream TEXT PRIMARY KEY,
             node TEXT NOT NULL,
             low_seq INTEGER NOT NULL)""",
        """CREATE TABLE stream_seqs (
             stream TEXT NOT NULL,
             seq INTEGER NOT NULL,
             PRIMARY KEY (stream, seq))""",
        """CREATE TABLE nodes (
             node TEXT PRIMARY KEY,
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             labels TEXT NOT NULL,
             last_seen DOUBLE PRECISION NOT NULL,
             readings BIGINT NOT NULL)""",
        """CREATE TABLE devices (
             slot INTEGER PRIMARY KEY,
             node TEXT NOT NULL,
             device TEXT NOT NULL,
             kind TEXT NOT NULL,
             idx INTEGER NOT NULL,
             model TEXT,
             power_limit_w DOUBLE PRECISION,
             slowdown_c DOUBLE PRECISION,
             shutdown_c DOUBLE PRECISION,
             last_ts DOUBLE PRECISION,
             last_power_w DOUBLE PRECISION,
             last_energy_j DOUBLE PRECISION,
             temp_c DOUBLE PRECISION,
             mem_temp_c DOUBLE PRECISION,
             util DOUBLE PRECISION,
             mem_util DOUBLE PRECISION,
             sm_clock_hz DOUBLE PRECISION,
             clock_events DOUBLE PRECISION,
             mem_used_bytes DOUBLE PRECISION,
             energy_j DOUBLE PRECISION NOT NULL,
             unmeasured_s DOUBLE PRECISION NOT NULL,
             resets BIGINT NOT NULL,
             anomalies BIGINT NOT NULL,
             late BIGINT NOT NULL,
             UNIQUE (node, device))""",
        """CREATE TABLE usage (
             month TEXT NOT NULL,
             slot INTEGER NOT NULL,
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             cooling_j DOUBLE PRECISION NOT NULL,
             it_cost DOUBLE PRECISION NOT NULL,
             cooling_cost DOUBLE PRECISION NOT NULL,
             carbon_g DOUBLE PRECISION NOT NULL,
             unmeasured_s DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (month, slot, site, cluster))""",
        """CREATE TABLE quarters (
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             start_minute BIGINT NOT NULL,
             month TEXT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             cost DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, cluster, start_minute))""",
        "CREATE INDEX quarters_by_month ON quarters (site, month)",
    ),
    (
        # the all-time sums behind /metrics counters, stored as the exact values shown: a sum of
        # usage rows re-added at start could come out a rounding error lower, and a counter
        # that goes down is a reset to Prometheus
        """CREATE TABLE site_totals (
             site TEXT PRIMARY KEY,
             cooling_j DOUBLE PRECISION NOT NULL,
             it_cost DOUBLE PRECISION NOT NULL,
             cooling_cost DOUBLE PRECISION NOT NULL,
             carbon_g DOUBLE PRECISION NOT NULL)""",
        """INSERT INTO site_totals (site, cooling_j, it_cost, cooling_cost, carbon_g)
             SELECT site, SUM(cooling_j), SUM(it_cost), SUM(cooling_cost), SUM(carbon_g)
             FROM usage GROUP BY site""",
    ),
    (
        # the roll-up of old quarter-hours (rollup_after_days): their sums per UTC hour (every
        # quarter-hour of a site's clock lies in one UTC hour: offsets are multiples of 15 min),
        # and, kept before they go, each month's highest site quarter-hour
        """CREATE TABLE hours (
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             month TEXT NOT NULL,
             start_minute BIGINT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             cost DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, cluster, month, start_minute))""",
        """CREATE TABLE month_peaks (
             site TEXT NOT NULL,
             month TEXT NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, month))""",
    ),
    (
        # clock_events is NVML's unsigned 64-bit bitmask: kept exactly as a BIGINT holding its
        # two's complement (a DOUBLE rounds bits above 2^53, and 2^70 made /v1/nodes fail). A
        # stored value that no bitmask can be (negative, 2^64 or more) is forgotten.
        "ALTER TABLE devices ADD COLUMN clock_events_bits BIGINT",
        """UPDATE devices SET clock_events_bits = CASE
             WHEN clock_events >= 0 AND clock_events < 9223372036854775808.0
               THEN CAST(clock_events AS BIGINT)
             WHEN clock_events >= 9223372036854775808.0 AND clock_events < 18446744073709551616.0
               THEN CAST(clock_events - 18446744073709551616.0 AS BIGINT)
             ELSE NULL END""",
        "ALTER TABLE devices DROP COLUMN clock_events",
        "ALTER TABLE devices RENAME COLUMN clock_events_bits TO clock_events",
        # the device kinds' extra fields: a meter's or sensor's role, a partition's parent and share
        "ALTER TABLE devices ADD COLUMN role TEXT",
        "ALTER TABLE devices ADD COLUMN parent TEXT",
        "ALTER TABLE devices ADD COLUMN share DOUBLE PRECISION",
    ),
    (
        # two agents for one node (docs/collector.md): each device's owner stream and when that
        # stream last had a batch of it committed; per node, the batches refused meanwhile
        "ALTER TABLE devices ADD COLUMN stream TEXT",
        "ALTER TABLE devices ADD COLUMN stream_seen DOUBLE PRECISION",
        "ALTER TABLE nodes ADD COLUMN conflicts BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE nodes ADD COLUMN conflict_at DOUBLE PRECISION",
    ),
    (
        # the plan's sufficient statistics per (site, GPU model, local day): accounting/profiles.py
        # (the 'all' row's sums, the 'util' and 'power' histograms' bins, one 'gpu' row per GPU)
        _plan_days(""),
    ),
    _chargeback("INTEGER PRIMARY KEY", ""),
    (
        # the plan's node overhead per model (accounting/nodemeters.py): over the node meters'
        # intervals that every part of their node covers, the meters' seconds and energy and the
        # parts' and GPUs' energy and GPU-seconds in them; one 'node' row per metered node
        *PLAN_METER_COLUMNS,
    ),
    _whole_node("DOUBLE PRECISION", ""),
    _shown_totals("MAX"),
    _outdoor_readings("DOUBLE PRECISION"),
    _shared_cooling(""),
)


#: PostgreSQL: the same tables as SQLite's version 5 in its first migration, then the same
#: migrations as SQLite's from version 6 on, with the types PostgreSQL gives them (a device's
#: slot is an identity; numbers assigned by a sequence may have holes)
POSTGRES_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE streams (
             stream TEXT PRIMARY KEY,
             node TEXT NOT NULL,
             low_seq BIGINT NOT NULL) WITH (fillfactor = 70)""",
        """CREATE TABLE stream_seqs (
             stream TEXT NOT NULL,
             seq BIGINT NOT NULL,
             PRIMARY KEY (stream, seq))""",
        """CREATE TABLE nodes (
             node TEXT PRIMARY KEY,
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             labels TEXT NOT NULL,
             last_seen DOUBLE PRECISION NOT NULL,
             readings BIGINT NOT NULL,
             conflicts BIGINT NOT NULL DEFAULT 0,
             conflict_at DOUBLE PRECISION) WITH (fillfactor = 70)""",
        """CREATE TABLE devices (
             slot BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
             node TEXT NOT NULL,
             device TEXT NOT NULL,
             kind TEXT NOT NULL,
             idx INTEGER NOT NULL,
             model TEXT,
             power_limit_w DOUBLE PRECISION,
             slowdown_c DOUBLE PRECISION,
             shutdown_c DOUBLE PRECISION,
             last_ts DOUBLE PRECISION,
             last_power_w DOUBLE PRECISION,
             last_energy_j DOUBLE PRECISION,
             temp_c DOUBLE PRECISION,
             mem_temp_c DOUBLE PRECISION,
             util DOUBLE PRECISION,
             mem_util DOUBLE PRECISION,
             sm_clock_hz DOUBLE PRECISION,
             mem_used_bytes DOUBLE PRECISION,
             energy_j DOUBLE PRECISION NOT NULL,
             unmeasured_s DOUBLE PRECISION NOT NULL,
             resets BIGINT NOT NULL,
             anomalies BIGINT NOT NULL,
             late BIGINT NOT NULL,
             clock_events BIGINT,
             role TEXT,
             parent TEXT,
             share DOUBLE PRECISION,
             stream TEXT,
             stream_seen DOUBLE PRECISION,
             UNIQUE (node, device)) WITH (fillfactor = 70)""",
        """CREATE TABLE usage (
             month TEXT NOT NULL,
             slot BIGINT NOT NULL,
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             cooling_j DOUBLE PRECISION NOT NULL,
             it_cost DOUBLE PRECISION NOT NULL,
             cooling_cost DOUBLE PRECISION NOT NULL,
             carbon_g DOUBLE PRECISION NOT NULL,
             unmeasured_s DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (month, slot, site, cluster)) WITH (fillfactor = 70)""",
        """CREATE TABLE quarters (
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             start_minute BIGINT NOT NULL,
             month TEXT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             cost DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, cluster, start_minute)) WITH (fillfactor = 70)""",
        "CREATE INDEX quarters_by_month ON quarters (site, month)",
        "CREATE INDEX quarters_by_start ON quarters (start_minute)",
        """CREATE TABLE site_totals (
             site TEXT PRIMARY KEY,
             cooling_j DOUBLE PRECISION NOT NULL,
             it_cost DOUBLE PRECISION NOT NULL,
             cooling_cost DOUBLE PRECISION NOT NULL,
             carbon_g DOUBLE PRECISION NOT NULL) WITH (fillfactor = 70)""",
        """CREATE TABLE hours (
             site TEXT NOT NULL,
             cluster TEXT NOT NULL,
             month TEXT NOT NULL,
             start_minute BIGINT NOT NULL,
             it_j DOUBLE PRECISION NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             cost DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, cluster, month, start_minute))""",
        """CREATE TABLE month_peaks (
             site TEXT NOT NULL,
             month TEXT NOT NULL,
             facility_j DOUBLE PRECISION NOT NULL,
             PRIMARY KEY (site, month))""",
    ),
    (
        # the plan's sufficient statistics (SQLite's plan_days migration)
        _plan_days(" WITH (fillfactor = 70)"),
    ),
    _chargeback("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", " WITH (fillfactor = 70)"),
    (
        # the plan's node overhead per model (SQLite's migration of the same)
        *PLAN_METER_COLUMNS,
    ),
    _whole_node("DOUBLE PRECISION", " WITH (fillfactor = 70)"),
    _shown_totals("GREATEST"),
    _outdoor_readings("DOUBLE PRECISION"),
    _shared_cooling(" WITH (fillfactor = 70)"),
)
