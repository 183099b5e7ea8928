"""Teams from pod and namespace labels through the Kubernetes API: a real HTTPS server on
loopback with the test CA (TLS verified), the service account token checked, answers cached,
a failing API server leaving holdings without team (never the source down)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from agent.fake_kubelet import FakeKubelet, pod
from agent.json_server import JsonServer, tls_for
from agent.test_kubernetes import A, B, polled, wait_for
from wattledger.agent.sources.base import SourceUnavailable
from wattledger.agent.sources.kubeapi import KubeApi, KubeApiSettings
from wattledger.agent.sources.kubernetes import KubernetesSettings, KubernetesSource

TOKEN = "eyJhbGciOiJSUzI1NiJ9.sa-token"


def k8s_object(kind: str, name: str, labels: dict[str, str]) -> dict[str, object]:
    return {"kind": kind, "apiVersion": "v1", "metadata": {"name": name, "labels": labels}}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def api_server(ca: trustme.CA) -> Iterator[JsonServer]:
    server = JsonServer({
        "/api/v1/namespaces/nlp/pods/llama-ft-7": k8s_object("Pod", "llama-ft-7", {"app": "llama"}),
        "/api/v1/namespaces/nlp": k8s_object("Namespace", "nlp", {"team": "nlp"}),
        "/api/v1/namespaces/shared/pods/eval-1": k8s_object("Pod", "eval-1", {"team": "vision"}),
        "/api/v1/namespaces/shared": k8s_object("Namespace", "shared", {}),
    }, required={"Authorization": f"Bearer {TOKEN}"}, tls=tls_for(ca))
    yield server
    server.close()


def settings_for(server: JsonServer, tmp_path: Path, ca: trustme.CA, token: str = TOKEN) -> KubeApiSettings:
    (tmp_path / "token").write_text(token)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return KubeApiSettings(url=server.url, token_file=tmp_path / "token", ca_file=tmp_path / "ca.crt",
                           timeout=5.0)


def test_team_from_the_pod_label_else_the_namespace(api_server: JsonServer, tmp_path: Path,
                                                    ca: trustme.CA) -> None:
    api = KubeApi(settings_for(api_server, tmp_path, ca))
    assert api.team("shared", "eval-1", "team") == "vision"  # the pod's own label
    assert api.team("nlp", "llama-ft-7", "team") == "nlp"  # the namespace's
    assert api.team("shared", "eval-1", "cost-center") is None
    asked = len(api_server.paths)
    assert api.team("nlp", "llama-ft-7", "team") == "nlp"
    assert len(api_server.paths) == asked  # cached


def test_tls_is_verified_and_the_token_is_sent(api_server: JsonServer, tmp_path: Path,
                                               ca: trustme.CA) -> None:
    other_ca = trustme.CA()
    (tmp_path / "other").mkdir()
    wrong_ca = settings_for(api_server, tmp_path / "other", other_ca)
    assert KubeApi(wrong_ca).team("nlp", "llama-ft-7", "team") is None  # certificate refused
    assert api_server.paths == []
    bad_token = KubeApi(settings_for(api_server, tmp_path, ca, token="expired"))
    assert bad_token.team("nlp", "llama-ft-7", "team") is None
    assert bad_token.last_error is not None and "401" in bad_token.last_error


def test_a_failing_api_server_is_left_alone_for_a_while(api_server: JsonServer, tmp_path: Path,
                                                        ca: trustme.CA) -> None:
    now = [1000.0]
    api = KubeApi(settings_for(api_server, tmp_path, ca), clock=lambda: now[0])
    api_server.down = True
    assert api.team("nlp", "llama-ft-7", "team") is None
    assert api.team("shared", "eval-1", "team") is None
    assert api.requests == 1  # one failure, then quiet for `backoff` seconds
    api_server.down = False
    now[0] += api.settings.backoff + 1
    assert api.team("shared", "eval-1", "team") == "vision"


def test_in_cluster_settings_need_the_service_environment() -> None:
    s = KubeApiSettings.in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert s.url == "https://[fd00::1]:443"
    assert s.token_file == Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    with pytest.raises(SourceUnavailable, match="not in a pod"):
        KubeApiSettings.in_cluster({})


def test_holdings_carry_the_team_and_go_on_without_it(api_server: JsonServer, tmp_path: Path,
                                                      ca: trustme.CA) -> None:
    kubelet = FakeKubelet(tmp_path / "kubelet.sock").start()
    kubelet.pods = [pod("nlp", "llama-ft-7", {"trainer": [("nvidia.com/gpu", [A])]}),
                    pod("shared", "eval-1", {"main": [("nvidia.com/gpu", [B])]})]
    src = KubernetesSource(KubernetesSettings(socket=kubelet.socket, interval=0.05, team_label="team"),
                           kube_api=KubeApi(settings_for(api_server, tmp_path, ca)))
    src.open()
    try:
        wait_for(lambda: src.poller.latest() is not None)
        llama, evaluation = sorted(src.holdings(time.time(), []), key=lambda h: h.key)
        assert llama.owner["team"] == "nlp" and evaluation.owner["team"] == "vision"
        api_server.down = True
        kubelet.pods.append(pod("ml", "new-pod", {"c": [("nvidia.com/gpu", [B])]}))
        holdings = {h.key: h for h in polled(src, kubelet)}
        assert "team" not in holdings["k8s:ml/new-pod/c"].owner  # unknown, attribution goes on
        assert holdings["k8s:nlp/llama-ft-7/trainer"].owner["team"] == "nlp"  # still cached
    finally:
        src.close()
        kubelet.stop()
