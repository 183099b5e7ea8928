"""Helpers of the demo's tests (imported as ``demokit``; pytest puts this folder on sys.path)."""

from __future__ import annotations

from typing import Any

import orjson

from wattledger.collector.settings import CollectorSettings, settings_from
from wattledger.config import load_yaml
from wattledger.demo import config as democonfig
from wattledger.demo.layout import DemoState, Ports
from wattledger.demo.scenario import Scenario

#: Friday 2026-11-27 15:00 in New York (the demo's site): most of the month has gone by
NOW = 1_795_809_600.0


def collector_settings(scenario: Scenario, state: DemoState, ports: Ports) -> CollectorSettings:
    """The demo's generated collector YAML, written and read back by the collector's loader."""
    tokens = state.tokens(s.node for s in scenario.servers)
    democonfig.write_collector_files(scenario, state, ports, tokens, NOW)
    return settings_from(load_yaml(state.collector_yaml))


def as_json(value: Any) -> Any:
    """What the HTTP answer's body decodes to (the app serialises with orjson)."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))
