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


@pytest.mark.parametrize(("text", "reason", "line"), [
    ("label:\n  site: dc1\n  __name__: x\n", "'__name__': names starting with '__' are reserved", 4),
    ("label: [site=dc1, le=2]\n", "'le' is reserved by Prometheus", 2),
    ("label:\n  - site=dc1\n  - le=2\n", "'le' is reserved by Prometheus", 4),
    ("label:\n  gpu: '3'\n", "'gpu' is set by the agent itself", 3),
])
def test_a_reserved_name_in_the_config_file_names_the_file_and_line(tmp_path: Path, text: str,
                                                                     reason: str, line: int) -> None:
    # the line of the bad entry itself, not of the `label:` key above it
    path = tmp_path / "agent.yaml"
    path.write_text("node: n1\n" + text)
    with pytest.raises(ConfigError) as caught:
        settings("--config", str(path))
    message = str(caught.value)
    assert message.startswith(f"config key 'label': {reason}"), message
    assert message.endswith(f"; choose another label name (in {str(path)!r}, line {line})"), message


def test_a_reserved_name_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^WATTLEDGER_LABEL: 'le' is reserved"):
        settings("--node", "n1", env={"WATTLEDGER_LABEL": "site=dc1,le=2"})


@pytest.mark.parametrize("label", ["site=", "cluster=  "])
def test_an_empty_value_is_refused(label: str) -> None:
    # `--label site=$SITE` with SITE unset: the collector refused every batch (unknown site '')
    with pytest.raises(ConfigError, match=r"^--label: '\w+' has an empty value"):
        settings("--node", "n1", "--label", label)
