"""The agent refuses --label names that Prometheus reserves (issue 16, item 19): one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.test_cli import settings
from wattledger.config import ConfigError

WATTLEDGER = str(Path(sys.executable).parent / "wattledger")


@pytest.mark.parametrize(("label", "reason"), [
    ("__name__=x", "'__name__': names starting with '__' are reserved for Prometheus' own use"),
    ("__meta_x=y", "'__meta_x': names starting with '__' are reserved"),
    ("__=y", "'__': names starting with '__' are reserved"),
    ("le=0.5", "'le' is reserved by Prometheus (histogram buckets and summary quantiles)"),
    ("quantile=0.9", "'quantile' is reserved by Prometheus"),
    ("node=x", "'node' is set by the agent itself"),
    ("uuid=x", "'uuid' is set by the agent itself"),
])
def test_reserved_label_names_are_refused(label: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings("--node", "n1", "--label", label)
    message = str(caught.value)
    assert message.startswith(f"--label: {reason}") and message.endswith("choose another label name")
    assert "\n" not in message


def test_ordinary_labels_and_single_underscores_are_fine() -> None:
    s = settings("--node", "n1", "--label", "_tier=gold", "--label", "rack=r12")
    assert s.labels == {"_tier": "gold", "rack": "r12"}


def test_the_command_says_it_in_one_line_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([WATTLEDGER, "agent", "--simulate", "1", "--listen", "127.0.0.1:0",
                           "--label", "__name__=x"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "wattledger agent: error: --label: '__name__': names starting with '__' are reserved for "
        "Prometheus' own use; choose another label name"]
