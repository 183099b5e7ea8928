"""wattledger.config: value types, flag > env > YAML > default, one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from wattledger import config
from wattledger.config import ConfigError, HostPort, Option

OPTIONS = [
    Option("--interval", config.positive_float, 1.0, "seconds"),
    Option("--listen", config.host_port, HostPort("0.0.0.0", 9860), "where"),
    Option("--token-file", config.existing_file, None, "token"),
    Option("--label", config.key_value, [], "labels", multiple=True),
    Option("--verbose", config.boolean, False, "chatty"),
]


def flags(*argv: str) -> argparse.Namespace:
    parser = config.OneLineParser(prog="t")
    config.add_options(parser, OPTIONS)
    return parser.parse_args(list(argv))


def test_defaults_when_nothing_is_given() -> None:
    out = config.resolve(OPTIONS, flags(), {}, env={})
    assert out == {"interval": 1.0, "listen": HostPort("0.0.0.0", 9860), "token_file": None, "label": [],
                   "verbose": False}


def test_flag_beats_env_beats_file() -> None:
    env = {"WATTLEDGER_INTERVAL": "3", "WATTLEDGER_VERBOSE": "yes"}
    file = {"interval": 5, "verbose": False, "listen": "127.0.0.1:1"}
    out = config.resolve(OPTIONS, flags("--interval", "2"), file, env=env)
    assert out["interval"] == 2.0 and out["verbose"] is True and out["listen"] == HostPort("127.0.0.1", 1)


def test_multiple_values_from_each_place() -> None:
    assert config.resolve(OPTIONS, flags("--label", "a=1", "--label", "b=2"), {}, env={})["label"] == [
        ("a", "1"), ("b", "2")]
    assert config.resolve(OPTIONS, flags(), {}, env={"WATTLEDGER_LABEL": "a=1,b=2"})["label"] == [
        ("a", "1"), ("b", "2")]
    assert config.resolve(OPTIONS, flags(), {"label": {"site": "x"}}, env={})["label"] == [("site", "x")]
    assert config.resolve(OPTIONS, flags(), {"label": "site=y"}, env={})["label"] == [("site", "y")]


def test_dashed_yaml_keys_are_accepted(tmp_path: Path) -> None:
    token = tmp_path / "tok"
    token.write_text("t")
    out = config.resolve(OPTIONS, flags(), {"token-file": str(token)}, env={})
    assert out["token_file"] == token


@pytest.mark.parametrize(
    ("argv", "env", "file", "message"),
    [
        (["--interval", "-1"], {}, {}, "--interval: '-1' must be a number greater than 0"),
        ([], {"WATTLEDGER_INTERVAL": "inf"}, {}, "WATTLEDGER_INTERVAL: 'inf' must be"),
        ([], {}, {"interval": "x"}, "config key 'interval': 'x' is not a number"),
        (["--listen", "host"], {}, {}, "is not HOST:PORT"),
        (["--listen", "h:70000"], {}, {}, "outside 0..65535"),
        (["--token-file", "/nonexistent"], {}, {}, "no such file"),
        (["--label", "novalue"], {}, {}, "is not KEY=VALUE"),
        ([], {"WATTLEDGER_VERBOSE": "perhaps"}, {}, "is not true or false"),
    ],
)
def test_bad_values_name_their_source(argv: list[str], env: dict[str, str], file: dict[str, object],
                                      message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.resolve(OPTIONS, flags(*argv), file, env=env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_value_types() -> None:
    assert config.host_port("[::1]:9860") == HostPort("::1", 9860)
    assert str(HostPort("::1", 9860)) == "[::1]:9860"
    assert config.host_port(":9860") == HostPort("0.0.0.0", 9860)
    assert config.http_url("https://c.example:8443/") == "https://c.example:8443"
    for bad in ("not a url", "ftp://x", "http://", "http://h:99999"):
        with pytest.raises(ValueError):
            config.http_url(bad)
    assert config.key_value(" rack = r12 ") == ("rack", "r12")
    assert config.non_negative_int("0") == 0 and config.positive_int(3) == 3
    for bad_int in ("-1", "1.5"):
        with pytest.raises(ValueError):
            config.non_negative_int(bad_int)
    with pytest.raises(ValueError):
        config.positive_int("0")
    with pytest.raises(ValueError):
        config.text("   ")


def test_load_yaml(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("interval: 2\n")
    assert config.load_yaml(good) == {"interval": 2}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert config.load_yaml(empty) == {}
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        config.load_yaml(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        config.load_yaml(listy)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load_yaml(tmp_path / "missing.yaml")


def test_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WATTLEDGER_STATE_DIR", str(tmp_path / "s"))
    assert config.default_state_dir() == tmp_path / "s"
    monkeypatch.delenv("WATTLEDGER_STATE_DIR")
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert config.default_state_dir() == tmp_path / "a"


def test_help_names_the_env_var_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        flags("--help")
    out = capsys.readouterr().out
    assert "[env WATTLEDGER_INTERVAL]" in out and "(default: 0.0.0.0:9860)" in out


def test_one_line_parser_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        flags("--nope")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --nope" in err


def test_a_bad_value_from_the_file_names_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("# the agent\nverbose: true\n\ninterval: soon\n")
    args = argparse.Namespace(config=str(cfg))
    values = config.config_file_values(args, {})
    with pytest.raises(ConfigError) as caught:
        config.resolve(OPTIONS, flags(), values, env={})
    assert str(caught.value) == f"config key 'interval': 'soon' is not a number (in {str(cfg)!r}, line 4)"


def test_an_unknown_key_names_its_line_and_the_key_meant(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("interval: 5\nlabels:\n  site: s1\n")
    known = {opt.dest for opt in OPTIONS}
    with pytest.raises(ConfigError) as caught:
        config.config_file_values(argparse.Namespace(config=str(cfg)), {}, known)
    assert str(caught.value) == (f"config file {str(cfg)!r}, line 2: unknown key 'labels' "
                                 "(did you mean 'label'?)")
    cfg.write_text("interval: 5\ntoken_fle: /x\n")  # a typo: the closest key is offered
    with pytest.raises(ConfigError, match=r"line 2: unknown key 'token_fle' \(did you mean 'token_file'\?\)"):
        config.config_file_values(argparse.Namespace(config=str(cfg)), {}, known)
    cfg.write_text("interval: 5\nzzz: 1\n")
    with pytest.raises(ConfigError) as nothing_close:
        config.config_file_values(argparse.Namespace(config=str(cfg)), {}, known)
    assert str(nothing_close.value).endswith("line 2: unknown key 'zzz'")


def test_nested_keys_know_their_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sites:\n  dc1:\n    timezone: UTC\n    pue: 0.5\nplan:\n  - {site: dc1}\n  - site: dc2\n"
                   "    cost: -1\n")
    doc = config.load_yaml(cfg)
    assert doc.where("sites", "dc1", "pue") == f" (in {str(cfg)!r}, line 4)"
    assert doc.where("plan", 1, "cost") == f" (in {str(cfg)!r}, line 8)"
    assert doc.where("plan", 0, "month") == f" (in {str(cfg)!r}, line 6)"  # not written: its entry's line
    assert doc.where("nowhere") == ""


def test_the_collector_names_the_line_of_a_bad_nested_key(tmp_path: Path) -> None:
    from wattledger.cli import build_parser
    from wattledger.collector.settings import load_settings

    conf = tmp_path / "collector.yaml"
    conf.write_text("listen: 127.0.0.1:1000\nsites:\n  default:\n    timezone: UTC\n    price_per_kwh: 0.1\n"
                    "    pue: 0.5\n")
    args = build_parser().parse_args(["collector", "--config", str(conf)])
    with pytest.raises(ConfigError) as caught:
        load_settings(args, {})
    assert str(caught.value).startswith("config key sites.default.pue: ")
    assert str(caught.value).endswith(f"(in {str(conf)!r}, line 6)")
