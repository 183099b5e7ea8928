"""Write the Grafana dashboards' JSON: `python -m dashboards.build [--out DIR] [--currency EUR] [--check]`.

The JSON is committed beside this code (dashboards/json/) and provisioned into Grafana by
dashboards/provisioning/; `--check` exits 1 when the committed files differ from what the code
generates (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import chargeback, cost, fleet, health

OUT = Path(__file__).resolve().parent / "json"
GRID_WIDTH = 24


def boards(currency: str) -> dict[str, Callable[[], db.Dashboard]]:
    """File name -> dashboard factory."""
    return {
        "fleet-power-thermal.json": fleet.build,
        "energy-cost-plan.json": lambda: cost.build(currency),
        "health.json": health.build,
        "chargeback.json": lambda: chargeback.build(currency),
    }


def _layout(panels: list[dict[str, Any]]) -> None:
    """Flow panels left to right in rows of 24 columns; a row panel starts a new line. Panel ids
    are assigned in order so links and alert annotations stay stable between builds."""
    x = y = line_height = 0
    for pid, p in enumerate(panels, start=1):
        p["id"] = pid
        pos = p.setdefault("gridPos", {"h": 8, "w": 12})
        w, h = int(pos.get("w", 12)), int(pos.get("h", 8))
        if p.get("type") == "row":
            y += line_height
            p["gridPos"] = {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}
            p.setdefault("panels", [])
            x, y, line_height = 0, y + 1, 0
            continue
        if x + w > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        line_height = max(line_height, h)


def render(builder: db.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, laid out, with what the SDK cannot say yet."""
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    _layout(model["panels"])
    for a in model.get("annotations", {}).get("list", []):
        if a.get("expr", "").startswith("ALERTS"):
            # the Prometheus annotation options Grafana reads; not modelled by the SDK
            a.update({"step": "60s", "titleFormat": "{{alertname}}",
                      "tagKeys": "severity,site,node,gpu", "useValueForTime": False})
    return model


def to_text(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate(currency: str = "USD") -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: to_text(render(factory())) for name, factory in boards(currency).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for the JSON (default: {OUT})")
    parser.add_argument("--currency", default="USD", help="ISO code shown on money panels (default: USD)")
    parser.add_argument("--check", action="store_true", help="only compare with the files in --out")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generate(args.currency).items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("out of date (run `python -m dashboards.build`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
