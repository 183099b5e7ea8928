"""From a Prometheus remote-write request's series to the batches the Bookkeeper books
(DESIGN.md, "Intake from an existing Prometheus"; docs/remote-write.md has the table).

Series taken: dcgm-exporter's ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (mJ), ``_POWER_USAGE`` (W),
``_GPU_TEMP``, ``_MEMORY_TEMP`` (°C), ``_GPU_UTIL`` (%), and the agent's own ``wattledger_gpu_*``
families. A device is (node, UUID): the ``UUID``/``uuid`` label, on the node named by
``Hostname``/``hostname`` (else ``instance`` without its port; the agent's families: ``node``),
so a device that an agent's batches also feed is the same device, counted once. A device's
*reading* is its samples of one timestamp in this request; whatever a reading lacks is null,
as in an agent's batch. ``namespace``/``pod``/``container`` (or, where Prometheus renamed a
target's own, ``exported_namespace``/``exported_pod``/``exported_container``) allocate the
interval that ends at that sample: a device's readings are cut into runs held by the same pods,
each run in a batch of its own (``_add_batch``).

Nothing here refuses a request for its values: a sample the ledger cannot use is skipped and
counted by outcome (a 4xx would make Prometheus drop the whole request, other GPUs' samples
with it). Only a series' ``site`` label that names a site other than the token's refuses it.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from wattledger.contract import (
    DEVICE_ID_MAX_LENGTH,
    DEVICE_MODEL_MAX_LENGTH,
    MAX_ALLOCATIONS,
    MAX_DEVICE_INDEX,
    MAX_DEVICES,
    MAX_FUTURE_SECONDS,
    OWNER_VALUE_MAX_LENGTH,
    is_node_name,
)
from wattledger.wire import NON_NEGATIVE, RATIOS, Batch, BatchError, ValidBatch, check_batch

#: Prometheus' stale marker: a NaN of this exact bit pattern (a series that went away)
STALE_NAN_BITS = 0x7FF0000000000002
#: what becomes of a sample (``wattledger_remote_write_samples_total{outcome}``)
OUTCOMES = ("accepted", "late", "agent", "stale", "nan", "invalid", "duplicate", "ignored")

#: series -> (reading column, factor to its base unit)
READING_SERIES: dict[str, tuple[str, float]] = {
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_j", 1e-3),  # mJ counter
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", 1.0),
    "DCGM_FI_DEV_GPU_TEMP": ("temp_c", 1.0),
    "DCGM_FI_DEV_MEMORY_TEMP": ("mem_temp_c", 1.0),
    "DCGM_FI_DEV_GPU_UTIL": ("util", 0.01),  # percent
    "wattledger_gpu_power_watts": ("power_w", 1.0),
    "wattledger_gpu_energy_joules_total": ("energy_j", 1.0),
    "wattledger_gpu_utilization_ratio": ("util", 1.0),
    "wattledger_gpu_memory_used_bytes": ("mem_used_bytes", 1.0),
}
#: the agent's temperature family: its ``sensor`` label says which column
TEMPERATURE_SERIES = "wattledger_gpu_temperature_celsius"
SENSOR_COLUMNS = {"gpu": "temp_c", "memory": "mem_temp_c"}
#: series that describe the device (its newest value in the request), not a reading: the
#: agent's, and DCGM's fields for the same (not among dcgm-exporter's default counters: add them
#: to its counters CSV to give remote-write GPUs a power limit and thermal thresholds)
INFO_SERIES: dict[str, str] = {
    "wattledger_gpu_power_limit_watts": "power_limit_w",
    "wattledger_gpu_slowdown_temperature_celsius": "slowdown_c",
    "wattledger_gpu_shutdown_temperature_celsius": "shutdown_c",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "power_limit_w",  # W
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": "power_limit_w",  # W
    "DCGM_FI_DEV_SLOWDOWN_TEMP": "slowdown_c",  # °C
    "DCGM_FI_DEV_SHUTDOWN_TEMP": "shutdown_c",  # °C
}
_COLUMNS = ("power_w", "energy_j", "temp_c", "mem_temp_c", "util", "mem_used_bytes")
_LOW_ZERO = frozenset(NON_NEGATIVE)
_RATIOS = frozenset(RATIOS)
_OWNER_KEYS = ("namespace", "pod", "container")


class LabelsLike(Protocol):
    name: str
    value: str


class SampleLike(Protocol):
    value: float
    timestamp: int


class SeriesLike(Protocol):
    """A ``prometheus.TimeSeries`` (prompb/remote_pb2), or anything shaped like it."""

    @property
    def labels(self) -> Sequence[Any]: ...
    @property
    def samples(self) -> Sequence[Any]: ...


class SiteRefused(BatchError):
    """A series whose ``site`` label is not the token's site: the whole request is refused."""


@dataclass(frozen=True)
class Source:
    """Who wrote: the ``remote_write_tokens`` entry the token names."""

    name: str
    site: str
    cluster: str = ""


@dataclass
class _Device:
    index: int = 0
    model: str | None = None
    info: dict[str, tuple[int, float]] = field(default_factory=dict)  # key -> (ms, value): newest
    #: ms -> column -> value, and ms -> the samples of that reading
    readings: dict[int, dict[str, float]] = field(default_factory=dict)
    samples: Counter[int] = field(default_factory=Counter)
    owners: dict[int, list[dict[str, str]]] = field(default_factory=dict)


@dataclass
class Mapped:
    """A request's batches (one or more per node) and what became of its samples."""

    batches: list[ValidBatch] = field(default_factory=list)
    #: per batch, the samples each of its readings is made of (to count the late ones)
    samples: list[list[int]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def is_stale(value: float) -> bool:
    bits: int = struct.unpack("<Q", struct.pack("<d", value))[0]
    return bits == STALE_NAN_BITS


def _labels(series: SeriesLike) -> dict[str, str]:
    return {label.name: label.value for label in series.labels}


def node_of(labels: Mapping[str, str], agent: bool) -> str | None:
    """The node a series is of: the agent's ``node``; dcgm-exporter's ``Hostname``, else the
    scrape's ``instance`` without its port. None when that is no valid node name."""
    if agent:
        name = labels.get("node", "")
    else:
        name = labels.get("Hostname") or labels.get("hostname") or ""
        if not name:
            instance = labels.get("instance", "")
            host, colon, port = instance.rpartition(":")
            name = host if colon and port.isdigit() and not host.endswith(":") else instance
    return name if is_node_name(name) else None


def owner_of(labels: Mapping[str, str]) -> dict[str, str] | None:
    """The pod holding the device (dcgm-exporter's Kubernetes labels); None: no pod named."""
    exported = labels.get("exported_pod")
    prefix = "exported_" if exported else ""
    if not labels.get(f"{prefix}pod"):
        return None
    owner = {key: value for key in _OWNER_KEYS if (value := labels.get(f"{prefix}{key}", ""))}
    if any(len(value) > OWNER_VALUE_MAX_LENGTH for value in owner.values()):
        return None
    return owner


def _target(name: str, labels: Mapping[str, str]) -> tuple[str, bool] | None:
    """(what the series feeds: a reading column or ``info:KEY``, whether it is the agent's)."""
    if name in READING_SERIES:
        return READING_SERIES[name][0], name.startswith("wattledger_")
    if name == TEMPERATURE_SERIES:
        column = SENSOR_COLUMNS.get(labels.get("sensor", ""))
        return (column, True) if column else None
    if name in INFO_SERIES:
        return f"info:{INFO_SERIES[name]}", name.startswith("wattledger_")
    return None


def _usable(column: str, value: float) -> bool:
    if column in _LOW_ZERO and value < 0:
        return False
    return not (column in _RATIOS and value > 1)


def map_request(series: Iterable[SeriesLike], source: Source, sites: Iterable[str], now: float) -> Mapped:
    """The request's batches, with every sample counted by what became of it (late ones are
    known only once committed: the caller counts them from the ledger's answer)."""
    out = Mapped()
    counts = out.counts
    devices: dict[tuple[str, str], _Device] = {}
    known_sites = frozenset(sites)
    horizon_ms = (now + MAX_FUTURE_SECONDS) * 1000.0
    for one in series:
        labels = _labels(one)
        n = len(one.samples)
        name = labels.get("__name__", "")
        target = _target(name, labels)
        if target is None:
            counts["ignored"] += n
            continue
        site = labels.get("site")
        if site is not None and site != source.site:
            if site not in known_sites:
                raise SiteRefused(422, "unknown site", "labels.site",
                                  f"series {name} names site {site!r}, which is not configured on this "
                                  "collector")
            raise SiteRefused(403, "forbidden", "labels.site",
                              f"series {name} names site {site!r}, but this token writes to site "
                              f"{source.site!r}")
        column, agent = target
        uuid = labels.get("uuid") if agent else (labels.get("UUID") or labels.get("uuid"))
        node = node_of(labels, agent)
        if not uuid or len(uuid) > DEVICE_ID_MAX_LENGTH or node is None:
            counts["invalid"] += n
            continue
        device = devices.get((node, uuid))
        if device is None:
            device = devices[(node, uuid)] = _Device()
        gpu = labels.get("gpu", "")
        if gpu.isdigit() and int(gpu) <= MAX_DEVICE_INDEX:
            device.index = int(gpu)
        model = labels.get("model" if agent else "modelName")
        if model:
            device.model = model[:DEVICE_MODEL_MAX_LENGTH]
        owner = None if agent else owner_of(labels)
        scale = 1.0 if column.startswith("info:") else READING_SERIES.get(name, (column, 1.0))[1]
        for sample in one.samples:
            value, ms = float(sample.value), int(sample.timestamp)
            if math.isnan(value):
                counts["stale" if is_stale(value) else "nan"] += 1
                continue
            value *= scale
            if math.isinf(value) or ms < 0 or ms > horizon_ms or not _usable(column, value):
                counts["invalid"] += 1
                continue
            if column.startswith("info:"):
                key = column[5:]
                if value <= 0:  # DCGM's 0: the GPU reports none
                    counts["ignored"] += 1
                    continue
                if ms >= device.info.get(key, (-1, 0.0))[0]:
                    device.info[key] = (ms, value)
                counts["accepted"] += 1
                continue
            reading = device.readings.setdefault(ms, {})
            # time-slicing: one series per pod sharing the GPU, each a holder of the reading
            held = device.owners.setdefault(ms, []) if owner is not None else []
            if owner is not None and owner not in held and len(held) < MAX_ALLOCATIONS:
                held.append(owner)
            if column in reading:  # the same value again from another series of the device
                counts["duplicate"] += 1
                continue
            reading[column] = value
            device.samples[ms] += 1
    by_node: dict[str, list[tuple[str, _Device]]] = {}
    for (node, uuid), device in sorted(devices.items()):
        if device.readings:
            by_node.setdefault(node, []).append((uuid, device))
    for node, units in by_node.items():
        for chunk in _chunks(units):
            _add_batch(out, node, chunk, source, now)
    return out


#: an owner as a hashable key, and the owners of one reading
OwnerKey = tuple[tuple[str, str], ...]
Run = tuple[tuple[OwnerKey, ...], list[int]]  # a run's owners, its readings' timestamps (ms)


def runs_of(device: _Device) -> list[Run]:
    """The device's readings cut where the pods holding it change: each run is held throughout
    by the same owners (none: idle)."""
    runs: list[Run] = []
    for ms in sorted(device.readings):
        owners = tuple(sorted(tuple(sorted(o.items())) for o in device.owners.get(ms, ())))
        if runs and runs[-1][0] == owners:
            runs[-1][1].append(ms)
        else:
            runs.append((owners, [ms]))
    return runs


def _chunks(units: list[tuple[str, _Device]]) -> Iterable[list[tuple[str, _Device, Run]]]:
    """A node's batches: the k-th run of each device in the k-th layer of batches, each layer cut
    so that no batch has more devices or allocations than the wire allows (all the batches of a
    request commit together)."""
    layers: list[list[tuple[str, _Device, Run]]] = []
    for uuid, device in units:
        for k, run in enumerate(runs_of(device)):
            if k == len(layers):
                layers.append([])
            layers[k].append((uuid, device, run))
    for layer in layers:
        chunk: list[tuple[str, _Device, Run]] = []
        owners = 0
        for unit in layer:
            n = len(unit[2][0])
            if chunk and (len(chunk) >= MAX_DEVICES or owners + n > MAX_ALLOCATIONS):
                yield chunk
                chunk, owners = [], 0
            chunk.append(unit)
            owners += n
        if chunk:
            yield chunk


def _add_batch(out: Mapped, node: str, chunk: list[tuple[str, _Device, Run]], source: Source,
               now: float) -> None:
    """One batch: one run of each of its devices, each run's owners an allocation of it from 0 to
    its last reading. The contract gives a pod the intervals that END at its samples, wherever
    they start (the device's last committed reading, which only the transaction knows): a run in
    a batch of its own is that exactly, since an interval is split by the allocations of the
    batch that carries its end. From 0, an owner's allocation is the same (node, owner, start)
    in every request, so the chargeback keeps one holder per pod."""
    devices: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {"device": [], "ts": [], **{c: [] for c in _COLUMNS}}
    allocations: list[dict[str, Any]] = []
    samples: list[int] = []
    for position, (uuid, device, (owners, stamps)) in enumerate(chunk):
        info: dict[str, Any] = {"id": uuid, "kind": "gpu", "index": device.index, "model": device.model}
        info.update({key: value for key, (_, value) in device.info.items()})
        devices.append(info)
        for ms in stamps:
            reading = device.readings[ms]
            columns["device"].append(position)
            columns["ts"].append(ms / 1000.0)
            for c in _COLUMNS:
                columns[c].append(reading.get(c))
            samples.append(device.samples[ms])
        allocations += [{"devices": [position], "from": 0.0, "to": stamps[-1] / 1000.0, "owner": dict(owner)}
                        for owner in owners]
    labels = {"site": source.site, **({"cluster": source.cluster} if source.cluster else {})}
    # stream and seq are placeholders (ValidBatch.remote): nothing is deduped or stored by them
    readings = {k: v for k, v in columns.items()
                if k in ("device", "ts", "power_w") or any(x is not None for x in v)}
    doc = {"node": node, "stream": f"remote-write:{source.name}"[:128], "seq": 1, "labels": labels,
           "devices": devices, "readings": readings, "allocations": allocations}
    try:
        batch = Batch.model_validate(doc)
        valid = ValidBatch(batch, check_batch(batch, now), remote=True)
    except (ValidationError, BatchError):  # not expected: every value was screened above
        out.counts["invalid"] += sum(samples)
        return
    out.batches.append(valid)
    out.samples.append(samples)
