"""Collector configuration: every bad setting is one line naming its key, and exit code 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from httpkit import WATTLEDGER

from wattledger.cli import main
from wattledger.collector.settings import DEFAULT_SITE, load_settings, settings_from
from wattledger.config import ConfigError, HostPort

SITE = {"timezone": "UTC", "currency": "USD", "pue": 1.5, "price_per_kwh": 0.12}
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def error_of(values: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from(values)
    message = str(caught.value)
    assert "\n" not in message
    return message


BAD = {
    "bad timezone": ({"sites": {"default": {**SITE, "timezone": "Mars/Olympus"}}},
                     "config key sites.default.timezone: unknown timezone 'Mars/Olympus'"),
    "unknown site in plan": ({"sites": {"default": SITE},
                              "plan": [{"site": "lab", "month": "2026-12", "cost": 1}]},
                             "config key plan: plan entry 1 names site 'lab'"),
    "negative price": ({"sites": {"default": {**SITE, "price_per_kwh": -0.1}}},
                       "config key sites.default.price_per_kwh: "),
    "tariff bands leave minutes unpriced": (
        {"sites": {"default": {"timezone": "UTC", "tariff": [
            {"price_per_kwh": 0.3, "days": WEEKDAYS, "from": "08:00", "to": "20:00"}]}}},
        "config key sites.default: tariff bands of site 'default' leave mon 00:00 without a price"),
    "empty tariff band": ({"sites": {"default": {
                               "tariff": [{"price_per_kwh": 0.3, "from": "08:00", "to": "08:00"}]}}},
                          "config key sites.default.tariff.0: band from 08:00 to 08:00 is empty"),
    "price and tariff both": ({"sites": {"default": {**SITE, "tariff": [{"price_per_kwh": 1}]}}},
                              "needs exactly one of price_per_kwh or tariff"),
    "unknown top-level key": ({"listen_addr": "127.0.0.1:1"}, "config key listen_addr: unknown key"),
    "unknown site key": ({"sites": {"default": {**SITE, "colour": "green"}}},
                         "config key sites.default.colour: unknown key"),
    "bad listen": ({"listen": "localhost"}, "config key listen: 'localhost' is not HOST:PORT"),
    "bad db": ({"db": "mysql://db/ledger"},
               "config key db: must be sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"),
    "removed ingest_workers": ({"ingest_workers": 2},
                               "config key ingest_workers: removed: run replicas on PostgreSQL"),
    "metrics_refresh_seconds 0": ({"metrics_refresh_seconds": 0}, "config key metrics_refresh_seconds:"),
    "missing tokens_file": ({"tokens_file": "/nonexistent/tokens"},
                            "config key tokens_file: '/nonexistent/tokens'"),
    "tls half": ({"tls_cert": __file__}, "config key tls_key: tls_cert and tls_key go together"),
    "zero gap": ({"max_gap_seconds": 0}, "config key max_gap_seconds: "),
    "tiny body limit": ({"max_body_bytes": 10}, "config key max_body_bytes: "),
    "pue below 1": ({"sites": {"default": {**SITE, "pue": 0.9}}}, "config key sites.default.pue: "),
    "bad node name in tokens": ({"tokens": {"bad node": "x"}}, "config key tokens.bad node"),
    "empty token": ({"tokens": {"n1": ""}}, "config key tokens.n1: "),
    "reserved team idle": ({"teams": {"idle": [{"account": "x"}]}},
                           "'idle' is the team of time nobody held"),
    "reserved team unshared": ({"teams": {"unshared": [{"account": "x"}]}},
                               "'unshared' is the team of cooling not yet shared out by IT"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_setting_is_one_line_naming_its_key(case: str) -> None:
    values, expected = BAD[case]
    assert error_of(values).startswith(expected) or expected in error_of(values)


def test_no_sites_gives_the_documented_default_site() -> None:
    s = settings_from({})
    assert list(s.sites) == ["default"]
    site = s.sites["default"]
    for key in ("timezone", "currency", "pue", "price_per_kwh", "carbon_g_per_kwh", "demand_charge_per_kw"):
        assert getattr(site, key) == DEFAULT_SITE[key]
    assert s.listen == HostPort("0.0.0.0", 9861)
    assert s.max_body_bytes == 8 << 20 and s.allow_unauthenticated is False and s.tls is False


def test_default_db_lives_in_the_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WATTLEDGER_STATE_DIR", str(tmp_path / "state"))
    assert settings_from({}).db == f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"


def test_flags_beat_environment_beat_yaml(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("listen: 127.0.0.1:1000\nmax-gap-seconds: 10\nmax_body_bytes: 4096\n"
                    "sites:\n  default: {timezone: Europe/Berlin, price_per_kwh: 0.3}\n"
                    "plan:\n  - {site: default, month: 2026-12, cost: 50000, it_energy_kwh: 300000}\n")
    from wattledger.cli import build_parser

    args = build_parser().parse_args(["collector", "--config", str(conf), "--listen", "127.0.0.1:3000"])
    env = {"WATTLEDGER_LISTEN": "127.0.0.1:2000", "WATTLEDGER_MAX_GAP_SECONDS": "20"}
    s = load_settings(args, env)
    assert s.listen == HostPort("127.0.0.1", 3000)  # flag
    assert s.max_gap_seconds == 20  # environment over YAML
    assert s.max_body_bytes == 4096  # YAML
    assert s.sites["default"].timezone == "Europe/Berlin"
    assert s.plan[0].month == "2026-12" and s.plan[0].cost == 50000


def test_bad_flag_value_names_the_flag() -> None:
    from wattledger.cli import build_parser

    args = build_parser().parse_args(["collector", "--max-body-bytes", "-5"])
    with pytest.raises(ConfigError, match=r"^--max-body-bytes: "):
        load_settings(args, {})


def test_cli_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(json.dumps({"sites": {"default": {**SITE, "timezone": "Nowhere/Special"}}}))
    assert main(["collector", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("wattledger collector: error: config key sites.default.timezone: unknown timezone")
    assert err.rstrip().endswith(f"(in {str(conf)!r}, line 1)")


@pytest.mark.parametrize(("text", "expected"), [
    ("listen: [unclosed", "is not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
])
def test_cli_refuses_a_broken_yaml_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        text: str, expected: str) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(text)
    assert main(["collector", "--config", str(conf)]) == 2
    assert expected in capsys.readouterr().err


def test_cli_refuses_a_port_in_use_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["collector", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path}/l.db"])
    assert code == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_real_process_exits_2_on_a_missing_config_file() -> None:
    r = subprocess.run([WATTLEDGER, "collector", "--config", "/nonexistent/wattledger.yaml"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "wattledger collector: error: config file '/nonexistent/wattledger.yaml' does not exist"]


def test_postgresql_urls_and_the_replica_name() -> None:
    s = settings_from({"db": "postgresql://wl@db.example:5432/ledger", "listen": "0.0.0.0:9861"})
    assert s.db == "postgresql://wl@db.example:5432/ledger" and s.metrics_refresh_seconds == 5.0
    import socket
    assert s.replica_name == f"{socket.gethostname()}:9861"  # a wildcard address names no host
    assert settings_from({"listen": "10.0.0.7:9861"}).replica_name == "10.0.0.7:9861"
    assert settings_from({"replica": "collector-b"}).replica_name == "collector-b"


def test_the_removed_workers_variable_is_one_line(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from wattledger.cli import main

    monkeypatch.setenv("WATTLEDGER_INGEST_WORKERS", "2")
    assert main(["collector", "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert err == ("wattledger collector: error: WATTLEDGER_INGEST_WORKERS: removed: run replicas on "
                   "PostgreSQL (docs/collector.md, \"Replicas\")\n")


@pytest.mark.parametrize(("values", "expected"), [
    ({"plan": [{"site": "default", "month": "2026-13", "cost": 1}]},
     "config key plan.0.month: plan entry 1: must be a month written YYYY-MM, e.g. 2026-12"),
    ({"plan": [{"site": "default", "month": "2026-12", "cost": 1},
               {"site": "default", "month": "2026-12", "cluster": "a", "cost": -1}]},
     "config key plan.1.cost: plan entry 2: must be at least 0"),
    ({"sites": {"default": {**SITE, "pue": "abc"}}}, "config key sites.default.pue: must be a number"),
    ({"sites": {"default": {"tariff": [{"price_per_kwh": 0.1, "from": "25:00"}]}}},
     "config key sites.default.tariff.0.from: tariff entry 1: must be a time of day written HH:MM, "
     "from 00:00 to 24:00"),
    ({"sites": {"default": {**SITE, "currency": "US"}}},
     "config key sites.default.currency: must be a three-letter ISO 4217 currency code such as USD, "
     "EUR or JPY"),
    ({"tokens": {"bad node": "x"}},
     "config key tokens.bad node: the name 'bad node' is not a node name: letters, digits, '.', '_' "
     "and '-', starting with a letter or digit, at most 128 characters"),
    ({"plan": 5}, "config key plan: must be a list"),
    ({"sites": []}, "config key sites: must be a mapping"),
    ({"replica": "a b"}, "config key replica: must be a name without spaces, quotes or backslashes"),
    ({"rollup_after_days": 1}, "config key rollup_after_days: must be at least 2"),
])
def test_messages_are_plain_words_with_entries_counted_from_one(values: dict[str, Any],
                                                                 expected: str) -> None:
    # issue 16, item 20: no regex ("String should match pattern '^\d{4}-...'") and no pydantic
    # wording ("Input should be a valid number"); the key's path stays as YAML numbers it
    message = error_of(values)
    assert message == expected
    for pydantic_words in ("Input should", "String should", "should match pattern", "^", "$", "[key]"):
        assert pydantic_words not in message
