"""Dedupe by (stream, seq): which batches of a group are new, and the marks that say so.

A stream's committed seqs are every seq up to its low-water mark plus the few above it (a seq
committed out of order, which agents never do but a test or a replayed spool may). The state
comes from the store, locked for the group's transaction (``IngestUnit.hold``), so two
replicas given the same batch at the same instant decide one after the other: the second sees
the first's mark and answers "duplicate".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from wattledger.collector.store.base import StreamState
from wattledger.wire import ValidBatch


def fresh(batches: Sequence[ValidBatch], states: Mapping[str, StreamState]) -> list[bool]:
    """Per batch: not committed yet, and the first with its (stream, seq) in the group (a
    remote-write batch has none: always fresh, its late readings add nothing)."""
    seen: set[tuple[str, int]] = set()
    out = []
    for vb in batches:
        b = vb.batch
        if vb.remote:
            out.append(True)
            continue
        key = (b.stream, b.seq)
        out.append(not states[b.stream].committed(b.seq) and key not in seen)
        seen.add(key)
    return out


def advance(states: Mapping[str, StreamState], batches: Sequence[ValidBatch]
            ) -> tuple[list[tuple[str, str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
    """Mark each batch's seq committed (``states`` changes); the rows that say so: (stream, node,
    low) per stream moved, seqs added above a low mark, seqs the low mark caught up with."""
    added: list[tuple[str, int]] = []
    dropped: list[tuple[str, int]] = []
    touched: set[str] = set()
    for vb in sorted(batches, key=lambda v: (v.batch.stream, v.batch.seq)):
        b = vb.batch
        state = states[b.stream]
        touched.add(b.stream)
        if b.seq == state.low + 1:
            state.low = b.seq
            while state.low + 1 in state.above:
                state.low += 1
                state.above.discard(state.low)
                dropped.append((b.stream, state.low))
        else:
            state.above.add(b.seq)
            added.append((b.stream, b.seq))
    # a seq added and dropped within this call never reaches the store
    both = set(added) & set(dropped)
    added = [a for a in added if a not in both]
    dropped = [d for d in dropped if d not in both]
    rows = [(s, states[s].node, states[s].low) for s in sorted(touched)]
    return rows, added, dropped
