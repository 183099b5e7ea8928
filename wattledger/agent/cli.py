"""``wattledger agent``: sample every GPU and the host, expose them to Prometheus, and (with
``--collector``) deliver every reading to the collector. Flags > WATTLEDGER_* env > YAML."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import TYPE_CHECKING

from wattledger.agent.runtime import Agent
from wattledger.agent.settings import OPTIONS as OPTIONS
from wattledger.agent.settings import AgentSettings
from wattledger.agent.settings import configure as configure
from wattledger.agent.settings import load_settings as settings
from wattledger.agent.sources import build_allocation_sources, build_sources
from wattledger.agent.sources.base import AllocationSource, Source
from wattledger.config import ConfigError
from wattledger.config import byte_size as byte_size

if TYPE_CHECKING:
    from wattledger.agent.delivery import Delivery

HELP = "sample GPUs and host power, expose them on /metrics, ship them to a collector"
log = logging.getLogger(__name__)


def build_agent(s: AgentSettings) -> Agent:
    """The agent of settings ``s``: its hardware sources and its allocation sources (who holds
    the devices: kubernetes, slurm, processes), and a delivery when a collector is given."""
    source_settings = s.source_settings()
    sources: list[Source | AllocationSource] = [*build_sources(s.source_names, source_settings)]
    sources += build_allocation_sources(s.source_names, source_settings)
    delivery_factory = None
    if s.collector:  # only then: exporter-only agents never touch the disk
        spool, token = s.spool, s.token
        assert spool is not None and token is not None  # load_settings sets both with a collector

        def delivery_factory() -> Delivery:
            from wattledger.agent.delivery import Delivery

            return Delivery(
                spool_dir=spool,
                collector_url=list(s.collector),
                token=token,
                token_file=s.token_file,
                node=s.node,
                labels=dict(s.labels),
                batch_seconds=s.batch_seconds,
                max_spool_bytes=s.spool_max_bytes,
            )

    return Agent(
        node=s.node,
        labels=dict(s.labels),
        sources=sources,
        interval=s.interval,
        listen=s.listen,
        delivery_factory=delivery_factory,
    )


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    agent = build_agent(s)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.start()
    except (OSError, ConfigError) as exc:
        agent.stop(delivery_timeout=0)
        raise ConfigError(str(exc)) from None
    if "simulated" in s.source_names:
        # a named feature, never a silent stand-in for real GPUs: say so where operators look
        log.warning("SIMULATED GPUs: %d x %s (workload %s, seed %d); these readings are not from real "
                    "hardware", s.simulate, s.simulate_model, ",".join(s.workload), s.seed)
    log.info(
        "agent %s: sources %s, every %g s%s",
        s.node,
        ",".join(s.source_names),
        s.interval,
        f", delivering to {', '.join(s.collector)}" if s.collector else " (exporter only)",
    )
    while not stop.wait(3600):  # wake up now and then; signals set the event
        pass
    log.info("%s", agent.stop())
    return 0
