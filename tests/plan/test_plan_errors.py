"""Every bad scenario is one line on stderr and exit status 2 on the command line, naming the
field; the same check gives the structured (field, reason) issues an HTTP 422 answers with.
The checks against the ledger run on a real ledger file the collector's Bookkeeper booked; a
ledger that cannot back a plan (none, not a ledger, older than the plan's statistics) says so in
one line; explicit power entries plan without any ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from plankit import (
    ENTRY,
    IDLE_W,
    MODEL,
    SLOPE_W,
    plan,
    scenario,
    site,
    sites_of,
    utilization_at,
)

from tests.collector.ledgerkit import book_readings, line_readings, make_sites
from wattledger import cli
from wattledger.collector.service import Ledger
from wattledger.plan.build import issue_fields
from wattledger.plan.scenario import ScenarioError

WATTLEDGER = str(Path(sys.executable).parent / "wattledger")
CONFIG = {"db": "sqlite:///{tmp}/ledger.db", "sites": {"dc1": site()}}


def write(tmp: Path, raw: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    (tmp / "scenario.yaml").write_text(yaml.safe_dump(raw))
    cfg = json.loads(json.dumps(CONFIG if config is None else config).replace("{tmp}", str(tmp)))
    (tmp / "collector.yaml").write_text(yaml.safe_dump(cfg))
    return ["plan", "--scenario", str(tmp / "scenario.yaml"), "--config", str(tmp / "collector.yaml")]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def bare_site() -> dict[str, Any]:
    """A site without its bare ``pue``, for a ``cooling`` of its own."""
    return {k: v for k, v in site().items() if k != "pue"}


def entry(**changes: Any) -> dict[str, Any]:
    out = {**ENTRY, **changes}
    return {k: v for k, v in out.items() if v is not None}


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("negative servers", scenario(entry(servers=-1)), "fleet[0].servers"),
    ("servers as text", scenario(entry(servers="10")), "fleet[0].servers"),
    ("servers a fraction", scenario(entry(servers=2.5)), "fleet[0].servers"),
    ("utilization as text", scenario(entry(utilization="high")), "fleet[0].utilization"),
    ("utilization over 1", scenario(entry(utilization=1.5)), "fleet[0].utilization"),
    ("unknown site", scenario(site="nowhere"), "site"),
    ("a month that is none", scenario(start="2027-13"), "start"),
    ("a day, not a month", scenario(start="2027-01-15"), "start"),
    ("no start", {k: v for k, v in scenario().items() if k != "start"}, "start"),
    ("months zero", scenario(months=0), "months"),
    ("months as a boolean", scenario(months=True), "months"),
    ("an unknown key", scenario(entry(gpu_model="x")), "fleet[0].gpu_model"),
    ("an unknown top key", scenario(horizon=3), "horizon"),
    ("empty fleet", scenario(fleet=[]), "fleet"),
    ("a hundred and one entries", scenario(*[entry(name=f"e{i}") for i in range(101)]), "fleet"),
    ("from outside the plan", scenario(entry(**{"from": "2030-01"})), "fleet[0].from"),
    ("from before start", scenario(entry(**{"from": "2026-12"})), "fleet[0].from"),
    (
        "max below idle",
        scenario(entry(power={"idle_w": 300, "max_w": 200, "node_overhead_w": 0})),
        "fleet[0].power.max_w",
    ),
    ("power is neither", scenario(entry(power="nameplate")), "fleet[0].power"),
    ("capex without depreciation", scenario(entry(depreciation_months=None)), "fleet[0].depreciation_months"),
    ("two entries of one name", scenario(entry(), entry()), "fleet[1].name"),
    ("escalation of -100 %", scenario(price_escalation_per_year=-1), "price_escalation_per_year"),
    ("negative cloud price", scenario(cloud_price_per_gpu_hour=-2), "cloud_price_per_gpu_hour"),
]


@pytest.mark.parametrize(
    ("raw", "field"), [(raw, field) for _, raw, field in BAD], ids=[n for n, _, _ in BAD]
)
def test_a_bad_scenario_is_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: dict[str, Any], field: str
) -> None:
    rc, out, err = run(write(tmp_path, raw), capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("wattledger plan: error: "), err
    assert f"scenario field {field}: " in err, err
    with pytest.raises(ScenarioError) as caught:  # the same check, structured (a 422's detail)
        plan(raw, sites_of(dc1=site()))
    assert issue_fields(caught.value)[0]["field"] == field
    assert all(issue["reason"] for issue in issue_fields(caught.value))


def real_ledger(tmp: Path, days: float, every_s: float, overhead_w: float | None = None) -> None:
    """The configured ledger file (site dc1), booked by the collector's Bookkeeper from batches
    of one GPU whose power is exactly on the line (and, with ``overhead_w``, its node's wall
    meter), from 2026-09-01 on."""
    t0 = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
    ledger = Ledger(f"sqlite:///{tmp}/ledger.db", make_sites({"dc1": site()}), [], clock=lambda: t0,
                    max_gap_seconds=120)  # readings a minute apart are measured by their trapezoids
    readings = line_readings(int(days * 86400 / every_s), idle_w=IDLE_W, slope_w=SLOPE_W,
                             utilization=utilization_at, every_s=every_s, t0=t0, gpus=1,
                             overhead_w=overhead_w)
    book_readings(ledger, readings, 2000, model=MODEL, gpus=1, site="dc1")
    ledger.close()


MEASURED_BAD: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "a model the ledger never saw",
        scenario(entry(model="AMD Instinct MI300X", power="measured")),
        "fleet[0].model",
        "has no readings of 'AMD Instinct MI300X'",
    ),
    (
        "a month before the ledger's start",
        scenario(entry(power="measured"), start="2026-08"),
        "start",
        "before the ledger's first month (2026-09)",
    ),
    ("too little data", scenario(entry(power="measured")), "fleet[0].power", "too little data"),
    ("no node meters", scenario(entry(power="measured")), "fleet[0].power", "no node meter readings"),
]


@pytest.mark.parametrize(
    ("raw", "field", "says"), [c[1:] for c in MEASURED_BAD], ids=[c[0] for c in MEASURED_BAD]
)
def test_a_scenario_the_ledger_cannot_back_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: dict[str, Any], field: str, says: str
) -> None:
    real_ledger(tmp_path, days=3 if "little" not in says else 1, every_s=60 if "little" not in says else 600)
    rc, out, err = run(write(tmp_path, raw), capsys)
    assert (rc, out, err.count("\n")) == (2, "", 1), err
    assert f"scenario field {field}: " in err and says in err, err


def test_measured_entries_need_a_ledger_that_can_give_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = scenario(entry(power="measured"))
    rc, _, err = run(write(tmp_path, raw), capsys)  # the configured ledger file does not exist
    assert rc == 2 and err.count("\n") == 1 and "no ledger at" in err, err
    (tmp_path / "ledger.db").write_bytes(b"")  # a file, but not a ledger of this version
    rc, _, err = run(write(tmp_path, raw), capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert "keeps no plan statistics yet" in err and "power: {idle_w, max_w, node_overhead_w}" in err
    rc, _, err = run(write(tmp_path, scenario({"name": "existing", "measured": True}, entry())), capsys)
    assert rc == 2 and "keeps no plan statistics yet" in err
    (tmp_path / "ledger.db").write_bytes(b"not a database at all, " * 100)
    rc, _, err = run(write(tmp_path, raw), capsys)
    assert rc == 2 and err.count("\n") == 1 and "cannot read the ledger" in err, err
    argv = write(tmp_path, scenario(entry(power="measured"), site="default"))[:3]  # no --config at all
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "give --config COLLECTOR_YAML" in err, err


def test_explicit_power_plans_without_any_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(write(tmp_path, scenario()), capsys)  # its db names no file: never opened
    assert (rc, err) == (0, "")
    doc = json.loads(out)
    assert doc["site"] == "dc1" and len(doc["months"]) == 2
    raw = scenario(site="default")
    rc, out, err = run(write(tmp_path, raw)[:3], capsys)  # no --config: the collector's default site
    assert (rc, err) == (0, "")
    assert json.loads(out)["assumptions"]["configuration"].startswith("the collector's defaults")


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (
            {"sites": {"dc1": {**site(), "timezone": "Mars/Olympus"}}},
            "config key sites.dc1.timezone: unknown timezone",
        ),
        (
            {
                "sites": {
                    "dc1": {
                        **bare_site(),
                        "cooling": {
                            "model": "chiller",
                            "capacity_kw": 10,
                            "outdoor": {"fixed_c": 20},
                            "curves": "ashrae-90.1-2010-air-cooled",
                        },
                    }
                }
            },
            "config key sites.dc1.cooling.cop_ref: missing",
        ),
        (
            {"sites": {"dc1": {**site(), "cooling": {"model": "pue", "pue": 1.2}}}},
            "config key sites.dc1: give either",
        ),
        (
            {"sites": {"dc1": {**bare_site(), "cooling": {"model": "evaporative"}}}},
            "config key sites.dc1.cooling",
        ),
        ({"sites": {"dc1": {**site(), "price_per_kwh": -1}}}, "config key sites.dc1.price_per_kwh"),
        (
            {
                "sites": {
                    "dc1": {k: v for k, v in site().items() if k != "pue"} | {"cooling": {"model": "metered"}}
                },
                "db": "sqlite:///{tmp}/ledger.db",
            },
            "no cooling meter energy of this site",
        ),
    ],
)
def test_a_bad_collector_configuration_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any], says: str
) -> None:
    # a ledger of this version, empty (the metered site reads it)
    Ledger(f"sqlite:///{tmp_path}/ledger.db", make_sites({"dc1": site()}), []).close()
    rc, out, err = run(write(tmp_path, scenario(), config), capsys)
    assert (rc, out, err.count("\n")) == (2, "", 1), err
    assert says in err, err


def test_bad_files_and_flags_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = write(tmp_path, scenario())
    (tmp_path / "scenario.yaml").write_text("site: [unclosed\n")
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "scenario file" in err and "is not valid YAML" in err and err.count("\n") == 1
    (tmp_path / "scenario.yaml").write_text("- a list\n")
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "must hold a mapping" in err
    rc, _, err = run(["plan", "--scenario", str(tmp_path / "missing.yaml")], capsys)
    assert rc == 2 and "no such file" in err and err.count("\n") == 1
    rc, _, err = run([*argv, "--format", "pdf"], capsys)
    assert rc == 2 and "--format: 'pdf' is not one of json, csv, html" in err
    rc, _, err = run([*write(tmp_path, scenario()), "--out", str(tmp_path)], capsys)
    assert rc == 2 and "is a folder" in err


def test_the_real_command_exits_2_with_one_line_and_writes_reports(tmp_path: Path) -> None:
    argv = write(tmp_path, scenario(entry(servers=-3)))
    bad = subprocess.run([WATTLEDGER, *argv], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        "wattledger plan: error: scenario field fleet[0].servers: must be at least 0"
    ]
    argv = write(tmp_path, scenario())
    good = subprocess.run(
        [WATTLEDGER, *argv, "--format", "html", "--out", str(tmp_path / "plan.html")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (good.returncode, good.stdout, good.stderr) == (0, "", "")  # no progress bar on a pipe
    assert (tmp_path / "plan.html").read_text().count("<svg") == 3
    csv = subprocess.run([WATTLEDGER, *argv, "--format", "csv"], capture_output=True, text=True, timeout=120)
    assert csv.returncode == 0 and csv.stdout.splitlines()[-1].startswith("total,80,")


def test_the_model_named_in_the_ledger_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real_ledger(tmp_path, days=3, every_s=60, overhead_w=900.0)  # with the node's wall meter
    rc, out, err = run(write(tmp_path, scenario(entry(model=MODEL, power="measured"))), capsys)
    assert (rc, err) == (0, "")
    assert json.loads(out)["fleet"][0]["power"].startswith("measured: 57.0 + 333.0 x utilization W")


def test_the_demos_collector_configuration_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/demo.md's one line: the demo's generated collector YAML is a plan's --config."""
    from wattledger.demo import config as democonfig
    from wattledger.demo.layout import DemoState, Ports
    from wattledger.demo.scenario import default_scenario

    demo = default_scenario()
    state = DemoState(tmp_path / "demo")
    state.prepare(fresh=True)
    ports = Ports(
        collector=19861, prometheus=19090, agents={s.node: 19871 + i for i, s in enumerate(demo.servers)}
    )
    democonfig.write_collector_files(  # the YAML and the weather file its chiller reads
        demo, state, ports, state.tokens(s.node for s in demo.servers), 1_795_809_600.0
    )
    (tmp_path / "expansion.yaml").write_text(yaml.safe_dump(scenario(site=demo.site.name, months=12)))
    argv = [
        "plan",
        "--scenario",
        str(tmp_path / "expansion.yaml"),
        "--config",
        str(state.collector_yaml),
        "--format",
        "html",
        "--out",
        str(tmp_path / "plan.html"),
    ]
    rc, out, err = run(argv, capsys)
    assert (rc, out, err) == (0, "", "")
    page = (tmp_path / "plan.html").read_text()
    assert page.count("<svg") == 3 and "America/New_York" in page


def run_on_a_terminal(argv: list[str]) -> tuple[int, str, str]:
    """The command line as a process whose standard error is a terminal (a pseudo-terminal) and
    standard output a pipe: its exit status, standard output, and all it wrote to the terminal."""
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([WATTLEDGER, *argv], stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out = proc.stdout.read() if proc.stdout else ""
    rc = proc.wait(120)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end is closed: all is read
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return rc, out, seen.decode(errors="replace")


def test_a_progress_bar_on_a_real_terminal_and_errors_stay_one_line(tmp_path: Path) -> None:
    real_ledger(tmp_path, days=2, every_s=60)
    rc, out, terminal = run_on_a_terminal(write(tmp_path, scenario({"name": "existing", "measured": True})))
    assert rc == 0 and json.loads(out)["fleet"][0]["measured"]
    assert "reading the ledger" in terminal  # the bar, on standard error only
    rc, out, terminal = run_on_a_terminal(write(tmp_path, scenario(entry(model="AMD Instinct MI300X",
                                                                         power="measured"))))
    assert rc == 2 and out == ""
    errors = [line for line in terminal.splitlines() if "wattledger plan: error:" in line]
    assert len(errors) == 1 and "fleet[0].model" in errors[0], terminal
