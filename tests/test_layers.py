"""The package's layers, read from its imports (every import, at module level or inside a
function): the collector reads top-down api -> service -> ingest | readmodel -> store ->
accounting -> sites and the wire contract; the read model never reaches into ingest, nor ingest
into the read model; the agent never imports the collector, the planner or the demo; no
production module imports the demo (the command line's dispatcher starts it); and no two
modules import each other, even through others, when they are loaded."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import wattledger

ROOT = Path(wattledger.__file__).parent
#: rank of each layer (a prefix of module names): a module imports only its own rank or lower
RANKS = {
    "wattledger.contract": 0, "wattledger.wire": 0, "wattledger.config": 0, "wattledger.tuning": 0,
    "wattledger.collector.sites": 1, "wattledger.collector.teams": 1, "wattledger.collector.accounting": 1,
    "wattledger.collector.store": 2,
    "wattledger.collector.ingest": 3, "wattledger.collector.readmodel": 3,
    "wattledger.collector.settings": 4,
    "wattledger.collector.service": 5,
    "wattledger.collector.api": 6,
    "wattledger.collector.cli": 7,
}
#: (importer prefix, imported prefix) pairs that must never occur
FORBIDDEN = [
    ("wattledger.collector.readmodel", "wattledger.collector.ingest"),
    ("wattledger.collector.ingest", "wattledger.collector.readmodel"),
    ("wattledger.agent", "wattledger.collector"),
    ("wattledger.agent", "wattledger.plan"),
    ("wattledger.agent", "wattledger.demo"),
    ("wattledger.collector", "wattledger.demo"),
    ("wattledger.plan", "wattledger.demo"),
    # the planner builds on the collector's accounting; of the collector, only its HTTP layer
    # calls the planner (POST /v1/plan: collector/api/planning.py)
    *(("wattledger.collector." + part, "wattledger.plan")
      for part in ("sites", "accounting", "store", "ingest", "readmodel", "settings", "service", "cli")),
]
#: the only module outside the demo that may import it: the dispatcher of `wattledger demo`
DEMO_STARTERS = {"wattledger.cli"}


def modules() -> dict[str, Path]:
    found = {"wattledger": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], "wattledger."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None
        found[info.name] = Path(spec.origin)
    return found


def imports(name: str, path: Path, known: set[str], *, top_level_only: bool) -> set[str]:
    """The package's modules that ``name`` imports (``from a import b`` of a module b: a.b)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.add(target if target in known else base)
    return {m for m in out if m in known and m != name}


def rank(name: str) -> int | None:
    best = max((p for p in RANKS if name == p or name.startswith(p + ".")), key=len, default=None)
    return None if best is None else RANKS[best]


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


MODULES = modules()
GRAPH = {name: imports(name, path, set(MODULES), top_level_only=False) for name, path in MODULES.items()}


def test_every_module_imports() -> None:
    failed = {}
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the test reports them all at once
            failed[name] = repr(exc)
    assert failed == {}


def test_the_collector_reads_top_down() -> None:
    upward = [f"{a} imports {b}" for a, targets in GRAPH.items() for b in sorted(targets)
              if rank(a) is not None and rank(b) is not None and rank(b) > rank(a)]  # type: ignore[operator]
    assert upward == []


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN)
def test_forbidden_imports(importer: str, imported: str) -> None:
    found = [f"{a} imports {b}" for a, targets in GRAPH.items() if under(a, importer)
             for b in sorted(targets) if under(b, imported)]
    assert found == []


def test_only_the_plan_endpoint_calls_the_planner() -> None:
    found = {a for a, targets in GRAPH.items() if under(a, "wattledger.collector")
             and any(under(b, "wattledger.plan") for b in targets)}
    assert found == {"wattledger.collector.api.planning"}


def test_only_the_dispatcher_starts_the_demo() -> None:
    found = [a for a, targets in GRAPH.items() if not under(a, "wattledger.demo") and a not in DEMO_STARTERS
             and any(under(b, "wattledger.demo") for b in targets)]
    assert found == []


def test_no_import_cycles() -> None:
    graph = {name: imports(name, path, set(MODULES), top_level_only=True) for name, path in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    assert cycles == []


def test_the_graph_sees_imports_at_every_level() -> None:
    # module level, inside a function (the store is loaded when a ledger opens), and a package's
    assert "wattledger.collector.ingest.transaction" in GRAPH["wattledger.collector.service"]
    assert "wattledger.collector.service" in GRAPH["wattledger.collector.api.app"]
    assert "wattledger.collector.store.postgres" in GRAPH["wattledger.collector.store"]
