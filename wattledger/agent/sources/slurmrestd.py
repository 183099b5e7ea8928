"""Which Slurm job holds which GPU, asked of slurmrestd: ``GET /slurm/<version>/jobs/``.

The slurm source reads this instead of the prolog's folder when ``--slurmrestd-url`` is set
(:class:`~wattledger.agent.sources.slurm.SlurmSource`). slurmrestd answers for the whole
cluster (slurmctld's jobs, with ``SHOW_ALL|SHOW_DETAIL``, its default); what this module keeps
of each job, in the shape of Slurm's data_parser plugins v0.0.40 to v0.0.46 (the fields read
are the same in all of them):

- ``job_id``, ``account``, ``user_name``, ``partition``: the allocation's owner (``job``,
  ``account``, ``user``, ``partition``, as the prolog writes them);
- ``job_state`` (a list: the base state, then flags): ``RUNNING`` and ``SUSPENDED`` jobs hold
  their GPUs (a suspended job keeps them); a job ended (``COMPLETED``, ``FAILED``,
  ``CANCELLED``, ``TIMEOUT``, …) is listed closed at its ``end_time`` while slurmctld still
  knows it (``MinJobAge``, 300 s by default); ``PENDING`` jobs hold nothing;
- ``nodes`` (a hostlist expression, ``gpu-[01-04,07]``) and ``gres_detail`` (one string per
  node of that list, in its order: ``gpu:h100:2(IDX:0-1)``, ``gpu:4(IDX:0,2,5-6)``, and for
  shared GRES ``shard:3(3/4,0/4)`` / ``mps:50(50/100,0/100)``: per GPU, the job's count over
  the GPU's): the GPU indices the job holds on *this* node; Slurm pairs the two lists the
  same way (``scontrol show job -d``, its stepmgr);
- ``start_time`` / ``end_time`` (``{"set", "infinite", "number"}``, or a bare number in the
  data_parser's ``+complex`` mode): the allocation's ``since`` / ``until``.

GPU indices are Slurm's GRES indices on the node, the same numbering as the prolog's
``SLURM_JOB_GPUS``: the slurm source maps them to devices as it maps the prolog's files.
A shared GRES (``shard``, ``mps``) gives each GPU the job's count on it as its weight, so jobs
sharing a GPU split it by what each was given. ``gpu(CNT:n)`` (a count, no indices) and MIG
instances (a GRES type with a MIG profile, ``a100_3g.40gb``: Slurm's index is then the MIG
instance's among the node's, which no agent device carries) are left out.

The request carries ``X-SLURM-USER-TOKEN`` (the JWT, re-read from its file at every request,
so a rotated token is taken up) and, when set, ``X-SLURM-USER-NAME``; TLS is verified (the
system's trust store, or ``ca_file``), host name included. The answer is bounded
(``max_bytes``, 16 MiB by default); any status but 200, a body that is not slurmrestd's JSON, or one
that carries ``errors`` fails the read (the source is then down: its holdings end, readings
flow on unattributed).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattledger.agent.sources.base import SourceError, SourceUnavailable
from wattledger.agent.sources.remote import read_secret
from wattledger.contract import LABEL_VALUE_MAX_LENGTH

log = logging.getLogger(__name__)

#: the data_parser versions whose /jobs answer this module reads (v0.0.40: Slurm 23.11 - 25.05;
#: v0.0.46: Slurm 26.11); the default is served by Slurm 25.11, 26.05 and 26.11
VERSIONS = tuple(f"v0.0.{n}" for n in range(40, 47))
DEFAULT_VERSION = "v0.0.44"
#: the most of an answer read by default: a job is 3-20 KB in these versions (a running job's
#: per-core allocation map is most of it), and decoding holds about 5 x the answer's size in
#: memory (the shipped systemd unit gives the agent 256M)
MAX_ANSWER_BYTES = 16 << 20
#: the most names one hostlist expression may stand for (a bigger one is a broken answer)
MAX_HOSTS = 65536
HOLDING_STATES = frozenset({"RUNNING", "SUSPENDED"})
ENDED_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                          "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"})
#: GRES whose indices are whole GPUs, and those that share a GPU (count per GPU)
WHOLE_GRES, SHARED_GRES = frozenset({"gpu"}), frozenset({"shard", "mps"})
#: one GRES of a node's gres_detail: name, optional type, count, then (IDX:list) or (a/b,...)
_GRES = re.compile(r"(?P<name>[A-Za-z][\w.-]*)(?::(?P<type>[^:(),]*))?:(?P<count>\d+)"
                   r"\((?P<idx>IDX:)?(?P<detail>[^)]*)\)")
#: a MIG profile in a GRES type (AutoDetect=nvml: ``a100_3g.40gb``, ``h100_1c.3g.40gb``)
_MIG_TYPE = re.compile(r"\d+g\.\d+gb", re.IGNORECASE)
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_LEAD = re.compile(r"\D+")


@dataclass(frozen=True, slots=True)
class SlurmrestdSettings:
    url: str  # https://slurmrestd.example:6820 (http:// accepted with a warning)
    token_file: Path  # the JWT (scontrol token), re-read at every request
    node: str  # this node's NodeName in Slurm
    version: str = DEFAULT_VERSION
    user: str | None = None  # X-SLURM-USER-NAME (a SlurmUser/root token acting for a user)
    ca_file: Path | None = None  # else the system's trust store
    interval: float = 30.0  # seconds between requests
    timeout: float = 10.0  # connect and read timeout of one request
    max_bytes: int = MAX_ANSWER_BYTES  # a bigger answer fails the read (memory stays bounded)


@dataclass(frozen=True, slots=True)
class RestJob:
    """A job holding GPUs of this node, as slurmrestd tells it."""

    job: str
    owner: dict[str, str]
    since: float | None
    until: float | None  # set once the job has ended
    gpus: dict[int, float]  # Slurm's GPU index on this node -> the job's weight on it


# ---------------------------------------------------------------------------- the answer


def expand_hostlist(expr: str, limit: int = MAX_HOSTS) -> list[str]:
    """The host names of a Slurm hostlist expression, in its order (``a[01-03],b`` ->
    ``a01 a02 a03 b``; several bracket groups multiply). ValueError when it is malformed or
    stands for more than ``limit`` names."""
    names: list[str] = []
    for item in _top_level_items(expr):
        for name in _expand_item(item, limit - len(names)):
            names.append(name)
    return names


def _top_level_items(expr: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, c in enumerate(expr):
        if c == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested brackets in {expr!r}")
        elif c == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced brackets in {expr!r}")
        elif c == "," and depth == 0:
            items.append(expr[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced brackets in {expr!r}")
    items.append(expr[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_item(item: str, room: int) -> list[str]:
    open_at = item.find("[")
    if open_at < 0:
        if room < 1:
            raise ValueError("the hostlist stands for too many names")
        return [item]
    close_at = item.index("]", open_at)
    prefix, ranges, rest = item[:open_at], item[open_at + 1:close_at], item[close_at + 1:]
    tails = _expand_item(rest, room) if rest else [""]
    out: list[str] = []
    for part in ranges.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise ValueError(f"{part!r} is not a number or a range")
        first, last = match.group(1), match.group(2) or match.group(1)
        width = len(first) if first.startswith("0") else 0  # gpu[01-10]: zero-padded
        low, high = int(first), int(last)
        if high < low or len(out) + (high - low + 1) * len(tails) > room:
            raise ValueError(f"the range {part!r} is backwards or too long")
        out.extend(f"{prefix}{n:0{width}d}{tail}" for n in range(low, high + 1) for tail in tails)
    return out


def _indices(text: str) -> list[int]:
    """``0-1,3`` -> [0, 1, 3]: a bit_fmt list of GRES indices (a GPU node has a few dozen)."""
    out: list[int] = []
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise ValueError(f"{part!r} is not an index or a range")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low or high - low > 4096:
            raise ValueError(f"the range {part!r} is backwards or too long")
        out.extend(range(low, high + 1))
    return out


def gpu_weights(detail: str) -> dict[int, float]:
    """The GPUs one node's ``gres_detail`` entry names, index -> the job's weight on it: 1 for
    a whole GPU, the job's count for a shared GRES (shard, mps). Other GRES are left out, and so
    are MIG instances: Slurm numbers them among the node's MIG GRES, not as the boards the
    agent's GPU indices are, and slurmrestd gives no UUID to tell which is which."""
    out: dict[int, float] = {}
    for m in _GRES.finditer(detail):
        name = m.group("name")
        if _MIG_TYPE.search(m.group("type") or ""):
            continue
        try:
            if name in WHOLE_GRES and m.group("idx"):
                for index in _indices(m.group("detail")):
                    out[index] = 1.0
            elif name in SHARED_GRES and not m.group("idx"):
                for index, share in enumerate(m.group("detail").split(",")):
                    given = int(share.split("/", 1)[0])
                    if given > 0:
                        out[index] = out.get(index, 0.0) + float(given)
        except ValueError:
            continue  # a GRES entry this reader does not know: left out, the others kept
    return out


def timestamp(value: object) -> float | None:
    """A data_parser TIMESTAMP_NO_VAL as unix seconds; None when unset, infinite or 0."""
    if isinstance(value, Mapping):
        if value.get("set") is not True or value.get("infinite") is True:
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if value > 0 else None


def _text(value: object) -> str | None:
    return value[:LABEL_VALUE_MAX_LENGTH] if isinstance(value, str) and value else None


def job_on_node(entry: object, node: str) -> RestJob | None:
    """The job of one ``jobs`` entry as it holds GPUs of ``node``; None when it holds none there
    (another node, pending, no GPU, fields missing)."""
    if not isinstance(entry, Mapping):
        return None
    job_id, states = entry.get("job_id"), entry.get("job_state")
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id <= 0:
        return None
    state = states[0] if isinstance(states, list) and states else states  # the base state first
    if not isinstance(state, str) or (state not in HOLDING_STATES and state not in ENDED_STATES):
        return None
    since, until = timestamp(entry.get("start_time")), None
    if state in ENDED_STATES:
        until = timestamp(entry.get("end_time"))
        if since is None or until is None:
            return None  # never ran (cancelled while pending), or no end to close it at
    nodes, details = entry.get("nodes"), entry.get("gres_detail")
    if not isinstance(nodes, str) or not isinstance(details, list):
        return None
    lead = _LEAD.match(node)
    if lead is not None and lead.group() not in nodes:
        return None  # brackets only stand for digits: a node's leading letters are in the text
    try:
        position = expand_hostlist(nodes).index(node)
    except ValueError:  # not on this node (or a hostlist this reader cannot read)
        return None
    if position >= len(details) or not isinstance(details[position], str):
        return None
    gpus = gpu_weights(details[position])
    if not gpus:
        return None
    owner = {"job": str(job_id)}
    for key, field in (("account", "account"), ("user", "user_name"), ("partition", "partition")):
        value = _text(entry.get(field))
        if value is not None:
            owner[key] = value
    return RestJob(job=str(job_id), owner=owner, since=since, until=until, gpus=gpus)


def jobs_on_node(answer: object, node: str) -> list[RestJob]:
    """The jobs of a /jobs answer that hold GPUs of ``node``; SourceError when the answer is
    not one (no ``jobs`` list) or reports errors."""
    if not isinstance(answer, Mapping):
        raise SourceError("the answer is not a JSON object")
    errors = answer.get("errors")
    if isinstance(errors, list) and errors:
        raise SourceError(f"slurmrestd reports: {_first_error(answer) or errors[0]!r}")
    jobs = answer.get("jobs")
    if not isinstance(jobs, list):
        raise SourceError("the answer has no jobs list")
    found = (job_on_node(entry, node) for entry in jobs)
    return [job for job in found if job is not None]


def _first_error(answer: object) -> str | None:
    """The first of slurmrestd's ``errors`` in words (description, else error), for a log line."""
    errors = answer.get("errors") if isinstance(answer, Mapping) else None
    first = errors[0] if isinstance(errors, list) and errors else None
    if not isinstance(first, Mapping):
        return None
    words = first.get("description") or first.get("error")
    return " ".join(str(words).split())[:200] if words else None


# ---------------------------------------------------------------------------- the client


class SlurmrestdClient:
    """One GET /jobs per :meth:`read`, a fresh connection each time (a read every 30 s)."""

    def __init__(self, settings: SlurmrestdSettings) -> None:
        self.settings = settings
        url = urllib.parse.urlsplit(settings.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SourceUnavailable(f"slurmrestd: {settings.url!r} is not an http(s):// URL")
        self.tls = url.scheme == "https"
        self._host, self._port = url.hostname, url.port or (443 if self.tls else 80)
        self.path = f"{url.path.rstrip('/')}/slurm/{settings.version}/jobs/"
        self._context: ssl.SSLContext | None = None
        self.requests = 0  # for tests and logs

    def check(self) -> None:
        """What can be checked before the first request: the token's file, the CA file
        (SourceUnavailable, one line)."""
        read_secret(self.settings.token_file, "slurmrestd token")
        self._tls_context()

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls and self._context is None:
            ca = self.settings.ca_file
            try:
                self._context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
            except (OSError, ssl.SSLError) as exc:
                raise SourceUnavailable(f"slurmrestd: cannot load the CA file {str(ca)!r}: {exc}") from None
        return self._context

    def read(self) -> list[RestJob]:
        return jobs_on_node(self.get(), self.settings.node)

    def get(self) -> Any:
        """The decoded answer of GET /jobs; SourceError (one line) when there is none."""
        context = self._tls_context()
        token = read_secret(self.settings.token_file, "slurmrestd token")
        headers = {"X-SLURM-USER-TOKEN": token, "Accept": "application/json"}
        if self.settings.user:
            headers["X-SLURM-USER-NAME"] = self.settings.user
        conn: http.client.HTTPConnection
        if self.tls:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.settings.timeout,
                                               context=context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.settings.timeout)
        self.requests += 1
        try:
            conn.request("GET", self.path, headers=headers)
            response = conn.getresponse()
            body = response.read(self.settings.max_bytes + 1)
        except (OSError, http.client.HTTPException) as exc:  # refused, timed out, TLS, cut short
            said = " ".join(str(exc).split()) or type(exc).__name__
            raise SourceError(f"GET {self.path}: {said}") from None
        finally:
            conn.close()
        if len(body) > self.settings.max_bytes:
            raise SourceError(f"GET {self.path}: answer over {self.settings.max_bytes} bytes "
                              "(--slurmrestd-max-bytes)")
        try:
            answer = json.loads(body)
        except ValueError:  # not JSON (a proxy's HTML page, a cut answer); UnicodeDecodeError too
            answer = None
        if response.status != 200:
            error = _first_error(answer)
            hint = {401: " (the token is missing, expired or refused)",
                    404: f" (does this slurmrestd serve {self.settings.version}? `slurmrestd -d list`)"}
            raise SourceError(f"GET {self.path}: {response.status} {response.reason}"
                              f"{hint.get(response.status, '')}{': ' + error if error else ''}")
        if answer is None:
            raise SourceError(f"GET {self.path}: the answer is not JSON")
        return answer
