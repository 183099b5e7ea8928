"""Which Slurm job holds which GPU: the files the prolog writes (deploy/slurm/prolog.sh).

The folder (``--slurm-job-dir``, default ``/run/wattledger/slurm-jobs``) has dcgm-exporter's
HPC job mapping layout, so a site that already writes one can point the agent at it:

- one file per GPU, named by the GPU's index as Slurm numbers it (``SLURM_JOB_GPUS``: the
  device's minor number, ``/dev/nvidia<N>``, NVML's index on the usual server) or by its
  UUID (``GPU-…``, ``MIG-…``: gres.conf ``Flags=env_uuid``, or a site's own prolog), holding
  the ids of the jobs on that GPU, one per line (several with GPU sharing: they split it
  evenly);
- ``jobs/<job id>``, written by wattledger's prolog only: ``key=value`` lines with the job's
  ``account``, ``user``, ``partition`` and ``start`` (unix seconds, the allocation's start).
  Without it a holding's owner is the job id alone and its start is when the agent first
  saw it.

Reading the folder is a handful of small files on a tmpfs: it is done at every sample. A GPU
named by index is mapped to the device of that index among the GPUs the sample saw (the
mapping is remembered, so a GPU missing from one sample keeps its holding); by UUID, the
device of that id. A folder that does not exist yet means no job has run since boot (the
prolog creates it).

With ``rest`` set (``--slurmrestd-url``) the source asks slurmrestd instead of reading the
folder (:mod:`wattledger.agent.sources.slurmrestd`): on its own thread every ``interval``
seconds, so that a slow slurmrestd never delays a sample; each sample maps the last answer's
jobs on this node to devices (their GPU indices as the folder's are). The last answer is used
for three intervals; after that, or while slurmrestd fails, the source is down and its
holdings end.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wattledger.agent.sources.base import Holding, SourceError
from wattledger.agent.sources.polling import Poller
from wattledger.agent.sources.slurmrestd import RestJob, SlurmrestdClient, SlurmrestdSettings
from wattledger.contract import LABEL_VALUE_MAX_LENGTH, Device

log = logging.getLogger(__name__)

DEFAULT_JOB_DIR = Path("/run/wattledger/slurm-jobs")
_INDEX = re.compile(r"^\d{1,4}$")
_UUID = re.compile(r"^(GPU|MIG)-[0-9A-Za-z-]{1,120}$")
_JOB_ID = re.compile(r"^\d{1,20}(_\d{1,10})?$")
#: the metadata keys the prolog writes that are wire owner keys
OWNER_KEYS = ("account", "user", "partition")
MAX_FILE_BYTES = 64 << 10


@dataclass(frozen=True, slots=True)
class SlurmSettings:
    job_dir: Path = DEFAULT_JOB_DIR
    rest: SlurmrestdSettings | None = None  # set: slurmrestd instead of the folder


@dataclass(frozen=True, slots=True)
class JobInfo:
    owner: dict[str, str]
    since: float | None


def _read(path: Path) -> str:
    with path.open("rb") as f:
        return f.read(MAX_FILE_BYTES).decode("utf-8", errors="replace")


def job_info(job_dir: Path, job: str) -> JobInfo:
    """The owner and start of ``job`` from its metadata file (just the job id without it)."""
    owner = {"job": job}
    since: float | None = None
    try:
        text = _read(job_dir / "jobs" / job)
    except OSError:
        return JobInfo(owner, since)
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        value = value.strip()[:LABEL_VALUE_MAX_LENGTH]
        if not sep or not value:
            continue
        if key in OWNER_KEYS:
            owner[key] = value
        elif key == "start":
            try:
                since = float(value)
            except ValueError:
                log.debug("slurm: job %s has a start that is not a number: %r", job, value)
    return JobInfo(owner, since)


class SlurmSource:
    """An allocation source: the prolog's files, read at every sample; or slurmrestd's
    answer, polled on its own thread."""

    name = "slurm"

    def __init__(self, settings: SlurmSettings) -> None:
        self.settings = settings
        self._index_to_id: dict[int, str] = {}  # Slurm's GPU index -> Device.id, as last seen
        self._told_missing = False
        self.rest: SlurmrestdClient | None = None
        self.poller: Poller[list[RestJob]] | None = None
        if settings.rest is not None:
            self.rest = SlurmrestdClient(settings.rest)
            self.poller = Poller(f"slurmrestd {settings.rest.url}", self.rest.read, settings.rest.interval,
                                 max_backoff=max(120.0, settings.rest.interval))

    def open(self) -> None:
        if self.rest is not None and self.poller is not None:
            self.rest.check()  # SourceUnavailable (no token file, a bad CA file): tried again later
            if not self.rest.tls:
                log.warning("slurm: %s is plain http: the slurmrestd token travels unencrypted",
                            self.rest.settings.url)
            self.poller.start()
        elif not self.settings.job_dir.is_dir():
            log.info("slurm: %s does not exist yet (no job since boot; the prolog creates it)",
                     self.settings.job_dir)

    def close(self) -> None:
        if self.poller is not None and self.settings.rest is not None:
            self.poller.stop(timeout=self.settings.rest.timeout + 1.0)

    def holdings(self, ts: float, devices: Sequence[Device]) -> list[Holding]:
        for d in devices:
            if d.kind == "gpu":
                self._index_to_id[d.index] = d.id
        if self.poller is not None:
            latest = self.poller.latest()
            if latest is None:
                raise SourceError(self.poller.describe_failure())
            return self._rest_holdings(latest.value)
        jobs = self._jobs_by_device()
        out = []
        for job, device_ids in sorted(jobs.items()):
            info = job_info(self.settings.job_dir, job)
            out.append(Holding(key=f"slurm:{job}", device_ids=tuple(sorted(device_ids)), owner=info.owner,
                               since=info.since))
        return out

    def _rest_holdings(self, jobs: Sequence[RestJob]) -> list[Holding]:
        """slurmrestd's jobs on this node: one holding per job and weight (a job's shares of
        shared GPUs can differ: ``slurm:<job>*<weight>`` for those of weight other than 1)."""
        out = []
        for job in sorted(jobs, key=lambda j: j.job):
            by_weight: dict[float, list[str]] = {}
            for index, weight in job.gpus.items():
                device_id = self._index_id(index)
                if device_id is not None:
                    by_weight.setdefault(weight, []).append(device_id)
            for weight, device_ids in sorted(by_weight.items()):
                plain = weight == 1.0 or len(by_weight) == 1
                key = f"slurm:{job.job}" if plain else f"slurm:{job.job}*{weight:g}"
                out.append(Holding(key=key, device_ids=tuple(sorted(device_ids)), owner=job.owner,
                                   weight=weight, since=job.since, until=job.until))
        return out

    def _jobs_by_device(self) -> dict[str, set[str]]:
        job_dir = self.settings.job_dir
        try:
            names = [p.name for p in job_dir.iterdir()]
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SourceError(f"slurm: cannot read {job_dir}: {exc.strerror or exc}") from None
        jobs: dict[str, set[str]] = {}
        for name in names:
            device_id = self._device_id(name)
            if device_id is None:
                continue
            try:
                text = _read(job_dir / name)
            except (FileNotFoundError, IsADirectoryError):  # the epilog removed it meanwhile
                continue
            except OSError as exc:
                raise SourceError(f"slurm: cannot read {job_dir / name}: {exc.strerror or exc}") from None
            for line in text.splitlines():
                job = line.strip()
                if _JOB_ID.match(job):
                    jobs.setdefault(job, set()).add(device_id)
        return jobs

    def _device_id(self, name: str) -> str | None:
        """The Device.id a GPU file stands for; None for other files (and unknown indices)."""
        if _UUID.match(name):
            return name
        if _INDEX.match(name):
            return self._index_id(int(name))
        return None

    def _index_id(self, index: int) -> str | None:
        found = self._index_to_id.get(index)
        if found is None and not self._told_missing:
            self._told_missing = True
            log.warning("slurm: a job holds GPU %s, which no source reports (yet)", index)
        return found
