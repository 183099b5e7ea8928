"""The agent's flags and YAML keys for the allocation sources (``kubernetes``, ``slurm``,
``processes``): each also reads ``WATTLEDGER_<FLAG>`` and the YAML key of its name, like the
agent's other flags."""

from __future__ import annotations

import re
from pathlib import Path

from wattledger.config import Option, positive_float, text

DEFAULT_KUBELET_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
DEFAULT_SLURM_JOB_DIR = "/run/wattledger/slurm-jobs"


#: a Kubernetes label key: an optional DNS prefix and '/', then a name of 1-63 characters
LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _label_key(raw: object) -> str:
    value = str(raw).strip()
    if not LABEL_KEY.fullmatch(value):
        raise ValueError(f"{value!r} is not a Kubernetes label key (e.g. team, example.com/team)")
    return value


def _path(raw: object) -> Path:
    return Path(text(raw)).expanduser()


OPTIONS = [
    Option("--kubelet-socket", _path, Path(DEFAULT_KUBELET_SOCKET), "the kubelet's PodResources socket "
           "(kubernetes source)", metavar="PATH"),
    Option("--kubernetes-interval", positive_float, 5.0, "seconds between PodResources List calls",
           metavar="SECONDS"),
    Option("--kubernetes-team-label", _label_key, None, "pod (else namespace) label whose value is the "
           "team, read from the Kubernetes API (needs RBAC get on pods and namespaces)", metavar="KEY"),
    Option("--slurm-job-dir", _path, Path(DEFAULT_SLURM_JOB_DIR), "the folder deploy/slurm/prolog.sh "
           "writes (slurm source; dcgm-exporter's --hpc-job-mapping-dir works too)", metavar="DIR"),
    Option("--proc-root", _path, Path("/proc"), "where the host's /proc is mounted (processes source)",
           metavar="DIR"),
]

