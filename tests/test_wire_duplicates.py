"""Property test of "a key is given once": whatever the strings hold (colons, quotes,
backslashes, escapes, any script) and whatever unknown keys a sender adds, a body is refused as
`duplicate key` exactly when some object of it gives a key twice (wire.duplicate_key counts
colons; this holds it against an exact pair-by-pair reading)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wattledger.wire import BatchError, validate

NOW = 1_764_260_000.0
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
TRICKY = st.one_of(TEXT, st.sampled_from([":", '":', '\\":"', "a:b:c", "\\u003a", "[1:2]", '"}', "{:}"]))


class Obj:
    """A JSON object as a list of pairs, so that a key can be given twice."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def dump(value: Any, ascii_only: bool) -> str:
    if isinstance(value, Obj):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=ascii_only)}: {dump(v, ascii_only)}"
                               for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bool]:
    """(a valid batch as JSON text, whether some key in it is given twice)."""
    n_dev = draw(st.integers(1, 3))
    ids = draw(st.lists(TRICKY.filter(lambda s: 1 <= len(s) <= 128), min_size=n_dev, max_size=n_dev,
                        unique=True))
    devices = [Obj([("id", i), ("kind", "gpu"), ("index", k),
                    *([("model", draw(TRICKY))] if draw(st.booleans()) else [])]) for k, i in enumerate(ids)]
    labels = Obj(list(draw(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), TRICKY,
                                           max_size=3)).items()))
    readings = Obj([("device", list(range(n_dev))), ("ts", [NOW - 1.0] * n_dev),
                    ("power_w", [300.5] * n_dev)])
    top: list[tuple[str, Any]] = [("node", "gpu-node-01"), ("stream", "s:1"), ("seq", 3), ("labels", labels),
                                  ("devices", devices), ("readings", readings)]
    objects: list[Obj] = [labels, readings, *devices]
    if draw(st.booleans()):
        owner = Obj(list(draw(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), TRICKY,
                                              min_size=1, max_size=3)).items()))
        allocation = Obj([("devices", [0]), ("from", NOW - 50.0), ("to", None), ("owner", owner)])
        top.append(("allocations", [allocation]))
        objects += [owner, allocation]
    if draw(st.booleans()):  # a key the schema does not know: ignored, and never mistaken
        top.append((draw(TRICKY.filter(lambda k: k not in {p[0] for p in top})), draw(TRICKY)))
    body = Obj(top)
    objects.append(body)
    twice = draw(st.booleans())
    if twice:
        where = draw(st.sampled_from([o for o in objects if o.pairs]))
        where.pairs.insert(draw(st.integers(0, len(where.pairs))), draw(st.sampled_from(where.pairs)))
    return dump(body, draw(st.booleans())), twice


@settings(max_examples=400, deadline=None)
@given(case=bodies())
def test_a_body_is_refused_for_a_duplicate_key_exactly_when_it_has_one(case: tuple[str, bool]) -> None:
    text, twice = case
    try:
        validate(text.encode(), NOW)
        refused = None
    except BatchError as exc:
        refused = exc
    if twice:
        assert refused is not None and refused.reason.startswith("duplicate key "), refused
    else:
        assert refused is None, refused
