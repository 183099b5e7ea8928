"""docs/accounting.md, "Worked example: the whole bill of one hour", reproduced through a real
`wattledger collector`: the sites and readings are the page's YAML block, the figures its
tables. A node with a BMC, one without, a chiller minute computed by hand with the ASHRAE
preset, a metered site; the collector's /v1/spend must give every figure of the page (exactly
where it is printed whole, to its last digit where it ends in '…'), and the chiller formula
every step of the page's minute."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from httpkit import Collector_, start_collector

from wattledger.collector.accounting.cooling import COOLING_ADAPTER, ChillerCooling, chiller_cooling

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "accounting.md"
STEP_S = 10.0


def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def inputs() -> dict[str, Any]:
    """The example's YAML block (after its marker)."""
    text = doc().split("<!-- whole-bill-example:inputs -->", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None, "no YAML block after the inputs marker"
    data: dict[str, Any] = yaml.safe_load(block.group(1))
    return data


def table(marker: str) -> list[list[str]]:
    """The cells of the markdown table after ``marker`` (header and rule left out)."""
    text = doc().split(f"<!-- whole-bill-example:{marker} -->", 1)[1].lstrip("\n")
    rows = []
    for line in text.splitlines():
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [r for r in rows[2:]]


def close_to(got: float, printed: str, what: str) -> None:
    """Exactly (1e-9) a figure printed whole; to its last digit one printed rounded ('…')."""
    rounded = printed.endswith("…")
    number = Decimal(printed.rstrip("…").replace(",", ""))
    if rounded:
        half = Decimal(1).scaleb(number.as_tuple().exponent) / 2  # type: ignore[arg-type]
        assert abs(Decimal(repr(got)) - number) <= half, f"{what}: {got!r} is not {printed}"
    else:
        assert got == pytest.approx(float(number), rel=1e-9, abs=1e-12), f"{what}: {got!r} is not {printed}"


def batch(node: str, spec: dict[str, Any], start: float, seq: int) -> dict[str, Any]:
    """The node's hour: each device's constant power every 10 s, start to start + 1 h."""
    devices = spec["devices"]
    times = [start + STEP_S * i for i in range(int(3600 / STEP_S) + 1)]
    indexes: dict[str, int] = {}
    wire = []
    for d in devices:
        index = indexes.get(d["kind"], 0)
        indexes[d["kind"]] = index + 1
        wire.append({"id": d["id"], "kind": d["kind"], "index": index,
                     **({"role": d["role"]} if "role" in d else {})})
    return {"node": node, "stream": f"s-{node}", "seq": seq, "labels": {"site": spec["site"]},
            "devices": wire,
            "readings": {"device": [i for i in range(len(devices)) for _ in times],
                         "ts": [t for _ in devices for t in times],
                         "power_w": [float(d["watts"]) for d in devices for _ in times]}}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector_]:
    example = inputs()
    tmp = tmp_path_factory.mktemp("accounting-example")
    tokens = {node: f"tok-{node}" for node in example["nodes"]}
    proc = start_collector(tmp, {"db": f"sqlite:///{tmp / 'ledger.db'}", "tokens": tokens,
                                 "sites": example["sites"]})
    try:
        start = datetime.fromisoformat(example["hour"]).replace(tzinfo=UTC).timestamp()
        # the IT first, the management host's meters after (as their agents would, on their own
        # schedules): a metered minute's other load is re-booked as its IT arrives
        for node, spec in sorted(example["nodes"].items(), key=lambda kv: kv[0].startswith("mgmt")):
            r = httpx.post(f"{proc.url}/v1/batches", json=batch(node, spec, start, 1), timeout=60,
                           headers={"Authorization": f"Bearer {tokens[node]}"})
            assert r.status_code == 200, r.text
        yield proc
    finally:
        proc.stop()


def test_every_figure_of_the_page_is_the_collectors(collector: Collector_) -> None:
    month = inputs()["hour"][:7]
    body = httpx.get(f"{collector.url}/v1/spend", params={"month": month}, timeout=30).json()
    rows = {row["site"]: row for row in body["rows"]}
    header = [c.strip() for c in doc().split("<!-- whole-bill-example:figures -->", 1)[1]
              .lstrip("\n").splitlines()[0].strip().strip("|").split("|")]
    sites = header[1:-1]
    assert set(sites) == set(rows) == set(inputs()["sites"])
    figures = table("figures")
    assert len(figures) >= 15
    for cells in figures:
        field = cells[0].strip("`")
        for name, printed in zip(sites, cells[1:1 + len(sites)], strict=True):
            close_to(float(rows[name][field]), printed, f"{name} {field}")
    # and the parts add up as the page says: GPUs + CPUs + overhead = IT, + cooling + other = facility
    for row in rows.values():
        assert row["gpu_cost"] + row["cpu_cost"] + row["overhead_cost"] == pytest.approx(row["it_cost"])
        assert row["energy_cost"] + row["demand_charge"] == pytest.approx(row["total_cost"])


def test_the_chiller_minute_of_the_page_is_the_formulas() -> None:
    site = inputs()["sites"]["dc1"]
    chiller = COOLING_ADAPTER.validate_python(site["cooling"])
    assert isinstance(chiller, ChillerCooling)
    it_w = 0.0
    for spec in inputs()["nodes"].values():
        if spec["site"] != "dc1":
            continue
        watts = {d["kind"]: 0.0 for d in spec["devices"]}
        for d in spec["devices"]:
            watts[d["kind"]] += float(d["watts"])
        parts = watts.get("gpu", 0.0) + watts.get("cpu", 0.0)
        it_w += watts["node"] if "node" in watts else parts * (1 + site["node_overhead_ratio"])
    point = chiller_cooling(chiller, it_w / 1000.0, float(chiller.outdoor.fixed_c or 0.0))
    steps = table("chiller")
    assert {cells[0].strip("`") for cells in steps} == {
        "capft", "eirft", "q_avail_kw", "plr", "eirfplr", "chiller_kw", "aux_kw", "cooling_kw"}
    for cells in steps:
        name = cells[0].strip("`")
        close_to(float(getattr(point, name)), cells[-1], name)
