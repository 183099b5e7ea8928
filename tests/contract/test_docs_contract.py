"""Every metric name written anywhere an operator reads or runs it (README, docs/, alert and
recording rules, dashboards, Alertmanager) is a real one: in docs/metrics.md (which
test_process_contract.py holds against the running processes) or a recording rule's output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from contractkit import ROOT, documented_metrics

NAME = re.compile(r"(?<![A-Za-z0-9_:])wattledger_[a-z0-9_]+")
HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")
PLACES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
          *sorted((ROOT / "deploy").rglob("*.yml")), *sorted((ROOT / "deploy").rglob("*.yaml")),
          *sorted((ROOT / "dashboards").glob("*.py")), *sorted((ROOT / "dashboards" / "json").glob("*.json"))]


def known_names() -> set[str]:
    docs = documented_metrics(ROOT / "docs" / "metrics.md")
    names = {name for section in docs.values() for name in section}
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules" / "wattledger.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:  # level:metric:operations -> the metric part is a name too
                names.add(rule["record"].split(":")[1])
    return names


@pytest.mark.parametrize("path", PLACES, ids=[str(p.relative_to(ROOT)) for p in PLACES])
def test_every_metric_name_mentioned_is_real(path: Path) -> None:
    known = known_names()
    unknown = set()
    for name in set(NAME.findall(path.read_text(encoding="utf-8"))):
        base = next((name.removesuffix(part) for part in HISTOGRAM_PARTS if name.endswith(part)), name)
        if name not in known and base not in known:
            unknown.add(name)
    assert not unknown, f"{path.relative_to(ROOT)} names metrics that nothing exposes: {sorted(unknown)}"
