"""The README's picture: the demo's own view, recorded from a real demo run, saved as SVG.

    python -m wattledger.demo.picture [docs/images/demo.svg] [--settle SECONDS] [--width COLUMNS]

It runs ``wattledger demo`` (fresh, in a temporary state folder, on free ports), waits until the
month is backfilled, the live agents report and — when Prometheus runs — an alert fires (or
``--settle`` seconds have passed since the agents started), then draws that moment of the view
with rich's recording console and stops the demo.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from wattledger.demo import cli as demo_cli
from wattledger.demo.runner import Demo
from wattledger.demo.snapshot import Snapshot
from wattledger.demo.view import render

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "images" / "demo.svg"


class Moment:
    """Decides when the view is worth a picture, and keeps that snapshot."""

    def __init__(self, settle_s: float, min_live_s: float = 10.0) -> None:
        self.settle_s = settle_s
        self.min_live_s = min_live_s
        self.live_since: float | None = None
        self.chosen: Snapshot | None = None

    def __call__(self, snap: Snapshot) -> bool:
        backfilled = snap.backfill is None or snap.backfill.done
        reporting = bool(snap.servers) and all(s.power_w is not None for s in snap.servers)
        if not (backfilled and reporting):
            return False
        now = time.monotonic()
        if self.live_since is None:
            self.live_since = now
        live_for = now - self.live_since
        firing = any(a.state == "firing" for a in snap.alerts or [])
        if live_for >= self.settle_s or (firing and live_for >= self.min_live_s) or (
                snap.alerts is None and live_for >= self.min_live_s):
            self.chosen = snap
            return True
        return False


def save_svg(snap: Snapshot, out: Path, width: int) -> None:
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor")
    console.print(render(snap))
    out.parent.mkdir(parents=True, exist_ok=True)
    console.save_svg(str(out), title="wattledger demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wattledger.demo.picture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help="SVG file to write")
    parser.add_argument("--settle", type=float, default=200.0,
                        help="seconds of live running after which the picture is taken even with "
                             "no alert firing (default: 200)")
    parser.add_argument("--width", type=int, default=132, help="columns of the picture")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wattledger-picture-") as tmp:
        demo_parser = argparse.ArgumentParser()
        demo_cli.configure(demo_parser)
        # the default ports where free (the picture then shows the URLs a reader will see)
        flags = demo_parser.parse_args(["--state-dir", str(Path(tmp) / "demo"), "--fresh", "--plain",
                                        "--refresh", "2"])
        moment = Moment(args.settle)
        rc = Demo(demo_cli.settings(flags, env={}), observer=moment).run()
    if moment.chosen is None:
        sys.stderr.write(f"no picture: the demo ended (exit {rc}) before its view was complete\n")
        return 1
    save_svg(moment.chosen, args.out, args.width)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
