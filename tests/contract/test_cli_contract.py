"""DESIGN.md "Command line" held against the dispatcher: every flag of every sub-command also
reads from ``WATTLEDGER_<FLAG>`` and from the ``--config`` YAML (flags win), and every bad value
is one line on stderr with exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wattledger import cli
from wattledger.config import OneLineParser
from wattledger.demo import cli as demo_cli


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("WATTLEDGER_CONFIG", "WATTLEDGER_LOG_LEVEL", "WATTLEDGER_DEMO_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def parsed(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


# ---------------------------------------------------------------------------- --log-level


def test_log_level_flag_beats_env_beats_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("log_level: error\nsimulate: 1\n")
    env = {"WATTLEDGER_CONFIG": str(cfg)}
    assert cli.log_level(parsed(["agent"]), {}) == "info"
    assert cli.log_level(parsed(["agent"]), env) == "error"
    assert cli.log_level(parsed(["agent", "--config", str(cfg)]), {}) == "error"
    assert cli.log_level(parsed(["agent"]), {**env, "WATTLEDGER_LOG_LEVEL": "WARNING"}) == "warning"
    assert cli.log_level(parsed(["agent", "--log-level", "debug"]),
                         {**env, "WATTLEDGER_LOG_LEVEL": "warning"}) == "debug"


def test_log_level_key_is_known_to_every_sub_command(tmp_path: Path) -> None:
    from wattledger.agent import cli as agent_cli
    from wattledger.collector import settings as collector_settings

    cfg = tmp_path / "c.yaml"
    cfg.write_text("log_level: debug\n")
    args = parsed(["agent", "--config", str(cfg), "--simulate", "1", "--node", "n"])
    assert agent_cli.settings(args, {}).simulate == 1
    args = parsed(["collector", "--config", str(cfg)])
    assert collector_settings.load_settings(args, {}).max_gap_seconds == 30.0
    assert demo_cli.settings(parsed(["demo", "--config", str(cfg)]), {})["collector_port"] == 9861


def test_bad_log_level_from_env_is_one_line(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTLEDGER_LOG_LEVEL", "loud")
    assert "WATTLEDGER_LOG_LEVEL: 'loud'" in one_line_error(capsys, ["agent", "--simulate", "1"])


# ---------------------------------------------------------------------------- demo --config


def demo_settings(argv: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    parser = OneLineParser(prog="wattledger demo")
    demo_cli.configure(parser)
    return demo_cli.settings(parser.parse_args(argv), env or {})


def test_demo_reads_every_flag_from_yaml_env_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(f"collector-port: 19001\nprometheus_port: 19002\nagent_port: 19003\n"
                   f"backfill_step: 600\nrefresh: 2\nstate_dir: {tmp_path / 'st'}\n"
                   "fresh: true\nno_backfill: yes\nno_prometheus: true\nplain: true\n")
    s = demo_settings(["--config", str(cfg)])
    assert (s["collector_port"], s["prometheus_port"], s["agent_port"]) == (19001, 19002, 19003)
    assert (s["backfill_step"], s["refresh"], s["state_dir"]) == (600.0, 2.0, tmp_path / "st")
    assert s["fresh"] and s["no_backfill"] and s["no_prometheus"] and s["plain"]
    s = demo_settings(["--collector-port", "19101"], env={
        "WATTLEDGER_CONFIG": str(cfg), "WATTLEDGER_COLLECTOR_PORT": "19201", "WATTLEDGER_REFRESH": "3"})
    assert (s["collector_port"], s["refresh"], s["prometheus_port"]) == (19101, 3.0, 19002)


@pytest.mark.parametrize(("text", "message"), [
    ("collector_prot: 1\n", "unknown key 'collector_prot'"),
    ("- a\n", "must hold a mapping"),
    ("plain: sometimes\n", "config key 'plain'"),
    ("agent_port: 70000\n", "config key 'agent_port'"),
])
def test_demo_bad_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                   message: str) -> None:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(text)
    assert message in one_line_error(capsys, ["demo", "--config", str(cfg)])


# ---------------------------------------------------------------------------- bad values


def test_collector_without_sites_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sites: {}\n")
    assert "config key sites: needs at least one site" in one_line_error(
        capsys, ["collector", "--config", str(cfg), "--listen", "127.0.0.1:0"])


def test_token_file_that_is_not_text_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe\x00tok")
    err = one_line_error(capsys, ["agent", "--simulate", "1", "--listen", "127.0.0.1:0",
                                  "--collector", "http://127.0.0.1:9", "--token-file", str(token)])
    assert "is not UTF-8 text" in err


@pytest.mark.parametrize("argv", [
    ["agent", "--listen", "127.0.0.1:70000"],
    ["agent", "--label", "site"],
    ["agent", "--interval", "nan"],
    ["collector", "--db", "postgres://x"],
    ["collector", "--max-gap-seconds", "-3"],
    ["demo", "--backfill-step", "0.5"],
    ["nonsense"],
])
def test_the_real_console_script_never_shows_a_traceback(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "wattledger.cli", *argv], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"\n", "must hold one token: it is empty"),
    (b"two words\n", "printable ASCII characters only, no spaces"),
    ("t\u00f6k\n".encode(), "printable ASCII characters only, no spaces"),
])
def test_token_file_must_hold_one_header_safe_token(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    content: bytes, message: str) -> None:
    token = tmp_path / "token"
    token.write_bytes(content)
    err = one_line_error(capsys, ["agent", "--simulate", "1", "--listen", "127.0.0.1:0",
                                  "--collector", "http://127.0.0.1:9", "--token-file", str(token)])
    assert message in err


@pytest.mark.parametrize(("stdin", "message"), [
    (b"x\xff\n", "--hash-token: stdin"),
    (b"a b\n", "printable ASCII characters only"),
    (b"\n", "stdin held no token, only blank space"),
])
def test_hash_token_refuses_what_no_agent_could_send(stdin: bytes, message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "wattledger.cli", "collector", "--hash-token", "n1"],
                          input=stdin, capture_output=True, timeout=60)
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1 and message in err, err


def test_hash_token_with_an_empty_stdin_makes_a_token_and_its_line() -> None:
    # what a script, CI or `docker run` without -i gives: no terminal, and nothing to read
    done = subprocess.run([sys.executable, "-m", "wattledger.cli", "collector", "--hash-token", "n1"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.decode().splitlines() if not line.startswith("#")]
    token, line = lines
    assert len(token) >= 43
    assert line == "n1:sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_hash_token_prints_the_tokens_file_line() -> None:
    done = subprocess.run([sys.executable, "-m", "wattledger.cli", "collector", "--hash-token", "n1"],
                          input=b"s3cret\n", capture_output=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.decode().splitlines()[-1] == (
        "n1:sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0")


@pytest.mark.parametrize(("token", "message"), [("a b", "printable ASCII"), ("", "it is empty")])
def test_collector_tokens_must_be_sendable(tmp_path: Path, capsys: pytest.CaptureFixture[str], token: str,
                                           message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"tokens:\n  n1: {token!r}\n")
    assert f"config key tokens.n1: {message}" in one_line_error(
        capsys, ["collector", "--config", str(cfg), "--listen", "127.0.0.1:0"])


@pytest.mark.parametrize("command", ["agent", "collector", "demo"])
def test_config_file_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  command: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"listen: \xff\n")
    assert "is not UTF-8 text" in one_line_error(capsys, [command, "--config", str(cfg)])


def test_a_tls_pair_that_does_not_load_is_one_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pem = tmp_path / "bad.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    err = one_line_error(capsys, ["collector", "--listen", "127.0.0.1:0", "--db", f"sqlite:///{tmp_path}/l.db",
                                  "--tls-cert", str(pem), "--tls-key", str(pem)])
    assert "cannot be used" in err
    assert not (tmp_path / "l.db").exists()  # refused before anything was opened


def test_a_file_name_too_long_is_a_value_error_not_a_crash() -> None:
    from wattledger.config import existing_file

    with pytest.raises(ValueError, match="too long"):
        existing_file("x" * 5000)


DESIGN_COLLECTOR_YAML = """
listen: 127.0.0.1:9861
db: sqlite:///var/lib/wattledger/ledger.db
tokens:                       # node name -> token; a token is valid for its node only
  gpu-node-01: "s3cret"       # (a tokens_file of hashed tokens is also accepted)
sites:
  default:                    # a node belongs to the site named by its `site` label;
                              # a node without one belongs to `default`
    timezone: UTC             # tariffs, months and demand windows follow local time
    currency: USD
    pue: 1.5                  # facility energy = IT energy x pue; cooling = IT x (pue - 1)
    price_per_kwh: 0.12       # a flat price; or, instead, time-of-use bands:
    # tariff:                 # the first band that matches the minute (local time) wins
    #   - {price_per_kwh: 0.30, days: [mon, tue, wed, thu, fri], from: "08:00", to: "20:00"}
    #   - {price_per_kwh: 0.10}
    demand_charge_per_kw: 0   # per billing month, on the highest 15-minute average facility kW
    carbon_g_per_kwh: 400
max_gap_seconds: 30           # power-only readings further apart than this are not bridged
plan:
  - {site: default, month: 2026-12, cost: 50000, it_energy_kwh: 300000}
"""


def test_design_md_collector_example_loads_both_ways(tmp_path: Path) -> None:
    """DESIGN.md's configuration, as printed, and with its time-of-use bands instead of the flat price."""
    from wattledger.collector.settings import settings_from
    from wattledger.config import load_yaml

    flat = tmp_path / "flat.yaml"
    flat.write_text(DESIGN_COLLECTOR_YAML)
    settings = settings_from(load_yaml(flat))
    assert str(settings.listen) == "127.0.0.1:9861" and settings.tokens == {"gpu-node-01": "s3cret"}
    assert settings.max_gap_seconds == 30 and len(settings.plan) == 1
    tou = tmp_path / "tou.yaml"
    tou.write_text(DESIGN_COLLECTOR_YAML.replace("    price_per_kwh: 0.12 ", "    # price_per_kwh: 0.12 ")
                   .replace("    # tariff:", "    tariff:").replace("    #   - {", "      - {"))
    site = settings_from(load_yaml(tou)).sites["default"]
    assert site.tariff is not None and len(site.tariff) == 2 and site.price_per_kwh is None
