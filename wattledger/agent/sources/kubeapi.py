"""Pod and namespace labels from the Kubernetes API, for the kubernetes source's ``team``.

The agent runs as a DaemonSet pod: it talks to the API server the in-cluster way, at
``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` with its service account's
token (re-read for every request: projected tokens rotate) and the cluster's CA
(``/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}``); TLS is verified, host
name included. Standard library HTTP only (the agent stays light). RBAC: ``get`` on ``pods``
and ``namespaces`` (deploy/kubernetes/components/kubernetes-teams has the ClusterRole).

Answers are cached for ``ttl`` seconds per pod and per namespace (labels rarely change; a
pod's name is its identity on the node). A failing API server is asked nothing for
``backoff`` seconds after a failure, so that a dead one costs one timeout, not one per pod;
meanwhile teams are unknown (None) and attribution goes on without them.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattledger.agent.sources.base import SourceUnavailable
from wattledger.agent.sources.remote import read_secret

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_ANSWER_BYTES = 4 << 20  # one pod or namespace object is a few KiB


class KubeApiError(Exception):
    """The API server did not answer with the object (one line)."""


@dataclass(frozen=True, slots=True)
class KubeApiSettings:
    url: str  # https://host:port
    token_file: Path = SERVICE_ACCOUNT / "token"
    ca_file: Path = SERVICE_ACCOUNT / "ca.crt"
    timeout: float = 3.0
    ttl: float = 300.0
    backoff: float = 60.0

    @classmethod
    def in_cluster(cls, env: Mapping[str, str] | None = None) -> KubeApiSettings:
        env = os.environ if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise SourceUnavailable("kubernetes labels: not in a pod (no KUBERNETES_SERVICE_HOST/PORT)")
        host = f"[{host}]" if ":" in host else host  # an IPv6 service address
        return cls(url=f"https://{host}:{port}")


class KubeApi:
    def __init__(self, settings: KubeApiSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        url = urllib.parse.urlsplit(settings.url)
        if url.scheme != "https" or not url.hostname:
            raise SourceUnavailable(f"kubernetes labels: {settings.url!r} is not an https:// URL")
        self._host, self._port = url.hostname, url.port or 443
        self._tls = ssl.create_default_context(cafile=str(settings.ca_file))
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._quiet_until = float("-inf")  # no request before this (after a failure)
        self.requests = 0  # for tests and logs
        self.last_error: str | None = None

    def team(self, namespace: str, pod: str, label: str) -> str | None:
        """The pod's ``label``, else its namespace's; None when neither has it or the API
        cannot be asked now."""
        labels = self._labels(f"/api/v1/namespaces/{_quote(namespace)}/pods/{_quote(pod)}")
        if labels is not None and label in labels:
            return labels[label]
        labels = self._labels(f"/api/v1/namespaces/{_quote(namespace)}")
        return None if labels is None else labels.get(label)

    def _labels(self, path: str) -> dict[str, str] | None:
        now = self._clock()
        cached = self._cache.get(path)
        if cached is not None and now - cached[0] < self.settings.ttl:
            return cached[1]
        if now < self._quiet_until:
            return cached[1] if cached is not None else None
        try:
            answer = self._get(path)
        except (KubeApiError, SourceUnavailable, OSError, ValueError) as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            if self.last_error is None:
                log.warning("kubernetes labels: %s (teams unknown; asked again in %g s)", message,
                            self.settings.backoff)
            self.last_error = message
            self._quiet_until = now + self.settings.backoff
            return cached[1] if cached is not None else None
        if self.last_error is not None:
            log.info("kubernetes labels: the API server answers again")
            self.last_error = None
        metadata = answer.get("metadata") if isinstance(answer, dict) else None
        raw = metadata.get("labels") if isinstance(metadata, dict) else None
        labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        if len(self._cache) >= 4096:  # pods come and go: forget the expired ones
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self.settings.ttl}
        self._cache[path] = (now, labels)
        return labels

    def _get(self, path: str) -> Any:
        token = read_secret(self.settings.token_file, "kubernetes service account token")
        self.requests += 1
        conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.settings.timeout,
                                           context=self._tls)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}",
                                               "Accept": "application/json"})
            response = conn.getresponse()
            body = response.read(MAX_ANSWER_BYTES + 1)
        finally:
            conn.close()
        if response.status != 200:
            raise KubeApiError(f"GET {path}: {response.status} {response.reason}")
        if len(body) > MAX_ANSWER_BYTES:
            raise KubeApiError(f"GET {path}: answer over {MAX_ANSWER_BYTES} bytes")
        return json.loads(body)


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")
