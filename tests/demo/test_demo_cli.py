"""`wattledger demo`'s flags: help, version, and one clear line with exit 2 for anything bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattledger.cli import main
from wattledger.demo.layout import MARKER


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = main(["demo", *args])
    except SystemExit as exc:  # argparse's own exits (--help, --version, bad flags)
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    rc, text = run(["--help"], capsys)
    assert rc == 0
    for flag in ("--state-dir", "--fresh", "--collector-port", "--prometheus-port", "--agent-port",
                 "--backfill-step", "--no-backfill", "--no-prometheus", "--plain", "--refresh"):
        assert flag in text
    rc, text = run(["--version"], capsys)
    assert rc == 0 and text.startswith("wattledger ")


@pytest.mark.parametrize(("args", "says"), [
    (["--collector-port", "70000"], "outside 0..65535"),
    (["--prometheus-port", "http"], "not a port number"),
    (["--backfill-step", "0"], "greater than 0"),
    (["--backfill-step", "7200"], "between 1 and 3600"),
    (["--refresh", "-1"], "greater than 0"),
    (["--collector-port", "9000", "--prometheus-port", "9000"], "must differ"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc, text = run([*args, "--state-dir", str(tmp_path / "demo")], capsys)
    assert rc == 2
    assert says in text
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text
    assert not (tmp_path / "demo").exists()  # nothing was started or made


def test_a_folder_that_is_not_the_demos_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    rc, text = run(["--state-dir", str(tmp_path), "--fresh"], capsys)
    assert rc == 2 and "not the demo's" in text and len(text.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").exists() and not (tmp_path / MARKER).exists()


def test_a_file_as_state_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "file"
    path.write_text("")
    rc, text = run(["--state-dir", str(path)], capsys)
    assert rc == 2 and "is not a folder" in text


def test_bad_environment_value_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WATTLEDGER_FRESH", "maybe")
    rc, text = run(["--state-dir", str(tmp_path / "demo")], capsys)
    assert rc == 2 and "WATTLEDGER_FRESH" in text and len(text.strip().splitlines()) == 1
