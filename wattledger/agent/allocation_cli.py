"""The agent's flags and YAML keys for the allocation sources (``kubernetes``, ``slurm``,
``processes``): each also reads ``WATTLEDGER_<FLAG>`` and the YAML key of its name, like the
agent's other flags. The slurm source's slurmrestd settings are checked together by
:func:`resolve` (its token is only ever a file's path)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wattledger.agent.sources.slurmrestd import (
    DEFAULT_VERSION,
    MAX_ANSWER_BYTES,
    VERSIONS,
    SlurmrestdSettings,
)
from wattledger.config import ConfigError, Option, byte_size, existing_file, http_url, positive_float, text

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


def _version(raw: object) -> str:
    value = str(raw).strip()
    if value not in VERSIONS:
        raise ValueError(f"{value!r} is not a slurmrestd API version this agent reads "
                         f"({', '.join(VERSIONS)})")
    return value


OPTIONS = [
    Option("--kubelet-socket", _path, Path(DEFAULT_KUBELET_SOCKET), "the kubelet's PodResources socket "
           "(kubernetes source)", metavar="PATH"),
    Option("--kubernetes-interval", positive_float, 5.0, "seconds between PodResources List calls",
           metavar="SECONDS"),
    Option("--kubernetes-team-label", _label_key, None, "pod (else namespace) label whose value is the "
           "team, read from the Kubernetes API (needs RBAC get on pods and namespaces)", metavar="KEY"),
    Option("--slurm-job-dir", _path, Path(DEFAULT_SLURM_JOB_DIR), "the folder deploy/slurm/prolog.sh "
           "writes (slurm source; dcgm-exporter's --hpc-job-mapping-dir works too)", metavar="DIR"),
    Option("--slurmrestd-url", http_url, None, "ask slurmrestd which job holds which GPU instead of reading "
           "--slurm-job-dir (https://; http:// with a warning)", metavar="URL"),
    Option("--slurmrestd-token-file", existing_file, None, "file holding slurmrestd's JWT (scontrol token), "
           "re-read at every request (needed with --slurmrestd-url)", metavar="FILE"),
    Option("--slurmrestd-user", text, None, "X-SLURM-USER-NAME sent with the token (for a SlurmUser/root "
           "token acting for that user)", metavar="NAME"),
    Option("--slurmrestd-ca-file", existing_file, None, "CA certificate(s) slurmrestd's TLS certificate is "
           "checked against (default: the system's trust store)", metavar="FILE"),
    Option("--slurmrestd-version", _version, DEFAULT_VERSION,
           f"slurmrestd API version: {', '.join(VERSIONS)}", metavar="VERSION"),
    Option("--slurmrestd-node", text, None, "this node's NodeName in Slurm (default: --node)",
           metavar="NAME"),
    Option("--slurmrestd-interval", positive_float, 30.0, "seconds between slurmrestd /jobs requests",
           metavar="SECONDS"),
    Option("--slurmrestd-timeout", positive_float, 10.0,
           "connect and read timeout of each slurmrestd request", metavar="SECONDS"),
    Option("--slurmrestd-max-bytes", byte_size, MAX_ANSWER_BYTES, "the largest /jobs answer read (e.g. "
           "16MiB); a bigger one fails the read", metavar="BYTES"),
    Option("--proc-root", _path, Path("/proc"), "where the host's /proc is mounted (processes source)",
           metavar="DIR"),
]



def resolve(s: dict[str, Any], names: Sequence[str]) -> None:
    """Add ``slurmrestd`` (the slurm source's settings for slurmrestd, or None) to the
    settings ``s``, whose OPTIONS and ``node`` are resolved already."""
    s["slurmrestd"] = None
    if s["slurmrestd_url"] is None:
        return
    if s["slurmrestd_token_file"] is None:
        if "slurm" in names:
            raise ConfigError("--slurmrestd-url needs --slurmrestd-token-file "
                              "(the file holding slurmrestd's JWT)")
        return
    s["slurmrestd"] = SlurmrestdSettings(
        url=s["slurmrestd_url"], token_file=s["slurmrestd_token_file"],
        node=s["slurmrestd_node"] or s["node"], version=s["slurmrestd_version"], user=s["slurmrestd_user"],
        ca_file=s["slurmrestd_ca_file"], interval=s["slurmrestd_interval"], timeout=s["slurmrestd_timeout"],
        max_bytes=s["slurmrestd_max_bytes"])
