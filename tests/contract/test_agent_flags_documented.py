"""docs/agent.md's table of settings lists every flag of ``wattledger agent`` (the allocation
sources' included) with its environment variable and YAML key, and ``--help`` shows each one."""

from __future__ import annotations

import re

from contractkit import ROOT

from wattledger.agent import cli as agent_cli
from wattledger.config import OneLineParser

ROW = re.compile(r"^\| `(?P<flag>--[a-z0-9-]+)[^`]*` \| `(?P<env>WATTLEDGER_[A-Z0-9_]+)`[^|]*"
                 r"\| `(?P<key>[a-z0-9_]+)`")


def documented() -> dict[str, tuple[str, str]]:
    rows = (ROW.match(line) for line in (ROOT / "docs" / "agent.md").read_text().splitlines())
    return {m.group("flag"): (m.group("env"), m.group("key")) for m in rows if m is not None}


def test_every_agent_flag_is_a_row_with_its_env_and_key() -> None:
    rows = documented()
    missing = [o.flag for o in agent_cli.OPTIONS if o.flag not in rows]
    assert missing == []
    assert [o.flag for o in agent_cli.OPTIONS if rows[o.flag] != (o.env, o.dest)] == []


def test_help_shows_every_flag_with_its_env() -> None:
    parser = OneLineParser(prog="wattledger agent")
    agent_cli.configure(parser)
    text = " ".join(parser.format_help().split())
    assert [o.flag for o in agent_cli.OPTIONS if o.flag not in text or f"[env {o.env}]" not in text] == []
