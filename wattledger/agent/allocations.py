"""Who held which device when: successive holdings of the allocation sources become
allocations with a start and an end (docs/delivery.md, "Allocations").

An allocation source (Kubernetes, Slurm, the process list) says at each sample who holds
devices *now* (:class:`Holding`). The tracker turns that into allocations with ``start`` /
``end`` (the wire's ``from`` / ``to``):

- a holding first seen starts an allocation at its ``since`` (when the source knows it, e.g. a
  Slurm prolog), else at the sample it was first seen in; never before the end of the last
  allocation of the same key (one key never overlaps itself);
- a holding whose devices, owner or weight change ends its allocation at that sample, and a new
  one starts there (no gap, no overlap);
- a holding given ``until`` (an epilog) ends there; one no longer listed, or whose source failed,
  ends at the last sample it was seen in: an allocation covers the time it was seen held.

Only what changed since the last :meth:`drain` is handed on, for the spool to store in the same
transaction as the sample. Holdings a source got wrong (an owner the wire would refuse, no
device, a weight that is not a positive number) are left out and logged once per source, so
that a bad holding never makes the collector refuse a batch of readings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from wattledger.agent.sources.base import Holding
from wattledger.contract import MAX_ALLOCATIONS, owner_problem

log = logging.getLogger(__name__)

#: ends remembered per key (so a key seen again never overlaps its last allocation)
MAX_REMEMBERED_ENDS = 100_000


@dataclass(frozen=True, slots=True)
class Allocation:
    """One allocation as the spool keeps it: devices by id (the batch maps them to positions)."""

    source: str
    key: str
    device_ids: tuple[str, ...]
    owner: Mapping[str, str]
    weight: float
    start: float
    end: float | None = None  # None: still held

    def same_holding(self, h: Holding) -> bool:
        return (self.device_ids == tuple(h.device_ids) and dict(self.owner) == dict(h.owner)
                and self.weight == float(h.weight))

    def overlaps(self, since: float, until: float) -> bool:
        """Whether it holds some instant of the span ``(since, until]``."""
        return self.start < until and (self.end is None or self.end > since)


def holding_problem(h: Holding) -> str | None:
    """Why a holding cannot become an allocation the wire accepts (None when it can)."""
    if not isinstance(h.key, str) or not h.key:
        return "its key is empty"
    if not h.device_ids or not all(isinstance(d, str) and d for d in h.device_ids):
        return "it names no device"
    problem = owner_problem(dict(h.owner) if isinstance(h.owner, Mapping) else h.owner)
    if problem is not None:
        return f"owner {problem}"
    if isinstance(h.weight, bool) or not isinstance(h.weight, int | float) or not (
            math.isfinite(h.weight) and h.weight > 0):
        return f"weight must be a number > 0, not {h.weight!r}"
    for name in ("since", "until"):
        value = getattr(h, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or value < 0):
            return f"{name} must be unix seconds, not {value!r}"
    return None


class AllocationTracker:
    """Holdings in, allocations out. Not thread-safe: the sampler calls it under its lock."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], tuple[Allocation, float]] = {}  # -> (it, last seen)
        self._ended: dict[tuple[str, str], float] = {}  # the last end of each key
        self._changed: dict[tuple[str, str, float], Allocation] = {}
        self._complained: set[str] = set()

    def resume(self, allocations: Iterable[Allocation], last_seen: float | None,
               sources: Collection[str]) -> None:
        """Take up the allocations still open when the agent stopped (from the spool). They
        continue if their source lists them again as they were; otherwise they end where they
        were last seen (``last_seen``: the last reading spooled), which for a source that is no
        longer configured is now."""
        for a in allocations:
            if a.end is not None:
                self._remember_end(a.source, a.key, a.end)
                continue
            seen = max(a.start, last_seen if last_seen is not None else a.start)
            self._open[(a.source, a.key)] = (a, seen)
        for source in {s for s, _ in self._open} - set(sources):
            self._end_source(source)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def observe(self, source: str, ts: float, holdings: Sequence[Holding] | None) -> None:
        """What ``source`` listed at the sample ``ts``; None when it failed (its holdings end)."""
        if holdings is None:
            self._end_source(source)
            return
        listed: dict[str, Holding] = {}
        for h in holdings:
            problem = holding_problem(h)
            if problem is not None:
                self._complain(source, f"a holding of {source} is left out ({problem}): {h.key!r}")
                continue
            listed.setdefault(h.key, h)  # a key listed twice: the first counts
        for (src, key), (a, seen) in list(self._open.items()):
            if src == source and key not in listed:
                self._end((src, key), a, seen)
        for key, h in listed.items():
            self._take(source, key, h, ts)

    def _take(self, source: str, key: str, h: Holding, ts: float) -> None:
        ident = (source, key)
        found = self._open.get(ident)
        if found is not None and found[0].same_holding(h):
            a = found[0]
            self._open[ident] = (a, ts)
            if h.until is not None:
                self._end(ident, a, max(a.start, float(h.until)))
            return
        if found is not None:  # devices, owner or weight changed: hand over at this sample
            self._end(ident, found[0], max(found[0].start, ts))
            start = ts
        else:
            last_end = self._ended.get(ident)
            if h.until is not None and last_end is not None and h.until <= last_end:
                return  # ended already (its epilog is still listed)
            start = min(float(h.since), ts) if h.since is not None else ts
            if last_end is not None:
                start = max(start, last_end)
        a = Allocation(source, key, tuple(h.device_ids), dict(h.owner), float(h.weight), start)
        if h.until is not None:
            self._end(ident, a, max(start, float(h.until)))
        else:
            self._open[ident] = (a, ts)
            self._changed[(source, key, start)] = a

    def _end(self, ident: tuple[str, str], a: Allocation, at: float) -> None:
        self._open.pop(ident, None)
        ended = replace(a, end=at)
        self._changed[(a.source, a.key, a.start)] = ended
        self._remember_end(a.source, a.key, at)

    def _end_source(self, source: str) -> None:
        for ident, (a, seen) in list(self._open.items()):
            if ident[0] == source:
                self._end(ident, a, seen)

    def _remember_end(self, source: str, key: str, at: float) -> None:
        ends = self._ended
        ends.pop((source, key), None)
        ends[(source, key)] = at
        if len(ends) > MAX_REMEMBERED_ENDS:  # the oldest ends go first (dicts keep order)
            for old in list(ends)[:len(ends) - MAX_REMEMBERED_ENDS]:
                del ends[old]

    def _complain(self, source: str, message: str) -> None:
        if source not in self._complained:
            self._complained.add(source)
            log.warning("%s (said once per source)", message)

    def drain(self) -> list[Allocation]:
        """The allocations started or ended since the last call (each in its latest state)."""
        changed = list(self._changed.values())
        self._changed.clear()
        return changed


# ---------------------------------------------------------------------------- into batches

#: an ended allocation none of whose devices reported for this long is forgotten by the spool
FORGET_AFTER_SECONDS = 86400.0


def for_batch(allocations: Iterable[Allocation], spans: Mapping[str, tuple[float, float]],
              position: Mapping[str, int], limit: int = MAX_ALLOCATIONS,
              cuts: Mapping[str, float] | None = None) -> list[dict[str, object]]:
    """The wire allocations of one batch: each allocation that holds, for one of its devices in
    the batch, some instant of that device's span ``(previous reading, last reading]`` (the
    previous reading in an earlier batch, else its first in this one), with its devices given
    as positions; and each whose end came after every one of its devices was cut past it (see
    :func:`ended_after_its_cuts`). At most ``limit`` (the contract's bound): the latest started
    are kept."""
    chosen: list[Allocation] = []
    for a in allocations:
        if any(d in spans and a.overlaps(*spans[d]) for d in a.device_ids) or (
                cuts is not None and ended_after_its_cuts(a, spans, cuts)):
            chosen.append(a)
    if len(chosen) > limit:
        log.error("a batch overlaps %d allocations, more than the %d a batch carries: the %d that "
                  "started first are left out (their devices' time counts as idle)",
                  len(chosen), limit, len(chosen) - limit)
        chosen = sorted(chosen, key=lambda a: a.start)[-limit:]
    return [{"devices": sorted(position[d] for d in a.device_ids if d in position), "from": a.start,
             "to": a.end, "weight": a.weight, "owner": dict(a.owner)} for a in chosen]


def ended_after_its_cuts(a: Allocation, spans: Mapping[str, tuple[float, float]],
                         cuts: Mapping[str, float]) -> bool:
    """Whether ``a`` ended at or before the last cut reading of each of its devices and one of
    them is in this batch. A holding's end is the last sample that listed it, known only at the
    next sample: when a batch was cut in between, it carried the allocation open up to that
    very reading, no later span overlaps it, and without this the collector would never learn
    that the job ended. Carried once: after this cut no device can need it (:func:`still_needed`)."""
    end = a.end
    return (end is not None and any(d in spans for d in a.device_ids)
            and all(cuts.get(d, -math.inf) >= end for d in a.device_ids))


def still_needed(a: Allocation, cuts: Mapping[str, float], newest_cut: float) -> bool:
    """Whether a later batch may still carry ``a``: it is open, or one of its devices' next span
    (from its last reading cut so far) can overlap it; a device that never reports again keeps
    an ended allocation for :data:`FORGET_AFTER_SECONDS` at most."""
    if a.end is None:
        return True
    if a.end < newest_cut - FORGET_AFTER_SECONDS:
        return False
    return any(cuts.get(d, float("-inf")) < a.end for d in a.device_ids)
