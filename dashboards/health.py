"""Health: is every reading getting from the GPUs into the ledger? Agents last seen, spools,
dropped readings, ingest errors and unmeasured time."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.kit import (
    OPS,
    PERCENT_UNIT,
    SECONDS,
    SEL,
    SHORT,
    Q,
    agent,
    alert_annotation,
    board,
    graph,
    grid,
    increase,
    ledger,
    rate,
    single,
    steps,
)

#: Prometheus job names the rules and scrape configs use (deploy/prometheus/)
JOBS = 'job=~"wattledger-agent|wattledger-collector"'
NODE_SEL = 'node=~"$node"'  # wattledger_ingest_readings_total carries only node


def build() -> db.Dashboard:
    stale = steps((None, "green"), (60.0, "yellow"), (300.0, "red"))
    d = board("wattledger-health", "wattledger / Health",
              "Agents last seen by the collector, scrape status, spool backlog, dropped readings, "
              "ingest errors, unmeasured time: whether every reading reaches the ledger.",
              ["health"], "wattledger_node_last_seen_timestamp_seconds",
              [alert_annotation("Health alerts", "health", "purple")])

    d = d.with_row(db.Row("Agents"))
    d = d.with_panel(grid("Agents last seen by the collector", Q(
        f"sort_desc(time() - max by (site, cluster, node) "
        f"(wattledger_node_last_seen_timestamp_seconds{{{SEL}}}))"), SECONDS,
        "Seconds since the collector committed a batch from each node; NodeStale fires after 5 min.",
        stale, width=8))
    d = d.with_panel(single("Stale nodes", Q(f"sum({ledger('wattledger_node_stale{' + SEL + '}')})"), SHORT,
                            "Nodes the collector counts as stale.",
                            steps((None, "green"), (1.0, "red")), width=4, height=8))
    d = d.with_panel(graph("Scrape status (1 = up)", [Q(f"up{{{JOBS}}}", "{{job}} {{instance}}")], SHORT,
                           "AgentDown / CollectorDown fire when a target stays at 0.", width=12, minimum=0))
    d = d.with_panel(graph("Sources up (1 = up)", [Q(f"{agent('wattledger_agent_source_up')}",
                                                     "{{node}} {{source}}")], SHORT,
                           "AgentSourceDown fires when a source stays at 0 for 5 min.", width=12, minimum=0))
    d = d.with_panel(graph("Seconds since the agent's last sample", [Q(
        f"time() - {agent('wattledger_agent_last_sample_timestamp_seconds')}", "{{node}}")], SECONDS,
        thresholds=stale, width=12))

    d = d.with_row(db.Row("Delivery"))
    d = d.with_panel(graph("Spool backlog (batches)",
                           [Q(f"{agent('wattledger_agent_spool_batches')}", "{{node}}")], SHORT,
                           "AgentSpoolBacklog fires when a spool never drains below 5 batches in 10 min.",
                           steps((None, "green"), (5.0, "orange")), width=8, minimum=0))
    d = d.with_panel(graph("Spool use of its disk limit", [Q(
        f"{agent('wattledger_agent_spool_bytes')} / {agent('wattledger_agent_spool_limit_bytes')}",
        "{{node}}")],
        PERCENT_UNIT, "At the limit the agent drops the oldest readings.",
        steps((None, "green"), (0.5, "yellow"), (0.9, "red")), width=8, minimum=0))
    d = d.with_panel(graph("Dropped readings", [Q(
        f"sum by (node) ({agent('wattledger_agent_dropped_readings_total', fn='increase')})",
        "{{node}}")], SHORT, "Readings the agent had to drop (lost for billing): AgentDroppingReadings.",
        steps((None, "green"), (1.0, "red")), width=8, minimum=0))
    d = d.with_panel(graph("Batches shipped by outcome", [Q(
        f"sum by (outcome) ({agent('wattledger_agent_shipped_batches_total', fn='rate')})",
        "{{outcome}}")], OPS, "ok / duplicate: delivered; retry: the collector was unreachable or busy; "
                              "auth_error / dead_letter: refused.", width=12, stacked=True))
    d = d.with_panel(graph("Readings taken (agents) vs committed (ledger)", [
        Q(f"sum by (node) ({agent('wattledger_agent_readings_total', fn='rate')})",
          "taken {{node}}"),
        Q(f"sum by (node) ({rate('wattledger_ingest_readings_total', NODE_SEL)})",
          "committed {{node}}"),
    ], OPS, "Committed follows taken, a batch later; a lasting gap is readings stuck in a spool.",
        dashed_refs=["B"], width=12))

    d = d.with_row(db.Row("Collector"))
    d = d.with_panel(graph("Ingest by outcome", [Q(
        "sum by (outcome) (rate(wattledger_ingest_batches_total[$__rate_interval]))", "{{outcome}}")], OPS,
        "accepted / duplicate are fine; rejected_* are refused batches; overloaded answered 429.",
        width=8, stacked=True))
    d = d.with_panel(graph("Ingest error ratio", [Q(
        "sum by (instance) (rate(wattledger_ingest_batches_total"
        '{outcome!~"accepted|duplicate"}[$__rate_interval]))'
        " / sum by (instance) (rate(wattledger_ingest_batches_total[$__rate_interval]))", "{{instance}}")],
        PERCENT_UNIT, "CollectorIngestErrors fires above 5 % over 10 min.",
        steps((None, "green"), (0.05, "red")), width=8, minimum=0))
    d = d.with_panel(graph("Answer latency p99 by endpoint", [Q(
        "histogram_quantile(0.99, sum by (le, handler) "
        "(rate(wattledger_collector_request_duration_seconds_bucket[$__rate_interval])))", "{{handler}}")],
        SECONDS, width=8))
    d = d.with_panel(graph("Ingest queue fill", [Q(
        "wattledger_ingest_queue_batches / wattledger_ingest_queue_capacity_batches", "{{instance}}")],
        PERCENT_UNIT, "Near 1 the collector answers 429 and agents back off.",
        steps((None, "green"), (0.8, "red")), width=8, minimum=0))

    d = d.with_row(db.Row("Ledger quality (dashboard time range)"))
    d = d.with_panel(grid("Unmeasured time by node", Q(
        f"sort_desc(sum by (site, node) ({increase('wattledger_unmeasured_seconds_total', SEL)}))"),
        SECONDS, "Device-seconds the ledger could not account for (gaps over max_gap_seconds without an "
                 "energy counter); EnergyUnmeasuredTime fires above 5 % of an hour.",
        steps((None, "green"), (60.0, "yellow"), (600.0, "red")), width=8))
    d = d.with_panel(grid("Energy counter resets and anomalies by node", Q(
        f"sum by (site, node) ({increase('wattledger_counter_resets_total', SEL)})"
        f" + on (site, node) "
        f"sum by (site, node) ({increase('wattledger_energy_anomalies_total', SEL)})"),
        SHORT, "Driver reloads (counter back to 0) and implausible jumps, both bridged from power readings.",
        width=8))
    d = d.with_panel(graph("Unmeasured share of time", [Q(
        f"max by (node) ({rate('wattledger_unmeasured_seconds_total', SEL)})",
        "{{node}}")], PERCENT_UNIT, thresholds=steps((None, "green"), (0.05, "red")), width=8, minimum=0))
    return d
